"""The training-pipeline flow end to end: Prefect test harness, real local Ray, MLflow SQLite in tmp."""
from __future__ import annotations

import copy
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from trainflow.errors import DataError, DataSourceNotFound, ResourceError, SchemaValidationError
from trainflow.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
DEMO_SPEC = ROOT / "deployments" / "specs" / "credit_risk_xgboost.yaml"
SECRET = "tok-SECRET-4242"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, warehouse):
    """A project dir: the demo warehouse, its own MLflow store, specs pointing at both."""
    root = tmp_path_factory.mktemp("project")
    with duckdb.connect(str(warehouse), read_only=True) as src, duckdb.connect(str(root / "bad.duckdb")) as dst:
        frame = src.execute("SELECT * FROM TRAINING_DATA").df()  # noqa: F841 - read by name below
        bad = frame.copy()
        bad.loc[[2, 9, 40], "age"] = 12  # schema: age >= 18
        nulls = frame.copy()
        nulls.loc[[5], "default_risk"] = np.nan
        dst.execute("CREATE TABLE UNDERAGE AS SELECT * FROM bad")
        dst.execute("CREATE TABLE NULL_LABELS AS SELECT * FROM nulls")
        dst.execute("CREATE TABLE EMPTY AS SELECT * FROM frame LIMIT 0")
        dst.execute("CREATE TABLE FEWER_COLUMNS AS SELECT age, income, default_risk FROM frame")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        yield root


def demo_spec(warehouse: Path, **changes) -> dict:
    spec = yaml.safe_load(DEMO_SPEC.read_text())
    spec["data"]["train"]["database"] = spec["data"]["eval"]["database"] = str(warehouse)
    spec["trainer"]["n_estimators"] = 30
    spec.pop("schedule")
    for dotted, value in changes.items():
        node = spec
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return spec


def run_flow(spec: dict):
    from flows.pipeline import training_pipeline

    return training_pipeline(parse_spec(copy.deepcopy(spec)), return_state=True)


def versions(name: str) -> list:
    try:
        return MlflowClient().search_model_versions(f"name='{name}'")
    except Exception:
        return []


@pytest.fixture(scope="module")
def first_run(ray_cluster, prefect_api, workdir, warehouse):
    spec = demo_spec(warehouse, name="pipe-good", register__model_name="pipe-model")
    spec["trainer"]["params"]["api_token"] = SECRET  # must never show in logs, artifacts or MLflow
    state = run_flow(spec)
    assert state.is_completed(), state.message
    return state


def test_pipeline_registers_a_loadable_champion(first_run, warehouse):
    result = first_run.result()
    assert result["name"] == "pipe-model" and result["version"] == "1"
    assert set(result["aliases"]) == {"champion", "challenger"}
    assert set(result["metrics"]) == {"rmse", "mae", "r2"} and result["metrics"]["r2"] > 0.5
    model = mlflow.pyfunc.load_model("models:/pipe-model@champion")
    from trainflow.data import connect

    frame = connect(str(warehouse)).table("EVAL_DATA").to_pandas()
    pred = np.asarray(model.predict(frame[["age", "income", "credit_score"]]))
    assert pred.shape == (len(frame),)
    rmse = float(np.sqrt(np.mean((pred - frame["default_risk"].to_numpy()) ** 2)))
    assert rmse == pytest.approx(result["metrics"]["rmse"], rel=1e-4)  # evaluate step = what MLflow serves
    run = MlflowClient().get_run(result["run_id"])
    assert run.info.experiment_id == mlflow.get_experiment_by_name("pipe-good").experiment_id
    plots = {a.path for a in MlflowClient().list_artifacts(result["run_id"], "plots")}
    assert len([p for p in plots if p.endswith(".png")]) == 2, plots  # feature importance, learning curve


def test_worse_run_does_not_take_champion(first_run, warehouse):
    state = run_flow(demo_spec(warehouse, name="pipe-good", register__model_name="pipe-model",
                               trainer__n_estimators=2))
    assert state.is_completed(), state.message
    second = state.result()
    assert second["version"] == "2" and second["aliases"] == ["challenger"]
    assert second["metrics"]["rmse"] > first_run.result()["metrics"]["rmse"]
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("pipe-model", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("pipe-model", "challenger").version) == "2"
    # v1 was scored on this run's eval rows in the same pass: logged, and shown in the evaluate artifact
    assert second["compared"]["version"] == "1" and second["decision"].startswith("not promoted")
    assert second["compared"]["metrics"]["rmse"] == pytest.approx(first_run.result()["metrics"]["rmse"], rel=1e-6)
    assert client.get_run(second["run_id"]).data.metrics["champion_rmse"] == second["compared"]["metrics"]["rmse"]
    table = next(a for a in _artifacts(state.state_details.flow_run_id) if a.key == "metrics")
    assert "champion v1" in str(table.data) and "same rows" in table.description


