"""Register: one MLflow run and a model version; challenger always, champion only when it wins."""
from __future__ import annotations

from trainflow.pipeline.fit import FitOutcome
from trainflow.pipeline.load import LoadedData
from trainflow.registry import PromotionRule, RegisteredModel, register_model
from trainflow.spec import JobSpec


def register(spec: JobSpec, outcome: FitOutcome, metrics: dict[str, float], data: LoadedData) -> RegisteredModel:
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
        model=outcome.model, input_example=example, params=params, metrics=metrics,
        eval_history=outcome.estimator.get_eval_results(), feature_names=features, feature_importance=None,
        rule=PromotionRule(spec.register.promote_on.metric, spec.register.promote_on.mode),
        tags={"trainflow.spec": spec.name, "trainflow.fit_seconds": f"{outcome.seconds:.2f}"},
    )
