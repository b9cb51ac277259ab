"""Warm execution: boosting fits reuse pooled worker processes, free their CPUs between fits, and
the restart policy decides without a cluster."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import xgboost as xgb

from tests.conftest import regression_frame
from trainflow.distributors.checkpoint import CheckpointStore, ResumeState
from trainflow.distributors.controller import RESTART, Failure, after_failure
from trainflow.distributors.lightgbm import LightGBMEstimator, LightGBMScalingConfig
from trainflow.distributors.xgboost import XGBEstimator, XGBScalingConfig
from trainflow.errors import ConfigError, DataError, TrainingError

FEATURES = ["f0", "f1", "f2", "f3"]


# ------------------------------------------------------------------------------- restart policy
def lost(rank: int = 0) -> Failure:
    return Failure(rank, RuntimeError("The actor died unexpectedly before finishing this task."), lost=True)


def test_a_lost_worker_restarts_until_the_budget_is_spent():
    assert after_failure(lost(), attempt=0, max_restarts=2) == RESTART
    assert after_failure(lost(), attempt=1, max_restarts=2) == RESTART
    error = after_failure(lost(1), attempt=2, max_restarts=2)
    assert isinstance(error, TrainingError)
    assert "worker rank 1" in str(error) and "gave up after 2 restart(s)" in str(error)


def test_no_restarts_means_the_first_failure_is_the_error():
    error = after_failure(lost(), attempt=0, max_restarts=0)
    assert isinstance(error, TrainingError) and "gave up" not in str(error)


def test_an_error_a_restart_cannot_fix_is_raised_as_raised():
    bad = DataError("Label column 'y' has 3 null/NaN value(s).")
    assert after_failure(Failure(1, bad, lost=False), attempt=0, max_restarts=3) is bad


def test_a_transient_trainflow_error_is_restarted():
    flaky = TrainingError("a peer was lost")
    flaky.transient = True
    assert after_failure(Failure(0, flaky, lost=False), attempt=0, max_restarts=1) == RESTART
    assert "gave up after 1 restart" in str(after_failure(Failure(0, flaky, lost=False), 1, 1))


# ------------------------------------------------------------------------------- checkpoint store
def test_checkpoints_keep_the_latest_two_and_ignore_partial_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINFLOW_STORAGE", str(tmp_path))
    store = CheckpointStore.for_run("unit")
    assert store.latest() is None
    for rounds in (10, 20, 30):
        store.save(ResumeState(f"model-{rounds}".encode(), {"eval": {"rmse": [1.0] * rounds}}, rounds))
    (tmp_path / os.path.basename(store.location.path) / "ckpt-000000040.abc.tmp").write_bytes(b"half")
    latest = store.latest()
    assert (latest.model, latest.rounds_done, len(latest.history["eval"]["rmse"])) == (b"model-30", 30, 30)
    assert sorted(p.name for p in (tmp_path / os.path.basename(store.location.path)).iterdir()
                  if not p.name.endswith(".tmp")) == ["ckpt-000000020", "ckpt-000000030"]
    store.remove()
    assert not os.path.exists(store.location.path)


# ------------------------------------------------------------------------------- warm pool
def pid_recorder(path: str) -> xgb.callback.TrainingCallback:
    class Pid(xgb.callback.TrainingCallback):
        def after_training(self, model):
            with open(path, "a") as fh:
                fh.write(f"{os.getpid()}\n")
            return model

    return Pid()


def wait_for_free_cpus(ray, deadline_s: float = 60.0) -> float:
    """The cluster's free CPUs once nothing holds any (placement-group removal is asynchronous)."""
    total = ray.cluster_resources()["CPU"]
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        free = ray.available_resources().get("CPU", 0.0)
        if free == total:
            return free
        time.sleep(0.1)
    return ray.available_resources().get("CPU", 0.0)


def test_a_second_fit_trains_in_the_same_warm_process_and_cpus_are_free_between_fits(ray_cluster, tmp_path):
    data = regression_frame(1000, seed=3)
    log = tmp_path / "pids"
    for depth in (2, 3):  # other params, same data
        XGBEstimator(n_estimators=3, params={"max_depth": depth}, callbacks=[pid_recorder(str(log))]).fit(
            data, FEATURES, "y")
        # a warm worker reserves nothing between fits: validation and scoring tasks can run
        assert wait_for_free_cpus(ray_cluster) == ray_cluster.cluster_resources()["CPU"]
    first, second = log.read_text().split()
    assert first == second