def _artifacts(flow_run_id) -> list:
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def fetch():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))

    return asyncio.run(fetch())


def test_flow_run_has_artifacts_and_progress_logs(first_run, prefect_api):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    async def fetch():
        async with get_client() as client:
            run_id = first_run.state_details.flow_run_id
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            return arts, logs

    import asyncio

    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # this process's log lines are sent in batches; all of them first
    arts, logs = asyncio.run(fetch())
    assert {a.key for a in arts} >= {"validation-report", "metrics", "model-version"}
    metrics = next(a for a in arts if a.key == "metrics")
    assert "rmse" in str(metrics.data)
    messages = [log.message for log in logs]
    assert any(m.startswith("fit [10]") and "eval-rmse" in m for m in messages), messages[:20]
    # trainer.memory auto: the mode chosen for the workers, and why, in the flow log
    assert any("; worker memory: in_memory (a " in m and "a worker has" in m for m in messages), messages[:20]
    shown = messages + [f"{a.data} {a.description}" for a in arts]
    assert not [m for m in shown if SECRET in m]
    params = MlflowClient().get_run(first_run.result()["run_id"]).data.params
    assert params["params.api_token"] == "***"


def test_a_version_records_its_flow_run_spec_data_and_code(first_run, warehouse):
    import pyarrow as pa

    from trainflow.data import connect
    from trainflow.lineage import batch_digest

    result = first_run.result()
    client = MlflowClient()
    version = client.get_model_version("pipe-model", result["version"])
    flow_run_id = str(first_run.state_details.flow_run_id)
    tags = version.tags
    assert tags["trainflow.flow_run.id"] == flow_run_id and tags["trainflow.spec"] == "pipe-good"
    assert len(tags["trainflow.spec_hash"]) == 64 and tags["trainflow.code.trainflow"]
    assert float(tags["metric.rmse"]) == pytest.approx(result["metrics"]["rmse"], rel=1e-5)
    assert flow_run_id in version.description and "TRAINING_DATA" in version.description
    # the data each split saw: MLflow dataset inputs whose digests the workers computed while validating
    run = client.get_run(result["run_id"])
    inputs = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "eval"}
    for context, table in (("training", "TRAINING_DATA"), ("eval", "EVAL_DATA")):
        dataset = inputs[context].dataset
        source = json.loads(dataset.source)
        assert dataset.source_type == "trainflow" and source["table"] == table
        assert dataset.digest == tags[f"trainflow.data.{context}.digest"]
        columns = next(t.value for t in inputs[context].tags if t.key == "columns").split(",")
        frame = connect(str(warehouse)).table(table).to_pandas()
        # the same values read in one piece, in another order, give the digest of the run's sharded reads
        whole = pa.Table.from_pandas(frame[columns].iloc[::-1], preserve_index=False)
        assert batch_digest(whole, columns).hexdigest == dataset.digest
        assert tags[f"trainflow.data.{context}.rows"] == str(len(frame))
    stored = Path(client.download_artifacts(result["run_id"], "spec.yaml", str(Path.cwd())))
    assert SECRET not in stored.read_text()
    assert parse_spec(yaml.safe_load(stored.read_text())).name == "pipe-good"
    linked = next(a for a in _artifacts(first_run.state_details.flow_run_id) if a.key == "model-version")
    assert "mlflow ui --backend-store-uri" in linked.data and f"#/models/pipe-model/versions/{result['version']}" \
        in linked.data and "learning_curve.png" in linked.data


