"""Fit: train the spec's model on the planned workers; the estimator does the distributed work."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainflow.distributors.boosting import DistributedBoostingEstimator
from trainflow.distributors.progress import ProgressChannel
from trainflow.errors import ConfigError
from trainflow.pipeline.load import LoadedData
from trainflow.pipeline.shard import ShardPlan
from trainflow.secrets import resolve_env
from trainflow.spec import JobSpec


@dataclass
class FitOutcome:
    framework: str
    estimator: DistributedBoostingEstimator
    seconds: float

    @property
    def model(self) -> Any:
        return self.estimator.get_booster()


def build_estimator(spec: JobSpec, shard_plan: ShardPlan) -> DistributedBoostingEstimator:
    t = spec.trainer
    p = shard_plan.placement
    if t.framework == "xgboost":
        from trainflow.distributors.xgboost import XGBEstimator as cls, XGBScalingConfig as scaling
    elif t.framework == "lightgbm":
        from trainflow.distributors.lightgbm import LightGBMEstimator as cls, LightGBMScalingConfig as scaling
    else:
        raise ConfigError(f"trainer.framework={t.framework!r} is not available in this pipeline yet.")
    params = {k: resolve_env(v, f"trainer.params.{k}") for k, v in t.params.items()}
    return cls(n_estimators=t.n_estimators, objective=t.objective, params=params,
               scaling_config=scaling(p.num_workers, p.cpus_per_worker, p.use_gpu),
               checkpoint_every=t.checkpoint_every, max_restarts=t.max_restarts)


def fit(spec: JobSpec, data: LoadedData, shard_plan: ShardPlan,
        progress: Callable[[str], None] | ProgressChannel | None = None) -> FitOutcome:
    if spec.trainer.framework == "pytorch":
        from trainflow.pipeline import torch_steps

        return torch_steps.fit(spec, data, shard_plan, progress)
    estimator = build_estimator(spec, shard_plan)
    start = time.perf_counter()
    estimator.fit(data.train, list(spec.features), spec.label, eval_set=data.eval,
                  verbose_eval=spec.trainer.verbose_eval, progress=progress)
    return FitOutcome(spec.trainer.framework, estimator, time.perf_counter() - start)
