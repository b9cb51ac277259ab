"""Prefect task: decide the world size and per-worker resources."""
from __future__ import annotations

from prefect import get_run_logger, task

from trainflow.pipeline import shard as step
from trainflow.pipeline.load import LoadedData
from trainflow.spec import JobSpec


@task(name="shard", persist_result=False)
def shard(spec: JobSpec, data: LoadedData) -> step.ShardPlan:
    plan = step.plan(spec, data)
    get_run_logger().info("Placement: %s", plan.summary())
    return plan