def test_lineage_shows_a_version_and_reproduce_remakes_it_or_refuses_changed_data(ray_cluster, prefect_api, workdir,
                                                                                  warehouse, tmp_path):
    from flows.pipeline import training_pipeline
    from trainflow.data import connect
    from trainflow.errors import DataChangedError
    from trainflow.lineage.store import reproduction
    from trainflow.registry import tracking_uri

    db = connect(str(warehouse))
    train, holdout = db.table("TRAINING_DATA").to_pandas(), db.table("EVAL_DATA").to_pandas()
    train.to_parquet(tmp_path / "train.parquet")
    holdout.to_parquet(tmp_path / "eval.parquet")
    spec = demo_spec(warehouse, name="repro-job", register__model_name="repro-model")
    spec["data"] = {"train": {"parquet": str(tmp_path / "train.parquet")},
                    "eval": {"parquet": str(tmp_path / "eval.parquet")}}
    first = run_flow(spec)
    assert first.is_completed(), first.message

    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri())
    cli = [sys.executable, "-m", "trainflow.cli", "lineage", "models:/repro-model@champion"]
    shown = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=workdir, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert str(tmp_path / "train.parquet") in shown.stdout and str(first.state_details.flow_run_id) in shown.stdout
    recorded = json.loads(subprocess.run(cli + ["--json"], capture_output=True, text=True, env=env, cwd=workdir,
                                         timeout=120).stdout)
    assert [d["context"] for d in recorded["data"]] == ["training", "eval"]
    assert recorded["data"][0]["rows"] == len(train) and recorded["data"][0]["source"]["files"][0]["size"] > 0

    again, target, overrides = reproduction("models:/repro-model/1", tracking_uri())
    assert f"trainer.scaling.num_workers={recorded['params']['num_workers']}" in overrides
    second = training_pipeline(again, target.to_dict(), return_state=True)
    assert second.is_completed(), second.message
    assert second.result()["version"] == "2"
    x = holdout[["age", "income", "credit_score"]]
    one, two = (mlflow.pyfunc.load_model(f"models:/repro-model/{v}").predict(x) for v in (1, 2))
    assert (np.asarray(one) == np.asarray(two)).all()  # one worker, hist: the same model exactly
    made = MlflowClient().get_model_version("repro-model", "2").tags
    assert made["trainflow.reproduces"] == "models:/repro-model/1"
    assert made["trainflow.data.training.digest"] == recorded["data"][0]["digest"]

    train.loc[7, "income"] += 1.0  # one value of one row
    train.to_parquet(tmp_path / "train.parquet")
    refused = training_pipeline(again, target.to_dict(), return_state=True)
    assert refused.is_failed()
    with pytest.raises(DataChangedError, match="training data digest") as info:
        refused.result()
    assert any("train.parquet changed" in c for c in info.value.changes)
    assert len(versions("repro-model")) == 2  # nothing trained or registered


def test_register_is_retried_while_the_store_is_busy(first_run, workdir, warehouse):
    """A real 'database is locked' fails the first register attempt; Prefect retries it after the lock goes."""
    import threading

    from prefect import flow
    from prefect.client.orchestration import get_client

    from tasks.register import register
    from trainflow.pipeline.plan import plan
    from trainflow.pipeline.evaluate import evaluate
    from trainflow.pipeline.fit import fit
    from trainflow.pipeline.load import load

    spec = parse_spec(demo_spec(warehouse, name="pipe-busy", register__model_name="busy-model",
                                trainer__n_estimators=5))
    data = load(spec)
    outcome = fit(spec, data, plan(spec, data))
    metrics = evaluate(spec, outcome, data)
    locked, release = threading.Event(), threading.Event()

    def hold_lock():  # held until Prefect has recorded a retry of the register task (at most 180 s)
        con = sqlite3.connect(workdir / "mlflow.db", isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(180)
        con.execute("ROLLBACK")
        con.close()

    @flow(name="register-only")
    def register_only():
        return register(spec, outcome, metrics, data, return_state=True)

    holder = threading.Thread(target=hold_lock, daemon=True)
    holder.start()
    locked.wait(10)
    watcher = threading.Thread(target=lambda: _release_on_retry(release), daemon=True)
    watcher.start()
    task_state = register_only()
    release.set()
    holder.join(10)
    assert task_state.is_completed(), task_state.message
    assert task_state.result().version == "1" and [str(v.version) for v in versions("busy-model")] == ["1"]
    with get_client(sync_client=True) as client:
        assert client.read_task_run(task_state.state_details.task_run_id).run_count == 2


def _release_on_retry(release) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        while not release.is_set():
            runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="register")))
            if any(r.state_name in ("AwaitingRetry", "Retrying") for r in runs):
                release.set()
            release.wait(0.5)


