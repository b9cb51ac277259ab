"""Snowpark-style data prep on session frames, on DuckDB and SQLite, checked against pandas."""
from __future__ import annotations

import sqlite3

import duckdb
import numpy as np
import pandas as pd
import pytest

from trainflow.data import DataConnector, connect
from trainflow.data import functions as F
from trainflow.data.frame import UnsupportedOperation
from trainflow.data.functions import col, lit, when
from trainflow.errors import InvalidArgument


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 3000
    people = pd.DataFrame({"id": np.arange(n, dtype=np.int64), "age": rng.integers(18, 80, n).astype(np.int64),
                           "income": rng.lognormal(10.5, 0.6, n).round(2),
                           "region": rng.choice(["north", "south", "east"], n)})
    loans = pd.DataFrame({"loan_id": np.arange(2 * n, dtype=np.int64),
                          "person_id": rng.integers(0, n + 50, 2 * n).astype(np.int64),  # some match nobody
                          "amount": rng.integers(1, 100, 2 * n).astype(np.int64)})
    return people, loans


@pytest.fixture(scope="module", params=["duckdb", "sqlite"])
def session(request, tmp_path_factory):
    people, loans = _frames()
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "duckdb":
        path = root / "w.duckdb"
        with duckdb.connect(str(path)) as con:
            con.execute("CREATE TABLE PEOPLE AS SELECT * FROM people")
            con.execute("CREATE TABLE LOANS AS SELECT * FROM loans")
        return connect(str(path))
    path = root / "w.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE PEOPLE (id INTEGER, age INTEGER, income REAL, region TEXT)")
        con.execute("CREATE TABLE LOANS (loan_id INTEGER, person_id INTEGER, amount INTEGER)")
        con.executemany("INSERT INTO PEOPLE VALUES (?, ?, ?, ?)", people.itertuples(index=False))
        con.executemany("INSERT INTO LOANS VALUES (?, ?, ?)", loans.itertuples(index=False))
    return connect(f"sqlite:///{path}")


