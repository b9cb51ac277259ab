"""Plan: decide the placement once (workers, CPUs/GPUs per worker) from the spec's scaling and the
cluster; fit uses this decision as it is. Shards are cut by reference when the fit starts."""
from __future__ import annotations

from dataclasses import dataclass

from trainflow import frameworks
from trainflow.distributors.placement import Placement
from trainflow.pipeline.load import LoadedData
from trainflow.spec import JobSpec


@dataclass(frozen=True)
class FitPlan:
    placement: Placement
    rows_per_shard: list[int]

    def summary(self) -> str:
        p = self.placement
        where = f"{p.gpus_per_worker} GPU + " if p.use_gpu else ""
        return (f"{p.num_workers} worker(s), each {where}{p.cpus_per_worker} CPU(s); rows per shard: "
                f"{self.rows_per_shard}")


def plan(spec: JobSpec, data: LoadedData) -> FitPlan:
    framework = frameworks.get(spec.trainer.framework)
    placement = framework.placement(spec)
    rows = [s.count_rows() for s in data.train.split(placement.num_workers)]
    framework.prepare(placement)  # e.g. warm workers start while the flow moves on to fit
    return FitPlan(placement, rows)
