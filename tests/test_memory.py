"""Worker memory modes: an XGBoost fit from external memory (binned pages in a cache on node-local
scratch disk) trains the model the in-memory fit trains, leaves no cache behind, and survives a killed
worker; frameworks without the mode refuse it before any worker starts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.boosting_cases import xgb_kill_at
from tests.conftest import fit_within, regression_frame
from trainflow.distributors.lightgbm import LightGBMEstimator
from trainflow.distributors.memory import choose_memory, worker_memory
from trainflow.distributors.xgboost import XGBEstimator, XGBScalingConfig
from trainflow.errors import ConfigError, ResourceError
from trainflow.spec import SpecError

FEATURES = ["f0", "f1", "f2", "f3"]
ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"max_depth": 4, "learning_rate": 0.2}


def scratch_watch(out: str, at: int = 3):
    """A callback that records (on rank 0, after round `at`) the files under $TRAINFLOW_SCRATCH's cache
    folders, as the worker sees them mid-fit. Built in a function: Ray ships it by value."""
    import os

    import xgboost as xgb

    class Watch(xgb.callback.TrainingCallback):
        trainflow_resumable = True

        def __init__(self, root: str):
            self.root = root

        def after_iteration(self, model, epoch, evals_log) -> bool:
            if model.num_boosted_rounds() == at:
                found = [os.path.join(d, f) for d, _, files in os.walk(self.root) for f in files]
                with open(out, "w") as fh:
                    fh.write("\n".join(f"{p} {os.path.getsize(p)}" for p in found))
            return False

    return Watch


@pytest.fixture(scope="module")
def data():
    return regression_frame(6000, seed=31), regression_frame(1500, seed=32)


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "scratch"
    monkeypatch.setenv("TRAINFLOW_SCRATCH", str(root))  # read by the fit, passed to its workers
    return root


def _fit(data, memory: str, workers: int = 2, **kwargs) -> XGBEstimator:
    train, holdout = data
    est = XGBEstimator(n_estimators=20, params=PARAMS, scaling_config=XGBScalingConfig(num_workers=workers),
                       memory=memory, **kwargs)
    fit_within(300, est.fit, train, FEATURES, "y", eval_set=holdout)
    return est


def test_an_external_memory_fit_trains_from_its_scratch_cache_and_removes_it(ray_cluster, data, scratch, tmp_path):
    seen = tmp_path / "seen.txt"
    external = _fit(data, "external", callbacks=[scratch_watch(str(seen))(str(scratch))])
    in_memory = _fit(data, "in_memory")
    files = [line.split() for line in seen.read_text().splitlines()]
    # mid-fit, rank 0's cache folder held xgboost's pages for the train and eval matrices
    assert files and all("/trainflow-extmem-" in path for path, _ in files), files
    assert {Path(path).name.split("-")[0] for path, _ in files} >= {"train", "eval"}  # e.g. train-r0-0x...
    assert sum(int(size) for _, size in files) > 0
    assert list(scratch.iterdir()) == []  # and both workers removed theirs after the fit
    assert external.fit_profile_["memory"] == "external" and in_memory.fit_profile_["memory"] == "in_memory"
    holdout = data[1]
    np.testing.assert_allclose(external.predict(holdout), in_memory.predict(holdout), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(external.get_eval_results()["eval"]["rmse"],
                               in_memory.get_eval_results()["eval"]["rmse"], rtol=1e-5)


def test_low_memory_streams_the_shard_into_the_same_matrix_and_model(ray_cluster, data):
    """memory='low' reads the shard again on each of xgboost's passes instead of holding it: the same bins,
    so the same model, and a later in-memory fit on the same data reuses the matrix it built."""
    low, in_memory = _fit(data, "low", workers=1), _fit(data, "in_memory", workers=1)
    assert low.fit_profile_["memory"] == "low" and not low.fit_profile_["matrix_reused"]
    holdout = data[1]
    np.testing.assert_array_equal(low.predict(holdout), in_memory.predict(holdout))


def test_a_killed_external_memory_worker_resumes_and_its_cache_is_swept(ray_cluster, data, scratch, tmp_path):
    """Rank 0 is SIGKILLed at round 12 (no `finally` runs): the restarted attempt resumes from round 10
    and sweeps the dead worker's cache folder; none is left when the fit ends."""
    marker = tmp_path / "killed"
    resumed = _fit(data, "external", callbacks=[xgb_kill_at(12, str(marker))], checkpoint_every=5)
    assert len(marker.read_text().split()) == 1  # it really was killed
    assert resumed.get_booster().num_boosted_rounds() == 20
    assert list(scratch.iterdir()) == []
    whole = _fit(data, "in_memory")
    holdout = data[1]
    np.testing.assert_allclose(resumed.predict(holdout), whole.predict(holdout), rtol=1e-4, atol=1e-4)


