"""Prefect tasks of the scoring pipeline: thin wrappers over trainflow.pipeline.score."""
from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.retry import transient_only
from trainflow.errors import SchemaValidationError
from trainflow.pipeline import score as step
from trainflow.spec import ScoreSpec


@task(name="resolve-model", retries=2, retry_delay_seconds=2, retry_condition_fn=transient_only,
      persist_result=False)
def resolve_model(spec: ScoreSpec) -> step.ScoringModel:
    return step.resolve(spec)


@task(name="check-input", retries=2, retry_delay_seconds=2, retry_condition_fn=transient_only, persist_result=False)
def check_input(spec: ScoreSpec, model: step.ScoringModel) -> step.ScoringInput:
    try:
        return step.check(spec, model)
    except SchemaValidationError as exc:
        create_table_artifact(key="validation-report", description=str(exc), table=[
            {"column": r["column"] or "(table)", "check": r["check"], "failures": r["failure_count"],
             "examples": "; ".join(str(e) for e in r["examples"][:3])} for r in exc.report])
        raise


# A retry of the whole step is safe: it deletes the run's parts first. Ray already retries a task
# whose worker died, so only errors that may pass (transient) retry here.
@task(name="score", retries=1, retry_delay_seconds=2, retry_condition_fn=transient_only, persist_result=False)
def score(spec: ScoreSpec, model: step.ScoringModel, data: step.ScoringInput, run_id: str) -> list[int]:
    return step.score(spec, model, data, run_id)


@task(name="publish", retries=2, retry_delay_seconds=2, retry_condition_fn=transient_only, persist_result=False)
def publish(spec: ScoreSpec, run_id: str, part_rows: list[int]) -> int:
    return step.publish(spec, run_id, part_rows)


@task(name="record", retries=2, retry_delay_seconds=2, retry_condition_fn=transient_only, persist_result=False)
def record(spec: ScoreSpec, model: step.ScoringModel, data: step.ScoringInput, run_id: str, rows: int,
           part_rows: list[int]) -> step.ScoreResult:
    from prefect.runtime import deployment, flow_run

    me = {"id": flow_run.id, "name": flow_run.name, "url": flow_run.ui_url, "deployment": deployment.name}
    result = step.record(spec, model, data, run_id, rows, part_rows, me if flow_run.id else None)
    head = f"Scored **{rows}** rows with `{model.uri}` into {result.sink} ({result.parts} part(s)), run id `{run_id}`."
    lines = [head,
             "", f"- input: {data.record.source.get('kind')} {data.record.rows} rows, digest `{data.record.digest}`",
             f"- MLflow run `{result.mlflow_run_id}` (experiment `{spec.name}`)"]
    try:
        create_markdown_artifact(key="scores", markdown="\n".join(lines), description=f"Batch scores of {spec.name}")
    except Exception as exc:  # noqa: BLE001 - the scores are written; a failed artifact must not fail the run
        get_run_logger().warning("Could not create the scores artifact: %s", exc)
    return result
