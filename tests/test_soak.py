"""Soak (`make soak`): 20 consecutive pipeline runs in one process leak no files, actors, threads or
child processes. Not in the default run: it takes several minutes."""
from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNS, WARMUP = 20, 3


def _children() -> int:
    me, count = str(os.getpid()), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                ppid = fh.read().rsplit(")", 1)[1].split()[1]
        except OSError:
            continue
        count += ppid == me
    return count


def _alive_actors() -> int:
    from ray._private import state

    return sum(1 for a in state.state.actor_table(None).values() if a.get("State") == "ALIVE")


def _snapshot() -> dict[str, int]:
    return {"open_files": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
            "os_threads": len(os.listdir("/proc/self/task")), "child_processes": _children(),
            "ray_actors": _alive_actors()}


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_twenty_pipeline_runs_leak_nothing(ray_cluster, warehouse, tmp_path, monkeypatch):
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import training_pipeline
    from trainflow.spec import parse_spec

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    spec = yaml.safe_load((ROOT / "deployments/specs/credit_risk_xgboost.yaml").read_text())
    spec["data"]["train"]["database"] = spec["data"]["eval"]["database"] = str(warehouse)
    spec["trainer"]["n_estimators"] = 20
    spec["register"]["model_name"] = "soak"
    samples = []
    with prefect_test_harness(server_startup_timeout=120):
        for i in range(RUNS):
            state = training_pipeline(parse_spec(copy.deepcopy(spec)), return_state=True)
            assert state.is_completed(), state.message
            samples.append(_snapshot())
    warm, last = samples[WARMUP - 1], samples[-1]
    growth = {k: last[k] - warm[k] for k in warm}
    report = {"runs": RUNS, "after_warmup": warm, "after_last": last, "growth": growth, "samples": samples}
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "soak.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({"after_warmup": warm, "after_last": last, "growth": growth}))
    assert growth["child_processes"] <= 0 and growth["ray_actors"] <= 0, report
    assert growth["open_files"] <= 4 and growth["threads"] <= 2 and growth["os_threads"] <= 4, report
