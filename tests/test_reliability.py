"""Worker loss: a training worker killed with SIGKILL mid-fit resumes from the latest checkpoint.

Resume and bounded restarts of the boosting estimators are part of their contract suite
(tests/test_estimator_contract.py); here: what is particular to one framework, and PyTorch."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import xgboost as xgb

from tests.boosting_cases import lgb_kill_at, xgb_kill_at
from tests.conftest import regression_frame
from trainflow.distributors.lightgbm import LightGBMEstimator, LightGBMScalingConfig
from trainflow.distributors.xgboost import XGBEstimator
from trainflow.errors import ConfigError, TrainingError

FEATURES = ["f0", "f1", "f2", "f3"]


@pytest.fixture(scope="module")
def data():
    return regression_frame(3000, seed=11), regression_frame(600, seed=12)


def test_a_stateful_user_callback_makes_a_lost_fit_restart_from_round_0(ray_cluster, data, tmp_path):
    """A callback's state is not in the checkpoint. Resumed at round 10 with a fresh StopAfter(15),
    the fit would run 25 rounds; it restarts from round 0 instead and runs 15, as an uninterrupted fit."""

    class StopAfter(xgb.callback.TrainingCallback):
        def __init__(self, rounds: int):
            self.rounds, self.seen = rounds, 0

        def after_iteration(self, model, epoch, evals_log) -> bool:
            self.seen += 1
            return self.seen >= self.rounds

    train, _ = data
    marker = tmp_path / "killed"
    est = XGBEstimator(n_estimators=40, params={"max_depth": 4}, callbacks=[xgb_kill_at(12, str(marker)), StopAfter(15)],
                       checkpoint_every=5)
    booster = est.fit(train, FEATURES, "y")
    assert len(marker.read_text().split()) == 1  # it really was killed, once
    assert booster.num_boosted_rounds() == 15
    assert len(est.get_eval_results()["train"]["rmse"]) == 15


@pytest.mark.parametrize("kwargs", [{"checkpoint_every": 0}, {"max_restarts": -1}])
def test_invalid_resilience_settings(ray_cluster, data, kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        XGBEstimator(n_estimators=2, **kwargs).fit(data[1], FEATURES, "y")


def credit_mlp_killed_at(epoch: int, marker: str, log: str, once: bool = True):
    """The credit MLP example, with rank 0 SIGKILLed once it has trained epoch `epoch`, before reporting
    it (with `once`, the first time only; each kill appends to `marker`); every epoch a rank-0 process
    reports is logged as `<pid> <epoch>`."""

    def train_func():
        from trainflow.distributors.pytorch import get_context
        from trainflow.examples.credit_mlp import train_func as credit

        context = get_context()
        report = context.report

        def maybe_die_then_report(metrics, checkpoint=None):
            if context.get_rank() == 0 and metrics.get("epoch") == epoch and not (once and os.path.exists(marker)):
                # A reported checkpoint counts once Ray Train's controller has registered it (it polls
                # the workers every 0.2 s here); an epoch of real work gives it that time.
                time.sleep(2)
                with open(marker, "a") as fh:
                    fh.write(f"{os.getpid()}\n")
                os.kill(os.getpid(), signal.SIGKILL)
            if context.get_rank() == 0 and "epoch" in metrics:
                with open(log, "a") as fh:
                    fh.write(f"{os.getpid()} {metrics['epoch']}\n")
            report(metrics, checkpoint)

        context.report = maybe_die_then_report
        credit()

    return train_func


@pytest.mark.slow  # a Ray Train worker group per attempt: ~30 s each on 2 cores
def test_killed_pytorch_worker_resumes_from_the_last_epoch_checkpoint(ray_cluster, tmp_path):
    from trainflow.data import ShardedDataConnector
    from trainflow.data.demo import credit_frame
    from trainflow.distributors.pytorch import PyTorchDistributor, PyTorchScalingConfig

    marker, log = tmp_path / "killed", tmp_path / "epochs.log"
    result = PyTorchDistributor(credit_mlp_killed_at(4, str(marker), str(log)),
                                PyTorchScalingConfig(num_workers_per_node=2)).run(
        dataset_map={"train": ShardedDataConnector.from_dataframe(credit_frame(3000, seed=7))},
        hyper_params={"epochs": "6", "batch_size": "64"}, artifact_stage_location=str(tmp_path / "stage"),
    )
    assert len(marker.read_text().split()) == 1
    runs: dict[str, list[int]] = {}
    for pid, epoch in (row.split() for row in log.read_text().splitlines()):
        runs.setdefault(pid, []).append(int(epoch))
    first, restarted = runs.values()
    assert first == [1, 2, 3]
    # The restart continues after a checkpointed epoch, not from scratch: epoch 3, or epoch 2 if the
    # controller had not yet registered checkpoint 3 when rank 0 died.
    assert restarted[0] in (3, 4) and restarted == list(range(restarted[0], 7))
    history = [m["epoch"] for m in result.get_metrics_history() if "epoch" in m]
    assert history == [1, 2, 3, 4, 5, 6]  # each epoch once: the checkpoint's history, then the new one
    assert result.get_metrics()["epoch"] == 6
    model_dir = tmp_path / "stage" / "model" / result.request_id
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.json", "model.pt"]


@pytest.mark.slow  # a Ray Train worker group per attempt: ~30 s each on 2 cores
def test_pytorch_restarts_are_bounded(ray_cluster, tmp_path):
    from trainflow.data import ShardedDataConnector
    from trainflow.data.demo import credit_frame
    from trainflow.distributors.pytorch import PyTorchDistributor, PyTorchScalingConfig

    marker, log = tmp_path / "killed", tmp_path / "epochs.log"
    always = credit_mlp_killed_at(2, str(marker), str(log), once=False)
    with pytest.raises(TrainingError, match="gave up after 1 restart"):
        PyTorchDistributor(always, PyTorchScalingConfig(num_workers_per_node=2), max_restarts=1).run(
            dataset_map={"train": ShardedDataConnector.from_dataframe(credit_frame(1000, seed=7))},
            hyper_params={"epochs": "3", "batch_size": "64"}, artifact_stage_location=str(tmp_path / "stage"))
    assert len(marker.read_text().split()) == 2  # the first attempt and one restart, both killed


def test_lightgbm_with_early_stopping_restarts_from_round_0(ray_cluster, data, tmp_path):
    """Early stopping's best-round state is not in a checkpoint: such a fit writes none and a lost
    worker group trains again from the start, ending where an uninterrupted fit ends."""
    train, holdout = data
    marker = tmp_path / "killed"
    params = {"num_leaves": 15, "min_data_in_leaf": 5, "early_stopping_round": 5, "learning_rate": 0.3}
    est = LightGBMEstimator(n_estimators=60, params=params, scaling_config=LightGBMScalingConfig(num_workers=2),
                            callbacks=[lgb_kill_at(12, str(marker))], checkpoint_every=5)
    booster = est.fit(train, FEATURES, "y", eval_set=holdout)
    assert len(marker.read_text().split()) == 1
    whole_est = LightGBMEstimator(n_estimators=60, params=params, checkpoint_every=None,
                                  scaling_config=LightGBMScalingConfig(num_workers=2))
    whole = whole_est.fit(train, FEATURES, "y", eval_set=holdout)
    assert est.best_iteration_ == whole_est.best_iteration_
    x = holdout[FEATURES].to_numpy(np.float32)
    np.testing.assert_allclose(booster.predict(x), whole.predict(x), rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # a Ray Train worker group per attempt: ~30 s each on 2 cores
def test_an_error_a_restart_cannot_fix_is_not_retried(ray_cluster, tmp_path):
    """A trainflow DataError in a worker is recorded: the restarted groups raise it without running
    the training function again (Ray Train itself would retry it max_restarts times)."""
    from trainflow.data import ShardedDataConnector
    from trainflow.data.demo import credit_frame
    from trainflow.distributors.pytorch import PyTorchDistributor, PyTorchScalingConfig
    from trainflow.errors import DataError

    log = tmp_path / "calls.log"

    def train_func():
        from trainflow.distributors.pytorch import get_context
        from trainflow.errors import DataError

        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {get_context().get_rank()}\n")
        raise DataError("column 'income' has negative values; fix the source table")

    with pytest.raises(DataError, match="negative values"):
        PyTorchDistributor(train_func, PyTorchScalingConfig(num_workers_per_node=2), max_restarts=2).run(
            dataset_map={"train": ShardedDataConnector.from_dataframe(credit_frame(200, seed=1))},
            artifact_stage_location=str(tmp_path / "stage"))
    assert sorted(line.split()[1] for line in log.read_text().splitlines()) == ["0", "1"]  # one attempt


@pytest.mark.slow  # a Ray Train worker group per attempt: ~30 s each on 2 cores
def test_a_checkpoint_state_that_cannot_be_resumed_fails_at_once(ray_cluster, tmp_path):
    """A numpy array in the state saves fine but torch.load(weights_only=True) refuses it: the first
    report says so (a ConfigError, not retried) instead of every restart failing later."""
    from trainflow.data import ShardedDataConnector
    from trainflow.data.demo import credit_frame
    from trainflow.distributors.pytorch import PyTorchDistributor, PyTorchScalingConfig

    def train_func():
        import numpy as np

        from trainflow.distributors.pytorch import get_context

        get_context().report({"epoch": 1}, checkpoint={"epoch": 1, "weights": np.zeros(3)})

    with pytest.raises(ConfigError, match=r"weights_only.*torch.as_tensor"):
        PyTorchDistributor(train_func, PyTorchScalingConfig(num_workers_per_node=2)).run(
            dataset_map={"train": ShardedDataConnector.from_dataframe(credit_frame(100, seed=1))},
            artifact_stage_location=str(tmp_path / "stage"))