def _sorted(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return frame.sort_values(by).reset_index(drop=True)


def test_filter_select_with_column_drop_rename_match_pandas(session):
    people, _ = _frames()
    frame = (session.table("PEOPLE")
             .filter((col("age") >= 30) & ~(col("region") == "east"))
             .where("income > 20000")  # a SQL condition string, as Snowpark accepts
             .with_column("income_k", col("income") / 1000)
             .with_column("band", when(col("age") < 50, lit("young")).otherwise("old"))
             .with_column("age", col("age") + 1)  # replaces the column in place
             .drop("region")
             .with_column_renamed("id", "person"))
    got = _sorted(frame.to_pandas(), ["person"])
    want = people[(people.age >= 30) & (people.region != "east") & (people.income > 20000)].copy()
    want = want.assign(income_k=want.income / 1000, band=np.where(want.age < 50, "young", "old"), age=want.age + 1)
    want = _sorted(want.drop(columns="region").rename(columns={"id": "person"}), ["person"])
    assert list(got.columns) == ["person", "age", "income", "income_k", "band"]
    pd.testing.assert_frame_equal(got, want[list(got.columns)], check_dtype=False)
    assert session.table("people").select("AGE").columns[0].lower() == "age"  # names match case-blind


def test_group_by_agg_sort_limit_distinct_union_and_join_match_pandas(session):
    people, loans = _frames()
    grouped = (session.table("PEOPLE").group_by("region")
               .agg(F.avg("income").alias("mean_income"), F.count("*").alias("n"), {"age": "max"})
               .sort(col("region")))
    want = people.groupby("region").agg(mean_income=("income", "mean"), n=("id", "size"),
                                        max_age=("age", "max")).reset_index()
    got = grouped.to_pandas()
    assert list(got["region"]) == list(want["region"]) and list(got["n"]) == list(want["n"])
    np.testing.assert_allclose(got["mean_income"], want["mean_income"], rtol=1e-9)
    assert list(got["MAX(age)"]) == list(want["max_age"])

    oldest = session.table("PEOPLE").sort(col("age").desc(), "id").limit(5).to_pandas()
    assert list(oldest["id"]) == list(people.sort_values(["age", "id"], ascending=[False, True]).id[:5])
    assert session.table("PEOPLE").select("region").distinct().count() == 3
    both = session.table("PEOPLE").select("id").union_all(session.table("PEOPLE").select("id"))
    assert both.count() == 2 * len(people)
    assert session.table("PEOPLE").select("id").union(session.table("PEOPLE").select("id")).count() == len(people)

    left, right = session.table("PEOPLE"), session.table("LOANS").with_column_renamed("person_id", "id")
    inner = left.join(right, on="id").group_by("region").agg(F.sum("amount").alias("total")).sort("region")
    merged = people.merge(loans.rename(columns={"person_id": "id"}), on="id")
    want = merged.groupby("region")["amount"].sum().reset_index()
    assert list(inner.to_pandas()["total"]) == list(want["amount"])
    loans_frame = session.table("LOANS")
    by_condition = left.join(loans_frame, on=left["id"] == loans_frame["person_id"], how="left")
    assert by_condition.count() == len(people.merge(loans, left_on="id", right_on="person_id", how="left"))


def test_random_split_and_sample_are_disjoint_complete_and_repeatable(session):
    people, _ = _frames()
    table = session.table("PEOPLE")
    parts = table.random_split([0.7, 0.2, 0.1], seed=42)
    ids = [set(p.to_pandas()["id"]) for p in parts]
    assert sum(len(i) for i in ids) == len(people) and set().union(*ids) == set(people["id"])  # complete
    assert all(not (a & b) for k, a in enumerate(ids) for b in ids[k + 1:])  # disjoint
    assert [set(p.to_pandas()["id"]) for p in table.random_split([0.7, 0.2, 0.1], seed=42)] == ids  # same seed
    assert abs(len(ids[0]) / len(people) - 0.7) < 0.05
    assert set(table.random_split([0.7, 0.3], seed=7)[0].to_pandas()["id"]) != ids[0]
    sample = table.sample(frac=0.25, seed=3)
    assert abs(sample.count() / len(people) - 0.25) < 0.05
    assert set(sample.to_pandas()["id"]) == set(table.sample(frac=0.25, seed=3).to_pandas()["id"])
    assert table.sample(n=17, seed=1).count() == 17


def test_a_prepared_frame_trains_through_the_connector_split_exactly(session, ray_cluster):
    train, _ = session.table("PEOPLE").with_column("y", col("income") / col("age")).random_split([0.8, 0.2], seed=5)
    shards = DataConnector.from_dataframe(train).split(3)  # a query: read once, then cut
    seen = pd.concat([s.to_pandas() for s in shards])
    assert seen["id"].is_unique and len(seen) == train.count()


def test_unsupported_operations_name_the_sql_alternative(session):
    frame = session.table("PEOPLE")
    with pytest.raises(UnsupportedOperation, match=r"session\.sql"):
        frame.pivot("region")
    with pytest.raises(UnsupportedOperation, match="semi"):
        frame.join(frame, on="id", how="semi")
    with pytest.raises(InvalidArgument, match="both frames have"):
        frame.join(session.table("PEOPLE"), on=frame["id"] == frame["id"])
    with pytest.raises(InvalidArgument, match=r"& \| ~"):
        bool(col("a") > 1)


def test_a_notebook_style_prep_then_fit_and_predict(warehouse, ray_cluster):
    """Snowflake-notebook shape with only imports changed: session prep -> random_split -> fit -> predict."""
    from trainflow.distributors.xgboost import XGBEstimator

    session = connect(str(warehouse))
    df = (session.table("TRAINING_DATA")
          .filter(col("age") >= 21)
          .with_column("log_income", F.ln(col("income")))
          .drop("income"))
    train_df, test_df = df.random_split([0.8, 0.2], seed=42)
    features = ["age", "log_income", "credit_score"]
    estimator = XGBEstimator(n_estimators=20, params={"max_depth": 4})
    estimator.fit(DataConnector.from_dataframe(train_df), input_cols=features, label_col="default_risk")
    test = test_df.to_pandas()  # one read: predictions and labels line up row by row
    pred = estimator.predict(test)
    assert len(pred) == len(test) and len(test) + train_df.count() == df.count()
    rmse = float(np.sqrt(np.mean((pred - test["default_risk"].to_numpy()) ** 2)))
    assert rmse < test["default_risk"].std()  # learned something from the prepared columns


def test_snowflake_connector_arguments_and_from_sources(session, ray_cluster, tmp_path):
    from trainflow.data import ShardedDataConnector

    people, _ = _frames()
    with pytest.warns(UserWarning, match="ingestor_class ignored"):
        DataConnector.from_dataframe(session.table("PEOPLE"), ingestor_class=object)
    by_session = DataConnector.from_sql("SELECT id FROM PEOPLE WHERE age < 30", session=session)
    assert by_session.count_rows() == int((people.age < 30).sum())
    people.iloc[:100].to_parquet(tmp_path / "extra.parquet")
    both = DataConnector.from_sources(session, ["PEOPLE", str(tmp_path / "extra.parquet")])
    shards = ShardedDataConnector.from_sources(session, ["PEOPLE", str(tmp_path / "extra.parquet")]).shards(3)
    sizes = [s.count_rows() for s in shards]
    assert sum(sizes) == both.count_rows() == len(people) + 100 and max(sizes) - min(sizes) <= 1  # even
    ids = pd.concat([s.to_pandas() for s in shards])["id"]
    assert sorted(ids) == sorted(list(people["id"]) + list(range(100)))
