"""Shard: decide the world size from the spec's scaling and the cluster, and cut the data by reference."""
from __future__ import annotations

from dataclasses import dataclass

from trainflow.cluster import cluster_nodes
from trainflow.distributors.placement import Placement, ScalingRequest, decide_placement
from trainflow.pipeline.load import LoadedData
from trainflow.spec import JobSpec


@dataclass(frozen=True)
class ShardPlan:
    placement: Placement
    rows_per_shard: list[int]

    def summary(self) -> str:
        p = self.placement
        where = "1 GPU + " if p.use_gpu else ""
        return (f"{p.num_workers} worker(s), each {where}{p.cpus_per_worker} CPU(s); rows per shard: "
                f"{self.rows_per_shard}")


def plan(spec: JobSpec, data: LoadedData) -> ShardPlan:
    if spec.trainer.framework == "pytorch":
        from trainflow.pipeline import torch_steps

        return torch_steps.plan(spec, data)
    scaling = spec.trainer.scaling
    placement = decide_placement(
        ScalingRequest(scaling.num_workers, scaling.num_cpu_per_worker, scaling.use_gpu), cluster_nodes()
    )
    rows = [s.count_rows() for s in data.train.split(placement.num_workers)]
    return ShardPlan(placement, rows)
