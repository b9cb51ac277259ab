"""trainflow.registry against a real MLflow SQLite store with real (small) models."""
from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import lightgbm
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import xgboost
from mlflow import MlflowClient

from trainflow.errors import ConfigError, RegistryError
from trainflow.registry import (
    PromotionRule,
    RegisteredModel,
    get_champion,
    load_champion,
    register_model,
    tracking_uri,
)

FEATURES = ["f0", "f1", "f2", "f3"]
RMSE = PromotionRule("rmse", "min")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store per module: its schema migration costs seconds, so it is made once."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)  # artifacts land under the tmp dir, never the repo
        yield uri


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(300, 4)), columns=FEATURES)
    y = 3 * x.f0 - 2 * x.f1 + x.f2 * x.f3 + rng.normal(scale=0.1, size=300)
    df = x.assign(y=y)
    return df.iloc[:240].reset_index(drop=True), df.iloc[240:].reset_index(drop=True)


def _xgb(data, rounds: int) -> tuple[xgboost.Booster, dict, dict]:
    train, ev = data
    dtrain = xgboost.DMatrix(train[FEATURES], label=train.y)
    deval = xgboost.DMatrix(ev[FEATURES], label=ev.y)
    history: dict = {}
    booster = xgboost.train({"max_depth": 3, "eta": 0.3, "nthread": 1}, dtrain, rounds,
                            evals=[(dtrain, "train"), (deval, "eval")], evals_result=history,
                            verbose_eval=False)
    pred = booster.predict(deval)
    return booster, {"rmse": float(np.sqrt(np.mean((pred - ev.y) ** 2)))}, history


def _register_xgb(data, name: str, rounds: int, **over) -> RegisteredModel:
    booster, metrics, history = _xgb(data, rounds)
    kwargs = dict(experiment=f"exp-{name}", model_name=name, framework="xgboost", model=booster,
                  input_example=data[1], params={"max_depth": 3, "rounds": rounds},
                  metrics=metrics, eval_history=history, feature_names=FEATURES,
                  feature_importance=None, rule=RMSE)
    return register_model(**{**kwargs, **over})


