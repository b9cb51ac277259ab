"""Prefect task: the spec's hyper-parameter search; the trials as a table artifact, best first."""
from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from trainflow.distributors.progress import ProgressChannel
from trainflow.pipeline import tune as step
from trainflow.pipeline.load import LoadedData
from trainflow.pipeline.plan import FitPlan
from trainflow.spec import JobSpec


@task(name="tune", persist_result=False)
def tune(spec: JobSpec, data: LoadedData, plan: FitPlan, progress: ProgressChannel | None) -> step.TuneOutcome:
    tuned = step.tune(spec, data, plan, progress=progress.put if progress is not None else None)
    try:
        create_table_artifact(key="trials", table=step.trials_table(tuned),
                              description=f"{spec.name}: {len(tuned.trials)} trials by {tuned.metric} "
                                          f"({tuned.mode}), {tuned.rounds_trained} boosting rounds in all")
        create_markdown_artifact(key="trials-chart", markdown=step.trials_chart(tuned),
                                 description=f"{spec.name}: {tuned.metric} by trial")
    except Exception as exc:  # noqa: BLE001 - the search is done; a missing artifact must not undo it
        get_run_logger().warning("Could not create the trials artifact: %s", exc)
    return tuned
