"""XGBEstimator on a real local Ray cluster (2 CPUs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest
import xgboost as xgb

from tests.conftest import regression_frame
from trainflow.data import DataConnector, connect
from trainflow.distributors import runner
from trainflow.distributors.xgboost import XGBEstimator, XGBScalingConfig
from trainflow.errors import ConfigError, DataError, DataSourceNotFound, ResourceError

FEATURES = ["f0", "f1", "f2", "f3"]
PARAMS = {"objective": "reg:squarederror", "max_depth": 5, "learning_rate": 0.2}


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


@pytest.fixture(scope="module")
def sorted_train():
    # sorted by f0: worker 0 sees only low f0, worker 1 only high f0; a fit that kept one worker's
    # rows would fail badly on the other half
    return regression_frame(6000, seed=1).sort_values("f0", ignore_index=True)


@pytest.fixture(scope="module")
def holdout():
    return regression_frame(2000, seed=2)


def test_params_win_over_constructor_arguments(ray_cluster, holdout):
    est = XGBEstimator(n_estimators=50, objective="reg:squarederror",
                       params={"n_estimators": 7, "objective": "reg:absoluteerror", "max_depth": 2})
    booster = est.fit(holdout, FEATURES, "y")
    assert booster.num_boosted_rounds() == 7
    config = json.loads(booster.save_config())
    assert config["learner"]["objective"]["name"] == "reg:absoluteerror"
    assert "mae" in est.get_eval_results()["train"]


def test_user_callbacks_run_on_rank_zero_only(ray_cluster, holdout, tmp_path):
    log = tmp_path / "calls.txt"

    class Recorder(xgb.callback.TrainingCallback):
        def __init__(self, path):
            self.path = str(path)

        def after_iteration(self, model, epoch, evals_log):
            from trainflow.data.rank import current_rank_and_world

            with open(self.path, "a") as fh:
                fh.write(f"{current_rank_and_world()[0]} {epoch}\n")
            return False

    est = XGBEstimator(n_estimators=6, params={"max_depth": 2}, callbacks=[Recorder(log)],
                       scaling_config=XGBScalingConfig(num_workers=2))
    est.fit(holdout, FEATURES, "y")
    calls = [line.split() for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == ["0"] * 6
    assert [int(c[1]) for c in calls] == list(range(6))


def test_early_stopping_keeps_best_iteration(ray_cluster, sorted_train, holdout):
    est = XGBEstimator(n_estimators=500, params={"max_depth": 6, "learning_rate": 0.8,
                                                  "early_stopping_rounds": 3})
    booster = est.fit(sorted_train, FEATURES, "y", eval_set=holdout)
    assert booster.num_boosted_rounds() < 500
    assert est.best_iteration_ is not None and est.best_iteration_ < booster.num_boosted_rounds()


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "make, cols, label, error, match",
    [
        (lambda wh, tmp: connect(str(wh)).table("MISSING_TABLE"), ["age"], "default_risk",
         DataSourceNotFound, "MISSING_TABLE"),
        (lambda wh, tmp: DataConnector.from_parquet(str(tmp / "absent.parquet")), ["age"], "default_risk",
         DataSourceNotFound, "absent.parquet"),
        (lambda wh, tmp: connect(str(wh)).table("TRAINING_DATA"), ["age", "salary"], "default_risk",
         DataError, "salary"),
        (lambda wh, tmp: connect(str(wh)).table("TRAINING_DATA"), ["age"], "target", DataError, "target"),
        (lambda wh, tmp: connect(str(wh)).sql("SELECT * FROM TRAINING_DATA WHERE age < 0"), ["age"],
         "default_risk", DataError, "no rows"),
        (lambda wh, tmp: connect(str(wh)).sql("SELECT *, 'x' || age AS code FROM TRAINING_DATA"),
         ["age", "code"], "default_risk", DataError, "'code'.*not numeric"),
        (lambda wh, tmp: connect(str(wh)).table("TRAINING_DATA"), ["age", "default_risk"], "default_risk",
         ConfigError, "also in input_cols"),
    ],
    ids=["missing-table", "missing-file", "missing-feature", "missing-label", "empty", "non-numeric",
         "label-as-feature"],
)
def test_bad_input_fails_fast_with_named_culprit(ray_cluster, warehouse, tmp_path, make, cols, label,
                                                 error, match):
    start = time.perf_counter()
    with pytest.raises(error, match=match):
        XGBEstimator(n_estimators=2).fit(make(warehouse, tmp_path), cols, label)
    assert time.perf_counter() - start < 10  # refused before any worker starts


@pytest.mark.parametrize("bad", [None, float("nan")], ids=["null", "nan"])
def test_missing_labels_are_refused(ray_cluster, holdout, bad):
    frame = holdout.copy()
    frame.loc[[3, 17], "y"] = bad
    with pytest.raises(DataError, match=r"Label column 'y'.*2 null/NaN"):
        XGBEstimator(n_estimators=2).fit(frame, FEATURES, "y")


def test_infinite_or_overflowing_features_are_named(ray_cluster, holdout):
    frame = holdout.copy()
    frame.loc[[4, 8], "f2"] = [np.inf, 1e300]  # 1e300 overflows float32
    with pytest.raises(DataError, match=r"'f2' has 2 infinite"):
        XGBEstimator(n_estimators=2).fit(frame, FEATURES, "y")


def test_fewer_rows_than_workers_is_refused(ray_cluster, holdout):
    with pytest.raises(DataError, match="1 row.*fewer than the 2 workers"):
        XGBEstimator(n_estimators=2, scaling_config=XGBScalingConfig(num_workers=2)).fit(holdout.head(1), FEATURES, "y")


def test_eval_set_smaller_than_the_worker_count(ray_cluster, holdout):
    one = holdout.iloc[:1]  # one worker's eval shard is empty
    est = XGBEstimator(n_estimators=3, scaling_config=XGBScalingConfig(num_workers=2))
    est.fit(holdout, FEATURES, "y", eval_set=one)
    assert est.get_eval_results()["eval"]["rmse"][-1] == pytest.approx(
        abs(float(est.predict(one)[0]) - float(one["y"].iloc[0])), rel=1e-4)


def test_native_worker_errors_are_summarised():
    text = ("[05:50:01] /workspace/src/learner.cc:1523: Check failed: labels are not in [0, 1]\n"
            "Stack trace:\n  [bt] (0) /lib/libxgboost.so(+0x1) [0x1]\n  [bt] (1) /lib/libffi.so.8(ffi_call)")
    assert runner.summary_line(text) == "Check failed: labels are not in [0, 1]"


@pytest.mark.parametrize(
    "scaling, match",
    [
        (XGBScalingConfig(num_workers=5), "Cannot place 5 worker"),
        (XGBScalingConfig(num_workers=1, num_cpu_per_worker=8), "8 CPU"),
        (XGBScalingConfig(use_gpu=True), "no GPUs"),
        (XGBScalingConfig(num_workers=0), "num_workers=0"),
        ({"num_workers": 2}, r"scaling_config=\{'num_workers': 2\} is a dict.*XGBScalingConfig\(num_workers=2\)"),
    ],
    ids=["workers", "cpus", "gpus", "zero", "a-dict"],
)
def test_unsatisfiable_resources_fail_within_seconds(ray_cluster, holdout, scaling, match):
    start = time.perf_counter()
    with pytest.raises((ResourceError, ConfigError), match=match):
        XGBEstimator(n_estimators=2, scaling_config=scaling).fit(holdout, FEATURES, "y")
    assert time.perf_counter() - start < 10


# ------------------------------------------------------------------------------------ GPU placement
GPU_PROBE = textwrap.dedent(
    """
    import json, os, sys
    import ray
    from trainflow.cluster import ensure_cluster
    from trainflow.distributors.pool import reserve
    from trainflow.distributors.xgboost import XGBEstimator, XGBScalingConfig

    out = sys.argv[1]
    ensure_cluster(num_cpus=4, num_gpus=2)  # logical GPUs: Ray assigns ids, no CUDA runs

    def probe(config, rank):
        with open(os.path.join(config["out"], f"rank{rank}.json"), "w") as fh:
            json.dump({"gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                       "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                       "device": config["params"].get("device"), "nthread": config["params"]["nthread"]}, fh)

    est = XGBEstimator(params={"max_depth": 3})
    placement, params, rounds = est.plan()
    with open(os.path.join(out, "plan.json"), "w") as fh:
        json.dump({"workers": placement.num_workers, "cpus": placement.cpus_per_worker,
                   "gpu": placement.use_gpu}, fh)
    # the workers a fit with this placement trains on
    with reserve(placement.num_workers, placement.cpus_per_worker, placement.use_gpu, "gpu-probe") as held:
        with held.gang() as gang:
            ray.get([w.run.remote(probe, {"out": out, "params": params}, r) for r, w in enumerate(gang.workers)],
                    timeout=120)
    cpu_only = XGBEstimator(scaling_config=XGBScalingConfig(use_gpu=False)).plan()
    with open(os.path.join(out, "cpu_plan.json"), "w") as fh:
        json.dump({"gpu": cpu_only[0].use_gpu, "device": cpu_only[1].get("device")}, fh)

    from trainflow.distributors.ingest import remote

    def visible_gpus():
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    with open(os.path.join(out, "cpu_task.json"), "w") as fh:  # prediction/scan tasks reserve no GPU
        json.dump({"cuda_visible": ray.get(remote(visible_gpus).remote())}, fh)
    """
)


def test_gpu_placement_on_logical_gpus(tmp_path):
    """use_gpu=None on a cluster with 2 GPUs: one worker per GPU, distinct ids, device=cuda."""
    env = dict(os.environ, RAY_ADDRESS="")
    env.pop("RAY_ADDRESS")
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="tfray-")  # isolated from the session cluster
    subprocess.run([sys.executable, "-c", GPU_PROBE, str(tmp_path)], check=True, env=env, timeout=240)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan == {"workers": 2, "cpus": 2, "gpu": True}
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["device"] == "cuda" and r["nthread"] == 2 for r in ranks)
    assert all(len(r["gpu_ids"]) == 1 for r in ranks)
    assert ranks[0]["gpu_ids"] != ranks[1]["gpu_ids"]
    assert {r["cuda_visible"] for r in ranks} == {r["gpu_ids"][0] for r in ranks}
    assert json.loads((tmp_path / "cpu_plan.json").read_text()) == {"gpu": False, "device": None}
    # ... and must not see one either (a GPU build of XGBoost would open a CUDA context on it)
    assert json.loads((tmp_path / "cpu_task.json").read_text()) == {"cuda_visible": ""}
