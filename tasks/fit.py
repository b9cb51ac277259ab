"""Prefect task: the distributed fit; submitted to the RayTaskRunner with no CPU/GPU of its own."""
from __future__ import annotations

from prefect import task

from trainflow.distributors.progress import ProgressChannel
from trainflow.pipeline import fit as step
from trainflow.pipeline.load import LoadedData
from trainflow.pipeline.plan import FitPlan
from trainflow.spec import JobSpec


@task(name="fit", persist_result=False)
def fit(spec: JobSpec, data: LoadedData, plan: FitPlan, progress: ProgressChannel | None) -> step.FitOutcome:
    return step.fit(spec, data, plan, progress=progress)
