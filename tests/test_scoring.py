"""Batch scoring: the scoring flow on a real Prefect test server, local Ray, MLflow SQLite, DuckDB,
SQLite and Parquet sinks; a worker killed mid-part; reruns of a run id."""
from __future__ import annotations

import copy
import os
import signal
import threading
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from trainflow.errors import DataError, SchemaValidationError
from trainflow.spec import parse_score_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ["age", "income", "credit_score"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, warehouse, ray_cluster, prefect_api):
    """A project dir with its own MLflow store and a champion of `score-model` trained by the flow."""
    from flows.pipeline import training_pipeline

    root = tmp_path_factory.mktemp("scoring")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        spec = yaml.safe_load((ROOT / "deployments" / "specs" / "credit_risk_xgboost.yaml").read_text())
        spec["data"]["train"]["database"] = spec["data"]["eval"]["database"] = str(warehouse)
        spec.update(name="score-train")
        spec["register"]["model_name"] = "score-model"
        spec["trainer"]["n_estimators"] = 20
        spec.pop("schedule")
        state = training_pipeline(parse_spec(spec), return_state=True)
        assert state.is_completed(), state.message
        yield root


def _spec(warehouse: Path, sink: dict, **changes) -> dict:
    spec = {"name": "score-job", "model": "models:/score-model@champion",
            "source": {"table": "NEW_APPLICANTS", "database": str(warehouse)}, "sink": sink,
            "carry": ["applicant_id"]}
    spec.update(changes)
    return spec


def _run(spec: dict):
    from flows.scoring import scoring_pipeline

    return scoring_pipeline(parse_score_spec(copy.deepcopy(spec)), return_state=True)


def _expected(warehouse: Path) -> pd.DataFrame:
    frame = duckdb.connect(str(warehouse), read_only=True).execute("SELECT * FROM NEW_APPLICANTS").df()
    model = mlflow.pyfunc.load_model("models:/score-model@champion")
    return frame.assign(expected=np.asarray(model.predict(frame[FEATURES]), dtype=np.float64))


def test_the_flow_scores_every_row_once_into_duckdb_and_a_rerun_replaces_its_rows(project, warehouse):
    from trainflow.pipeline.score import run_scoring

    sink = {"table": "SCORES", "database": str(project / "scores.duckdb")}
    state = _run(_spec(warehouse, sink))
    assert state.is_completed(), state.message
    result = state.result()
    expected = _expected(warehouse)
    with duckdb.connect(str(project / "scores.duckdb"), read_only=True) as con:
        got = con.execute("SELECT * FROM SCORES").df()
    assert result["rows"] == len(expected) == len(got) and got["applicant_id"].is_unique
    assert set(got["run_id"]) == {result["run_id"]} == {str(state.state_details.flow_run_id)}
    both = got.merge(expected, on="applicant_id")
    np.testing.assert_allclose(both["prediction"], both["expected"], rtol=1e-6)
    # lineage of the score run: the version it resolved and the input snapshot
    run = MlflowClient().get_run(result["mlflow_run_id"])
    assert run.data.tags["trainflow.model_version"] == "models:/score-model/1" == result["model"]
    [given] = run.inputs.dataset_inputs
    assert given.dataset.source_type == "trainflow" and '"NEW_APPLICANTS"' in given.dataset.source

    # the same run id again (a retried flow run): its rows are replaced, never appended twice
    spec = parse_score_spec(_spec(warehouse, sink))
    run_scoring(spec, run_id=result["run_id"])
    other = run_scoring(spec, run_id="second-run")
    with duckdb.connect(str(project / "scores.duckdb"), read_only=True) as con:
        counts = dict(con.execute("SELECT run_id, count(*) FROM SCORES GROUP BY run_id").fetchall())
    assert counts == {result["run_id"]: len(expected), "second-run": len(expected)}
    assert other.rows == len(expected)
    assert not (project / ".trainflow-scores").exists() or not list((project / ".trainflow-scores").iterdir())


def test_sqlite_and_parquet_sinks_carry_the_ids_and_replace_a_run_ids_parts(project, warehouse, tmp_path):
    from trainflow.pipeline.score import run_scoring

    expected = _expected(warehouse).set_index("applicant_id")["expected"]
    lite = run_scoring(parse_score_spec(_spec(warehouse, {"table": "scores", "database":
                                                          f"sqlite:///{tmp_path}/scores.db"})), run_id="r1")
    import sqlite3

    with sqlite3.connect(tmp_path / "scores.db") as con:
        rows = pd.read_sql("SELECT * FROM scores", con)
    assert lite.rows == len(rows) == len(expected) and rows["applicant_id"].is_unique
    np.testing.assert_allclose(rows.set_index("applicant_id")["prediction"].loc[expected.index], expected, rtol=1e-6)

    folder = tmp_path / "parquet-out"
    spec = parse_score_spec(_spec(warehouse, {"parquet": str(folder)}, prediction_column="risk"))
    first = run_scoring(spec, run_id="r2")
    again = run_scoring(spec, run_id="r2")
    parts = sorted(p.name for p in folder.iterdir())
    assert parts == [f"part-r2-{i:05d}.parquet" for i in range(again.parts)] and first.parts == again.parts
    frame = pd.read_parquet(folder)
    assert len(frame) == len(expected) and frame["applicant_id"].is_unique
    np.testing.assert_allclose(frame.set_index("applicant_id")["risk"].loc[expected.index], expected, rtol=1e-6)


