"""`trainflow run` through the real CLI against the real per-user local Prefect server.

A trainflow error reaches the console as its message, without a stack (the stack stays in the
Prefect API's logs and shows with --debug); runs from two directories share one server.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_SPEC = ROOT / "deployments" / "specs" / "credit_risk_xgboost.yaml"
TRAINFLOW = str(Path(sys.executable).with_name("trainflow"))


def _spec(warehouse: Path, name: str, **data) -> dict:
    spec = yaml.safe_load(DEMO_SPEC.read_text())
    spec["name"] = name
    spec["register"]["model_name"] = name
    spec["data"]["train"]["database"] = spec["data"]["eval"]["database"] = str(warehouse)
    spec["trainer"]["n_estimators"] = 5
    spec.pop("schedule")
    spec["data"]["train"].update(data)
    return spec


@pytest.fixture(scope="module")
def bad_db(tmp_path_factory, warehouse) -> Path:
    path = tmp_path_factory.mktemp("bad") / "bad.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as src, duckdb.connect(str(path)) as dst:
        frame = src.execute("SELECT * FROM TRAINING_DATA").df()
        underage, nan_labels = frame.copy(), frame.copy()
        underage.loc[[2, 9], "age"] = 12
        nan_labels.loc[[5], "default_risk"] = np.nan
        for name, table in (("UNDERAGE", underage), ("NAN_LABELS", nan_labels), ("EMPTY", frame.head(0))):
            dst.register("t", table)
            dst.execute(f"CREATE TABLE {name} AS SELECT * FROM t")
            dst.unregister("t")
    return path


def _env(home: str) -> dict:
    env = dict(os.environ, TRAINFLOW_HOME=home)
    for name in ("PREFECT_API_URL", "RAY_ADDRESS", "TRAINFLOW_PROJECT"):
        env.pop(name, None)
    return env


def _api_json(url: str, body: dict) -> list:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


CASES = {
    "schema-violation": (dict(table="UNDERAGE"), "age"),
    "nan-label": (dict(table="NAN_LABELS"), "default_risk"),
    "empty-table": (dict(table="EMPTY"), "no rows"),
    "missing-feature": ("features", "tenure"),
    "gpu-on-cpu-cluster": ("use_gpu", "GPU"),
}


def test_each_user_error_is_a_message_without_a_stack(tmp_path, warehouse, bad_db, trainflow_home):
    """The other failures a user causes, through the CLI's entry point, one process for all of them
    (Ray and the server start once): each case's console output has its message and no stack."""
    cases = {k: v for k, v in CASES.items()  # on a GPU machine use_gpu is not an error
             if not (k == "gpu-on-cpu-cluster" and shutil.which("nvidia-smi"))}
    specs = []
    for case, (change, _) in cases.items():
        spec = _spec(warehouse, f"cli-{case}")
        if isinstance(change, dict):
            spec["data"]["train"].update(change, database=str(bad_db))
        elif change == "features":
            spec["features"] = [*spec["features"], "tenure"]
        else:
            spec["trainer"]["scaling"]["use_gpu"] = True
        path = tmp_path / f"{case}.yaml"
        path.write_text(yaml.safe_dump(spec))
        specs.append((case, str(path)))
    script = ("import sys, json\nfrom trainflow.cli import main\n"
              "for case, path in json.loads(sys.argv[1]):\n"
              "    print(f'=== {case}', file=sys.stderr, flush=True)\n"
              "    print(f'=== rc {main([\"run\", path])}', file=sys.stderr, flush=True)\n")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(specs)], capture_output=True, text=True,
                          env=dict(_env(trainflow_home), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db"),
                          cwd=tmp_path, timeout=480)
    assert done.returncode == 0, done.stderr[-3000:]
    sections = dict(part.split("\n", 1) for part in done.stderr.split("=== ")[1:] if not part.startswith("rc"))
    rcs = [line for line in done.stderr.splitlines() if line.startswith("=== rc")]
    assert rcs == ["=== rc 1"] * len(cases), done.stderr[-3000:]
    for case, (_, message) in cases.items():
        out = sections[case]
        assert message in out and "error: " in out, (case, out)
        assert "Traceback" not in out, (case, out)


