"""What a PyTorch training function sees: `get_context()` (Snowflake's context API) and the
tolerance for its own `dist.init_process_group(...)` call on the group trainflow already set up.
"""
from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from trainflow.errors import InvalidArgument, OutsideTrainingError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resume:
    """What a restarted run continues from: rank 0's checkpointed state and its metrics so far."""

    state: Any
    history: list[dict[str, Any]]


class TrainingContext:
    """What `get_context()` returns inside `train_func` (Snowflake's context API, plus checkpoints)."""

    def __init__(self, *, world_rank: int, world_size: int, local_rank: int, local_world_size: int,
                 node_rank: int, dataset_map: dict[str, Any], hyper_params: dict[str, str],
                 model_dir: str, device: Any, progress: Any = None,
                 checkpointer: Callable[[dict[str, Any], Any, list[dict[str, Any]]], None] | None = None,
                 resume: Resume | None = None):
        self._world_rank, self._world_size = world_rank, world_size
        self._local_rank, self._local_world_size = local_rank, local_world_size
        self._node_rank = node_rank
        self._dataset_map = dataset_map
        self._hyper_params = hyper_params
        self._model_dir = model_dir
        self._device = device
        self._progress = progress
        self._checkpointer = checkpointer
        self._resume = resume
        self._history: list[dict[str, Any]] = [dict(h) for h in resume.history] if resume else []
        self._metrics: dict[str, Any] = {k: v for h in self._history for k, v in h.items()}
        self._lock = threading.Lock()

    def get_world_size(self) -> int:
        return self._world_size

    def get_world_rank(self) -> int:
        return self._world_rank

    def get_rank(self) -> int:
        """Alias of get_world_rank (Snowflake's examples use it)."""
        return self._world_rank

    def get_local_rank(self) -> int:
        return self._local_rank

    def get_local_world_size(self) -> int:
        return self._local_world_size

    def get_node_rank(self) -> int:
        return self._node_rank

    def get_dataset_map(self) -> dict[str, Any]:
        """The `dataset_map` given to run(): DataConnector / ShardedDataConnector (get_shard())."""
        return self._dataset_map

    def get_hyper_params(self) -> dict[str, str]:
        """The `hyper_params` given to run(), str → str (parse numbers yourself)."""
        return dict(self._hyper_params)

    def get_model_dir(self) -> str:
        """A local folder on this worker; what rank 0 writes here becomes the model artifact."""
        return self._model_dir

    def get_default_device(self):
        """`cuda:<index>` of this worker's GPU (= local rank with one GPU per worker), else cpu."""
        return self._device

    def get_metrics_reporter(self) -> MetricsReporter:
        """Snowflake's reporter: `get_metrics_reporter().log_metrics({...})` is `report({...})`."""
        return MetricsReporter(self)

    def get_master_addr(self) -> str:
        """The address of rank 0's process-group store (MASTER_ADDR, as torchrun sets it)."""
        return _env("MASTER_ADDR")

    def get_master_port(self) -> int:
        return int(_env("MASTER_PORT"))

    def get_default_backend(self) -> str:
        """The backend of the process group trainflow set up (nccl on whole GPUs, else gloo)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return str(dist.get_backend())
        return "nccl" if str(self._device).startswith("cuda") else "gloo"

    def get_supported_backends(self) -> list[str]:
        import torch
        import torch.distributed as dist

        found = ["gloo"] if dist.is_gloo_available() else []
        if torch.cuda.is_available() and dist.is_nccl_available():
            found.append("nccl")
        return found

    def get_checkpoint(self) -> Any | None:
        """The `checkpoint` of the latest `report(..., checkpoint=...)` when this run was restarted
        after losing a worker (tensors on the CPU), else None: resume from it, e.g.

            state = context.get_checkpoint()
            if state is not None:
                model.load_state_dict(state["model"]); optimizer.load_state_dict(state["optimizer"])
            for epoch in range(state["epoch"] if state else 0, epochs): ...
        """
        return self._resume.state if self._resume else None

    def report(self, metrics: Mapping[str, Any], checkpoint: Any | None = None) -> None:
        """Record metrics; with `checkpoint`, also save a state to resume from if a worker is lost.

        Without `checkpoint` this is not a barrier: call it from any rank, any number of times.
        Rank 0's latest value per key is the result's `get_metrics()`; every call of rank 0 is kept in
        `get_metrics_history()`. Values should be numbers or strings (tensors are turned into numbers).

        `checkpoint` (e.g. `{"epoch": e + 1, "model": model.state_dict(), "optimizer": opt.state_dict()}`;
        tensors, numbers, strings, lists and dicts) makes the call a barrier: every rank calls it at
        the same point, rank 0's state is saved with torch.save to the run's checkpoint storage, and a
        restarted run gets it back from `get_checkpoint()`. Metrics reported after the latest
        checkpoint of a lost run are dropped (the restarted run reports them again).
        """
        if not isinstance(metrics, Mapping):
            raise InvalidArgument(f"report() takes a dict of metric name → value, got {type(metrics).__name__}")
        clean = {str(k): _plain(v) for k, v in metrics.items()}
        with self._lock:
            self._metrics.update(clean)
            self._history.append(clean)
            history = [dict(h) for h in self._history]
        if checkpoint is not None:
            if self._checkpointer is None:
                raise OutsideTrainingError("report(checkpoint=...) needs a run started by PyTorchDistributor.run().")
            self._checkpointer(clean, checkpoint, history)
        if self._progress is not None and self._world_rank == 0:
            shown = "  ".join(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}" for k, v in clean.items())
            try:
                self._progress.put(f"[{len(self._history)}]  {shown}")
            except Exception:  # a watcher that went away must not fail training
                pass


class MetricsReporter:
    """What `get_metrics_reporter()` returns (Snowflake's context API)."""

    def __init__(self, context: TrainingContext):
        self._context = context

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record metrics as `report(metrics)` does; `step`, when given, is recorded as the metric `step`."""
        self._context.report({**metrics, **({"step": step} if step is not None else {})})


def _env(name: str) -> str:
    import os

    value = os.environ.get(name)
    if not value:
        raise OutsideTrainingError(f"{name} is not set: call this inside a training function run by "
                                   "PyTorchDistributor.run() (the process group sets it).")
    return value


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, bool) or isinstance(value, (int, float, str)) or value is None:
        return value
    return str(value)


_CURRENT: TrainingContext | None = None


@contextmanager
def active(context: TrainingContext):
    """Make `context` what get_context() returns while the training function runs."""
    global _CURRENT
    _CURRENT = context
    try:
        yield context
    finally:
        _CURRENT = None


def get_context() -> TrainingContext:
    """The running training function's context; RuntimeError anywhere else."""
    if _CURRENT is None:
        raise OutsideTrainingError(
            "get_context() only works inside a training function run by PyTorchDistributor.run() "
            "(it describes that worker's rank, data and model folder)."
        )
    return _CURRENT


@contextmanager
def tolerate_user_process_group_init():
    """While active, `dist.init_process_group(...)` on an initialised default group is a no-op."""
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d

    original = c10d.init_process_group

    @functools.wraps(original)
    def init_process_group(*args, **kwargs):
        if not (dist.is_available() and dist.is_initialized()):
            return original(*args, **kwargs)
        bound = _bind(original, args, kwargs)
        for name, actual in (("rank", dist.get_rank()), ("world_size", dist.get_world_size())):
            wanted = bound.get(name, -1)
            if wanted not in (None, -1) and wanted != actual:
                raise InvalidArgument(
                    f"init_process_group({name}={wanted}) disagrees with the process group trainflow "
                    f"already set up ({name}={actual}); leave {name} out, the group is ready."
                )
        backend = bound.get("backend")
        current = dist.get_backend()
        if backend is not None and str(backend).lower() not in str(current).lower():
            logger.info("init_process_group(backend=%r) ignored: the process group is already "
                        "initialised with %r for this worker's devices.", backend, current)
        return None

    saved = [(mod, mod.init_process_group) for mod in (dist, c10d)]
    for mod, _ in saved:
        mod.init_process_group = init_process_group
    try:
        yield
    finally:
        for mod, before in saved:
            if mod.init_process_group is init_process_group:
                mod.init_process_group = before


def _bind(fn: Callable, args: tuple, kwargs: dict) -> dict[str, Any]:
    try:
        return dict(inspect.signature(fn).bind_partial(*args, **kwargs).arguments)
    except TypeError:
        return dict(kwargs)