def test_input_is_checked_against_the_training_schema_before_anything_is_written(project, warehouse, tmp_path):
    from trainflow.pipeline.score import run_scoring

    bad = tmp_path / "bad.duckdb"
    with duckdb.connect(str(bad)) as con:
        con.execute(f"ATTACH '{warehouse}' AS wh (READ_ONLY)")
        con.execute("CREATE TABLE APPLICANTS AS SELECT * FROM wh.NEW_APPLICANTS")
        con.execute("UPDATE APPLICANTS SET age = 12 WHERE applicant_id IN (3, 5)")  # training schema: age >= 18
        con.execute("CREATE TABLE NO_INCOME AS SELECT applicant_id, age, credit_score FROM APPLICANTS")
    out = tmp_path / "out"
    source = {"table": "APPLICANTS", "database": str(bad)}
    with pytest.raises(SchemaValidationError, match="age") as failed:
        run_scoring(parse_score_spec(_spec(warehouse, {"parquet": str(out)}, source=source)))
    assert failed.value.report
    assert not out.exists() or not list(out.iterdir())
    with pytest.raises(DataError, match="income"):
        run_scoring(parse_score_spec(_spec(warehouse, {"parquet": str(out)},
                                           source={"table": "NO_INCOME", "database": str(bad)})))
    with pytest.raises(DataError, match="customer_id"):
        run_scoring(parse_score_spec(_spec(warehouse, {"parquet": str(out)}, carry=["customer_id"])))


@pytest.mark.slow
def test_a_scoring_worker_killed_mid_part_is_retried_without_duplicate_or_missing_rows(project, tmp_path):
    """SIGKILL the process writing a part (its temporary file names its pid); Ray retries the task."""
    from trainflow.pipeline.score import run_scoring

    rows = 1_200_000
    rng = np.random.default_rng(0)
    source = pd.DataFrame({"applicant_id": np.arange(rows, dtype=np.int64), "age": rng.integers(18, 80, rows),
                           "income": rng.lognormal(10.8, 0.5, rows).round(2),
                           "credit_score": rng.integers(300, 851, rows)})
    source.to_parquet(tmp_path / "big.parquet", row_group_size=100_000)
    folder = tmp_path / "out"
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_writer():
        while not stop.is_set() and not killed:
            for tmp in folder.glob(".part-*.tmp") if folder.exists() else []:
                pid = int(tmp.name.split(".")[-2])
                try:
                    os.kill(pid, signal.SIGKILL)  # a Ray worker this test's scoring run started
                    killed.append(pid)
                except ProcessLookupError:
                    continue
                break
            stop.wait(0.01)

    watcher = threading.Thread(target=kill_one_writer, daemon=True)
    watcher.start()
    try:
        spec = parse_score_spec({"name": "score-kill", "model": "models:/score-model@champion",
                                 "source": {"parquet": str(tmp_path / "big.parquet")}, "sink": {"parquet": str(folder)},
                                 "carry": ["applicant_id"]})
        result = run_scoring(spec, run_id="killed")
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert killed, "no part was being written while the test watched"
    frame = pd.read_parquet(folder)
    assert result.rows == len(frame) == rows
    assert frame["applicant_id"].is_unique and set(frame["applicant_id"]) == set(range(rows))
    assert not list(folder.glob(".part-*"))  # the killed attempt's temporary part is gone
    assert sorted(p.name for p in folder.iterdir()) == [f"part-killed-{i:05d}.parquet" for i in range(result.parts)]


@pytest.mark.slow  # a subprocess that starts its own Ray (~30 s)
def test_scoring_cli_prints_the_written_rows(project, warehouse, tmp_path, prefect_api):
    import json
    import subprocess
    import sys

    spec = tmp_path / "score.yaml"
    spec.write_text(yaml.safe_dump(_spec(warehouse, {"parquet": str(tmp_path / "cli-out")}, name="score-cli")))
    env = dict(os.environ, PREFECT_API_URL=prefect_api)
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "trainflow.cli", "score", str(spec), "--json"], check=False,
                          capture_output=True,
                          text=True, env=env, cwd=project, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rows"] == len(pd.read_parquet(tmp_path / "cli-out")) and "Scored" in done.stdout
