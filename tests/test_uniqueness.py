"""`unique` checks are global: duplicates in different batches, row groups and shards are found."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pyarrow_
import pyarrow.parquet as pq
import pytest

from trainflow.data import DataConnector
from trainflow.errors import SchemaValidationError
from trainflow.pipeline.load import VALIDATE_BATCH_ROWS, load, validate
from trainflow.spec import parse_spec
from trainflow.uniqueness import UniqueKey, duplicate_records, partition_keys, unique_keys, without_uniqueness

ROWS = 450_000  # more than 2 shards of 200 000 rows, each read in batches of 50 000


def test_keys_meet_in_one_partition_whatever_shard_they_come_from():
    keys = [UniqueKey(("id",), False), UniqueKey(("a", "b"), True)]
    first = pd.DataFrame({"id": [1, 2, 3], "a": [1, 1, 2], "b": ["x", "y", "x"]})
    second = pd.DataFrame({"id": [4, 2, 5], "a": [1, 3, 3], "b": ["y", "z", "q"]})
    shards = [partition_keys(first, keys, 3, 0), partition_keys(second, keys, 3, 100)]
    records = [r for p in range(3) for r in duplicate_records(keys, [shard[p] for shard in shards])]
    by_check = {r["check"]: r for r in records}
    assert by_check["field_uniqueness"]["failure_count"] == 2
    assert [e["row"] for e in by_check["field_uniqueness"]["examples"]] == [1, 101]
    table = by_check["multiple_fields_uniqueness"]
    assert table["column"] is None and table["failure_count"] == 2
    assert table["examples"] == [{"row": 1, "a": 1, "b": "y"}, {"row": 100, "a": 1, "b": "y"}]


def test_schema_without_uniqueness_keeps_every_other_check():
    schema = pa.DataFrameSchema({"id": pa.Column(int, pa.Check.ge(0), unique=True)}, unique=["id"])
    assert [k.columns for k in unique_keys(schema)] == [("id",), ("id",)]
    rows = without_uniqueness(schema)
    assert rows.unique is None and not rows.columns["id"].unique and rows.columns["id"].checks
    assert schema.columns["id"].unique  # the original is unchanged


@pytest.fixture(scope="module")
def ids_parquet(tmp_path_factory):
    """ids 0..ROWS-1 with row 110 000 repeating row 10 (another batch) and row 420 000 repeating
    row 20 (another shard); row groups of 30 000 rows."""
    ids = np.arange(ROWS, dtype=np.int64)
    ids[110_000] = 10
    ids[420_000] = 20
    path = tmp_path_factory.mktemp("uniq") / "ids.parquet"
    table = pyarrow_.table({"id": ids, "x": (ids % 97).astype(np.float64), "y": (ids % 5).astype(np.float64)})
    pq.write_table(table, path, row_group_size=30_000)
    return path


def _spec(path, **columns) -> dict:
    return parse_spec({
        "name": "uniq", "features": ["x"], "label": "y",
        "data": {"train": {"parquet": str(path)}, "eval": {"parquet": str(path)}},
        "schema": {"columns": columns},
        "trainer": {"framework": "xgboost", "n_estimators": 2},
        "register": {"model_name": "uniq"},
    })


def test_unique_finds_duplicates_across_batches_and_shards(ray_cluster, ids_parquet):
    assert ROWS // VALIDATE_BATCH_ROWS > 2
    report = validate(_spec(ids_parquet, id={"dtype": "int64", "unique": True}),
                      DataConnector.from_parquet(str(ids_parquet)), "training data")
    assert len(report) == 1 and report[0]["check"] == "field_uniqueness"
    assert report[0]["failure_count"] == 4
    assert sorted(e["row"] for e in report[0]["examples"]) == [10, 20, 110_000, 420_000]


def test_load_stops_on_a_global_duplicate_with_a_readable_report(ray_cluster, ids_parquet):
    with pytest.raises(SchemaValidationError, match="column 'id' has duplicate values in 4 rows"):
        load(_spec(ids_parquet, id={"unique": True}))


def test_unique_passes_when_values_are_distinct(ray_cluster, tmp_path):
    path = tmp_path / "distinct.parquet"
    ids = np.arange(120_000, dtype=np.int64)
    pq.write_table(pyarrow_.table({"id": ids, "x": ids * 1.0, "y": ids % 2 * 1.0}), path, row_group_size=25_000)
    assert validate(_spec(path, id={"unique": True}), DataConnector.from_parquet(str(path)), "training data") == []
