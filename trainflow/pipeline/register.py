"""Register: one MLflow run and a model version; challenger always, champion only when it wins."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainflow.frameworks import FitOutcome
from trainflow.lineage import RunLineage, code_version, spec_hash, spec_text
from trainflow.pipeline.load import LoadedData
from trainflow.pipeline.tune import TuneOutcome, trials_table
from trainflow.registry import (
    PromotionRule,
    RegisteredModel,
    log_trial,
    register_model,
    tuning_run,
)
from trainflow.spec import JobSpec


def promotion(spec: JobSpec, metrics: Mapping[str, float]) -> dict[str, Any]:
    """register_model's promotion arguments: the spec's rule, the champion evaluate scored on the same
    data (when `metrics` is evaluate's Evaluation), and the run tags a later run needs to score this one."""
    p = spec.resolved_promotion
    return {"rule": PromotionRule(p.metric, p.mode, p.min_delta, p.if_champion_unscorable),
            "champion": getattr(metrics, "champion", None), "metrics": dict(metrics)}


def lineage(spec: JobSpec, data: LoadedData, flow_run: Mapping[str, str] | None = None,
            reproduces: str = "") -> RunLineage:
    """The version's lineage: the spec as stored, the data records the load step made, code, flow run."""
    text = spec_text(spec)
    return RunLineage(text, spec_hash(text), data.records, data.validation_digest, code_version(),
                      {k: str(v) for k, v in (flow_run or {}).items() if v}, reproduces)


def register(spec: JobSpec, outcome: FitOutcome, metrics: Mapping[str, float], data: LoadedData,
             tuned: TuneOutcome | None = None, run_tags: Mapping[str, str] | None = None,
             flow_run: Mapping[str, str] | None = None, reproduces: str = "") -> RegisteredModel:
    """One run and version; after a search, a parent run with one nested run per trial, the best
    trial's run being the one that logs and registers the model. `run_tags` go on every run;
    `flow_run` (id, name, url, deployment: what the flow knows of itself) goes into the lineage,
    and `reproduces` names the version a `trainflow reproduce` run re-makes."""
    if flow_run and flow_run.get("id"):
        run_tags = {"prefect.flow_run_id": str(flow_run["id"]), **(run_tags or {})}
    made = lineage(spec, data, flow_run, reproduces)
    fw = outcome.framework
    features = list(spec.features)
    example = data.train.to_pandas(limit=5)[features]
    t = spec.trainer
    params = {"framework": fw.name, "objective": t.resolved_objective, **fw.run_params(spec, outcome),
              "train_rows": data.train_rows, "eval_rows": data.eval_rows, "eval_source": data.eval_source}
    tags = {"trainflow.spec": spec.name, "trainflow.fit_seconds": f"{outcome.seconds:.2f}",
            "trainflow.task": spec.task, "trainflow.label": spec.label, **fw.run_tags(outcome), **(run_tags or {})}

    def register_best() -> RegisteredModel:
        return register_model(
            experiment=spec.name, model_name=spec.register.model_name, framework=fw,
            model=outcome.model, input_example=example, params=params,
            eval_history=fw.eval_history(outcome), feature_names=features, feature_importance=None,
            tags=tags, lineage=made, **promotion(spec, metrics),
        )

    if tuned is None:
        return register_best()
    best = tuned.best_trial
    params.update({f"tuned.{k}": v for k, v in best.config.items()})
    search = {"tune.metric": tuned.metric, "tune.mode": tuned.mode, "tune.trials": len(tuned.trials),
              "tune.search_alg": spec.tune.search_alg, "tune.rounds_trained": tuned.rounds_trained,
              **{f"tune.space.{k}": v for k, v in spec.tune.model_dump(mode="json")["search_space"].items()}}
    common = {"trainflow.spec": spec.name, "trainflow.model_name": spec.register.model_name, **(run_tags or {})}
    with tuning_run(spec.name, search, {**common, "trainflow.best_trial": best.trial_id}, trials_table(tuned),
                    tuned.curves, tuned.metric) as parent:
        for trial in tuned.trials:
            if trial is not best:
                log_trial(trial.trial_id, trial.config, trial.metrics, tuned.curves.get(trial.trial_id, []),
                          tuned.metric, {**common, "trainflow.tuning_run": parent})
        tags.update({"trainflow.trial": best.trial_id, "trainflow.tuning_run": parent})
        return register_best()