def _alias(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


# --- PromotionRule -------------------------------------------------------------------------------

def test_rule_min_prefers_lower_strictly() -> None:
    assert RMSE.beats(0.5, 0.6)
    assert not RMSE.beats(0.7, 0.6)
    assert not RMSE.beats(0.6, 0.6)


def test_rule_max_prefers_higher_strictly() -> None:
    auc = PromotionRule("auc", "max")
    assert auc.beats(0.9, 0.8)
    assert not auc.beats(0.7, 0.8)
    assert not auc.beats(0.8, 0.8)


def test_rule_no_champion_and_nan() -> None:
    assert RMSE.beats(10.0, None)
    assert PromotionRule("auc", "max").beats(0.0, None)
    assert not RMSE.beats(float("nan"), 0.6)
    assert not RMSE.beats(float("nan"), None)
    with pytest.raises(ConfigError, match="mode"):
        PromotionRule("rmse", "lowest")  # type: ignore[arg-type]


def test_tracking_uri_env_wins_else_sqlite_in_cwd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"


def test_downloading_a_version_draws_no_progress_bar_on_the_console(store: str, data, tmp_path: Path,
                                                                      capfd) -> None:
    from trainflow.registry import download_model

    model = _register_xgb(data, "quiet", rounds=3)
    capfd.readouterr()
    folder = download_model(model.uri, str(tmp_path))
    assert (Path(folder) / "MLmodel").exists()
    out, err = capfd.readouterr()
    assert "Downloading artifacts" not in out + err, err[-500:]
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ  # restored as it was (unset)


# --- registration and promotion ------------------------------------------------------------------

def test_a_sqlite_store_keeps_artifacts_next_to_its_database_whatever_the_working_folder(
        store: str, data, tmp_path: Path, monkeypatch) -> None:
    # `ray job submit` runs the driver in a temporary working folder that Ray deletes after the job;
    # MLflow's default (./mlruns there) would leave a registered version without its files.
    monkeypatch.chdir(tmp_path)
    model = _register_xgb(data, "elsewhere", rounds=3)
    database_folder = Path(store.removeprefix("sqlite:///")).parent
    assert Path(model.artifact_uri.removeprefix("file://")).is_relative_to(database_folder / "mlruns")
    assert not (tmp_path / "mlruns").exists()
    loaded = mlflow.pyfunc.load_model(model.uri)
    assert len(loaded.predict(data[1][FEATURES])) == len(data[1])


def test_champion_moves_only_on_improvement(store: str, data) -> None:
    client = MlflowClient(tracking_uri=store)
    first = _register_xgb(data, "promo", rounds=5)
    assert (first.version, first.promoted, first.champion_version) == ("1", True, "1")
    assert sorted(first.aliases) == ["challenger", "champion"]
    assert first.uri == "models:/promo/1" and first.champion_uri == "models:/promo@champion"
    assert _alias(client, "promo", "champion") == _alias(client, "promo", "challenger") == "1"

    better = _register_xgb(data, "promo", rounds=60)
    assert better.metrics["rmse"] < first.metrics["rmse"]
    assert (better.version, better.promoted, better.aliases) == ("2", True,
                                                                 ["challenger", "champion"])
    assert _alias(client, "promo", "champion") == _alias(client, "promo", "challenger") == "2"

    worse = _register_xgb(data, "promo", rounds=1)
    assert worse.metrics["rmse"] > better.metrics["rmse"]
    assert (worse.version, worse.promoted, worse.aliases) == ("3", False, ["challenger"])
    assert worse.champion_version == "2"
    assert _alias(client, "promo", "champion") == "2"
    assert _alias(client, "promo", "challenger") == "3"
    version, metrics = get_champion("promo")
    assert version == "2" and metrics["rmse"] == pytest.approx(better.metrics["rmse"])
    assert json.loads(json.dumps(worse.to_dict()))["champion_uri"] == "models:/promo@champion"

    champion = mlflow.pyfunc.load_model("models:/promo@champion")
    preds = np.asarray(champion.predict(data[1][FEATURES])).ravel()
    assert len(preds) == len(data[1])
    booster = mlflow.xgboost.load_model("models:/promo/2")
    np.testing.assert_allclose(preds, booster.predict(xgboost.DMatrix(data[1][FEATURES])),
                               rtol=1e-6)


def test_run_logs_masked_params_history_and_plots(store: str, data, tmp_path: Path) -> None:
    params = {"max_depth": 3, "objective": "reg:squarederror",
              "storage": {"s3": {"access_key": "AKIA123", "region": "eu-west-1"}},
              "db_password": "hunter2", "api_token": "tok-1", "tokenizer": "bpe"}
    result = _register_xgb(data, "logged", rounds=7, params=params, tags={"team": "risk"})
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(result.run_id)
    logged = run.data.params
    assert logged["storage.s3.access_key"] == "***"
    assert logged["db_password"] == "***" and logged["api_token"] == "***"
    assert logged["storage.s3.region"] == "eu-west-1" and logged["max_depth"] == "3"
    assert logged["tokenizer"] == "bpe"
    assert not {"AKIA123", "hunter2", "tok-1"} & set(logged.values())
    assert run.data.tags["team"] == "risk" and run.info.status == "FINISHED"
    assert run.data.metrics["rmse"] == pytest.approx(result.metrics["rmse"])

    history = client.get_metric_history(result.run_id, "eval-rmse")
    assert [m.step for m in history] == list(range(7))
    assert len(client.get_metric_history(result.run_id, "train-rmse")) == 7

    out = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, dst_path=str(tmp_path)))
    for png in ("plots/feature_importance.png", "plots/learning_curve.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    saved = json.loads((out / "eval_history.json").read_text())
    assert len(saved["eval"]["rmse"]) == 7
    assert set(json.loads((out / "feature_importance.json").read_text())) <= set(FEATURES)

    info = mlflow.models.get_model_info("models:/logged/1")
    assert info.signature.inputs.input_names() == FEATURES
    assert info.flavors.keys() >= {"xgboost", "python_function"}


def test_lightgbm_registers_and_loads_with_pyfunc(store: str, data) -> None:
    train, ev = data
    booster = lightgbm.train({"objective": "regression", "verbose": -1, "num_threads": 1},
                             lightgbm.Dataset(train[FEATURES], label=train.y), num_boost_round=20)
    rmse = float(np.sqrt(np.mean((booster.predict(ev[FEATURES]) - ev.y) ** 2)))
    result = register_model(
        experiment="exp-lgbm", model_name="lgbm", framework="lightgbm", model=booster,
        input_example=ev, params={"num_leaves": 31}, metrics={"rmse": rmse}, eval_history=None,
        feature_names=FEATURES, feature_importance=None, rule=RMSE)
    assert result.promoted and result.version == "1"
    preds = np.asarray(load_champion("lgbm").predict(ev[FEATURES])).ravel()
    np.testing.assert_allclose(preds, booster.predict(ev[FEATURES]), rtol=1e-6)
    assert "lightgbm" in mlflow.models.get_model_info("models:/lgbm@champion").flavors
    names = [a.path for a in MlflowClient(tracking_uri=store).list_artifacts(result.run_id,
                                                                              "plots")]
    assert names == ["plots/feature_importance.png"]  # no eval history -> no learning curve


def test_pytorch_module_registers_as_loadable_pyfunc(store: str, data) -> None:
    train, ev = data
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    x = torch.tensor(train[FEATURES].to_numpy(np.float32))
    y = torch.tensor(train.y.to_numpy(np.float32)).unsqueeze(1)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()) ** 0.5)
    result = register_model(
        experiment="exp-torch", model_name="mlp", framework="pytorch", model=net,
        input_example=ev, params={"lr": 0.05, "hidden": 8}, metrics={"rmse": losses[-1]},
        eval_history={"train": {"rmse": losses}}, feature_names=FEATURES,
        feature_importance=None, rule=RMSE)
    assert result.promoted and net.training  # the caller's module was not switched to eval
    pyfunc = load_champion("mlp")
    preds = np.asarray(pyfunc.predict(ev[FEATURES].astype(np.float32))).ravel()
    assert preds.shape == (len(ev),)
    with torch.no_grad():
        expected = net.eval()(torch.tensor(ev[FEATURES].to_numpy(np.float32))).numpy().ravel()
    np.testing.assert_allclose(preds, expected, rtol=1e-5, atol=1e-6)
    names = {a.path for a in MlflowClient(tracking_uri=store).list_artifacts(result.run_id,
                                                                              "plots")}
    assert names == {"plots/learning_curve.png"}  # no importances for a torch model
    reqs = Path(mlflow.pyfunc.get_model_dependencies("models:/mlp/1")).read_text().split()
    assert f"torch=={torch.__version__.split('+')[0]}" in reqs and "+" not in " ".join(reqs)