BAD_INPUTS = {
    "schema-violation": (dict(data__train__table="UNDERAGE"), SchemaValidationError, r"age.*3 rows"),
    "null-labels": (dict(data__train__table="NULL_LABELS"), SchemaValidationError, "default_risk"),
    "empty-table": (dict(data__train__table="EMPTY"), DataError, "no rows"),
    "missing-table": (dict(data__train__table="NOPE"), DataSourceNotFound, "NOPE"),
    "missing-file": (dict(data__train={"parquet": "missing/*.parquet"}), DataSourceNotFound, "missing"),
    "missing-feature": (dict(features=["age", "income", "credit_score", "tenure"]), DataError, "tenure"),
    "eval-columns-differ": (dict(data__eval__table="FEWER_COLUMNS"), DataError, "credit_score"),
    "too-many-workers": (dict(trainer__scaling={"num_workers": 16}), ResourceError, "16 worker"),
    "gpu-on-cpu-cluster": (dict(trainer__scaling={"use_gpu": True}), ResourceError, "no GPUs"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_before_training_and_registers_nothing(ray_cluster, prefect_api, workdir, warehouse,
                                                               case):
    changes, error, match = BAD_INPUTS[case]
    spec = demo_spec(warehouse, name=f"bad-{case}", register__model_name=f"bad-{case}", **changes)
    if spec["data"]["train"].get("table") in ("UNDERAGE", "NULL_LABELS", "EMPTY"):
        spec["data"]["train"]["database"] = str(workdir / "bad.duckdb")
    if spec["data"]["eval"].get("table") == "FEWER_COLUMNS":
        spec["data"]["eval"]["database"] = str(workdir / "bad.duckdb")
    state = run_flow(spec)
    assert state.is_failed()
    with pytest.raises(error, match=match):
        state.result()
    assert versions(f"bad-{case}") == []


def test_cli_run_json_and_failure_paragraph(prefect_api, workdir, warehouse, tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(demo_spec(warehouse, name="cli-job", register__model_name="cli-model")))
    env = dict(os.environ, PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=f"sqlite:///{workdir}/mlflow.db")
    env.pop("RAY_ADDRESS", None)
    cli = [sys.executable, "-m", "trainflow.cli"]
    done = subprocess.run(cli + ["run", str(spec_path), "--set", "trainer.n_estimators=12", "--json"],
                          capture_output=True, text=True, env=env, cwd=workdir, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["uri"] == "models:/cli-model/1" and result["champion_uri"] == "models:/cli-model@champion"
    assert "champion" in result["aliases"] and set(result["metrics"]) == {"rmse", "mae", "r2"}
    assert "Registered cli-model version 1" in done.stdout
    assert "decision:  promoted: no champion yet" in done.stdout and result["decision"].startswith("promoted")

    spec_path.write_text(spec_path.read_text() + "\nextra_key: 1\n")
    bad = subprocess.run(cli + ["run", str(spec_path)], capture_output=True, text=True, env=env, cwd=workdir,
                         timeout=120)
    assert bad.returncode == 2
    assert "extra_key" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) <= 3


def test_cli_validate_reports_schema_failures(workdir, warehouse, tmp_path):
    spec = demo_spec(warehouse, name="val-job")
    spec["data"]["train"] = {"table": "UNDERAGE", "database": str(workdir / "bad.duckdb")}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "trainflow.cli", "validate", str(spec_path)],
                          capture_output=True, text=True, env=env, cwd=workdir, timeout=180)
    assert done.returncode == 1
    assert "age" in done.stderr and "3 rows" in done.stderr and "Traceback" not in done.stderr


def test_a_spec_with_tune_registers_the_best_trial_under_one_tuning_run(ray_cluster, prefect_api, workdir, warehouse):
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    spec = demo_spec(warehouse, name="pipe-tuned", register__model_name="pipe-tuned-model")
    spec["trainer"]["scaling"] = {"num_workers": 1, "num_cpu_per_worker": 1}  # see test_tune: busy machines
    spec["tune"] = {"search_space": {"params.learning_rate": {"loguniform": [0.01, 0.5]},
                                     "params.max_depth": [2, 4]}, "num_trials": 2, "random_state": 0}
    state = run_flow(spec)
    assert state.is_completed(), state.message
    result = state.result()
    client = MlflowClient()
    best = client.get_run(result["run_id"])
    parent_id = best.data.tags["mlflow.parentRunId"]
    parent = client.get_run(parent_id)
    assert parent.data.tags["trainflow.kind"] == "tuning"
    assert parent.data.tags["trainflow.best_trial"] == best.data.tags["trainflow.trial"]
    flow_run_id = str(state.state_details.flow_run_id)
    assert parent.data.tags["prefect.flow_run_id"] == best.data.tags["prefect.flow_run_id"] == flow_run_id
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 4  # 2 random draws x 2 grid values, each a nested run; one holds the model
    finals = {c.data.tags["trainflow.trial"]: c.data.metrics.get("rmse") for c in children}
    assert best.data.metrics["rmse"] == pytest.approx(result["metrics"]["rmse"])
    tuned_depth = int(best.data.params["tuned.params.max_depth"])
    assert tuned_depth in (2, 4) and "tuned.params.learning_rate" in best.data.params
    assert all(v is not None for v in finals.values())

    async def fetch():
        async with get_client() as c:
            run_id = state.state_details.flow_run_id
            arts = await c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
            logs = await c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            return arts, logs

    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # the flow's log lines (the tune task's come through its progress channel) are
    arts, logs = asyncio.run(fetch())  # sent in batches: all of them before reading (seen missing under load)
    trials = next(a for a in arts if a.key == "trials")
    assert len(json.loads(trials.data)) == 4
    chart = next(a for a in arts if a.key == "trials-chart")
    assert chart.data.count("rounds") == 4 and "<- best" in chart.data
    messages = [log.message for log in logs]
    assert any(m.startswith("tune best trial") and "read and binned 1 time(s)" in m for m in messages), messages
