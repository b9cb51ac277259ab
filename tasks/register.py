"""Prefect task: MLflow run + model version + aliases, with a link artifact to the version."""
from __future__ import annotations

from collections.abc import Mapping

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.retry import transient_only
from trainflow.frameworks import FitOutcome
from trainflow.pipeline import register as step
from trainflow.pipeline.load import LoadedData
from trainflow.pipeline.tune import TuneOutcome
from trainflow.registry import RegisteredModel, mlflow_links, tracking_uri
from trainflow.secrets import mask_text
from trainflow.spec import JobSpec


# A retry is a fresh registration: a failed attempt has already rolled its run and version back.
@task(name="register", retries=2, retry_delay_seconds=2, retry_condition_fn=transient_only, persist_result=False)
def register(spec: JobSpec, outcome: FitOutcome, metrics: Mapping[str, float], data: LoadedData,
             tuned: TuneOutcome | None = None, reproduces: str = "") -> RegisteredModel:
    from prefect.runtime import deployment, flow_run

    me = {"id": flow_run.id, "name": flow_run.name, "url": flow_run.ui_url, "deployment": deployment.name}
    model = step.register(spec, outcome, metrics, data, tuned, flow_run=me if flow_run.id else None,
                          reproduces=reproduces)
    lines = [f"**{model.name}** version **{model.version}** ({', '.join(model.aliases) or 'no alias'})",
             "", f"- URI: `{model.uri}`", f"- champion: `{model.champion_uri}` (version {model.champion_version})",
             f"- decision: {model.decision}",
             f"- tracking: `{mask_text(tracking_uri())}`, run `{model.run_id}`",
             *mlflow_links(model), "", *_metrics_table(model)]
    try:  # the version is registered by now: a failing artifact must not fail (and re-run) the task
        create_markdown_artifact(key="model-version", markdown="\n".join(lines),
                                 description=f"MLflow model version for {spec.name}")
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("Could not create the model-version artifact: %s", exc)
    return model


def _metrics_table(model: RegisteredModel) -> list[str]:
    theirs = model.compared.get("metrics")
    if not theirs:
        return ["| metric | value |", "|---|---|", *[f"| {k} | {v:.6g} |" for k, v in model.metrics.items()]]
    head = f"champion v{model.compared['version']} (same eval data)"
    return [f"| metric | value | {head} |", "|---|---|---|",
            *[f"| {k} | {v:.6g} | {theirs[k]:.6g} |" if k in theirs else f"| {k} | {v:.6g} | - |"
              for k, v in model.metrics.items()]]
