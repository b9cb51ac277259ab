"""Register: one MLflow run and a model version; challenger always, champion only when it wins."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainflow.pipeline.fit import FitOutcome
from trainflow.pipeline.load import LoadedData
from trainflow.registry import PromotionRule, RegisteredModel, register_model
from trainflow.spec import JobSpec


def promotion(spec: JobSpec, metrics: Mapping[str, float]) -> dict[str, Any]:
    """register_model's promotion arguments: the spec's rule, the champion evaluate scored on the same
    data (when `metrics` is evaluate's Evaluation), and the run tags a later run needs to score this one."""
    p = spec.register.promote_on
    return {"rule": PromotionRule(p.metric, p.mode, p.min_delta, p.if_champion_unscorable),
            "champion": getattr(metrics, "champion", None), "metrics": dict(metrics)}


def register(spec: JobSpec, outcome: FitOutcome, metrics: Mapping[str, float], data: LoadedData) -> RegisteredModel:
    if outcome.framework == "pytorch":
        from trainflow.pipeline import torch_steps

        return torch_steps.register(spec, outcome, metrics, data)
    features = list(spec.features)
    example = data.train.to_pandas(limit=5)[features]
    t = spec.trainer
    params = {"framework": t.framework, "n_estimators": t.n_estimators, "objective": t.objective,
              **{f"params.{k}": v for k, v in t.params.items()},
              "num_workers": outcome.estimator.placement_.num_workers,
              "cpus_per_worker": outcome.estimator.placement_.cpus_per_worker,
              "use_gpu": outcome.estimator.placement_.use_gpu,
              "train_rows": data.train_rows, "eval_rows": data.eval_rows, "eval_source": data.eval_source}
    return register_model(
        experiment=spec.name, model_name=spec.register.model_name, framework=t.framework,
        model=outcome.model, input_example=example, params=params,
        eval_history=outcome.estimator.get_eval_results(), feature_names=features, feature_importance=None,
        tags={"trainflow.spec": spec.name, "trainflow.fit_seconds": f"{outcome.seconds:.2f}",
              "trainflow.task": spec.task, "trainflow.label": spec.label},
        **promotion(spec, metrics),
    )
