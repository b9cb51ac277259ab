"""Which torch device and process-group backend a PyTorch worker uses.

Decided from Ray's GPU assignment alone, without touching CUDA, so the decision is testable on
logical GPUs (`ray.init(num_gpus=2)`) on a machine that has none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class DeviceChoice:
    """`cuda:<index>` (index into this worker's CUDA_VISIBLE_DEVICES) or `cpu`."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.type == "cuda" else "cpu"


def backend_for(num_gpus_per_worker: float) -> str:
    """nccl when each worker holds at least one whole GPU; gloo otherwise.

    Fractional GPUs put several ranks on one device, which NCCL refuses ("duplicate GPU"); gloo
    handles CPU tensors and the CUDA tensors of shared devices.
    """
    return "nccl" if num_gpus_per_worker >= 1 else "gloo"


def device_for(gpu_ids: Sequence[object], cuda_visible_devices: str | None) -> DeviceChoice:
    """The worker's default device from the GPU ids Ray assigned it and what CUDA will show it.

    Ray Train's TorchTrainer makes every GPU of a node's workers visible to each of them (NCCL
    needs peer access), so the device index is the position of the worker's own GPU in that list:
    `cuda:<local_rank>` with one GPU per worker.
    """
    if not gpu_ids:
        return DeviceChoice("cpu")
    mine = str(gpu_ids[0])
    visible = [v.strip() for v in (cuda_visible_devices or "").split(",") if v.strip()]
    if mine in visible:
        return DeviceChoice("cuda", visible.index(mine))
    # Visibility not set (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES): the id is the device index.
    return DeviceChoice("cuda", int(mine) if mine.isdigit() and not visible else 0)
