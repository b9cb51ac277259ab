"""One read of a query without a defined row order: shards, eval split and predictions see the same rows."""
from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from trainflow.data import DataConnector, ShardedDataConnector, connect
from trainflow.data.snapshot import SnapshotSource
from trainflow.errors import DataError
from trainflow.pipeline.load import load
from trainflow.spec import parse_spec

GROUPS = 20_000
GROUP_BY = "SELECT grp, avg(v) AS a, count(*) AS n FROM T GROUP BY grp"


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """200 000 rows in 20 000 groups: DuckDB aggregates them in parallel, in no fixed order."""
    path = tmp_path_factory.mktemp("snap") / "g.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE T AS SELECT (i % 20000) AS grp, (i % 7)::DOUBLE AS v FROM range(200000) t(i)")
        con.execute(f"CREATE VIEW GROUPED AS {GROUP_BY}")
    return path


@pytest.mark.parametrize("n", [2, 4, 8])
def test_shards_of_a_group_by_query_hold_each_group_exactly_once(ray_cluster, grouped, n):
    conn = DataConnector.from_dataframe(connect(str(grouped)).sql(GROUP_BY))
    assert not conn.is_stable()
    groups = pd.concat([shard.to_pandas()["grp"] for shard in conn.split(n)])
    assert len(groups) == GROUPS and groups.nunique() == GROUPS


def test_a_view_is_snapshotted_and_a_base_table_read_in_place(ray_cluster, grouped):
    session = connect(str(grouped))
    view = DataConnector.from_dataframe(session.table("GROUPED"))
    assert not view.is_stable()
    snap = view.snapshot()
    assert isinstance(snap.source, SnapshotSource) and snap.count_rows() == GROUPS
    assert snap.snapshot() is snap  # taken once: later steps reuse it
    table = DataConnector.from_dataframe(session.table("T"))
    assert table.is_stable() and table.snapshot() is table


def test_snapshot_shards_concatenate_to_the_snapshot(ray_cluster, grouped):
    snap = DataConnector.from_dataframe(connect(str(grouped)).sql(GROUP_BY)).snapshot()
    whole = snap.to_pandas()
    parts = pd.concat([s.to_pandas() for s in snap.split(3)], ignore_index=True)
    pd.testing.assert_frame_equal(parts, whole)
    assert snap.split(3)[0].to_pandas(limit=0).columns.tolist() == ["grp", "a", "n"]


def test_a_failing_query_is_a_data_error_from_the_snapshot_task(ray_cluster, grouped):
    conn = DataConnector.from_dataframe(connect(str(grouped)).sql("SELECT no_such_column FROM T GROUP BY 1"))
    with pytest.raises(DataError, match="no_such_column"):
        conn.snapshot()


def test_eval_fraction_of_a_query_is_disjoint_from_train_and_together_complete(ray_cluster, grouped):
    spec = parse_spec({
        "name": "snap", "features": ["grp"], "label": "a",
        "data": {"train": {"sql": GROUP_BY, "database": str(grouped)}, "eval_fraction": 0.2},
        "trainer": {"framework": "xgboost", "n_estimators": 2},
        "register": {"model_name": "snap"},
    })
    data = load(spec)
    train, evaluation = data.train.to_pandas()["grp"], data.eval.to_pandas()["grp"]
    assert data.train_rows + data.eval_rows == GROUPS == len(train) + len(evaluation)
    assert set(train).isdisjoint(evaluation)
    assert set(train) | set(evaluation) == set(range(GROUPS))
    assert 0.1 < data.eval_rows / GROUPS < 0.3
    data.release()


def test_two_worker_fit_and_predict_on_a_group_by_query_see_every_group_once(ray_cluster, grouped):
    from trainflow.distributors.xgboost import XGBEstimator, XGBScalingConfig

    query = connect(str(grouped)).sql(GROUP_BY)
    est = XGBEstimator(n_estimators=20, params={"max_depth": 8, "learning_rate": 0.5},
                       scaling_config=XGBScalingConfig(num_workers=2, num_cpu_per_worker=1),
                       checkpoint_every=None)
    booster = est.fit(query, ["grp"], "a")
    predictions = est.predict(query)
    frame = DataConnector.from_dataframe(query).to_pandas()
    expected = booster.predict(xgb.DMatrix(frame[["grp"]]))
    # The query returns its groups in no fixed order; as multisets, the predictions must be the
    # model's predictions of every group exactly once (a duplicated or missing group changes them).
    assert len(predictions) == GROUPS
    np.testing.assert_allclose(np.sort(predictions), np.sort(expected), rtol=1e-5)
    # The training rows were every group once: the model's train metric equals its error on them.
    train_rmse = est.get_eval_results()["train"]["rmse"][-1]
    assert train_rmse == pytest.approx(float(np.sqrt(np.mean((expected - frame["a"]) ** 2))), rel=1e-3)


def test_get_shard_refuses_an_unordered_query_outside_the_distributor(grouped):
    sharded = ShardedDataConnector.from_dataframe(connect(str(grouped)).sql(GROUP_BY))
    with pytest.raises(DataError, match="no defined row order"):
        sharded.get_shard()
