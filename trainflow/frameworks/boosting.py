"""What the gradient-boosting plug-ins (xgboost, lightgbm) share: a distributed estimator trains on
the planned placement, its adapter scores, and the booster is logged in the framework's flavour."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from trainflow.frameworks.base import FitOutcome, Framework

if TYPE_CHECKING:
    import pandas as pd

    from trainflow.distributors.boosting import BoostingAdapter, DistributedBoostingEstimator
    from trainflow.distributors.placement import Placement
    from trainflow.distributors.progress import ProgressChannel
    from trainflow.pipeline.load import LoadedData
    from trainflow.spec import JobSpec


# which trainflow metric fits which task (for the metrics a trial can be scored on)
_TASK_OF_METRIC = {"rmse": "regression", "mae": "regression", "auc": "binary", "logloss": "binary",
                   "mlogloss": "multiclass"}


class BoostingFramework(Framework):
    """A plug-in whose training is a `DistributedBoostingEstimator`."""

    # trainflow metric -> the framework's own eval metric, recorded every round during the fit
    native_metrics: dict[str, str] = {}
    eval_metric_param = ""  # the params key that names the eval metrics
    # params every trial of a search sets unless the spec does (LightGBM: Datasets that any trial can reuse)
    trial_params: dict[str, Any] = {}

    def estimator_cls(self) -> type[DistributedBoostingEstimator]:
        raise NotImplementedError

    def flavour(self) -> Any:
        """The MLflow flavour module (mlflow.xgboost, mlflow.lightgbm)."""
        raise NotImplementedError

    def predict_frame(self, model: Any, x: pd.DataFrame) -> np.ndarray:
        """Native predictions on a pandas frame, for the model signature's output."""
        return np.asarray(model.predict(x))

    def placement(self, spec: JobSpec) -> Placement:
        from trainflow.cluster import cluster_nodes
        from trainflow.distributors.placement import ScalingRequest, decide_placement

        s = spec.trainer.scaling
        return decide_placement(ScalingRequest(s.num_workers, s.num_cpu_per_worker, s.use_gpu), cluster_nodes())

    def prepare(self, placement: Placement) -> None:
        from trainflow.distributors.pool import prewarm

        prewarm(placement.num_workers, placement.use_gpu)

    def _estimator(self, spec: JobSpec, placement: Placement, overrides: dict[str, Any] | None = None,
                   extra: dict[str, Any] | None = None) -> DistributedBoostingEstimator:
        """The spec's estimator on the plan's placement; `overrides` (n_estimators, params.<name>) win
        over the spec, `extra` params apply where the spec sets none."""
        from trainflow.secrets import resolve_env

        t, overrides = spec.trainer, overrides or {}
        params = {k: resolve_env(v, f"trainer.params.{k}") for k, v in t.params.items()}
        params.update({k[len("params."):]: v for k, v in overrides.items() if k.startswith("params.")})
        for key, value in (extra or {}).items():
            params.setdefault(key, value)
        return self.estimator_cls()(
            n_estimators=int(overrides.get("n_estimators", t.n_estimators)), objective=t.resolved_objective, params=params,
            scaling_config=placement,  # the plan step's decision, used as it is
            checkpoint_every=t.checkpoint_every, max_restarts=t.max_restarts, memory=t.memory,
        )

    def fit(self, spec: JobSpec, data: LoadedData, placement: Placement,
            progress: Callable[[str], None] | ProgressChannel | None) -> FitOutcome:
        estimator = self._estimator(spec, placement)
        start = time.perf_counter()
        estimator.fit(data.train, list(spec.features), spec.label, eval_set=data.eval,
                      verbose_eval=spec.trainer.verbose_eval, progress=progress)
        choice = estimator.memory_
        return FitOutcome(self, estimator, time.perf_counter() - start, estimator.placement_,
                          memory=f"{choice.mode} ({choice.reason})")

    def model(self, outcome: FitOutcome) -> Any:
        return outcome.result.get_booster()

    def trial_metrics(self, objective: str | None) -> list[str]:
        task = self.task(objective)
        return [m for m in self.native_metrics if _TASK_OF_METRIC[m] == task]

    def trial_fit(self, spec: JobSpec, data: LoadedData, placement: Placement, overrides: dict[str, Any],
                  metric: str, rounds_done: FitOutcome | None = None) -> tuple[FitOutcome, list[float]]:
        native = self.native_metrics[metric]
        estimator = self._estimator(spec, placement, overrides, self.trial_params)
        theirs = estimator.params.get(self.eval_metric_param) or []
        theirs = [theirs] if isinstance(theirs, str) else list(theirs)
        # ours first: xgboost's early stopping watches the last one, so the user's choice still decides
        estimator.params[self.eval_metric_param] = [native, *(m for m in theirs if m != native)]
        start = time.perf_counter()
        init = rounds_done.result if rounds_done is not None else None
        estimator.fit(data.train, list(spec.features), spec.label, eval_set=data.eval, init_model=init)
        outcome = FitOutcome(self, estimator, time.perf_counter() - start, estimator.placement_)
        return outcome, list(estimator.get_eval_results()["eval"][native])

    def scorer(self) -> BoostingAdapter:
        return self.estimator_cls()._adapter

    def log_model(self, model: Any, example: pd.DataFrame) -> Any:
        from trainflow.frameworks.mlflow_models import declared_signature, requirements

        flavour = self.flavour()
        signature = declared_signature(example, self.predict_frame(model, example))
        return flavour.log_model(model, name="model", input_example=example, signature=signature,
                                 pip_requirements=requirements(flavour))

    def run_params(self, spec: JobSpec, outcome: FitOutcome) -> dict[str, Any]:
        t, p = spec.trainer, outcome.placement
        return {"n_estimators": t.n_estimators, **{f"params.{k}": v for k, v in t.params.items()},
                "num_workers": p.num_workers, "cpus_per_worker": p.cpus_per_worker, "use_gpu": p.use_gpu,
                "memory": outcome.result.memory_.mode}

    def reproduce_overrides(self, run_params: Mapping[str, str]) -> list[str]:
        # the placement decides the shards and each worker's threads (nthread = its CPUs)
        return [f"trainer.scaling.{key}={run_params[name]}" for key, name in
                (("num_workers", "num_workers"), ("num_cpu_per_worker", "cpus_per_worker"), ("use_gpu", "use_gpu"))
                if name in run_params]

    def eval_history(self, outcome: FitOutcome) -> dict[str, dict[str, list[float]]]:
        return outcome.result.get_eval_results()
