"""Column types as every consumer sees them: DECIMAL/HUGEINT as numbers, SQLite types as declared."""
from __future__ import annotations

import sqlite3

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from trainflow.data import DataConnector, connect
from trainflow.distributors.ingest import check_training_schema
from trainflow.errors import DataError
from trainflow.pipeline.load import load
from trainflow.spec import parse_spec


@pytest.fixture(scope="module")
def decimals(tmp_path_factory):
    path = tmp_path_factory.mktemp("dec") / "d.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("""CREATE TABLE D AS SELECT i::DECIMAL(10, 0) AS small, i::DECIMAL(38, 0) AS wide,
                       (i / 4)::DECIMAL(12, 2) AS price, CASE WHEN i % 5 = 0 THEN NULL ELSE i END::DECIMAL(9, 3) AS gaps,
                       (i % 3)::DOUBLE AS y FROM range(1, 401) t(i)""")
        con.execute("CREATE TABLE E AS SELECT i::BIGINT AS small, i::BIGINT AS wide, (i / 4)::DOUBLE AS price, "
                    "i::DOUBLE AS gaps, (i % 3)::DOUBLE AS y FROM range(1, 101) t(i)")
    return path


def test_decimal_columns_are_int64_or_float64_everywhere(ray_cluster, decimals):
    session = connect(str(decimals))
    conn = DataConnector.from_dataframe(session.table("D"))
    types = {f.name: f.type for f in conn.schema}
    assert types == {"small": pa.int64(), "wide": pa.int64(), "price": pa.float64(), "gaps": pa.float64(),
                     "y": pa.float64()}
    frame = conn.to_pandas()
    assert frame["small"].dtype == np.int64 and frame["price"].dtype == np.float64
    assert frame["price"].iloc[5] == pytest.approx(1.5)
    assert frame["gaps"].isna().sum() == 80  # nulls stay missing
    for batch in conn.iter_batches():
        assert batch.schema.equals(conn.schema)
    check_training_schema(conn, ["small", "wide", "price", "gaps"], "y", "training data")  # no refusal


def test_hugeint_of_a_sum_and_decimal_literals_are_numbers(ray_cluster, decimals):
    query = connect(str(decimals)).sql("SELECT sum(small) AS total, 1.5 AS literal FROM D")
    frame = DataConnector.from_dataframe(query).to_pandas()
    assert frame["total"].dtype == np.int64 and frame["total"].iloc[0] == sum(range(1, 401))
    assert frame["literal"].dtype == np.float64
    assert query.to_pandas()["total"].dtype == np.int64  # the session frame reads the same types


def test_a_wide_decimal_beyond_int64_names_its_column(ray_cluster, decimals):
    query = connect(str(decimals)).sql("SELECT CAST('123456789012345678901' AS DECIMAL(38, 0)) AS big")
    with pytest.raises(DataError, match="'big'.*CAST"):
        DataConnector.from_dataframe(query).to_pandas()


def test_pandas_decimal_objects_are_numbers(ray_cluster):
    from decimal import Decimal

    frame = pd.DataFrame({"x": [Decimal("1.25"), Decimal("2.50"), None]})
    out = DataConnector.from_dataframe(frame).to_pandas()
    assert out["x"].dtype == np.float64 and out["x"].isna().sum() == 1


def test_decimal_train_and_double_eval_validate_against_float64(ray_cluster, decimals):
    spec = parse_spec({
        "name": "dec", "features": ["small", "price"], "label": "y",
        "data": {"train": {"table": "D", "database": str(decimals)},
                 "eval": {"table": "E", "database": str(decimals)}},
        "schema": {"columns": {"price": {"dtype": "float64", "ge": 0}, "small": {"dtype": "int64"}}},
        "trainer": {"framework": "xgboost", "n_estimators": 2},
        "register": {"model_name": "dec"},
    })
    data = load(spec)
    assert (data.train_rows, data.eval_rows) == (400, 100)


# ------------------------------------------------------------------------------------------ SQLite
@pytest.fixture()
def sqlite_db(tmp_path):
    path = tmp_path / "s.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE T (id INTEGER, score REAL, name TEXT, price NUMERIC(10, 2), raw)")
        rows = [(None, None, None, None, None)] + [(i, i / 2, f"n{i}", i * 1.25, i) for i in range(1, 5)]
        con.executemany("INSERT INTO T VALUES (?, ?, ?, ?, ?)", rows)
        con.execute("CREATE TABLE M (v)")
        con.executemany("INSERT INTO M VALUES (?)", [(1,), ("two",)])
    return f"sqlite:///{path}"


def test_sqlite_types_come_from_declared_types_not_the_first_row(ray_cluster, sqlite_db):
    session = connect(sqlite_db)
    conn = DataConnector.from_dataframe(session.table("T"))
    types = {f.name: f.type for f in conn.schema}
    assert types == {"id": pa.int64(), "score": pa.float64(), "name": pa.string(), "price": pa.float64(),
                     "raw": pa.int64()}
    frame = conn.to_pandas()
    assert frame["score"].isna().iloc[0] and frame["score"].iloc[2] == 1.0
    assert frame["id"].isna().iloc[0] and frame["id"].iloc[1:].tolist() == [1, 2, 3, 4]
    # A query's expression column has no declared type: its values decide (all rows, not the first).
    query = DataConnector.from_dataframe(session.sql("SELECT id, score * 2 AS double_score FROM T"))
    assert query.schema.field("double_score").type == pa.float64()
    assert query.to_pandas()["double_score"].iloc[4] == 4.0


def test_sqlite_column_with_mixed_values_is_a_clear_error(ray_cluster, sqlite_db):
    conn = DataConnector.from_dataframe(connect(sqlite_db).table("M"))
    with pytest.raises(DataError, match="'v'.*several types.*CAST"):
        conn.to_pandas()
