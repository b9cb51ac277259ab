"""LightGBMEstimator on a real local Ray cluster (2 CPUs)."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.boosting_cases import CASES, ROUNDS
from trainflow.data import DataConnector
from trainflow.distributors.lightgbm import LightGBMEstimator, LightGBMScalingConfig
from trainflow.errors import ConfigError, DataError

FEATURES = ["f0", "f1", "f2", "f3", "noise"]


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


@pytest.fixture(scope="module")
def sorted_train():
    # sorted by f0: worker 0 holds only f0 < 0, worker 1 only f0 > 0. A fit that kept one worker's
    # rows, or that took f0's bin boundaries from one worker's rows, fails badly on the other half.
    return CASES["lightgbm"]().train()


@pytest.fixture(scope="module")
def holdout():
    return CASES["lightgbm"]().holdout()


@pytest.fixture(scope="module")
def two_worker_fit(two_worker_fits):
    """The contract suite's 2-worker fit of sorted_train (eval on holdout, progress every 10 rounds)."""
    fit = two_worker_fits(CASES["lightgbm"]())
    return fit.estimator, fit.booster, fit.lines


def test_eval_history_is_global_and_progress_reaches_the_caller(two_worker_fit, sorted_train, holdout):
    est, booster, lines = two_worker_fit
    results = est.get_eval_results()
    assert set(results) == {"train", "eval"}
    assert set(results["train"]) == {"rmse"} and set(results["eval"]) == {"rmse"}
    assert len(results["train"]["rmse"]) == ROUNDS and len(results["eval"]["rmse"]) == ROUNDS
    assert results["eval"]["rmse"][-1] < results["eval"]["rmse"][0] / 3
    # metrics over all workers' rows, not rank 0's shard
    train_rmse = _rmse(booster.predict(sorted_train[FEATURES].to_numpy(np.float32)), sorted_train["y"])
    assert results["train"]["rmse"][-1] == pytest.approx(train_rmse, rel=1e-4)
    assert results["eval"]["rmse"][-1] == pytest.approx(_rmse(est.predict(holdout), holdout["y"]), rel=1e-4)
    rounds = [int(line.split("]")[0].lstrip("[")) for line in lines]
    assert rounds == [1, 10, 20, 30, 40]
    assert lines[-1] == (f"[40]  train-rmse: {results['train']['rmse'][-1]:.6g}  "
                         f"eval-rmse: {results['eval']['rmse'][-1]:.6g}")


def test_gain_importance_ranks_informative_features_above_noise(two_worker_fit):
    _, booster, _ = two_worker_fit
    gain = dict(zip(booster.feature_name(), booster.feature_importance(importance_type="gain"), strict=True))
    assert list(gain) == FEATURES
    assert all(gain[f] > 0 for f in ("f0", "f1", "f2", "f3"))
    assert min(gain["f0"], gain["f1"]) > 20 * gain["noise"]


def test_params_win_over_constructor_arguments(ray_cluster, holdout):
    assert LightGBMEstimator(n_estimators=50, params={"n_estimators": 9}).plan()[2] == 9
    # LightGBM's own names count as well
    est = LightGBMEstimator(n_estimators=50, objective="regression",
                            params={"num_iterations": 7, "objective": "regression_l1", "num_leaves": 4})
    booster = est.fit(holdout, FEATURES, "y")
    assert booster.num_trees() == 7
    assert booster.dump_model()["objective"].startswith("regression_l1")
    assert list(est.get_eval_results()["train"]) == ["l1"]  # the objective's own metric, LightGBM's name


def test_early_stopping_keeps_the_best_iteration(ray_cluster, sorted_train, holdout):
    # two workers: early stopping must see the same (global) eval metric on both, or they would stop
    # at different rounds and wait on each other
    est = LightGBMEstimator(n_estimators=300, params={"num_leaves": 63, "learning_rate": 0.9,
                                                      "min_data_in_leaf": 2, "early_stopping_rounds": 3},
                            scaling_config=LightGBMScalingConfig(num_workers=2))
    booster = est.fit(sorted_train, FEATURES, "y", eval_set=holdout)
    history = est.get_eval_results()["eval"]["rmse"]
    assert len(history) < 300
    best = int(np.argmin(history)) + 1
    assert est.best_iteration_ == best == booster.best_iteration
    assert len(history) == best + 3
    assert booster.num_trees() == best  # the returned model predicts at the best iteration
    assert _rmse(est.predict(holdout), holdout["y"]) == pytest.approx(history[best - 1], rel=1e-4)