def test_a_search_holds_one_reservation_for_its_fits_and_frees_it_after(ray_cluster):
    from trainflow.distributors.pool import holding, reserve

    with holding(1, 1, False, "search") as held:
        with reserve(1, 1, False, "trial") as first, reserve(1, 1, False, "trial") as second:
            assert first is held and second is held  # no placement group made and removed per fit
        est = XGBEstimator(n_estimators=2, scaling_config=XGBScalingConfig(num_workers=1, num_cpu_per_worker=1))
        est.fit(regression_frame(300, seed=2), FEATURES, "y")
        assert held.group.wait(1)  # a fit inside the hold did not remove it
    assert wait_for_free_cpus(ray_cluster) == ray_cluster.cluster_resources()["CPU"]


def test_two_worker_fits_of_both_frameworks_share_the_pool_and_match_alone(ray_cluster):
    data = regression_frame(1500, seed=4)
    scaling = {"num_workers": 2, "num_cpu_per_worker": 1}
    results = []
    for _ in range(2):  # the second round runs on the workers the first one left warm
        xgb_booster = XGBEstimator(n_estimators=5, params={"max_depth": 3},
                                   scaling_config=XGBScalingConfig(**scaling)).fit(data, FEATURES, "y")
        lgb_booster = LightGBMEstimator(n_estimators=5, params={"num_leaves": 7},
                                        scaling_config=LightGBMScalingConfig(**scaling)).fit(data, FEATURES, "y")
        results.append((xgb_booster.inplace_predict(data[FEATURES].to_numpy()),
                        lgb_booster.predict(data[FEATURES].to_numpy())))
    for a, b in zip(results[0], results[1], strict=True):
        assert (a == b).all()  # a reused process trains the same model: no state leaks between fits


def test_a_worker_that_died_while_idle_is_replaced_without_a_restart(ray_cluster, tmp_path):
    data = regression_frame(800, seed=5)
    log = tmp_path / "pids"
    XGBEstimator(n_estimators=2, callbacks=[pid_recorder(str(log))]).fit(data, FEATURES, "y")
    [idle] = log.read_text().split()
    os.kill(int(idle), signal.SIGKILL)  # a process this test's fit started
    # max_restarts=0: the replacement is not a restart of the fit
    XGBEstimator(n_estimators=2, max_restarts=0, callbacks=[pid_recorder(str(log))]).fit(data, FEATURES, "y")
    assert log.read_text().split()[1] != idle


def test_an_error_in_a_single_worker_fit_leaves_the_worker_warm(ray_cluster, tmp_path):
    data = regression_frame(500, seed=6)
    log = tmp_path / "pids"
    XGBEstimator(n_estimators=2, callbacks=[pid_recorder(str(log))]).fit(data, FEATURES, "y")
    with pytest.raises(ConfigError):
        XGBEstimator(n_estimators=2, params={"early_stopping_rounds": 2}).fit(data, FEATURES, "y")  # no eval set
    bad = data.copy()
    bad.loc[3, "y"] = float("nan")
    with pytest.raises(DataError, match="null/NaN"):
        XGBEstimator(n_estimators=2, max_restarts=2).fit(bad, FEATURES, "y")  # raised in the worker
    XGBEstimator(n_estimators=2, callbacks=[pid_recorder(str(log))]).fit(data, FEATURES, "y")
    first, last = log.read_text().split()
    assert first == last


IDLE_PROBE = textwrap.dedent(
    """
    import json, sys, time
    import ray
    from tests.conftest import regression_frame
    from trainflow.cluster import ensure_cluster
    from trainflow.distributors.pool import NAMESPACE, pool_name, pool_stats
    from trainflow.distributors.xgboost import XGBEstimator

    ensure_cluster(num_cpus=2)
    data = regression_frame(300, seed=1)
    XGBEstimator(n_estimators=2).fit(data, ["f0", "f1", "f2", "f3"], "y")
    deadline = time.monotonic() + 30
    while pool_stats()["busy"] and time.monotonic() < deadline:  # the fit gives its lease back asynchronously
        time.sleep(0.05)
    out = {"after_fit": pool_stats()}
    # a lease that is never given back: the process that took it dies (killed mid-fit)
    from trainflow.distributors.pool import _acquire, _pool

    @ray.remote(num_cpus=0)
    class Leaser:
        def take(self):
            self.token = ray.put(None)  # what a fit's lease is tied to (pool.py)
            _acquire(_pool(), [ray.get_runtime_context().get_node_id()], self.token)

    leaser = Leaser.remote()
    ray.get(leaser.take.remote(), timeout=60)
    out["leaked"] = pool_stats()
    ray.kill(leaser)
    deadline = time.monotonic() + 60
    gone = False
    while time.monotonic() < deadline and not gone:
        try:
            ray.get_actor(pool_name(), namespace=NAMESPACE)
            time.sleep(0.2)
        except ValueError:
            gone = True
    out["pool_gone"] = gone
    out["seconds"] = 60 - (deadline - time.monotonic())
    with open(sys.argv[1], "w") as fh:
        json.dump(out, fh)
    """
)


