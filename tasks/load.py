"""Prefect task: open and validate the data; a failed check becomes a table artifact and stops the flow."""
from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact

from tasks.retry import transient_only
from trainflow.errors import SchemaValidationError
from trainflow.lineage.record import Reproduction
from trainflow.pipeline import load as step
from trainflow.spec import JobSpec


@task(name="load", retries=2, retry_delay_seconds=2, retry_condition_fn=transient_only, persist_result=False)
def load(spec: JobSpec, reproduce: Reproduction | None = None) -> step.LoadedData:
    try:
        data = step.load(spec, reproduce)
    except SchemaValidationError as exc:
        create_table_artifact(key="validation-report", table=_rows(exc.report), description=str(exc))
        raise
    create_table_artifact(
        key="validation-report",
        table=[{"data": "train", "rows": data.train_rows, "failures": 0},
               {"data": f"eval ({data.eval_source})", "rows": data.eval_rows, "failures": 0}],
        description="Every row passed the spec's schema checks.",
    )
    return data


def _rows(report: list[dict]) -> list[dict]:
    return [{"data": r.get("data", ""), "column": r["column"] or "(table)", "check": r["check"],
             "failures": r["failure_count"], "examples": "; ".join(str(e) for e in r["examples"][:3])}
            for r in report]