def _categorical_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijkl"))
    effect = dict(zip(letters, rng.permutation(len(letters)).astype(float), strict=True))
    cat = rng.choice(letters, rows)
    x = rng.uniform(-1, 1, rows)
    y = np.array([effect[c] for c in cat]) + x + rng.normal(0, 0.05, rows)
    return pd.DataFrame({"city": cat, "x": x, "y": y})


def test_string_and_dictionary_columns_train_as_categoricals(ray_cluster):
    train = _categorical_frame(3000, seed=3).sort_values("city", ignore_index=True)  # shards see other cities
    # Arrow-backed pandas dtypes: a dictionary column for training, a plain string column for scoring
    train["city"] = train["city"].astype(pd.ArrowDtype(pa.dictionary(pa.int32(), pa.string())))
    train["x"] = train["x"].astype("double[pyarrow]")
    test = _categorical_frame(500, seed=3)
    test["city"] = test["city"].astype("string[pyarrow]")

    est = LightGBMEstimator(n_estimators=30, params={"num_leaves": 15, "min_data_in_leaf": 5},
                            scaling_config=LightGBMScalingConfig(num_workers=2))
    booster = est.fit(train, ["city", "x"], "y", eval_set=test)
    assert booster.params["categorical_feature"] == [0]
    assert booster.pandas_categorical == [list("abcdefghijkl")]
    assert _rmse(est.predict(test), test["y"]) < 0.3  # the city effect spans 0..11

    # the native model is self-describing: LightGBM's pandas path maps the same categories
    native = test[["city", "x"]].astype({"city": "category", "x": "float64"})
    np.testing.assert_allclose(booster.predict(native), est.predict(test), rtol=1e-6, atol=1e-6)

    unseen = pd.DataFrame({"city": ["zz", None], "x": [0.0, 0.0]})
    assert np.isfinite(est.predict(unseen)).all()  # unknown/missing categories predict as missing

    with pytest.raises(DataError, match="categorical"):
        est.predict(pd.DataFrame({"city": [1.0], "x": [0.0]}))


def test_lightgbms_own_off_values_for_early_stopping_are_accepted(ray_cluster, holdout):
    """early_stopping_round <= 0 turns it off in LightGBM: not refused for a missing eval set
    (the refusal itself is in the contract suite)."""
    booster = LightGBMEstimator(n_estimators=2, params={"early_stopping_round": 0}).fit(holdout, FEATURES, "y")
    assert booster.num_trees() == 2


def test_tiny_eval_set_with_more_workers_than_rows(ray_cluster, holdout):
    one = holdout.iloc[:1]
    est = LightGBMEstimator(n_estimators=5, params={"num_leaves": 4},
                            scaling_config=LightGBMScalingConfig(num_workers=2))
    est.fit(holdout, FEATURES, "y", eval_set=one)
    assert est.get_eval_results()["eval"]["rmse"][-1] == pytest.approx(
        abs(float(est.predict(one)[0]) - float(one["y"].iloc[0])), rel=1e-4)


def test_serial_tree_learner_on_several_workers_is_refused(ray_cluster):
    with pytest.raises(ConfigError, match="tree_learner='feature'"):
        LightGBMEstimator(params={"tree_learner": "feature"},
                          scaling_config=LightGBMScalingConfig(num_workers=2)).plan()


