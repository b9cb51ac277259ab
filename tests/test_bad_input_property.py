"""Property: any spec and any table either trains, or fails with a trainflow error that names the
culprit — never a raw exception, never a hang, never a registered version."""
from __future__ import annotations

import itertools
import string

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from trainflow.errors import TrainflowError
from trainflow.pipeline.run import run

NAMES = ["age", "income", "x y", 'q"uote', "ünï", "select", "a-b", "0lead"]
KINDS = ["int", "float", "float_nan", "float_inf", "huge", "string", "bytes_non_utf8", "bool", "all_null"]
_counter = itertools.count()


def _column(kind: str, rows: int, rng: np.random.Generator) -> pa.Array:
    if kind == "int":
        return pa.array(rng.integers(-5, 100, rows))
    if kind == "float":
        return pa.array(rng.normal(size=rows))
    if kind == "float_nan":
        values = rng.normal(size=rows)
        values[::3] = np.nan
        return pa.array(values)
    if kind == "float_inf":
        values = rng.normal(size=rows)
        values[::4] = np.inf
        return pa.array(values)
    if kind == "huge":
        return pa.array(rng.choice([1e308, -1e308, 1e-308, 3.0], rows))
    if kind == "string":
        return pa.array(rng.choice(list(string.ascii_letters), rows))
    if kind == "bytes_non_utf8":
        return pa.array([b"\xff\xfe" + bytes([i % 200]) for i in range(rows)], pa.binary())
    if kind == "bool":
        return pa.array(rng.integers(0, 2, rows).astype(bool))
    return pa.nulls(rows, pa.float64())


GOOD_KINDS = ["int", "float", "float_nan", "bool"]
SPEC_MISTAKES = [None] * 5 + ["unknown_key", "bad_objective", "zero_rounds", "bad_metric", "auc_on_regression",
                              "too_many_workers", "missing_feature", "no_features"]


@st.composite
def jobs(draw):
    """Mostly plausible jobs with at most one spec mistake, and data that is often (not always) bad."""
    rows = draw(st.sampled_from([0, 1, 7, 60, 60, 60]))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    bad_data = draw(st.booleans())
    kinds = [draw(st.sampled_from(KINDS if bad_data else GOOD_KINDS)) for _ in names]
    label_kind = draw(st.sampled_from(["float_nan", "all_null", "string", "int"] if bad_data else ["float"]))
    features = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    changes = draw(st.fixed_dictionaries({
        "mistake": st.sampled_from(SPEC_MISTAKES),
        "num_workers": st.sampled_from([-1, 1, 2]),
        "eval": st.sampled_from(["fraction", "same", "same", "mismatched"]),
        "source": st.sampled_from(["parquet", "duckdb"]),
    }))
    seed = draw(st.integers(0, 2**16))
    return rows, names, kinds, label_kind, features, changes, seed


def _write(tmp_path, table: pa.Table, source: str, name: str) -> dict:
    if source == "parquet":
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path)
        return {"parquet": str(path)}
    path = tmp_path / "db.duckdb"
    frame = table.to_pandas()  # noqa: F841 - read by DuckDB by name
    with duckdb.connect(str(path)) as con:
        con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM frame')
    return {"table": name, "database": str(path)}


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(job=jobs())
def test_any_job_trains_or_fails_cleanly(ray_cluster, tmp_path_factory, job):
    rows, names, kinds, label_kind, features, changes, seed = job
    tmp_path = tmp_path_factory.mktemp("prop")
    rng = np.random.default_rng(seed)
    arrays = [_column(k, rows, rng) for k in kinds] + [_column(label_kind, rows, rng)]
    table = pa.table(arrays, names=names + ["label"])
    model = f"prop-{next(_counter)}"
    spec = {
        "name": model, "features": features, "label": "label",
        "data": {"train": _write(tmp_path, table, changes["source"], "train")},
        "trainer": {"framework": "xgboost", "objective": "reg:squarederror", "n_estimators": 3,
                    "verbose_eval": None, "scaling": {"num_workers": changes["num_workers"]}},
        "evaluate": {"metrics": ["rmse"]},
        "register": {"model_name": model},
    }
    mistake = changes["mistake"]
    if mistake == "unknown_key":
        spec["trainer"]["learning_rate"] = 0.1  # belongs in params
    elif mistake == "bad_objective":
        spec["trainer"]["objective"] = "not:real"
    elif mistake == "zero_rounds":
        spec["trainer"]["n_estimators"] = 0
    elif mistake == "bad_metric":
        spec["evaluate"]["metrics"] = ["bogus"]
    elif mistake == "auc_on_regression":
        spec["evaluate"]["metrics"] = ["auc"]
    elif mistake == "too_many_workers":
        spec["trainer"]["scaling"]["num_workers"] = 7
    elif mistake == "missing_feature":
        spec["features"] = features + ["missing_col"]
    elif mistake == "no_features":
        spec["features"] = []
    if changes["eval"] == "same":
        spec["data"]["eval"] = spec["data"]["train"]
    elif changes["eval"] == "mismatched":
        other = table.drop_columns([names[0]]) if len(names) > 1 else table.append_column("z", table.column(0))
        spec["data"]["eval"] = _write(tmp_path, other, changes["source"], "evalt")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
        try:
            result = run(spec)
        except TrainflowError as exc:
            event(f"refused: {type(exc).__name__}: {str(exc)[:70]}")
            message = str(exc)
            assert message and "Traceback" not in message and "[bt]" not in message and len(message) < 4000
            culprits = names + ["label", "missing_col", "train", "evalt", "trainer", "evaluate", "features",
                                "objective", "n_estimators", "num_workers", "rows", "GPU", "worker"]
            assert any(c in message for c in culprits), message
            assert MlflowClient().search_model_versions(f"name='{model}'") == []
        else:
            event("trained")
            assert result.name == model and result.version == "1"
