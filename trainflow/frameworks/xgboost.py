"""The xgboost plug-in: objectives, XGBEstimator for fits, the mlflow.xgboost flavour."""
from __future__ import annotations

from typing import Any, Literal

import numpy as np

from trainflow.frameworks import register
from trainflow.frameworks.base import Task
from trainflow.frameworks.boosting import BoostingFramework

OBJECTIVES: dict[str, Task] = {
    "reg:squarederror": "regression",
    "reg:absoluteerror": "regression",
    "reg:pseudohubererror": "regression",
    "reg:logistic": "regression",
    "binary:logistic": "binary",
    "binary:logitraw": "binary",
    "multi:softprob": "multiclass",
    "multi:softmax": "multiclass",
    "count:poisson": "regression",
    "reg:gamma": "regression",
    "reg:tweedie": "regression",
}
# The evaluate step's metrics read the task's score: a value, P(class 1), or class probabilities.
# These objectives predict something else (binary:logitraw the margin, multi:softmax class ids), so
# they are scored through their margin and this link; every other one predicts the score itself.
# Objectives with no probability (binary:hinge, ranking) are not in OBJECTIVES: the spec refuses them.
MARGIN_LINK: dict[str, Literal["sigmoid", "softmax"]] = {
    "binary:logitraw": "sigmoid",
    "multi:softmax": "softmax",
}


class XGBoostFramework(BoostingFramework):
    name = "xgboost"
    objectives = OBJECTIVES
    default_objective = "reg:squarederror"
    memory_modes = ("in_memory", "low", "external")  # auto takes the first that fits
    native_metrics = {"rmse": "rmse", "mae": "mae", "auc": "auc", "logloss": "logloss", "mlogloss": "mlogloss"}
    eval_metric_param = "eval_metric"

    def estimator_cls(self):
        from trainflow.distributors.xgboost import XGBEstimator

        return XGBEstimator

    def flavour(self) -> Any:
        import mlflow.xgboost

        return mlflow.xgboost

    def predict_frame(self, model: Any, x) -> np.ndarray:
        import xgboost

        if isinstance(model, xgboost.Booster):  # a Booster predicts a DMatrix, not a frame
            return model.predict(xgboost.DMatrix(x))
        return np.asarray(model.predict(x))

    def load_registered(self, folder: str) -> Any:
        import mlflow.xgboost

        booster = mlflow.xgboost.load_model(folder)
        return getattr(booster, "get_booster", lambda: booster)()

    def importance(self, model: Any) -> dict[str, float]:
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        return {k: float(v) for k, v in booster.get_score(importance_type="gain").items()}


FRAMEWORK = register(XGBoostFramework())
