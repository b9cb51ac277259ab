"""Who am I in a distributed training run: rank and world size from Ray Train's context."""
from __future__ import annotations

from trainflow.errors import OutsideTrainingError


def current_rank_and_world() -> tuple[int, int]:
    """(world rank, world size) inside a Ray Train worker; RuntimeError anywhere else."""
    try:
        import ray.train

        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size()
    except Exception as exc:  # Ray raises different errors outside a training function
        raise OutsideTrainingError(
            "get_shard()/get_context() only work inside a distributed training function "
            "(the train_func run by PyTorchDistributor)."
        ) from exc
