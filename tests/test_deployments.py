"""Deployments: a real Prefect server on loopback, `trainflow serve` in a subprocess, runs via the API."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from trainflow import prefect_server

ROOT = Path(__file__).resolve().parents[1]
DEMO_SPEC = ROOT / "deployments" / "specs" / "credit_risk_xgboost.yaml"


def _spec(warehouse: Path, name: str, model: str, schedule: dict) -> dict:
    spec = yaml.safe_load(DEMO_SPEC.read_text())
    spec["name"] = name
    spec["data"]["train"]["database"] = spec["data"]["eval"]["database"] = str(warehouse)
    spec["trainer"]["n_estimators"] = 20
    spec["trainer"]["scaling"] = {"num_workers": 1, "num_cpu_per_worker": 1}  # two runs fit side by side
    spec["register"]["model_name"] = model
    spec["schedule"] = schedule
    return spec


def _scoring_spec(warehouse: Path, root: Path) -> dict:
    return {"name": "dep-scores", "model": "models:/dep-score-model@champion",
            "source": {"table": "NEW_APPLICANTS", "database": str(warehouse)},
            "sink": {"table": "SCORES", "database": str(root / "scores.duckdb")}, "carry": ["applicant_id"],
            "schedule": {"cron": "0 4 * * *"}}


@pytest.fixture(scope="module")
def served(tmp_path_factory, warehouse):
    root = tmp_path_factory.mktemp("served")
    specs = root / "specs"
    specs.mkdir()
    (specs / "a.yaml").write_text(yaml.safe_dump(_spec(warehouse, "dep-cron", "dep-model",
                                                       {"cron": "0 3 * * *", "timezone": "Europe/Berlin"})))
    (specs / "b.yaml").write_text(yaml.safe_dump(_spec(warehouse, "dep-interval", "dep-model-b",
                                                       {"interval_seconds": 3600})))
    (specs / "c.yaml").write_text(yaml.safe_dump(_scoring_spec(warehouse, root)))
    old_cwd, old_api = os.getcwd(), os.environ.pop("PREFECT_API_URL", None)
    os.chdir(root)
    proc = None
    try:
        url = prefect_server.ensure_server()  # a real server on a free loopback port, PREFECT_HOME in tmp
        env = dict(os.environ, PREFECT_API_URL=url, MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db")
        env.pop("RAY_ADDRESS", None)
        log = open(root / "serve.log", "w")
        # SIGINT as a terminal delivers it: a suite started in the background (nohup, `&`) passes
        # SIGINT ignored to its children, and `trainflow serve` would then rightly not stop on it
        proc = subprocess.Popen([sys.executable, "-m", "trainflow.cli", "serve", str(specs)], cwd=root, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: url}):
            deadline = time.monotonic() + 180
            # by name: the shared local server may hold other tests' deployments already
            while not {"dep-cron", "dep-interval", "dep-scores"} <= {d.name for d in asyncio.run(_deployments())}:
                assert proc.poll() is None, (root / "serve.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "deployments did not appear"
                time.sleep(1)
            yield {"url": url, "root": root, "specs": specs, "warehouse": warehouse}
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C does
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        prefect_server.stop()
        os.chdir(old_cwd)
        if old_api is not None:
            os.environ["PREFECT_API_URL"] = old_api
        else:
            os.environ.pop("PREFECT_API_URL", None)


async def _deployments():
    from prefect import get_client

    async with get_client() as client:
        return await client.read_deployments()


async def _deployment(name: str, flow: str = "training-pipeline"):
    from prefect import get_client

    async with get_client() as client:
        return await client.read_deployment_by_name(f"{flow}/{name}")


def test_deployments_and_schedules(served):
    cron = asyncio.run(_deployment("dep-cron"))
    interval = asyncio.run(_deployment("dep-interval"))
    assert cron.schedules[0].schedule.cron == "0 3 * * *"
    assert cron.schedules[0].schedule.timezone == "Europe/Berlin"
    assert interval.schedules[0].schedule.interval.total_seconds() == 3600
    assert cron.parameters["spec"]["name"] == "dep-cron"
    schema = cron.parameter_openapi_schema
    defs = schema.get("definitions") or schema.get("$defs")
    trainer = defs["TrainerSpec"]["properties"]
    assert set(trainer["framework"]["enum"]) == {"xgboost", "lightgbm", "pytorch"}  # a dropdown
    assert trainer["n_estimators"].get("minimum") == 1 and trainer["n_estimators"].get("description")
    assert cron.enforce_parameter_schema


def _edited(served, n_estimators: int, model: str = "dep-model") -> dict:
    spec = _spec(served["warehouse"], "dep-cron", model, {"cron": "0 3 * * *"})
    spec.pop("schedule")
    spec["trainer"]["n_estimators"] = n_estimators
    return spec


def _trigger(name: str, spec: dict):
    from prefect.deployments import run_deployment

    return run_deployment(f"training-pipeline/{name}", parameters={"spec": spec}, timeout=0)


def _wait(flow_run_id, timeout: float = 400):
    from prefect import get_client

    async def poll():
        async with get_client() as client:
            deadline = time.monotonic() + timeout
            while True:
                run = await client.read_flow_run(flow_run_id)
                if run.state.is_final():
                    return run
                assert time.monotonic() < deadline, f"run stuck in {run.state.type}"
                await asyncio.sleep(2)

    return asyncio.run(poll())


def test_ui_style_runs_with_edited_parameters_and_concurrency(served):
    from mlflow import MlflowClient

    good = _trigger("dep-cron", _edited(served, 25))
    worse = _trigger("dep-cron", _edited(served, 2))  # started together: both run at once
    runs = [_wait(good.id), _wait(worse.id)]
    assert [r.state.type.value for r in runs] == ["COMPLETED", "COMPLETED"], [r.state.message for r in runs]
    results = [r.state.result() for r in runs]  # persisted: readable by run_deployment callers
    assert {r["name"] for r in results} == {"dep-model"}
    better = min(results, key=lambda r: r["metrics"]["rmse"])
    assert better["metrics"]["rmse"] < max(r["metrics"]["rmse"] for r in results)
    client = MlflowClient(tracking_uri=f"sqlite:///{served['root']}/mlflow.db")
    champion = client.get_model_version_by_alias("dep-model", "champion")
    promoted = [r for r in results if r["promoted"]]
    assert promoted, [r["decision"] for r in results]  # the first to register found no champion
    # champion is the last version promoted; both runs registered once, each with its own version
    assert str(champion.version) == max(promoted, key=lambda r: int(r["version"]))["version"]
    assert len({r["version"] for r in results}) == 2
    if str(champion.version) != better["version"]:
        # Both evaluated before either registered: the better one scored "no champion", and the other
        # took the alias first. It is not promoted over a champion it never scored, and says so.
        assert not better["promoted"]
        assert "another run changed it" in better["decision"], better["decision"]


def test_bad_parameters_are_refused_or_fail_cleanly(served):
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    spec = _edited(served, 5, model="dep-bad")
    spec["trainer"]["framework"] = "sklearn"
    with pytest.raises((PrefectHTTPStatusError, httpx.HTTPStatusError)) as refused:
        _trigger("dep-cron", spec)
    assert "409" in str(refused.value) or "framework" in str(refused.value)

    spec = _edited(served, 5, model="dep-bad")
    spec["features"] = ["age", "income", "default_risk"]  # schema-valid JSON, but the label is a feature
    run = _wait(_trigger("dep-cron", spec).id, timeout=180)
    assert run.state.is_failed()
    assert "label" in run.state.message and "features" in run.state.message


@pytest.mark.slow  # a training run and two scoring runs through the served deployments (~70 s)
def test_a_scoring_deployment_scores_the_champion_into_duckdb_once_per_run(served):
    import duckdb
    from prefect.deployments import run_deployment

    deployment = asyncio.run(_deployment("dep-scores", "scoring-pipeline"))
    assert deployment.schedules[0].schedule.cron == "0 4 * * *" and deployment.enforce_parameter_schema
    schema = deployment.parameter_openapi_schema
    defs = schema.get("definitions") or schema.get("$defs")
    assert defs["SinkSpec"]["properties"]["parquet"].get("description")  # the UI form's help text
    trained = _wait(_trigger("dep-cron", _edited(served, 10, model="dep-score-model")).id)
    assert trained.state.is_completed(), trained.state.message
    runs = [_wait(run_deployment("scoring-pipeline/dep-scores", timeout=0).id) for _ in range(2)]
    assert all(r.state.is_completed() for r in runs), [r.state.message for r in runs]
    with duckdb.connect(str(served["root"] / "scores.duckdb"), read_only=True) as con:
        counts = dict(con.execute("SELECT run_id, count(*) FROM SCORES GROUP BY run_id").fetchall())
        ids = con.execute("SELECT count(DISTINCT applicant_id) FROM SCORES").fetchone()[0]
    with duckdb.connect(str(served["warehouse"]), read_only=True) as con:
        expected = con.execute("SELECT count(*) FROM NEW_APPLICANTS").fetchone()[0]
    assert counts == {str(r.id): expected for r in runs} and ids == expected  # each run: every row once


def test_committed_prefect_yaml_matches_the_specs():
    from flows.deployments import prefect_yaml

    old = os.getcwd()
    os.chdir(ROOT)
    try:
        assert (ROOT / "deployments" / "prefect.yaml").read_text() == prefect_yaml()
    finally:
        os.chdir(old)


def test_a_deployment_carries_what_its_spec_file_says_not_the_defaults():
    """A deployment made today keeps no copy of today's defaults (objective, database, metrics, promotion
    mode, scaling): a run picks up the defaults of the trainflow it runs on, as a `trainflow run` of the file."""
    from flows.deployments import spec_parameter
    from trainflow.spec import parse_spec

    written = {"name": "job", "data": {"train": {"table": "T"}}, "features": ["a", "b"], "label": "y",
               "register": {"model_name": "m"}, "trainer": {"framework": "lightgbm", "n_estimators": 20}}
    spec = parse_spec(written)
    assert spec_parameter(spec) == written
    assert (spec.trainer.resolved_objective, spec.data.train.resolved_database) == ("regression", "data/warehouse.duckdb")
    assert parse_spec(spec_parameter(spec)) == spec  # and the run reads it back as the same job