# --- failures ------------------------------------------------------------------------------------

def _fail_on(alias_to_fail: str, monkeypatch, exc: BaseException | None = None) -> None:
    """Simulate an interruption inside the alias step (it cannot happen for real here)."""
    original = MlflowClient.set_registered_model_alias

    def flaky(self, name, alias, version):
        if alias == alias_to_fail:
            raise exc or mlflow.exceptions.MlflowException("simulated: connection reset")
        return original(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", flaky)


def test_failure_while_aliasing_leaves_no_aliased_version(store: str, data, monkeypatch) -> None:
    client = MlflowClient(tracking_uri=store)
    _register_xgb(data, "atomic", rounds=3)
    _fail_on("champion", monkeypatch)  # challenger already moved to the new version by then
    with pytest.raises(RegistryError, match="moving the aliases") as err:
        _register_xgb(data, "atomic", rounds=60)
    assert "simulated" in str(err.value) and "Fix:" in str(err.value)

    versions = client.search_model_versions("name = 'atomic'")
    assert [str(v.version) for v in versions] == ["1"]
    assert _alias(client, "atomic", "champion") == "1"
    assert _alias(client, "atomic", "challenger") == "1"  # handed back, not left dangling
    runs = client.search_runs([client.get_experiment_by_name("exp-atomic").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    assert mlflow.active_run() is None


@pytest.mark.parametrize("interrupt", [None, KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_failure_on_first_registration_keeps_nothing(store: str, data, monkeypatch,
                                                     interrupt) -> None:
    client = MlflowClient(tracking_uri=store)
    name = f"first-fails-{'ctrl-c' if interrupt else 'error'}"
    _fail_on("challenger", monkeypatch, interrupt)
    expected = (KeyboardInterrupt, "") if interrupt else (RegistryError, "moving the aliases")
    with pytest.raises(expected[0], match=expected[1]):
        _register_xgb(data, name, rounds=3)
    assert client.search_model_versions(f"name = '{name}'") == []
    assert _alias(client, name, "challenger") is None
    assert get_champion(name) is None
    runs = client.search_runs([client.get_experiment_by_name(f"exp-{name}").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"] and mlflow.active_run() is None


def test_failure_before_registration_fails_run(store: str, data) -> None:
    client = MlflowClient(tracking_uri=store)
    with pytest.raises(RegistryError, match="logging the model"):
        _register_xgb(data, "broken", rounds=3, model=object(), feature_importance={})
    assert client.search_model_versions("name = 'broken'") == []
    runs = client.search_runs([client.get_experiment_by_name("exp-broken").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_nan_score_is_registered_but_never_champion(store: str, data) -> None:
    result = _register_xgb(data, "nan-score", rounds=2, metrics={"rmse": float("nan")})
    assert (result.version, result.aliases, result.promoted) == ("1", ["challenger"], False)
    assert result.champion_version == "" and get_champion("nan-score") is None
    with pytest.raises(RegistryError, match="champion"):
        load_champion("nan-score")


def test_bad_arguments_fail_before_any_run(store: str, data) -> None:
    with pytest.raises(RegistryError, match="promotion metric 'auc'"):
        _register_xgb(data, "args", rounds=2, rule=PromotionRule("auc", "max"))
    with pytest.raises(RegistryError, match="lacks feature columns"):
        _register_xgb(data, "args", rounds=2, feature_names=FEATURES + ["nope"])
    assert MlflowClient(tracking_uri=store).get_experiment_by_name("exp-args") is None


def test_default_store_does_not_leak_into_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RegistryError, match="cannot load the champion of model 'ghost'"):
        load_champion("ghost")
    assert "MLFLOW_TRACKING_URI" not in os.environ  # mlflow.set_tracking_uri writes it; undone
    assert (tmp_path / "mlflow.db").is_file() and not (tmp_path / "mlruns").exists()
    assert get_champion("ghost") is None


@contextmanager
def _locked(uri: str):
    """Hold SQLite's exclusive lock on the store: a real 'database is locked' for every writer/reader."""
    con = sqlite3.connect(uri.removeprefix("sqlite:///"), isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_busy_store_is_a_transient_error_that_registers_nothing(store: str, data) -> None:
    client = MlflowClient(tracking_uri=store)
    with _locked(store), pytest.raises(RegistryError) as err:
        _register_xgb(data, "busy", rounds=3)
    assert err.value.transient
    message = str(err.value)
    assert "database is locked" in message and "retries" in message and "SELECT" not in message
    assert client.search_model_versions("name = 'busy'") == []
    assert _register_xgb(data, "busy", rounds=3).version == "1"  # the store works once released


def test_user_errors_in_registration_are_not_transient(store: str, data) -> None:
    with pytest.raises(RegistryError) as err:
        _register_xgb(data, "not-transient", rounds=3, model=object(), feature_importance={})
    assert not err.value.transient


def test_integer_features_are_declared_without_mlflows_missing_value_hint(store, data):
    """The demo's features are int64 (age, credit_score): declared in the signature, no MLflow hint."""
    train, ev = data
    ints = ev.assign(f0=(ev.f0 * 10).round().astype("int64"), f1=(ev.f1 > 0).astype("int32"))
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model = _register_xgb((train, ints), "int-features", 3)
    assert not [w for w in seen if "integer column" in str(w.message)]
    inputs = mlflow.models.get_model_info(model.uri).signature.inputs
    assert {c.name: c.type.name for c in inputs.inputs} == {"f0": "long", "f1": "integer", "f2": "double",
                                                            "f3": "double"}
