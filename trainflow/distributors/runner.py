"""Run a training loop on a placement with Ray Train, and translate what workers raise.

PyTorchDistributor's fits run here (worker-group restarts from the latest checkpoint, the run's
storage, errors a user can read); the boosting fits run on warm workers (controller.py) and share
the translation of worker errors.
"""
from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from trainflow.distributors.checkpoint import storage_root
from trainflow.distributors.fatal import clear, guarded
from trainflow.errors import TrainflowError, TrainingError


class WorkerPlacement(Protocol):
    """A decided placement (boosting's Placement, PyTorchScalingConfig): it knows its Ray ScalingConfig."""

    def ray_scaling_config(self) -> Any: ...


def run_workers(loop: Callable[[Any], None], config: Any, placement: WorkerPlacement, trainer_cls, name: str,
                max_restarts: int = 0, *, run_name: str | None = None, storage_path: str | None = None,
                storage_filesystem: Any = None):
    """Run `loop(config)` on `placement` with Ray Train; return (Result, the run's folder), worker
    errors translated.

    A worker group that fails (a worker killed, a node lost) is restarted up to `max_restarts` times;
    the loop then finds the latest checkpoint with `ray.train.get_checkpoint()`. The run is called
    `run_name` (default: `name` and a random suffix) under `storage_path` (default: storage_root()).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

    run_name = run_name or f"{name}-{uuid.uuid4().hex[:8]}"
    storage_path = storage_path or storage_root()
    trainer = trainer_cls(
        guarded(loop, run_name),
        train_loop_config=config,
        scaling_config=placement.ray_scaling_config(),
        run_config=RunConfig(name=run_name, storage_path=storage_path, storage_filesystem=storage_filesystem,
                             failure_config=FailureConfig(max_failures=max_restarts),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),  # the latest + the model
    )
    try:
        return trainer.fit(), os.path.join(storage_path, run_name)
    except WorkerGroupError as exc:
        error = translate_worker_failure(exc.worker_failures)
        if max_restarts and isinstance(error, TrainingError):
            error = TrainingError(f"{error} (gave up after {max_restarts} restart(s) from the latest checkpoint)")
        raise error from None
    except ControllerError as exc:
        raise TrainingError(f"Ray Train's controller failed: {exc.controller_failure}") from exc
    finally:
        clear(run_name)


def translate_worker_failure(failures: dict[int, BaseException]) -> TrainflowError:
    for rank in sorted(failures):
        cause = getattr(failures[rank], "cause", None) or failures[rank]
        if isinstance(cause, TrainflowError):
            return cause  # as raised: its report, problems and transient flag travel with it
    rank = min(failures)
    cause = getattr(failures[rank], "cause", None) or failures[rank]
    return TrainingError(
        f"Training failed on worker rank {rank}: {type(cause).__name__}: {summary_line(str(cause))}. "
        "Set TRAINFLOW_WORKER_LOGS=1 to see the workers' own output."
    )


def summary_line(text: str) -> str:
    """The first informative line of a worker error (native libraries append backtraces)."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("[bt]", "Stack trace", "Traceback", "File ")):
            # "[12:00:00] /src/learner.cc:123: Check failed: ..." → "Check failed: ..."
            return re.sub(r"^\[[\d:]+\] [^ ]+:\d+: ", "", line)[:500]
    return text.strip()[:500] or "unknown error"
