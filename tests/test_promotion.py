"""Promotion compares the new model and the champion on the same eval data (issue 13 item 5).

Real local Ray (scoring tasks, Ray Train fits), real MLflow SQLite, real Parquet files. Three small
XGBoost fits are shared by the tests; each test registers them under its own model name and drives
the pipeline's evaluate and register steps with the eval data it needs.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from tests.conftest import regression_frame
from trainflow.errors import ConfigError
from trainflow.pipeline.plan import plan
from trainflow.pipeline.evaluate import evaluate
from trainflow.pipeline.fit import fit
from trainflow.pipeline.load import load
from trainflow.pipeline.register import register
from trainflow import frameworks
from trainflow.frameworks import FitOutcome
from trainflow.registry import ChampionScore, PromotionRule, decide, register_model
from trainflow.spec import SpecError, parse_spec

FEATURES = ["f0", "f1", "f2", "f3"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Training rows, and two eval sets from the same population: easy (labels near the mean, where
    even a barely trained model looks good) and hard (labels far from it)."""
    root = tmp_path_factory.mktemp("promotion")
    frame = regression_frame(6000, seed=3)
    train, pool = frame.iloc[:2000], frame.iloc[2000:]
    off = (pool.y - train.y.mean()).abs()
    out = {"train": train, "easy": pool[off < 0.25].head(400), "hard": pool[off > 1.5].head(400)}
    out["train_no_f3"] = train.drop(columns="f3")
    out["hard_no_f3"] = out["hard"].drop(columns="f3")
    paths = {}
    for name, part in out.items():
        paths[name] = root / f"{name}.parquet"
        part.reset_index(drop=True).to_parquet(paths[name], index=False)
    return paths


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("promotion-mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.chdir(root)  # artifacts under the tmp dir
        yield root


def job(files, model: str, eval_name: str = "hard", *, rounds: int = 40, lr: float = 0.3,
        train: str = "train", features=FEATURES, **promote):
    return parse_spec({
        "name": f"promo-{model}", "features": list(features), "label": "y",
        "data": {"train": {"parquet": str(files[train])}, "eval": {"parquet": str(files[eval_name])}},
        "trainer": {"framework": "xgboost", "n_estimators": rounds, "objective": "reg:squarederror",
                    "params": {"max_depth": 5, "learning_rate": lr},
                    "scaling": {"num_workers": 1, "num_cpu_per_worker": 1}},
        "evaluate": {"metrics": ["rmse", "mae"]},
        "register": {"model_name": model, "promote_on": {"metric": "rmse", **promote}},
    })


@pytest.fixture(scope="module")
def fitted(ray_cluster, files, store):
    """weak: 1 round at learning rate 0.05; strong: 40 rounds; no_f3: trained without feature f3."""
    out = {}
    for key, spec in {"weak": job(files, "fit", rounds=1, lr=0.05), "strong": job(files, "fit"),
                      "no_f3": job(files, "fit", "hard_no_f3", train="train_no_f3", features=FEATURES[:3])}.items():
        data = load(spec)
        out[key] = fit(spec, data, plan(spec, data))
    return out


def step(spec, outcome):
    """The pipeline's evaluate then register steps, on the spec's eval data."""
    data = load(spec)
    evaluation = evaluate(spec, outcome, data)
    return evaluation, register(spec, outcome, evaluation, data)


def champion(name: str) -> str:
    return str(MlflowClient().get_model_version_by_alias(name, "champion").version)


def frame(files, name: str) -> pd.DataFrame:
    return pd.read_parquet(files[name])


def rmse(pred, y) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred).reshape(-1) - np.asarray(y)) ** 2)))


