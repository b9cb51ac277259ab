"""The boosting estimators as cases of one contract (tests/test_estimator_contract.py): what differs
between XGBoost and LightGBM in a test is written here once, per framework."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tests.conftest import regression_frame

ROUNDS = 40


@dataclass(frozen=True)
class Case:
    name: str
    estimator: Callable[..., Any]       # the estimator class
    scaling: Callable[..., Any]         # its scaling config class
    params: dict[str, Any]
    features: list[str]
    train: Callable[[], pd.DataFrame]   # sorted by f0: each of 2 workers sees half of f0's range
    holdout: Callable[[], pd.DataFrame]
    plain: Callable[[pd.DataFrame, dict, int], Any]   # single-process fit on all rows
    native_predict: Callable[[Any, pd.DataFrame, list[str]], np.ndarray]
    rounds: Callable[[Any], int]        # trees in a returned booster
    quality_tolerance: float            # distributed holdout RMSE ≤ plain × this
    early_stopping_param: str           # the framework's own name for early stopping rounds
    user_early_stopping: Callable[[int], Any]  # the framework's early stopping callback
    early_stopping_params: dict[str, Any]      # a fast learner whose eval metric turns up early
    best_of: Callable[[int], int]              # best iteration after a 5-round patience stopped at `rounds`
    kept_of: Callable[[int], int]              # trees in the returned booster after that stop
    booster_type: type                         # what fit returns
    predict_rtol: float                        # estimator.predict vs the booster's own predict
    kill_at: Callable[..., Any]                # (round, marker, once=True) -> a callback that SIGKILLs rank 0

    def __str__(self) -> str:
        return self.name


def _xgb_plain(frame: pd.DataFrame, params: dict, rounds: int):
    import xgboost as xgb

    features = [c for c in frame.columns if c != "y"]
    return xgb.train(params, xgb.DMatrix(frame[features], label=frame["y"]), rounds)


def _xgb_predict(booster, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    import xgboost as xgb

    return booster.predict(xgb.DMatrix(frame[features]))


def _lgb_plain(frame: pd.DataFrame, params: dict, rounds: int):
    import lightgbm as lgb

    features = [c for c in frame.columns if c != "y"]
    return lgb.train(params, lgb.Dataset(frame[features].to_numpy(np.float32), frame["y"].to_numpy()), rounds)


def _lgb_predict(booster, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    return booster.predict(frame[features].to_numpy(np.float32))


def lightgbm_frame(rows: int, seed: int) -> pd.DataFrame:
    """regression_frame plus a pure-noise column (LightGBM's importance test ranks it last)."""
    df = regression_frame(rows, seed=seed)
    df.insert(4, "noise", np.random.default_rng(seed + 100).uniform(-2, 2, rows))
    return df


def xgb_kill_at(at: int, marker: str, once: bool = True):
    """A callback that SIGKILLs its worker (rank 0: user callbacks run there) after round `at`, the first
    time only with `once`. Built inside a function, so Ray ships it by value (tests/ is not importable
    on workers)."""
    import os
    import signal

    import xgboost as xgb

    class Killer(xgb.callback.TrainingCallback):
        trainflow_resumable = True  # keeps no state and counts rounds from the model: fits still resume

        def after_iteration(self, model, epoch, evals_log) -> bool:
            # num_boosted_rounds, not epoch: xgboost restarts `epoch` at 0 when it continues a checkpoint
            if model.num_boosted_rounds() == at and not (once and os.path.exists(marker)):
                with open(marker, "a") as fh:
                    fh.write(f"{os.getpid()}\n")
                os.kill(os.getpid(), signal.SIGKILL)
            return False

    return Killer()


def lgb_kill_at(at: int, marker: str, once: bool = True):
    """LightGBM's form of xgb_kill_at (its callbacks see the absolute iteration, also after a resume)."""
    import os
    import signal

    def kill(env) -> None:
        if env.iteration + 1 == at and not (once and os.path.exists(marker)):
            with open(marker, "a") as fh:
                fh.write(f"{os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGKILL)

    kill.order = 50
    kill.trainflow_resumable = True
    return kill


def _xgb_case() -> Case:
    import xgboost as xgb

    from trainflow.distributors.xgboost import XGBEstimator, XGBScalingConfig

    return Case(
        name="xgboost", estimator=XGBEstimator, scaling=XGBScalingConfig,
        params={"objective": "reg:squarederror", "max_depth": 5, "learning_rate": 0.2},
        features=["f0", "f1", "f2", "f3"],
        train=lambda: regression_frame(6000, seed=1).sort_values("f0", ignore_index=True),
        holdout=lambda: regression_frame(2000, seed=2),
        plain=_xgb_plain, native_predict=_xgb_predict, rounds=lambda b: b.num_boosted_rounds(),
        quality_tolerance=1.05, early_stopping_param="early_stopping_rounds",
        user_early_stopping=lambda patience: xgb.callback.EarlyStopping(rounds=patience),
        early_stopping_params={"max_depth": 6, "learning_rate": 0.5},
        best_of=lambda rounds: rounds - 6,  # 0-based: the best round, then 5 without gain
        kept_of=lambda rounds: rounds,  # xgboost keeps every tree (best_iteration says which to use)
        booster_type=xgb.Booster, predict_rtol=1e-5, kill_at=xgb_kill_at,
    )


def _lgb_case() -> Case:
    import lightgbm as lgb

    from trainflow.distributors.lightgbm import LightGBMEstimator, LightGBMScalingConfig

    return Case(
        name="lightgbm", estimator=LightGBMEstimator, scaling=LightGBMScalingConfig,
        params={"num_leaves": 15, "learning_rate": 0.2, "verbosity": -1},
        features=["f0", "f1", "f2", "f3", "noise"],
        train=lambda: lightgbm_frame(4000, seed=1).sort_values("f0", ignore_index=True),
        holdout=lambda: lightgbm_frame(1500, seed=2),
        plain=_lgb_plain, native_predict=_lgb_predict, rounds=lambda b: b.num_trees(),
        quality_tolerance=1.03, early_stopping_param="early_stopping_round",
        user_early_stopping=lambda patience: lgb.early_stopping(patience, verbose=False),
        early_stopping_params={"num_leaves": 63, "learning_rate": 0.5, "min_data_in_leaf": 2},
        best_of=lambda rounds: rounds - 5,  # 1-based
        kept_of=lambda rounds: rounds - 5,  # the model at the best round
        booster_type=lgb.Booster, predict_rtol=1e-6, kill_at=lgb_kill_at,
    )


CASES = {"xgboost": _xgb_case, "lightgbm": _lgb_case}


@dataclass
class TwoWorkerFit:
    """One 2-worker fit of a case (shared by the contract suite and the framework's own tests)."""

    case: Case
    estimator: Any
    booster: Any
    lines: list[str]
    train: pd.DataFrame
    holdout: pd.DataFrame


def two_worker_fit(case: Case) -> TwoWorkerFit:
    from trainflow.data import DataConnector

    train, holdout = case.train(), case.holdout()
    est = case.estimator(n_estimators=ROUNDS, params=case.params, scaling_config=case.scaling(num_workers=2))
    lines: list[str] = []
    booster = est.fit(DataConnector.from_dataframe(train), case.features, "y",
                      eval_set=DataConnector.from_dataframe(holdout), verbose_eval=10, progress=lines.append)
    return TwoWorkerFit(case, est, booster, lines, train, holdout)
