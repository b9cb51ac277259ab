"""The `scoring-pipeline` flow: resolve model → check input → score into parts → publish → record."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.console import show_errors_as_messages_if_asked
from flows.pipeline import TrainflowRayTaskRunner
from tasks.score import check_input, publish, record, resolve_model, score
from trainflow.cluster import ensure_cluster
from trainflow.pipeline.score import new_run_id
from trainflow.spec import ScoreSpec, parse_score_spec

show_errors_as_messages_if_asked()


@flow(name="scoring-pipeline", task_runner=TrainflowRayTaskRunner(), persist_result=True, log_prints=True,
      validate_parameters=False)
def scoring_pipeline(spec: ScoreSpec) -> dict[str, Any]:
    """Score the spec's source with its registered model into its sink; returns what was written.

    The run id is the flow run's id, so a retried or rerun flow run replaces its own output."""
    spec = parse_score_spec(spec, source="flow parameter 'spec'")
    ensure_cluster()  # on an existing cluster: the preflight, before any worker starts
    logger = get_run_logger()
    run_id = str(flow_run.id) if flow_run.id else new_run_id()
    model = resolve_model(spec)
    logger.info("Scoring with %s (%s, %d features)", model.uri, model.framework.name, len(model.features))
    data = check_input(spec, model)
    logger.info("Input: %d rows (%s), digest %s; the training schema's checks passed.", data.record.rows,
                data.data.describe(), data.record.digest)
    part_rows = score(spec, model, data, run_id)
    rows = publish(spec, run_id, part_rows)
    result = record(spec, model, data, run_id, rows, part_rows)
    logger.info("Wrote %d rows to %s (run id %s)", rows, result.sink, run_id)
    return result.to_dict()
