"""Prefect task: metrics on the eval data, published as a table artifact."""
from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact

from trainflow.pipeline import evaluate as step
from trainflow.pipeline.fit import FitOutcome
from trainflow.pipeline.load import LoadedData
from trainflow.spec import JobSpec


@task(name="evaluate", persist_result=False)
def evaluate(spec: JobSpec, outcome: FitOutcome, data: LoadedData) -> dict[str, float]:
    metrics = step.evaluate(spec, outcome, data)
    create_table_artifact(
        key="metrics", table=[{"metric": k, "value": round(v, 6)} for k, v in metrics.items()],
        description=f"{spec.name}: {data.eval_rows} eval rows ({data.eval_source}), fit {outcome.seconds:.1f}s",
    )
    return metrics