def test_memory_modes_a_framework_lacks_are_refused_before_any_worker_starts(ray_cluster, data, monkeypatch):
    train, _ = data
    with pytest.raises(ConfigError, match=r"memory='external' is not available for LightGBMEstimator "
                                          r"\(accepted: in_memory\); memory external trains with xgboost"):
        LightGBMEstimator(n_estimators=2, memory="external").fit(train, FEATURES, "y")
    with pytest.raises(ConfigError, match=r"memory='disk' is not a memory mode \(accepted: auto, in_memory, low, external\)"):
        XGBEstimator(n_estimators=2, memory="disk").fit(train, FEATURES, "y")
    with pytest.raises(ConfigError, match=r"memory='low' is not available for LightGBMEstimator .*; memory low trains with xgboost"):
        LightGBMEstimator(n_estimators=2, memory="low").fit(train, FEATURES, "y")
    monkeypatch.setenv("TRAINFLOW_SCRATCH", "s3://bucket/cache")
    with pytest.raises(ConfigError, match=r"TRAINFLOW_SCRATCH='s3://bucket/cache' is a URI.*local path"):
        XGBEstimator(n_estimators=2, memory="external").fit(train, FEATURES, "y")

    from trainflow.spec import parse_spec

    spec = yaml.safe_load((ROOT / "deployments" / "specs" / "credit_risk_lightgbm.yaml").read_text())
    spec["trainer"]["memory"] = "external"
    with pytest.raises(SpecError, match=r"trainer.memory: 'external' is not available for lightgbm "
                                        r"\(accepted: in_memory\)"):
        parse_spec(spec)


def test_the_pipeline_trains_and_registers_an_external_memory_fit(ray_cluster, warehouse, scratch, tmp_path,
                                                                  monkeypatch):
    from mlflow import MlflowClient

    from trainflow.pipeline import evaluate, fit, load, register
    from trainflow.pipeline import plan as plan_step
    from trainflow.spec import parse_spec

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    raw = yaml.safe_load((ROOT / "deployments" / "specs" / "credit_risk_xgboost.yaml").read_text())
    raw["data"]["train"]["database"] = raw["data"]["eval"]["database"] = str(warehouse)
    raw["trainer"].update(n_estimators=20, memory="external")
    raw["register"]["model_name"] = "external-memory"
    raw.pop("schedule")
    spec = parse_spec(raw)
    data = load.load(spec)
    plan = plan_step.plan(spec, data)
    outcome = fit.fit(spec, data, plan)
    assert outcome.result.fit_profile_["memory"] == "external" and list(scratch.iterdir()) == []
    metrics = evaluate.evaluate(spec, outcome, data)
    model = register.register(spec, outcome, metrics, data)
    assert MlflowClient().get_run(model.run_id).data.params["memory"] == "external"

    raw["trainer"]["memory"] = "in_memory"
    baseline = parse_spec(raw)
    in_memory = evaluate.evaluate(baseline, fit.fit(baseline, data, plan), data)
    assert metrics["rmse"] == pytest.approx(in_memory["rmse"], rel=0.01)  # the bound: within 1%


# ------------------------------------------------------------------ the auto policy (no cluster)
GIB = 1 << 30


def test_auto_trains_in_memory_while_that_fits_a_worker():
    choice = choose_memory("auto", ("in_memory", "external"), shard_bytes=GIB, worker_memory=4 * GIB, scratch_free=None)
    assert choice.mode == "in_memory" and "1.0 GiB raw shard needs ~2.0 GiB; a worker has 4.0 GiB" in choice.reason


