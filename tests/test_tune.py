"""trainflow.tune: Snowflake's Tuner API on real Ray, its policies without a cluster, and the spec's
`tune:` search (ingest count, successive halving)."""
from __future__ import annotations

import math

import duckdb
import numpy as np
import pytest

from tests.conftest import regression_frame
from trainflow.distributors.placement import NodeResources
from trainflow.errors import ConfigError, OutsideTrainingError, ResourceError
from trainflow.tune import Tuner, TunerConfig, choice, get_tuner_context, loguniform, randint, uniform
from trainflow.tune.halving import keep, rounds_trained, rungs
from trainflow.tune.plan import calls_trainflow_trainer, plan_trials
from trainflow.tune.search import BayesOpt, GridSearch, RandomSearch
from trainflow.tune.space import parse_space

FEATURES = ["f0", "f1", "f2", "f3"]


# ------------------------------------------------------------------------------- policies, no cluster
def suggestions(alg, space, num_trials=5, mode="min", values=None):
    searcher = alg.searcher(parse_space(space), num_trials, mode, 1)
    out = []
    while (s := searcher.suggest()) is not None:
        key, params = s
        out.append(params)
        searcher.observe(key, values(params) if values else 0.0)
    return out


def test_grid_search_tries_every_combination_once_last_axis_fastest():
    got = suggestions(GridSearch(), {"a": [1, 2], "b": ["x", "y"], "c": 0.5}, num_trials=99)
    assert got == [{"a": 1, "b": "x", "c": 0.5}, {"a": 1, "b": "y", "c": 0.5},
                   {"a": 2, "b": "x", "c": 0.5}, {"a": 2, "b": "y", "c": 0.5}]


def test_random_search_is_seeded_and_stays_in_its_bounds():
    space = {"lr": loguniform(1e-3, 1e-1), "depth": randint(2, 4), "kind": choice(["a", "b"]), "m": uniform(0, 1)}
    first = suggestions(RandomSearch(random_state=7), space, num_trials=40)
    assert first == suggestions(RandomSearch(random_state=7), space, num_trials=40)
    assert first != suggestions(RandomSearch(random_state=8), space, num_trials=40)
    assert {p["depth"] for p in first} == {2, 3}  # the upper bound is exclusive
    assert all(1e-3 <= p["lr"] <= 1e-1 and 0 <= p["m"] <= 1 for p in first)
    assert {p["kind"] for p in first} == {"a", "b"}
    # a list under random search is a grid axis: every value num_trials times, as Ray Tune does
    assert len(suggestions(RandomSearch(random_state=1), {"a": [1, 2, 3], "m": uniform(0, 1)}, num_trials=2)) == 6


def test_bayes_opt_takes_uniform_only_and_finds_the_minimum():
    with pytest.raises(ConfigError, match="BayesOpt requires all sampling functions to be of type 'Uniform'.*depth"):
        suggestions(BayesOpt(), {"lr": uniform(0, 1), "depth": randint(1, 5)})
    got = suggestions(BayesOpt(random_state=0), {"x": uniform(-4, 4)}, num_trials=15,
                      values=lambda p: (p["x"] - 1.5) ** 2)
    assert min(abs(p["x"] - 1.5) for p in got) < 0.2


@pytest.mark.parametrize("space, alg, message", [
    ({}, RandomSearch(), "search space is empty"),
    ({"a": 1}, RandomSearch(), "only fixed values"),
    ({"a": []}, RandomSearch(), "empty list"),
    ({"a": uniform(0, 1)}, GridSearch(), "GridSearch tries listed values only"),
])
def test_bad_search_spaces_are_refused_with_the_fix(space, alg, message):
    with pytest.raises(ConfigError, match=message):
        suggestions(alg, space)


def test_sampling_functions_check_their_arguments():
    for call, message in ((lambda: randint(3, 3), "upper bound is exclusive"),
                          (lambda: loguniform(0, 1), "0 < lower < upper"),
                          (lambda: uniform(2, 1), "lower must be below upper"),
                          (lambda: choice([]), "non-empty list")):
        with pytest.raises(ConfigError, match=message):
            call()


