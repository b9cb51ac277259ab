"""Who am I in a distributed training run: rank and world size of the current training worker.

A boosting fit's warm workers declare their rank while they train (`training_as`); PyTorch's
workers run under Ray Train, whose context answers.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from trainflow.errors import OutsideTrainingError

_current: tuple[int, int] | None = None


@contextlib.contextmanager
def training_as(rank: int, world_size: int) -> Iterator[None]:
    """Within the block, this process is training as `rank` of `world_size`."""
    global _current
    before, _current = _current, (rank, world_size)
    try:
        yield
    finally:
        _current = before


def current_rank_and_world() -> tuple[int, int]:
    """(world rank, world size) inside a training worker; OutsideTrainingError anywhere else."""
    if _current is not None:
        return _current
    try:
        import ray.train

        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size()
    except Exception as exc:  # Ray raises different errors outside a training function
        raise OutsideTrainingError(
            "get_shard()/get_context() only work inside a distributed training function "
            "(the train_func run by PyTorchDistributor, or a boosting fit's callbacks)."
        ) from exc
