"""Placement policy: from a scaling request and the cluster's nodes, decide workers, CPUs and GPUs.

Pure functions over plain data, so the decision is tested without a cluster; the estimator acts on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from trainflow.errors import ConfigError, ResourceError


@dataclass(frozen=True)
class NodeResources:
    """What one alive Ray node offers: the facts placement decisions are made from."""

    node_id: str
    cpus: float
    gpus: float
    memory: float = 0.0  # bytes Ray offers tasks and actors there (0: not reported)


@dataclass(frozen=True)
class ScalingRequest:
    """What the user asked for (Snowflake semantics: -1 = decide from the cluster, None = auto GPU)."""

    num_workers: int = -1
    num_cpu_per_worker: int = -1
    use_gpu: bool | None = None

    def check(self) -> None:
        for name in ("num_workers", "num_cpu_per_worker"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or (value != -1 and value < 1):
                raise ConfigError(f"{name}={value!r} is invalid: use -1 (decide from the cluster) or an integer >= 1.")
        if self.use_gpu not in (None, True, False):
            raise ConfigError(f"use_gpu={self.use_gpu!r} is invalid: use None (auto), True or False.")


@dataclass(frozen=True)
class Placement:
    """The decision: how many workers, and what each one reserves."""

    num_workers: int
    cpus_per_worker: int
    use_gpu: bool

    @property
    def gpus_per_worker(self) -> int:
        return 1 if self.use_gpu else 0

    def ray_scaling_config(self):
        from ray.train import ScalingConfig

        resources = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            resources["GPU"] = 1
        return ScalingConfig(num_workers=self.num_workers, use_gpu=self.use_gpu, resources_per_worker=resources)


def decide_placement(request: ScalingRequest, nodes: list[NodeResources]) -> Placement:
    """Resolve -1/None against `nodes`; refuse what the cluster can never satisfy (Ray would wait forever)."""
    request.check()
    if not nodes:
        raise ResourceError("The Ray cluster has no alive nodes with CPUs or GPUs; check `ray status`.")
    total_gpus = int(sum(n.gpus for n in nodes))
    use_gpu = total_gpus > 0 if request.use_gpu is None else request.use_gpu
    if use_gpu and total_gpus == 0:
        raise ResourceError(
            "use_gpu=True but the Ray cluster has no GPUs. Use use_gpu=None (GPUs only when present) or "
            "False, or point RAY_ADDRESS at a cluster with GPU nodes."
        )
    eligible = [n for n in nodes if n.gpus >= 1] if use_gpu else [n for n in nodes if n.cpus >= 1]
    if use_gpu:
        num_workers = total_gpus if request.num_workers == -1 else request.num_workers
        if num_workers > total_gpus:
            raise ResourceError(
                f"num_workers={num_workers} with use_gpu=True needs {num_workers} GPUs, but the cluster has "
                f"{total_gpus}. Use num_workers=-1 (one worker per GPU) or at most {total_gpus}."
            )
        default_cpus = min(max(1, math.floor(n.cpus / n.gpus)) for n in eligible)
    else:
        num_workers = len(eligible) if request.num_workers == -1 else request.num_workers
        per_node = math.ceil(num_workers / len(eligible))
        default_cpus = max(1, math.floor(min(n.cpus for n in eligible) / per_node))
    cpus = default_cpus if request.num_cpu_per_worker == -1 else request.num_cpu_per_worker
    _check_fits(num_workers, cpus, use_gpu, eligible)
    return Placement(num_workers=num_workers, cpus_per_worker=cpus, use_gpu=use_gpu)


def _check_fits(num_workers: int, cpus: int, use_gpu: bool, nodes: list[NodeResources]) -> None:
    capacity = 0
    for n in nodes:
        slots = math.floor(n.cpus / cpus) if cpus else num_workers
        if use_gpu:
            slots = min(slots, int(n.gpus))
        capacity += slots
    if capacity < num_workers:
        total_cpus = int(sum(n.cpus for n in nodes))
        biggest = int(max(n.cpus for n in nodes))
        raise ResourceError(
            f"Cannot place {num_workers} worker(s) with {cpus} CPU(s){' and 1 GPU' if use_gpu else ''} each: "
            f"the cluster has {len(nodes)} node(s), {total_cpus} CPUs in all, at most {biggest} per node. "
            "Lower num_workers / num_cpu_per_worker, or use -1 to size from the cluster."
        )