def test_trial_plan_checks_the_cluster_and_lends_resources_to_trainers():
    nodes = [NodeResources("a", 8, 0), NodeResources("b", 4, 0)]
    plan = plan_trials(TunerConfig("rmse", "min", max_concurrent_trials=2), nodes, uses_trainer=True)
    assert (plan.concurrency, plan.resources.cpus, plan.resources.held) == (4, 4, False)
    held = plan_trials(TunerConfig("rmse", "min", resource_per_trial={"CPU": 2}), nodes, uses_trainer=False)
    assert (held.concurrency, held.resources.cpus, held.resources.held) == (2, 2, True)
    with pytest.raises(ResourceError, match=r"Insufficient CPU resources. Required: 12 .*Available: 8"):
        plan_trials(TunerConfig("rmse", "min", max_concurrent_trials=3, resource_per_trial={"CPU": 4}), nodes, True)
    with pytest.raises(ResourceError, match="Insufficient GPU"):
        plan_trials(TunerConfig("rmse", "min", resource_per_trial={"GPU": 1}), nodes, True)


@pytest.mark.parametrize("field, value, message", [
    ("mode", "lowest", "use 'min' or 'max'"), ("num_trials", 0, "positive integer"),
    ("resource_per_trial", {"cpu": 1}, "keys 'CPU' and/or 'GPU'"), ("metric", "", "name a key"),
])
def test_tuner_config_errors_name_the_field(field, value, message):
    config = TunerConfig("rmse", "min")
    setattr(config, field, value)
    with pytest.raises(ConfigError, match=f"{field}.*{message}"):
        config.check()


def _uses_estimator():
    from trainflow.distributors.xgboost import XGBEstimator

    return XGBEstimator


def test_trainflow_tells_whether_train_func_uses_its_trainers():
    from trainflow.distributors import lightgbm
    from trainflow.distributors.xgboost import XGBEstimator as Est

    def direct():
        Est(n_estimators=3)

    def via_module():
        lightgbm.LightGBMEstimator()

    def via_helper():
        _uses_estimator()

    def plain():
        import xgboost

        xgboost.train({}, None)

    assert calls_trainflow_trainer(direct) and calls_trainflow_trainer(via_module)
    assert calls_trainflow_trainer(via_helper)
    assert not calls_trainflow_trainer(plain)


def test_successive_halving_rungs_and_rounds():
    plan = rungs(8, min_rounds=6, max_rounds=60, reduction_factor=3)
    assert [(r.rounds, r.trials) for r in plan] == [(6, 8), (18, 3), (54, 1), (60, 1)]
    assert rounds_trained(plan) == 8 * 6 + 3 * 12 + 36 + 6
    assert keep({0: 0.5, 1: 0.1, 2: math.nan, 3: 0.1}, 2, "min") == [1, 3]
    assert keep({0: 0.5, 1: 0.1}, 1, "max") == [0]


def test_get_tuner_context_outside_a_trial_raises():
    with pytest.raises(OutsideTrainingError):
        get_tuner_context()


# ------------------------------------------------------------------------------- the Tuner on Ray
@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """A DuckDB warehouse with train/test tables, opened the Snowflake way (session.table)."""
    frame = regression_frame(3000, seed=11)
    path = tmp_path_factory.mktemp("tune") / "wh.duckdb"
    with duckdb.connect(str(path)) as con:
        train, test = frame.iloc[:2400], frame.iloc[2400:]  # noqa: F841 - read by name below
        con.execute("CREATE TABLE TRAIN AS SELECT * FROM train")
        con.execute("CREATE TABLE TEST AS SELECT * FROM test")
    return str(path)


def test_snowflake_tuner_example_runs_with_import_paths_changed_and_reads_the_data_once(ray_cluster, tables):
    from trainflow.data import DataConnector, connect
    from trainflow.distributors.xgboost import XGBEstimator
    from trainflow.tune import get_tuner_context
    from trainflow.tune import Tuner as SnowflakeTuner
    from trainflow.tune.search import RandomSearch as Random

    session = connect(tables)
    dataset_map = {"train": DataConnector.from_dataframe(session.table("TRAIN")),
                   "test": DataConnector.from_dataframe(session.table("TEST"))}

    def train_func():
        tuner_context = get_tuner_context()
        config = tuner_context.get_hyper_params()
        dm = tuner_context.get_dataset_map()
        estimator = XGBEstimator(n_estimators=int(config["n_estimators"]),
                                 params={"learning_rate": config["learning_rate"], "max_depth": config["max_depth"]})
        estimator.fit(dm["train"], FEATURES, "y", eval_set=dm["test"])
        rmse = estimator.get_eval_results()["eval"]["rmse"][-1]
        tuner_context.report(metrics={"rmse": rmse, "read": float(not estimator.fit_profile_["matrix_reused"])},
                             model=estimator.get_booster())

    tuner = SnowflakeTuner(
        train_func,
        {"n_estimators": randint(5, 25), "learning_rate": uniform(0.05, 0.5), "max_depth": [2, 4]},
        TunerConfig(metric="rmse", mode="min", search_alg=Random(random_state=3), num_trials=2),
    )
    results = tuner.run(dataset_map=dataset_map)
    frame = results.results
    assert len(frame) == 4
    assert {"rmse", "trial_id", "time_total_s", "config/n_estimators", "config/learning_rate",
            "config/max_depth"} <= set(frame.columns)
    assert frame["read"].sum() == 1  # one read and binning for four fits: the query was pinned once
    best = frame["rmse"].idxmin()
    assert len(results.best_result) == 1
    assert results.best_result["trial_id"].iloc[0] == frame["trial_id"][best]
    x = regression_frame(3000, seed=11).iloc[2400:]
    import xgboost

    pred = results.best_model.predict(xgboost.DMatrix(x[FEATURES]))
    assert math.isclose(float(np.sqrt(np.mean((pred - x["y"].to_numpy()) ** 2))), frame["rmse"][best], rel_tol=1e-4)