# ------------------------------------------------------------------------ concurrency and GPUs
CLUSTER_PROBE = textwrap.dedent(
    """
    import json, sys, threading, time
    import numpy as np
    from tests.conftest import regression_frame
    from trainflow.cluster import ensure_cluster
    from trainflow.distributors.lightgbm import LightGBMEstimator, LightGBMScalingConfig
    from trainflow.errors import ResourceError

    out = {}
    ensure_cluster(num_cpus=4, num_gpus=2)  # logical CPUs/GPUs: room for two 2-worker fits at once

    # -- two 2-worker fits at the same time, each with its own LightGBM network
    class Watch:
        def __init__(self, path):
            self.path = path  # resolved here: the callback runs in a Ray worker
        def __call__(self, env):  # rank 0 only; records when the network was in use and its ports
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"t": time.time(), "machines": env.params["machines"]}) + "\\n")
            time.sleep(0.05)

    frame = regression_frame(3000, seed=4)
    gate = threading.Barrier(2)
    def run(name):
        est = LightGBMEstimator(n_estimators=40, params={"num_leaves": 7},
                                callbacks=[Watch(f"{sys.argv[1]}/{name}.jsonl")],
                                scaling_config=LightGBMScalingConfig(num_workers=2, num_cpu_per_worker=1,
                                                                     use_gpu=False))
        gate.wait()
        try:
            est.fit(frame, ["f0", "f1", "f2", "f3"], "y")
            out[name] = {"rmse": est.get_eval_results()["train"]["rmse"][-1]}
        except Exception as exc:
            out[name] = {"error": repr(exc)}
    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    [t.start() for t in threads]
    [t.join() for t in threads]

    # -- GPUs: use_gpu=None on a cluster with 2 GPUs
    est = LightGBMEstimator()
    placement, params, _ = est.plan()
    out["gpu_plan"] = {"workers": placement.num_workers, "cpus": placement.cpus_per_worker,
                       "gpu": placement.use_gpu, "device_type": params.get("device_type")}
    start = time.time()
    try:
        est.fit(frame, ["f0", "f1"], "y")
        out["gpu_fit"] = "trained"
    except ResourceError as exc:
        out["gpu_fit"] = str(exc)
    out["gpu_seconds"] = time.time() - start
    cpu = LightGBMEstimator(scaling_config=LightGBMScalingConfig(use_gpu=False)).plan()
    out["cpu_plan"] = {"gpu": cpu[0].use_gpu, "device_type": cpu[1].get("device_type")}
    with open(f"{sys.argv[1]}/out.json", "w") as fh:
        json.dump(out, fh)
    """
)