# ------------------------------------------------------------------------------ the scenario
def test_a_better_model_scored_on_harder_data_replaces_a_champion_scored_on_easy_data(files, fitted):
    _, first = step(job(files, "scenario", "easy"), fitted["weak"])
    assert first.promoted and first.decision.startswith("promoted: no champion yet")

    evaluation, second = step(job(files, "scenario", "hard"), fitted["strong"])
    # Against v1's stored rmse (from the easy data) v2 loses: the old rule kept v1 as champion.
    stored = MlflowClient().get_run(first.run_id).data.metrics["rmse"]
    assert stored < evaluation["rmse"]
    assert second.promoted and champion("scenario") == "2", second.decision

    # v1 was scored on the hard rows in the same pass: equal to predicting them with it directly.
    hard = frame(files, "hard")
    direct = rmse(mlflow.pyfunc.load_model("models:/scenario/1").predict(hard[FEATURES]), hard.y)
    assert evaluation.champion.version == "1"
    assert evaluation.champion.metrics["rmse"] == pytest.approx(direct, rel=1e-4)
    assert evaluation["rmse"] < direct
    assert second.compared == {"version": "1", "metrics": evaluation.champion.metrics}
    assert "vs champion version 1's" in second.decision and "same eval data" in second.decision
    run = MlflowClient().get_run(second.run_id)
    assert run.data.metrics["champion_rmse"] == pytest.approx(direct, rel=1e-4)
    assert {"champion_rmse", "champion_mae", "rmse", "mae"} <= set(run.data.metrics)
    assert run.data.tags["trainflow.champion_version"] == "1"
    assert run.data.tags["trainflow.promotion"] == second.decision
    assert run.data.tags["trainflow.framework"] == "xgboost" and run.data.tags["trainflow.task"] == "regression"


def test_min_delta_blocks_an_improvement_smaller_than_it(files, fitted):
    step(job(files, "delta"), fitted["weak"])
    spec = job(files, "delta")
    data = load(spec)
    evaluation = evaluate(spec, fitted["strong"], data)
    gain = evaluation.champion.metrics["rmse"] - evaluation["rmse"]
    assert gain > 0

    blocked = register(job(files, "delta", min_delta=2 * gain), fitted["strong"], evaluation, data)
    assert not blocked.promoted and champion("delta") == "1"
    assert f"min_delta={2 * gain:g}" in blocked.decision

    passed = register(job(files, "delta", min_delta=gain / 2), fitted["strong"], evaluation, data)
    assert passed.promoted and champion("delta") == passed.version == "3"


def test_min_delta_and_the_unscorable_choice_are_spec_fields(files):
    spec = job(files, "fields")
    assert (spec.resolved_promotion.min_delta, spec.resolved_promotion.if_champion_unscorable) == (0.0, "keep")
    for bad, key in (({"min_delta": -0.1}, "min_delta"), ({"min_delta": float("inf")}, "min_delta"),
                     ({"if_champion_unscorable": "maybe"}, "if_champion_unscorable")):
        with pytest.raises(SpecError, match=f"register.promote_on.{key}"):
            job(files, "fields", **bad)
    with pytest.raises(ConfigError, match="min_delta"):
        PromotionRule("rmse", "min", min_delta=-1)


def test_the_rule_in_the_modes_direction() -> None:
    lower, higher = PromotionRule("rmse", "min", 0.1), PromotionRule("auc", "max", 0.01)
    assert lower.beats(0.5, 0.61) and not lower.beats(0.5, 0.6) and not lower.beats(0.7, 0.6)
    assert higher.beats(0.9, 0.88) and not higher.beats(0.9, 0.895) and not higher.beats(0.8, 0.9)
    assert PromotionRule("rmse", "min").beats(0.59, 0.6) and not PromotionRule("rmse", "min").beats(0.6, 0.6)
    scored = ChampionScore("4", {"rmse": 0.6})
    assert decide(lower, 0.45, scored, "4")[0] and not decide(lower, 0.45, scored, "5")[0]
    assert not decide(lower, float("nan"), ChampionScore(None), None)[0]


# ------------------------------------------------------------------------------ unscorable champions
@pytest.mark.parametrize("choice", ["keep", "promote"])
def test_a_champion_whose_features_are_gone(files, fitted, choice):
    name = f"gone-{choice}"
    step(job(files, name), fitted["weak"])
    spec = job(files, name, "hard_no_f3", train="train_no_f3", features=FEATURES[:3],
               if_champion_unscorable=choice)
    evaluation, result = step(spec, fitted["no_f3"])
    assert evaluation.champion.version == "1" and evaluation.champion.metrics is None
    assert "f3" in evaluation.champion.unscorable
    assert result.promoted is (choice == "promote") and champion(name) == ("2" if choice == "promote" else "1")
    assert "could not be scored" in result.decision and f"if_champion_unscorable={choice}" in result.decision
    assert result.compared == {"version": "1", "unscorable": evaluation.champion.unscorable}
    tags = MlflowClient().get_run(result.run_id).data.tags
    assert "f3" in tags["trainflow.champion_unscorable"] and tags["trainflow.champion_version"] == "1"