def test_a_train_func_that_trains_by_itself_gets_the_trials_cpus(ray_cluster, tables):
    from trainflow.data import DataConnector, connect

    session = connect(tables)
    dataset_map = {"train": DataConnector.from_dataframe(session.table("TRAIN"))}

    def train_func():
        import os

        import xgboost as xgb

        ctx = get_tuner_context()
        df = ctx.get_dataset_map()["train"].to_pandas()
        booster = xgb.train({"max_depth": ctx.get_hyper_params()["depth"]}, xgb.DMatrix(df[FEATURES], df["y"]), 5)
        rmse = float(np.sqrt(np.mean((booster.predict(xgb.DMatrix(df[FEATURES])) - df["y"]) ** 2)))
        ctx.report({"rmse": rmse, "threads": float(os.environ.get("OMP_NUM_THREADS", 0))})

    results = Tuner(train_func, {"depth": [1, 3, 6]},
                    TunerConfig("rmse", "min", search_alg=GridSearch(), max_concurrent_trials=2,
                                resource_per_trial={"CPU": 1})).run(dataset_map=dataset_map)
    assert list(results.results["config/depth"]) == [1, 3, 6]
    assert set(results.results["threads"]) == {1.0}  # Ray gives a 1-CPU task one thread
    assert results.best_result["config/depth"].iloc[0] == 6
    assert results.best_model is None  # nothing reported as model


def test_tuner_errors_come_in_seconds_with_the_fix(ray_cluster, tables):
    from trainflow.data import DataConnector
    from trainflow.distributors.xgboost import XGBEstimator

    def wrong_key():
        get_tuner_context().report({"mse": 1.0})

    with pytest.raises(ConfigError, match=r"reported \['mse'\], but TunerConfig.metric is 'rmse'"):
        Tuner(wrong_key, {"a": [1]}, TunerConfig("rmse", "min", search_alg=GridSearch())).run()

    data = DataConnector.from_dataframe(regression_frame(200, seed=1))

    def trainer_in_a_held_trial():
        XGBEstimator(n_estimators=2).fit(data, FEATURES, "y")

    with pytest.raises(ConfigError, match="uses_snowflake_trainer=True"):
        Tuner(trainer_in_a_held_trial, {"a": [1]},
              TunerConfig("rmse", "min", search_alg=GridSearch(), uses_snowflake_trainer=False)).run()
    with pytest.raises(ResourceError, match="Insufficient CPU"):
        Tuner(wrong_key, {"a": [1]}, TunerConfig("rmse", "min", resource_per_trial={"CPU": 64})).run()


def test_a_failing_trial_is_a_row_with_its_error_and_the_search_goes_on(ray_cluster):
    def train_func():
        a = get_tuner_context().get_hyper_params()["a"]
        if a == 2:
            raise ValueError("two is not allowed")
        get_tuner_context().report({"score": float(a)})

    results = Tuner(train_func, {"a": [1, 2, 3]},
                    TunerConfig("score", "max", search_alg=GridSearch())).run()
    frame = results.results
    assert list(frame["config/a"]) == [1, 2, 3]
    assert "two is not allowed" in frame["error"][1] and frame["error"].isna()[0]
    assert results.best_result["config/a"].iloc[0] == 3