def test_auto_goes_to_external_memory_when_in_memory_would_not_fit():
    choice = choose_memory("auto", ("in_memory", "external"), shard_bytes=4 * GIB, worker_memory=6 * GIB,
                           scratch_free=100 * GIB)
    assert choice.mode == "external"
    assert choice.reason == ("a 4.0 GiB raw shard needs ~3.0 GiB (in_memory ~8.0 GiB, more than a worker's 6.0 GiB), "
                             "and ~2.4 GiB of scratch disk")


def test_auto_takes_the_first_mode_of_the_frameworks_preference_that_fits():
    xgboost = ("in_memory", "low", "external")  # the xgboost plug-in's order
    assert choose_memory("auto", xgboost, GIB, 16 * GIB, None).mode == "in_memory"
    low = choose_memory("auto", xgboost, 10 * GIB, 16 * GIB, None)  # in memory needs 20, low 13.5
    assert low.mode == "low" and low.reason.startswith("a 10.0 GiB raw shard needs ~13.5 GiB (in_memory ~20.0 GiB")
    assert choose_memory("auto", xgboost, 10 * GIB, 12 * GIB, 100 * GIB).mode == "external"  # low needs 13.5
    with pytest.raises(ResourceError, match="the scratch disk 1.0 GiB free"):  # no disk for external's cache
        choose_memory("auto", xgboost, 10 * GIB, 12 * GIB, 1 * GIB)


@pytest.mark.parametrize(("accepted", "free", "needs"), [
    (("in_memory",), None, r"in_memory ~8.0 GiB\): a worker has 6.0 GiB\. Fixes: .* or xgboost \(memory: external\)"),
    (("in_memory", "external"), 1 * GIB, r"in_memory ~8.0 GiB, external ~3.0 GiB and ~2.4 GiB of scratch disk\): a "
                                         r"worker has 6.0 GiB, the scratch disk 1.0 GiB free\. Fixes: .*TRAINFLOW_SCRATCH"),
])
def test_auto_refuses_a_shard_that_fits_neither_way_naming_the_numbers(accepted, free, needs):
    with pytest.raises(ResourceError, match=rf"shard \(4.0 GiB raw float32\) fits none of the memory modes \({needs}"):
        choose_memory("auto", accepted, shard_bytes=4 * GIB, worker_memory=6 * GIB, scratch_free=free)


def test_a_mode_the_user_sets_is_used_as_set_and_unknown_memory_fits():
    assert choose_memory("external", ("in_memory", "external"), GIB, 1.0, 0.0).mode == "external"
    assert choose_memory("auto", ("in_memory",), 100 * GIB, None, None).mode == "in_memory"


def test_a_worker_gets_its_cpus_share_of_the_smallest_node():
    assert worker_memory([(16 * GIB, 2), (8 * GIB, 4)], cpus_per_worker=2) == 4 * GIB
    assert worker_memory([(16 * GIB, 2)], cpus_per_worker=4) == 16 * GIB
    assert worker_memory([(0.0, 2)], cpus_per_worker=1) is None  # a node that reports no memory


def test_auto_refuses_before_any_worker_starts_when_no_worker_has_the_memory(ray_cluster, data, monkeypatch):
    """The cluster's real nodes, with the policy's in-memory factor raised so a small shard cannot fit:
    LightGBM (no external mode) is refused at once, naming the numbers; xgboost falls back to external."""
    import time

    from trainflow.distributors import memory

    train, holdout = data
    monkeypatch.setitem(memory.FACTORS, "in_memory", 1e9)
    monkeypatch.setitem(memory.FACTORS, "low", 1e9)
    start = time.perf_counter()
    with pytest.raises(ResourceError, match=r"fits none of the memory modes \(in_memory ~.*\): a worker has .*GiB"):
        LightGBMEstimator(n_estimators=2).fit(train, FEATURES, "y")
    assert time.perf_counter() - start < 10
    lines: list[str] = []
    est = XGBEstimator(n_estimators=3, params=PARAMS)
    fit_within(300, est.fit, train, FEATURES, "y", eval_set=holdout, verbose_eval=1, progress=lines.append)
    assert est.memory_.mode == "external" and est.fit_profile_["memory"] == "external"
    assert lines[0].startswith("worker memory: external (a ")  # said once, before the rounds