def test_a_deployment_belongs_to_one_project_on_the_shared_server(tmp_path, warehouse, monkeypatch):
    """Two projects serving a spec of the same name would share one deployment: the second is refused."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployments import build
    from trainflow import prefect_server
    from trainflow.cli import _claim
    from trainflow.errors import ConfigError

    spec = tmp_path / "same-name.yaml"
    spec.write_text(yaml.safe_dump(_spec(warehouse, "cli-same-name")))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    url = prefect_server.ensure_server()
    monkeypatch.setenv("PREFECT_API_URL", url)  # undone after the test
    with temporary_settings({PREFECT_API_URL: url}):
        ours = build([str(spec)])
        _claim(ours, "project:proj-a")
        assert "project:proj-a" in ours[0].tags
        ours[0].apply()
        _claim(build([str(spec)]), "project:proj-a")  # the same project may serve it again
        with pytest.raises(ConfigError, match="belongs to project:proj-a.*TRAINFLOW_PROJECT=proj-a"):
            _claim(build([str(spec)]), "project:proj-b")


def test_run_shows_a_trainflow_error_as_its_message_and_shares_one_server(tmp_path, warehouse, trainflow_home):
    env = _env(trainflow_home)
    spec = tmp_path / "missing.yaml"
    spec.write_text(yaml.safe_dump(_spec(warehouse, "cli-missing", table="NO_SUCH_TABLE")))
    outputs, pids = {}, []
    for project, extra in (("proj-a", []), ("proj-b", ["--debug"])):
        workdir = tmp_path / project
        workdir.mkdir()
        done = subprocess.run([TRAINFLOW, "run", str(spec), *extra], capture_output=True, text=True,
                              env=dict(env, MLFLOW_TRACKING_URI=f"sqlite:///{workdir}/mlflow.db"),
                              cwd=workdir, timeout=300)
        assert done.returncode == 1, done.stderr[-3000:]
        outputs[project] = done.stdout + done.stderr
        status = subprocess.run([TRAINFLOW, "server", "status", "--json"], capture_output=True, text=True,
                                env=env, timeout=60)
        pids.append(json.loads(status.stdout)["pid"])

    quiet, debug = outputs["proj-a"], outputs["proj-b"]
    assert "NO_SUCH_TABLE" in quiet and "error: Table 'NO_SUCH_TABLE' not found" in quiet
    assert "Traceback" not in quiet, quiet
    assert "Finished in state Failed" in quiet  # the flow/task failure lines stay
    assert len(quiet.strip().splitlines()) <= 8, quiet
    assert "Traceback" in debug and "NO_SUCH_TABLE" in debug  # --debug: Prefect's stack, and ours

    assert pids[0] == pids[1]  # one server for both directories
    info = json.loads(subprocess.run([TRAINFLOW, "server", "status", "--json"], capture_output=True,
                                     text=True, env=env, timeout=60).stdout)
    runs = _api_json(f"{info['api_url']}/flow_runs/filter",
                     {"flow_runs": {"tags": {"any_": ["project:proj-a", "project:proj-b"]}}})
    assert sorted(t for r in runs for t in r["tags"] if t.startswith("project:")) == ["project:proj-a",
                                                                                     "project:proj-b"]
    logs = _api_json(f"{info['api_url']}/logs/filter",
                     {"logs": {"flow_run_id": {"any_": [r["id"] for r in runs]}, "level": {"ge_": 40}}})
    assert sum("Traceback" in log["message"] for log in logs) >= 2  # the API (the UI) keeps the stack

    started = subprocess.run([TRAINFLOW, "server", "start"], capture_output=True, text=True, env=env, timeout=60)
    assert info["api_url"] in started.stdout
    info = json.loads(subprocess.run([TRAINFLOW, "server", "status", "--json"], capture_output=True,
                                     text=True, env=env, timeout=60).stdout)
    assert info["pid"] == pids[0] and info["keep"] is True and "server stop" in info["policy"]
    stopped = subprocess.run([TRAINFLOW, "server", "stop"], capture_output=True, text=True, env=env, timeout=60)
    log = Path(trainflow_home) / "prefect-server.log"  # seen once under 3 test workers: say why if it recurs
    assert stopped.stdout.strip() == "stopped", (stopped.stdout, stopped.stderr, info,
                                                 log.read_text()[-3000:] if log.exists() else "no log")
