"""Prefect task: metrics on the eval data (the new model's and the champion's), as a table artifact."""
from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact

from trainflow.pipeline import evaluate as step
from trainflow.pipeline.evaluate import Evaluation
from trainflow.frameworks import FitOutcome
from trainflow.pipeline.load import LoadedData
from trainflow.spec import JobSpec


@task(name="evaluate", persist_result=False)
def evaluate(spec: JobSpec, outcome: FitOutcome, data: LoadedData) -> Evaluation:
    evaluation = step.evaluate(spec, outcome, data)
    champion = evaluation.champion
    column = f"champion v{champion.version}" if champion.version else "champion"
    theirs = champion.metrics or {}
    table = [{"metric": k, "this run": round(v, 6),
              column: round(theirs[k], 6) if k in theirs else "-"} for k, v in evaluation.items()]
    if champion.version is None:
        note = "no champion yet"
    elif champion.metrics is None:
        note = f"champion version {champion.version} could not be scored: {champion.unscorable}"
    else:
        note = f"champion version {champion.version} scored on the same rows"
    create_table_artifact(
        key="metrics", table=table,
        description=f"{spec.name}: {data.eval_rows} eval rows ({data.eval_source}), fit {outcome.seconds:.1f}s; "
                    f"{note}",
    )
    return evaluation