def test_idle_workers_leaked_leases_and_the_pool_are_released_after_the_idle_timeout(tmp_path):
    out = tmp_path / "idle.json"
    env = dict(os.environ, TRAINFLOW_POOL_IDLE_S="3", RAY_TMPDIR=tempfile.mkdtemp(prefix="tfray-"))
    env.pop("RAY_ADDRESS", None)
    subprocess.run([sys.executable, "-c", IDLE_PROBE, str(out)], check=True, env=env, timeout=240,
                   cwd=os.path.dirname(os.path.dirname(__file__)))
    result = json.loads(out.read_text())
    assert result["after_fit"] == {"workers": 1, "busy": 0, "idle": 1, "nodes": 1}
    assert result["leaked"]["busy"] == 1
    assert result["pool_gone"], result


# ------------------------------------------------------------------------------- matrix reuse
def write_parquet(frame, path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=500)
    return str(path)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("framework", ["xgboost", "lightgbm"])
def test_a_second_fit_on_the_same_data_reuses_the_binned_matrix_and_trains_the_same_model(ray_cluster, tmp_path,
                                                                                         framework, workers):
    from trainflow.data import DataConnector
    from trainflow.distributors.lightgbm import LightGBMEstimator, LightGBMScalingConfig

    estimator, config = {"xgboost": (XGBEstimator, XGBScalingConfig),
                         "lightgbm": (LightGBMEstimator, LightGBMScalingConfig)}[framework]
    frame = regression_frame(3000, seed=7)
    train = DataConnector.from_parquet(write_parquet(frame.iloc[:2400], tmp_path / "train.parquet"))
    holdout = DataConnector.from_parquet(write_parquet(frame.iloc[2400:], tmp_path / "eval.parquet"))
    scaling = config(num_workers=workers, num_cpu_per_worker=1)

    def fit(conn, depth, **params):
        est = estimator(n_estimators=8, params={"max_depth": depth, **params}, scaling_config=scaling)
        est.fit(conn, FEATURES, "y", eval_set=holdout)
        return est

    first, second = fit(train, 2), fit(train, 4)  # other params, same data
    assert first.fit_profile_["matrix_reused"] is False
    assert second.fit_profile_["matrix_reused"] is True
    # the same rows under another name: built afresh, and the model is the same
    copy = DataConnector.from_parquet(write_parquet(frame.iloc[:2400], tmp_path / "copy.parquet"))
    fresh = fit(copy, 4)
    assert fresh.fit_profile_["matrix_reused"] is False
    assert (second.predict(frame) == fresh.predict(frame)).all()
    assert second.get_eval_results() == fresh.get_eval_results()
    assert not (first.predict(frame) == second.predict(frame)).all()
    # a parameter that shapes the bins builds the matrix again
    assert fit(copy, 4, max_bin=15).fit_profile_["matrix_reused"] is False


def test_a_rewritten_file_is_read_again(ray_cluster, tmp_path):
    from trainflow.data import DataConnector

    frame = regression_frame(1200, seed=8)
    path = write_parquet(frame, tmp_path / "t.parquet")
    conn = DataConnector.from_parquet(path)
    before = XGBEstimator(n_estimators=4).fit(conn, FEATURES, "y")
    changed = frame.assign(y=frame["y"] * 10)
    write_parquet(changed, path)  # same path, new values
    est = XGBEstimator(n_estimators=4)
    after = est.fit(DataConnector.from_parquet(path), FEATURES, "y")
    assert est.fit_profile_["matrix_reused"] is False
    x = frame[FEATURES].to_numpy()
    assert abs(after.inplace_predict(x).mean()) > 5 * abs(before.inplace_predict(x).mean())