# ------------------------------------------------------------------------------- the spec's search
def tune_spec(train: str, holdout: str, **tune) -> dict:
    return {
        "name": "tune-steps", "data": {"train": {"parquet": train}, "eval": {"parquet": holdout}},
        "features": FEATURES, "label": "y", "register": {"model_name": "tune-steps"},
        # one thread: many short fits with two OpenMP threads crawl when another process holds a core
        "trainer": {"framework": "xgboost", "n_estimators": 60, "params": {"max_depth": 3},
                    "scaling": {"num_workers": 1, "num_cpu_per_worker": 1}},
        "tune": {"search_space": {"params.learning_rate": [0.3, 0.1, 0.002, 0.001],
                                  "params.max_depth": [2, 5]}, "search_alg": "grid", **tune},
    }


def test_successive_halving_saves_rounds_and_picks_the_full_searchs_best(ray_cluster, tmp_path):
    from tests.test_warm import write_parquet
    from trainflow.pipeline.load import load
    from trainflow.pipeline.plan import plan
    from trainflow.pipeline.tune import tune
    from trainflow.spec import parse_spec

    frame = regression_frame(4000, seed=5)
    train = write_parquet(frame.iloc[:3200], tmp_path / "train.parquet")
    holdout = write_parquet(frame.iloc[3200:], tmp_path / "eval.parquet")

    def search(**extra):
        spec = parse_spec(tune_spec(train, holdout, **extra))
        data = load(spec)
        try:
            return tune(spec, data, plan(spec, data))
        finally:
            data.release()

    full = search()
    halved = search(halving={"min_rounds": 6, "reduction_factor": 3})
    assert full.rounds_trained == 8 * 60
    assert halved.rounds_trained <= 0.6 * full.rounds_trained  # the known-bad half stops at 6 rounds
    assert halved.best_trial.config == full.best_trial.config
    assert halved.best_trial.metrics["rmse"] == pytest.approx(full.best_trial.metrics["rmse"], rel=1e-6)
    assert halved.best.result.rounds_ == 60
    # each worker read and binned its shard once for the 8 trials, not once per trial
    assert full.reads == 1 and halved.reads <= 1
    stopped = [t for t in halved.trials if t.metrics["rounds"] == 6]
    assert len(stopped) == 5 and all(t.config["params.learning_rate"] < 0.01 or t is not halved.best_trial
                                     for t in stopped)


def test_a_spec_tune_block_is_checked_when_read():
    from trainflow.spec import parse_spec

    with pytest.raises(ConfigError, match="tune.search_space.*params.<name>"):
        parse_spec(tune_spec("a.parquet", "b.parquet") | {"tune": {"search_space": {"max_depth": [1]}}})
    with pytest.raises(ConfigError, match="tune.metric.*'r2' cannot score xgboost trials"):
        parse_spec(tune_spec("a.parquet", "b.parquet", metric="r2"))
    with pytest.raises(ConfigError, match="halving decides the rounds"):
        bad = tune_spec("a.parquet", "b.parquet", halving={"min_rounds": 5})
        bad["tune"]["search_space"]["n_estimators"] = [10, 20]
        parse_spec(bad)
    spec = parse_spec(tune_spec("a.parquet", "b.parquet"))
    assert (spec.resolved_tune.metric, spec.resolved_tune.mode) == ("rmse", "min")  # the promotion metric by default
    assert (spec.tune.metric, spec.tune.mode) == (None, None)  # what the spec says


@pytest.mark.slow  # two Ray Train fits (PyTorch still starts a worker group per fit): ~30 s
def test_a_train_func_that_runs_pytorch_distributor_works(ray_cluster, tmp_path):
    from trainflow.data import ShardedDataConnector
    from trainflow.data.demo import credit_frame
    from trainflow.distributors.pytorch import PyTorchDistributor
    from trainflow.examples.credit_mlp import train_func as credit_mlp

    stage = str(tmp_path)

    def train_func():
        ctx = get_tuner_context()
        result = PyTorchDistributor(credit_mlp).run(
            dataset_map=ctx.get_dataset_map(), artifact_stage_location=stage,
            hyper_params={"epochs": "2", "batch_size": str(ctx.get_hyper_params()["batch_size"])})
        ctx.report({"loss": result.get_metrics()["eval-loss"]}, model=result.get_model_dir())

    results = Tuner(train_func, {"batch_size": [64, 256]}, TunerConfig("loss", "min", search_alg=GridSearch())).run(
        dataset_map={"train": ShardedDataConnector.from_dataframe(credit_frame(1500, seed=1)),
                     "eval": ShardedDataConnector.from_dataframe(credit_frame(500, seed=2))})
    assert list(results.results["config/batch_size"]) == [64, 256]
    assert results.results["loss"].notna().all()
    assert results.best_model.startswith(stage)  # the best trial's model dir