def test_a_champion_whose_model_does_not_load_is_kept(files, fitted):
    step(job(files, "broken"), fitted["weak"])
    location = MlflowClient().get_model_version_download_uri("broken", "1")
    shutil.rmtree(location.removeprefix("file://"))  # the champion's model files are gone
    evaluation, result = step(job(files, "broken"), fitted["strong"])
    assert evaluation.champion.metrics is None and "does not load" in evaluation.champion.unscorable
    assert not result.promoted and champion("broken") == "1"
    assert evaluation["rmse"] > 0 and set(evaluation) == {"rmse", "mae"}  # the new model was still scored


# ------------------------------------------------------------------------------ a concurrent move
def test_a_champion_moved_after_evaluate_is_not_overwritten(files, fitted):
    step(job(files, "race"), fitted["weak"])
    spec = job(files, "race")
    data = load(spec)
    evaluation = evaluate(spec, fitted["strong"], data)  # scores v1
    assert evaluation.champion.version == "1"
    # Meanwhile another run (another machine: outside this one's promotion lock) registers v2 and moves
    # the alias to it.
    _, other = step(job(files, "race"), fitted["weak"])
    MlflowClient().set_registered_model_alias("race", "champion", other.version)

    result = register(spec, fitted["strong"], evaluation, data)
    assert not result.promoted and champion("race") == "2" and result.champion_version == "2"
    assert "another run changed it to version 2" in result.decision
    assert MlflowClient().get_run(result.run_id).data.tags["trainflow.promotion"] == result.decision


# ------------------------------------------------------------------------------ pytorch either side
def _torch_net(files) -> torch.nn.Module:
    train = frame(files, "train")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    x = torch.tensor(train[FEATURES].to_numpy(np.float32))
    y = torch.tensor(train.y.to_numpy(np.float32)).reshape(-1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    return net.eval()


def test_pytorch_champion_and_pytorch_candidate(files, fitted):
    net = _torch_net(files)
    hard = frame(files, "hard")
    with torch.no_grad():
        direct = rmse(net(torch.tensor(hard[FEATURES].to_numpy(np.float32))).numpy(), hard.y)
    first = register_model(
        experiment="promo-torch", model_name="torch-champ", framework="pytorch", model=net,
        input_example=hard[FEATURES].head(5), params={}, metrics={"rmse": 99.0}, eval_history=None,
        feature_names=FEATURES, feature_importance=None, rule=PromotionRule("rmse", "min"),
        tags={"trainflow.task": "regression"})
    assert first.promoted

    evaluation, result = step(job(files, "torch-champ"), fitted["strong"])
    assert evaluation.champion.framework == "pytorch"
    assert evaluation.champion.metrics["rmse"] == pytest.approx(direct, rel=1e-4)
    assert result.promoted is (evaluation["rmse"] < direct)

    # A PyTorch module as the candidate, against an XGBoost champion.
    spec = job(files, "torch-champ")
    data = load(spec)
    as_candidate = evaluate(spec, FitOutcome(frameworks.get("pytorch"), None, 0.0, _model=net), data)
    assert as_candidate["rmse"] == pytest.approx(direct, rel=1e-4)
    assert as_candidate.champion.version == champion("torch-champ")
    assert as_candidate.champion.framework == ("xgboost" if result.promoted else "pytorch")
    assert as_candidate.champion.metrics["rmse"] == pytest.approx(
        evaluation["rmse"] if result.promoted else direct, rel=1e-4)


def test_lightgbm_champion_is_scored_with_its_own_framework(files, fitted):
    import lightgbm

    train, hard = frame(files, "train"), frame(files, "hard")
    booster = lightgbm.train({"objective": "regression", "num_leaves": 7, "verbose": -1, "num_threads": 1},
                             lightgbm.Dataset(train[FEATURES], label=train.y), num_boost_round=5)
    direct = rmse(booster.predict(hard[FEATURES]), hard.y)
    register_model(
        experiment="promo-lgbm", model_name="lgbm-champ", framework="lightgbm", model=booster,
        input_example=hard[FEATURES].head(5), params={}, metrics={"rmse": 0.001}, eval_history=None,
        feature_names=FEATURES, feature_importance=None, rule=PromotionRule("rmse", "min"))
    evaluation, result = step(job(files, "lgbm-champ"), fitted["strong"])
    assert evaluation.champion.framework == "lightgbm"
    assert evaluation.champion.metrics["rmse"] == pytest.approx(direct, rel=1e-4)
    assert evaluation["rmse"] < direct and result.promoted  # its stored 0.001 would have kept it
