"""The lightgbm plug-in: objectives, LightGBMEstimator for fits, the mlflow.lightgbm flavour."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainflow.frameworks import register
from trainflow.frameworks.base import Task
from trainflow.frameworks.boosting import BoostingFramework

# Objectives with no probability (multiclassova's unnormalised scores, ranking, cross-entropy) are
# left out: evaluate's metrics could not read their predictions, so the spec refuses them.
OBJECTIVES: dict[str, Task] = {
    "regression": "regression",
    "regression_l1": "regression",
    "huber": "regression",
    "binary": "binary",
    "multiclass": "multiclass",
    "poisson": "regression",
    "gamma": "regression",
    "tweedie": "regression",
}


class LightGBMFramework(BoostingFramework):
    name = "lightgbm"
    objectives = OBJECTIVES
    default_objective = "regression"
    native_metrics = {"rmse": "rmse", "mae": "l1", "auc": "auc", "logloss": "binary_logloss",
                      "mlogloss": "multi_logloss"}
    eval_metric_param = "metric"
    # min_data_in_leaf would otherwise shape the Dataset (unsplittable features pruned when built)
    trial_params = {"feature_pre_filter": False}

    def reproduce_overrides(self, run_params: Mapping[str, str]) -> list[str]:
        # LightGBM picks row- or col-wise histograms by timing both unless told: fix it, and its
        # deterministic mode, so a rerun takes the same path
        fixed = [] if ("params.force_col_wise" in run_params or "params.force_row_wise" in run_params) else [
            "trainer.params.force_row_wise=true"]
        return [*super().reproduce_overrides(run_params), "trainer.params.deterministic=true", *fixed]

    def estimator_cls(self):
        from trainflow.distributors.lightgbm import LightGBMEstimator

        return LightGBMEstimator

    def flavour(self) -> Any:
        import mlflow.lightgbm

        return mlflow.lightgbm

    def load_registered(self, folder: str) -> Any:
        import mlflow.lightgbm

        booster = mlflow.lightgbm.load_model(folder)
        return getattr(booster, "booster_", booster)

    def importance(self, model: Any) -> dict[str, float]:
        booster = getattr(model, "booster_", model)
        gains = booster.feature_importance(importance_type="gain")
        return {n: float(g) for n, g in zip(booster.feature_name(), gains)}


FRAMEWORK = register(LightGBMFramework())