@pytest.fixture(scope="module")
def cluster_probe(tmp_path_factory):
    """One separate process with its own local Ray (4 logical CPUs, 2 logical GPUs)."""
    folder = tmp_path_factory.mktemp("lgb-probe")
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    subprocess.run([sys.executable, "-c", CLUSTER_PROBE, str(folder)], check=True, env=env, timeout=420,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return folder, json.loads((folder / "out.json").read_text())


def test_two_concurrent_fits_use_their_own_ports(cluster_probe):
    folder, out = cluster_probe
    assert "error" not in out["a"] and "error" not in out["b"], out
    # same data and params: both fits must reach the same model (y's spread is about 2)
    assert out["a"]["rmse"] == pytest.approx(out["b"]["rmse"], rel=1e-6) and out["a"]["rmse"] < 0.8
    calls = {n: [json.loads(line) for line in (folder / f"{n}.jsonl").read_text().splitlines()]
             for n in ("a", "b")}
    assert all(len(c) == 40 for c in calls.values())
    # both networks were up at the same time ...
    spans = {n: (c[0]["t"], c[-1]["t"]) for n, c in calls.items()}
    assert max(s[0] for s in spans.values()) < min(s[1] for s in spans.values()), spans
    # ... on different ports
    ports = {n: {m.rsplit(":", 1)[1] for m in c[0]["machines"].split(",")} for n, c in calls.items()}
    assert len(ports["a"]) == len(ports["b"]) == 2 and not ports["a"] & ports["b"], ports


def test_gpu_placement_and_clear_error_without_gpu_support(cluster_probe):
    _, out = cluster_probe
    assert out["gpu_plan"] == {"workers": 2, "cpus": 2, "gpu": True, "device_type": "gpu"}
    assert out["cpu_plan"] == {"gpu": False, "device_type": None}
    # this machine's GPUs are logical: LightGBM's GPU learner finds no device and says so before training
    assert "device_type='gpu'" in out["gpu_fit"] and "use_gpu=False" in out["gpu_fit"], out["gpu_fit"]
    assert out["gpu_seconds"] < 60


@contextlib.contextmanager
def _busy_cores(count: int):
    """`count` busy-looping processes (each takes a core) for the block; ended by their pids."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)


def test_rendezvous_of_a_restarted_group_ignores_the_lost_groups_half_done_exchange(ray_cluster):
    """A lost group's call ('metrics-28' from its rank 1) arrives after the restarted group's first
    call, and another after both: with both cores busy (Ray then reorders calls to an async actor
    freely), the new group still completes its own exchange and the stale calls fail at once."""
    import ray

    from trainflow.distributors.lightgbm import _rendezvous_cls
    from trainflow.errors import TrainingError

    actor = _rendezvous_cls().remote(2)
    try:
        lost = ray.get(actor.next_generation.remote(), timeout=60)
        half_done = actor.allgather.remote(lost, "metrics-28", 0, "old-0")  # its rank 1 never came
        new = ray.get(actor.next_generation.remote(), timeout=60)
        assert new > lost
        with _busy_cores(2):
            fresh = [actor.allgather.remote(new, "metrics-28", 0, "new-0")]
            stale = [actor.allgather.remote(lost, "metrics-28", 1, "old-1")]
            fresh.append(actor.allgather.remote(new, "metrics-28", 1, "new-1"))
            stale.append(actor.allgather.remote(lost, "metrics-28", 1, "old-1"))
            assert ray.get(fresh, timeout=60) == [["new-0", "new-1"], ["new-0", "new-1"]]
            for ref in [half_done, *stale]:
                with pytest.raises(TrainingError, match=r"'metrics-28' exchange of worker group generation"):
                    ray.get(ref, timeout=60)
    finally:
        ray.kill(actor)


def test_a_peer_that_never_comes_ends_in_a_clear_error(ray_cluster):
    """A worker's wait at an exchange is bounded: the error names the exchange and the timeout."""
    import ray

    from trainflow.distributors.lightgbm import _Peers, _rendezvous_cls
    from trainflow.errors import TrainingError

    actor = _rendezvous_cls().remote(2)
    try:
        # rank 1 of a group whose rank 0 took the generation number, then vanished
        peers = _Peers(actor, 1, ray.get(actor.next_generation.remote(), timeout=60), timeout_s=2.0)
        with pytest.raises(TrainingError, match=r"rank 1 gave up after 2s waiting for every worker at "
                                                r"LightGBM's 'rows' exchange.*TRAINFLOW_TASK_TIMEOUT_S") as err:
            peers.allgather("rows", 10)
        assert err.value.transient  # a restarted worker group may get past it
    finally:
        ray.kill(actor)


def test_a_category_scan_on_a_held_cluster_ends_in_a_clear_error(ray_cluster, monkeypatch):
    """The cluster's CPUs held by another job: the driver's wait for its scan tasks is bounded, and
    the error says what it waited for and why it may wait."""
    import time

    import ray

    from trainflow.distributors.ingest import collect_categories
    from trainflow.errors import ResourceError

    @ray.remote(num_cpus=2)
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.remote()
    try:
        assert ray.get(holder.ready.remote(), timeout=120)  # both CPUs are now held
        monkeypatch.setenv("TRAINFLOW_TASK_TIMEOUT_S", "3")
        start = time.monotonic()
        with pytest.raises(ResourceError, match=r"Gave up after 3s waiting for the category scan of 'city'.*"
                                                r"CPUs may be held by other work.*TRAINFLOW_TASK_TIMEOUT_S"):
            collect_categories([DataConnector.from_dataframe(_categorical_frame(200, 1))], ["city"])
        assert time.monotonic() - start < 30
    finally:
        ray.kill(holder)
