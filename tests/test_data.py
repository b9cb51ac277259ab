"""DataConnector over every source: real DuckDB, SQLite and Parquet files, real Ray."""
from __future__ import annotations

import pickle
import sqlite3

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import regression_frame
from trainflow.data import DataConnector, ShardedDataConnector, connect
from trainflow.errors import DataError, DataSourceNotFound


@pytest.fixture(scope="module")
def frame():
    df = regression_frame(1000, seed=3)
    df["id"] = np.arange(len(df))
    return df


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory, frame):
    folder = tmp_path_factory.mktemp("pq")
    # three files, several row groups each, so splits cross file and row-group boundaries
    for i, part in enumerate(_thirds(frame)):
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / f"part-{i}.parquet",
                       row_group_size=97)
    return folder


def _thirds(df: pd.DataFrame) -> list[pd.DataFrame]:
    bounds = [0, 334, 667, len(df)]
    return [df.iloc[a:b] for a, b in zip(bounds, bounds[1:])]


def _ids(conn: DataConnector) -> list[int]:
    return conn.to_pandas()["id"].tolist()


def _assert_shards_partition(conn: DataConnector, n: int, total: int) -> None:
    shards = conn.split(n)
    ids = [_ids(s) for s in shards]
    flat = [i for part in ids for i in part]
    assert flat == list(range(total)), "shards in order must give back every row once"
    assert max(len(p) for p in ids) - min(len(p) for p in ids) <= 1


def test_duckdb_session_table_and_sql(tmp_path, frame):
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE TRAINING_DATA AS SELECT * FROM frame")
    session = connect(str(path))
    conn = DataConnector.from_dataframe(session.table("TRAINING_DATA"))
    assert conn.count_rows() == 1000
    assert conn.columns == list(frame.columns)
    head = conn.to_pandas(limit=7)
    assert len(head) == 7 and head["id"].tolist() == list(range(7))
    _assert_shards_partition(conn, 3, 1000)
    query = DataConnector.from_dataframe(session.sql("SELECT id, f0 FROM TRAINING_DATA WHERE id < 100"))
    assert query.columns == ["id", "f0"] and query.count_rows() == 100
    _assert_shards_partition(query, 4, 100)
    by_uri = DataConnector.from_sql("SELECT count(*) AS n FROM TRAINING_DATA", database=f"duckdb:///{path}")
    assert by_uri.to_pandas()["n"].iloc[0] == 1000


def test_sqlite_source(tmp_path, frame):
    path = tmp_path / "w.sqlite"
    with sqlite3.connect(path) as con:
        frame.to_sql("TRAINING_DATA", con, index=False)
    conn = DataConnector.from_dataframe(connect(f"sqlite:///{path}").table("TRAINING_DATA"))
    assert conn.count_rows() == 1000
    assert pa.types.is_floating(conn.schema.field("f0").type)
    _assert_shards_partition(conn, 3, 1000)
    np.testing.assert_allclose(conn.to_pandas()["y"].to_numpy(), frame["y"].to_numpy())


@pytest.mark.parametrize("form", ["file", "folder", "glob", "uri"])
def test_parquet_forms(parquet_dir, frame, form):
    location = {
        "file": str(parquet_dir / "part-0.parquet"),
        "folder": str(parquet_dir),
        "glob": str(parquet_dir / "part-*.parquet"),
        "uri": f"file://{parquet_dir}",
    }[form]
    conn = DataConnector.from_parquet(location)
    expected = len(_thirds(frame)[0]) if form == "file" else 1000
    assert conn.count_rows() == expected
    _assert_shards_partition(conn, 4, expected)


def test_parquet_reads_only_requested_columns(parquet_dir):
    conn = DataConnector.from_parquet(str(parquet_dir), columns=["id", "f1"])
    assert conn.columns == ["id", "f1"]
    batch = next(conn.iter_batches(["f1"]))
    assert batch.schema.names == ["f1"]


def test_in_memory_sources_pickle_as_references(ray_cluster, frame):
    big = pd.concat([frame] * 50, ignore_index=True)
    for conn in (DataConnector.from_dataframe(big), DataConnector.from_dataframe(pa.Table.from_pandas(big))):
        blob = pickle.dumps(conn)
        assert len(blob) < 2_000, "a connector must travel as a description, not the rows"
        back = pickle.loads(blob)
        assert back.count_rows() == len(big)
        pd.testing.assert_frame_equal(back.to_pandas(limit=5), big.head(5))
    _assert_shards_partition(DataConnector.from_dataframe(frame), 3, 1000)


def test_ray_dataset_source_and_to_ray_dataset(ray_cluster, frame, parquet_dir, warehouse):
    import ray.data

    ds = ray.data.from_pandas(frame)
    conn = DataConnector.from_dataframe(ds)
    assert conn.count_rows() == 1000
    shards = conn.split(2, equal=True)
    assert [s.count_rows() for s in shards] == [500, 500]
    assert sorted(i for s in shards for i in _ids(s)) == list(range(1000))
    assert DataConnector.from_parquet(str(parquet_dir)).to_ray_dataset().count() == 1000
    sql_ds = DataConnector.from_dataframe(connect(str(warehouse)).table("EVAL_DATA")).to_ray_dataset()
    assert sql_ds.count() == 1000
    assert set(sql_ds.columns()) == {"age", "income", "credit_score", "default_risk"}


def test_creating_a_connector_reads_nothing(tmp_path):
    missing = DataConnector.from_parquet(str(tmp_path / "nope.parquet"))  # no error yet
    with pytest.raises(DataSourceNotFound, match="nope.parquet"):
        missing.count_rows()
    table = DataConnector.from_dataframe(connect(str(tmp_path / "none.duckdb")).table("T"))
    with pytest.raises(DataSourceNotFound, match="none.duckdb"):
        table.schema


def test_missing_table_names_table(warehouse):
    conn = DataConnector.from_dataframe(connect(str(warehouse)).table("NOT_THERE"))
    with pytest.raises(DataSourceNotFound, match="NOT_THERE"):
        conn.count_rows()


def test_table_name_cannot_inject_sql(tmp_path):
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE victim AS SELECT 1 AS a")
    evil = 'victim"; DROP TABLE victim; --'
    with pytest.raises(DataError):
        DataConnector.from_dataframe(connect(str(path)).table(evil)).count_rows()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM victim").fetchone()[0] == 1


def test_unsupported_input_says_what_is_accepted():
    with pytest.raises(DataError, match="pandas DataFrame"):
        DataConnector.from_dataframe([1, 2, 3])


def test_sharded_connector_shards_cover_rows(frame):
    sharded = ShardedDataConnector.from_dataframe(frame, equal=True)
    shards = sharded.shards(3)
    assert [s.count_rows() for s in shards] == [333, 333, 333]
    with pytest.raises(RuntimeError, match="inside a distributed training function"):
        sharded.get_shard()


def test_demo_warehouse_is_deterministic(tmp_path):
    from trainflow.data.demo import build_warehouse

    a = build_warehouse(tmp_path / "a.duckdb", train_rows=300, eval_rows=100)
    b = build_warehouse(tmp_path / "b.duckdb", train_rows=300, eval_rows=100)
    fa = connect(str(a)).table("TRAINING_DATA").to_pandas()
    fb = connect(str(b)).table("TRAINING_DATA").to_pandas()
    pd.testing.assert_frame_equal(fa, fb)
    assert list(fa.columns) == ["age", "income", "credit_score", "default_risk"]
    assert fa["default_risk"].between(0, 1).all() and fa["age"].between(18, 110).all()
    assert fa["credit_score"].between(300, 850).all()
