"""Register: one MLflow run and a model version; challenger always, champion only when it wins."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainflow.frameworks import FitOutcome
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
    fw = outcome.framework
    features = list(spec.features)
    example = data.train.to_pandas(limit=5)[features]
    t = spec.trainer
    params = {"framework": fw.name, "objective": t.objective, **fw.run_params(spec, outcome),
              "train_rows": data.train_rows, "eval_rows": data.eval_rows, "eval_source": data.eval_source}
    return register_model(
        experiment=spec.name, model_name=spec.register.model_name, framework=fw,
        model=outcome.model, input_example=example, params=params,
        eval_history=fw.eval_history(outcome), feature_names=features, feature_importance=None,
        tags={"trainflow.spec": spec.name, "trainflow.fit_seconds": f"{outcome.seconds:.2f}",
              "trainflow.task": spec.task, "trainflow.label": spec.label, **fw.run_tags(outcome)},
        **promotion(spec, metrics),
    )
