"""Prefect task: decide the placement (world size, CPUs/GPUs per worker) once, for fit to use."""
from __future__ import annotations

from prefect import get_run_logger, task

from trainflow.pipeline import plan as step
from trainflow.pipeline.load import LoadedData
from trainflow.spec import JobSpec


@task(name="plan", persist_result=False)
def plan(spec: JobSpec, data: LoadedData) -> step.FitPlan:
    decided = step.plan(spec, data)
    get_run_logger().info("Placement: %s", decided.summary())
    return decided
