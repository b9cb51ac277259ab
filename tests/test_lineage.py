"""Lineage values without a cluster: the content digest, data records, the stored spec."""
from __future__ import annotations

import pyarrow as pa
import pytest
import yaml

from trainflow.lineage import DataRecord, RunLineage, batch_digest, spec_hash, spec_text
from trainflow.lineage.digest import total

COLS = ["a", "b", "s"]


def _table() -> pa.Table:
    return pa.table({"a": [1, 2, 3, None, 2], "b": [0.5, -0.0, 2.0, 3.0, 0.5], "s": ["x", "y", "x", None, "z"]})


def test_the_digest_does_not_depend_on_order_batching_column_order_or_encoding():
    reference = batch_digest(_table(), COLS)
    other = pa.table({"s": pa.array(["z", None, "x", "y", "x"]).dictionary_encode(),
                      "b": pa.array([0.5, 3.0, 2.0, 0.0, 0.5], pa.float32()),
                      "a": pa.array([2.0, None, 3.0, 2.0, 1.0])})
    pieces = [batch_digest(other.slice(i, 2), list(reversed(COLS))) for i in range(0, 5, 2)]
    assert total(COLS, pieces) == reference
    assert total(COLS, pieces).hexdigest == reference.hexdigest and reference.rows == 5


@pytest.mark.parametrize("change", ["value", "null", "duplicate", "drop_row", "column"])
def test_the_digest_changes_with_any_value_row_or_column(change):
    table = _table()
    reference = batch_digest(table, COLS).hexdigest
    if change == "value":
        table = table.set_column(1, "b", pa.array([0.5, 0.0, 2.0000001, 3.0, 0.5]))
    elif change == "null":
        table = table.set_column(2, "s", pa.array(["x", "y", "x", "", "z"]))
    elif change == "duplicate":
        table = pa.concat_tables([table, table.slice(0, 1)])
    elif change == "drop_row":
        table = table.slice(1)
    else:
        assert batch_digest(table, ["a", "b"]).hexdigest != reference
        return
    assert batch_digest(table, COLS).hexdigest != reference


def _record(**changes) -> DataRecord:
    base = {"context": "training", "selection": "all rows", "rows": 10, "digest": "d1", "columns": ("a", "y"),
            "source": {"kind": "parquet", "location": "t.parquet",
                       "files": [{"uri": "/d/t.parquet", "size": 100, "mtime": "2026-01-01T00:00:00+00:00"}]}}
    return DataRecord(**{**base, **changes})


def test_a_record_names_what_changed_and_round_trips():
    was = _record()
    assert was.differences(_record()) == []
    now = _record(digest="d2", rows=11, source={"kind": "parquet", "location": "t.parquet", "files": [
        {"uri": "/d/t.parquet", "size": 120, "mtime": "2026-02-01T00:00:00+00:00"}]})
    found = was.differences(now)
    assert found[0] == "training data digest d1 -> d2" and "training rows 10 -> 11" in found
    assert any("/d/t.parquet changed (size 100 -> 120" in c for c in found)
    lineage = RunLineage("name: x\n", "h" * 64, (was,), "v" * 64, {"trainflow": "0.1"}, {"id": "run-1"})
    assert RunLineage.from_dict(lineage.to_dict(), "name: x\n") == lineage
    assert lineage.tags()["trainflow.data.training.digest"] == "d1"
    assert "run-1" in lineage.description("job", {"rmse": 0.5})


def test_the_stored_spec_keeps_env_references_and_masks_literal_secrets():
    from trainflow.spec import parse_spec

    spec = parse_spec({"name": "j", "data": {"train": {"table": "T", "database": "${env:WAREHOUSE}"}},
                       "features": ["a"], "label": "y", "register": {"model_name": "m"},
                       "trainer": {"params": {"api_token": "tok-123", "max_depth": 3}}})
    text = spec_text(spec)
    stored = yaml.safe_load(text)
    assert stored["data"]["train"]["database"] == "${env:WAREHOUSE}"
    assert stored["trainer"]["params"] == {"api_token": "***", "max_depth": 3}
    assert parse_spec(stored).name == "j"
    assert spec_hash(text) == spec_hash(yaml.safe_dump(stored, sort_keys=True))  # layout does not matter


def test_times_and_wide_integers_digest_by_value_whatever_the_unit_or_batching():
    import datetime as dt

    when = [dt.datetime(2024, 1, 1, 12), None, dt.datetime(9999, 12, 31)]  # past 2262: no nanosecond cast
    micros = pa.table({"t": pa.array(when, pa.timestamp("us"))})
    whole = batch_digest(micros, ["t"])
    assert total(["t"], [batch_digest(micros.slice(i, 1), ["t"]) for i in range(3)]) == whole  # nulls alone
    seconds = pa.table({"t": pa.array(when[:2], pa.timestamp("s"))})
    utc = pa.table({"t": pa.array(when[:2], pa.timestamp("ns", tz="UTC"))})
    assert batch_digest(seconds, ["t"]) == batch_digest(utc, ["t"])
    ids = [2**53 + 1, 7]
    assert batch_digest(pa.table({"i": ids}), ["i"]) != batch_digest(pa.table({"i": [2**53, 7]}), ["i"])
    assert batch_digest(pa.table({"i": pa.array([3, None])}), ["i"]) == \
        batch_digest(pa.table({"i": pa.array([3.0, None])}), ["i"])


def test_a_sqlite_sink_stores_class_probabilities_and_decimals_and_replaces_a_run_case_blind(tmp_path):
    import decimal
    import sqlite3

    from trainflow.data.sinks import PartsFolder, load_table

    folder = PartsFolder(str(tmp_path / "parts"))
    folder.clear("r1")
    probs = pa.FixedSizeListArray.from_arrays(pa.array([0.2, 0.8, 0.6, 0.4]), 2)
    batch = pa.RecordBatch.from_pydict({"id": pa.array([decimal.Decimal("1.50"), decimal.Decimal("2.25")]),
                                        "prediction": probs, "run_id": ["r1", "r1"]})
    assert folder.write("r1", 0, iter([batch])) == 2
    database = f"sqlite:{tmp_path / 's.db'}"
    with sqlite3.connect(tmp_path / "s.db") as con:
        con.execute('CREATE TABLE "Scores" (id REAL, prediction TEXT, run_id TEXT)')
    for _ in range(2):  # the same run id twice, and the spec names the table in another case
        assert load_table(database, "scores", folder.parts("r1"), "r1", "run_id") == 2
    with sqlite3.connect(tmp_path / "s.db") as con:
        rows = con.execute('SELECT id, prediction FROM "Scores" ORDER BY id').fetchall()
    assert rows == [(1.5, "[0.2, 0.8]"), (2.25, "[0.6, 0.4]")]