# ------------------------------------------------------------------------------- two raylets
MULTI_NODE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import ray
    from ray.cluster_utils import Cluster

    out = sys.argv[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)

    from tests.conftest import regression_frame
    from trainflow.data.rank import current_rank_and_world
    from trainflow.distributors.lightgbm import LightGBMEstimator
    from trainflow.distributors.pool import pool_stats
    from trainflow.distributors.xgboost import XGBEstimator

    import xgboost as xgb

    class Where(xgb.callback.TrainingCallback):  # rank 0 only: says where it ran
        def after_training(self, model):
            with open(out + "-rank0.json", "w") as fh:
                json.dump({"node": ray.get_runtime_context().get_node_id(),
                           "rank_world": list(current_rank_and_world())}, fh)
            return model

    frame = regression_frame(4000, seed=11)
    features = ["f0", "f1", "f2", "f3"]
    x, y = frame[features].to_numpy(), frame["y"].to_numpy()
    est = XGBEstimator(n_estimators=20, params={"max_depth": 4}, callbacks=[Where()])
    est.fit(frame, features, "y")  # default scaling: one worker per node
    plain = xgb.train({"max_depth": 4, "tree_method": "hist", "nthread": 1}, xgb.DMatrix(x, label=y), 20)
    rmse = lambda p: float(np.sqrt(np.mean((p - y) ** 2)))
    # rows sorted by a feature: each node's shard holds another range of f0, so bins must be global
    lgb = LightGBMEstimator(n_estimators=20).fit(frame.sort_values("f0").reset_index(drop=True), features, "y")
    import lightgbm
    plain_lgb = lightgbm.train({"objective": "regression", "verbosity": -1, "num_threads": 1},
                               lightgbm.Dataset(x, label=y), 20)
    import time
    deadline = time.monotonic() + 30
    while pool_stats()["busy"] and time.monotonic() < deadline:  # leases come back asynchronously
        time.sleep(0.05)
    result = {"workers": est.placement_.num_workers, "rmse": rmse(est.get_booster().inplace_predict(x)),
              "plain_rmse": rmse(plain.inplace_predict(x)), "lgb_rmse": rmse(lgb.predict(x)), "plain_lgb_rmse": rmse(plain_lgb.predict(x)),
              "pool": pool_stats(), "nodes": len([n for n in ray.nodes() if n["Alive"]])}
    with open(out, "w") as fh:
        json.dump(result, fh)
    ray.shutdown()
    cluster.shutdown()
    """
)


@pytest.mark.slow
def test_boosting_on_two_raylets_trains_one_warm_worker_per_node(tmp_path):
    """2 raylets × 1 CPU: default scaling puts one worker on each node (the placement group's
    bundles, each leased a pool worker on its node), and the model is as good as one process's."""
    out = tmp_path / "multi.json"
    env = dict(os.environ, RAY_TMPDIR=tempfile.mkdtemp(prefix="tfray-"))
    env.pop("RAY_ADDRESS", None)
    subprocess.run([sys.executable, "-c", MULTI_NODE, str(out)], check=True, env=env, timeout=600,
                   cwd=os.path.dirname(os.path.dirname(__file__)))
    result = json.loads(out.read_text())
    rank0 = json.loads((tmp_path / "multi.json-rank0.json").read_text())
    assert result["nodes"] == 2 and result["workers"] == 2
    assert rank0["rank_world"] == [0, 2]
    assert result["pool"] == {"workers": 2, "busy": 0, "idle": 2, "nodes": 2}  # one warm worker per node
    assert result["rmse"] <= 1.02 * result["plain_rmse"], result
    assert result["lgb_rmse"] <= 1.02 * result["plain_lgb_rmse"], result


def test_a_bounded_wait_on_an_actor_task_ends_in_a_resource_error(ray_cluster):
    """Ray refuses force-cancelling an actor's task; the timeout must still say what was awaited."""
    import threading

    from trainflow.errors import ResourceError
    from trainflow.waiting import bounded_get

    @ray_cluster.remote(num_cpus=0)
    class Stuck:
        def wait(self) -> None:
            threading.Event().wait(120)

    stuck = Stuck.remote()
    try:
        with pytest.raises(ResourceError, match="the stuck actor"):
            bounded_get(stuck.wait.remote(), "the stuck actor", timeout_s=1.0)
    finally:
        ray_cluster.kill(stuck)


def test_prewarmed_workers_are_the_ones_the_next_fit_leases(ray_cluster, tmp_path):
    from trainflow.distributors.pool import pool_stats, prewarm

    before = pool_stats()["workers"]
    prewarm(before + 1, use_gpu=False)  # one more than the pool holds: one new process starts
    deadline = time.monotonic() + 30
    while pool_stats()["workers"] < before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool_stats()["workers"] == before + 1
    XGBEstimator(n_estimators=2).fit(regression_frame(300, seed=9), FEATURES, "y")
    assert pool_stats()["workers"] == before + 1  # leased a prewarmed worker, made none
