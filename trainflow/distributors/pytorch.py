"""PyTorchDistributor: Snowflake ML's distributed PyTorch API on Ray Train V2's TorchTrainer.

```python
from trainflow.distributors.pytorch import (PyTorchDistributor, PyTorchScalingConfig,
                                             WorkerResourceConfig, get_context)

def train_func():
    context = get_context()                       # rank, local rank, node rank, data, hyper-params
    shard = context.get_dataset_map()["train"].get_shard()
    ...                                           # DDP on the ready process group (gloo / nccl)
    context.report({"loss": loss})                # optional; rank 0's values → result.get_metrics()
    if context.get_rank() == 0:
        torch.save(model.module.state_dict(), os.path.join(context.get_model_dir(), "model.pt"))

result = PyTorchDistributor(train_func, PyTorchScalingConfig(num_nodes=1, num_workers_per_node=2)).run(
    dataset_map={"train": ShardedDataConnector.from_dataframe(df)}, artifact_stage_location="s3://b/p")
result.get_model_dir()   # s3://b/p/model/<request_id>
```

How it works
* Each worker is a Ray Train worker; Ray Train's TorchConfig initialises the default process group
  before `train_func` starts (nccl when each worker holds a whole GPU, else gloo; the device is
  `cuda:<local_rank>` or cpu: torch_device.py; `MASTER_ADDR`, `RANK`, `WORLD_SIZE`, `LOCAL_RANK`
  are set as torchrun would).
* Snowflake's examples call `dist.init_process_group(backend=...)` themselves, which on an initialised
  group raises. While `train_func` runs (and only in the worker processes), `init_process_group` in
  `torch.distributed` and `torch.distributed.distributed_c10d` is replaced by a wrapper: when the
  default group already exists it checks that rank/world size agree and returns (a different backend
  is logged and the ready group kept); otherwise it calls the real function. The original is put
  back when `train_func` returns or raises. A reference taken before the run
  (`from torch.distributed import init_process_group` at import time) still points at the real
  function: call it through the module (`dist.init_process_group`), as Snowflake's docs do.
* `get_model_dir()` is a fresh local folder on every worker. After `train_func` returns, every rank
  calls `ray.train.report` once (it is a barrier); rank 0 attaches its model folder as a Ray Train
  checkpoint, which Ray persists under `<artifact_stage_location>/checkpoints/<request_id>/final`
  (`get_checkpoint_location()`); the driver then copies it to
  `<artifact_stage_location>/model/<request_id>` (`get_model_dir()`). The location is a local path or
  a URI readable by pyarrow (`s3://`, `gs://`, `file://`, `hdfs://`) or by fsspec (any other scheme
  fsspec knows); default `.trainflow/artifacts` in the working directory. On a multi-node cluster it
  must be storage every node can reach.
* A node is a Ray node (raylet): `num_nodes` counts them and `get_node_rank()`/`get_local_rank()`
  index them (Ray Train groups by IP address instead, which differs only where raylets share an
  address, as in `ray.cluster_utils.Cluster`; `NODE_RANK`/`LOCAL_RANK` are set to trainflow's values).
* `context.report(metrics)` may be called any number of times on any rank (it is not a barrier).
  The result's `get_metrics()` holds the latest value of every key rank 0 reported;
  `get_metrics_history()` every call of rank 0 in order.
"""
from __future__ import annotations

import datetime as _dt
import functools
import inspect
import logging
import math
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from trainflow.distributors.torch_device import backend_for, device_for
from trainflow.errors import ConfigError, ResourceError, TrainingError

logger = logging.getLogger(__name__)

DEFAULT_ARTIFACT_LOCATION = os.path.join(".trainflow", "artifacts")
CHECKPOINT_DIR_NAME = "final"

__all__ = [
    "PyTorchDistributor",
    "PyTorchDistributorResult",
    "PyTorchScalingConfig",
    "TrainingContext",
    "WorkerResourceConfig",
    "get_context",
]


# ----------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class WorkerResourceConfig:
    """What each worker reserves: CPUs (may be fractional or 0) and GPUs."""

    num_cpus: float = 1
    num_gpus: float = 0

    def check(self) -> None:
        for name in ("num_cpus", "num_gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
                raise ConfigError(f"WorkerResourceConfig.{name}={value!r} is invalid: use a number >= 0.")


@dataclass(frozen=True)
class PyTorchScalingConfig:
    """`num_nodes` × `num_workers_per_node` workers, each with `resource_requirements_per_worker`."""

    num_nodes: int = 1
    num_workers_per_node: int = 1
    resource_requirements_per_worker: WorkerResourceConfig | None = None

    @property
    def resources(self) -> WorkerResourceConfig:
        return self.resource_requirements_per_worker or WorkerResourceConfig()

    @property
    def num_workers(self) -> int:
        return self.num_nodes * self.num_workers_per_node

    def check(self) -> None:
        for name in ("num_nodes", "num_workers_per_node"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"PyTorchScalingConfig.{name}={value!r} is invalid: use an integer >= 1.")
        res = self.resource_requirements_per_worker
        if res is not None and not isinstance(res, WorkerResourceConfig):
            raise ConfigError(
                "PyTorchScalingConfig.resource_requirements_per_worker must be a WorkerResourceConfig"
                f"(num_cpus=..., num_gpus=...), got {type(res).__name__}."
            )
        self.resources.check()

    def ray_scaling_config(self):
        """Ray Train's ScalingConfig: one node → all workers on one node; else spread over nodes."""
        from ray.train import ScalingConfig

        res = self.resources
        resources: dict[str, float] = {"CPU": res.num_cpus}
        if res.num_gpus:
            resources["GPU"] = res.num_gpus
        if self.num_nodes == 1:
            strategy = "STRICT_PACK"
        elif self.num_workers_per_node == 1:
            strategy = "STRICT_SPREAD"  # exactly one worker on each of num_nodes nodes
        else:
            strategy = "SPREAD"  # Ray places round-robin over nodes; best effort per node
        return ScalingConfig(num_workers=self.num_workers, use_gpu=bool(res.num_gpus),
                             resources_per_worker=resources, placement_strategy=strategy)


def check_resources(scaling: PyTorchScalingConfig, nodes: list) -> None:
    """Refuse, before any worker starts, what the cluster can never hold (Ray would wait forever)."""
    res = scaling.resources
    per_node_cpus = scaling.num_workers_per_node * res.num_cpus
    per_node_gpus = scaling.num_workers_per_node * res.num_gpus
    total_gpus = sum(n.gpus for n in nodes)
    if res.num_gpus and not total_gpus:
        raise ResourceError(
            f"num_gpus={res.num_gpus:g} per worker, but the Ray cluster has no GPUs. Use num_gpus=0 "
            "(CPU training with gloo), or point RAY_ADDRESS at a cluster with GPU nodes."
        )
    if scaling.num_nodes > len(nodes):
        raise ResourceError(
            f"num_nodes={scaling.num_nodes}, but the Ray cluster has {len(nodes)} node(s) with CPUs/GPUs. "
            f"Lower num_nodes to at most {len(nodes)} (and raise num_workers_per_node instead)."
        )
    fitting = [n for n in nodes if n.cpus + 1e-9 >= per_node_cpus and n.gpus + 1e-9 >= per_node_gpus]
    if len(fitting) < scaling.num_nodes:
        biggest_cpu = max((n.cpus for n in nodes), default=0)
        biggest_gpu = max((n.gpus for n in nodes), default=0)
        need = f"{per_node_cpus:g} CPU(s)" + (f" and {per_node_gpus:g} GPU(s)" if per_node_gpus else "")
        have = f"{biggest_cpu:g} CPU(s)" + (f" and {biggest_gpu:g} GPU(s)" if per_node_gpus else "")
        raise ResourceError(
            f"Cannot place {scaling.num_workers_per_node} worker(s) × (num_cpus={res.num_cpus:g}, "
            f"num_gpus={res.num_gpus:g}) on each of {scaling.num_nodes} node(s): that needs {need} per "
            f"node, and {len(fitting)} of the cluster's {len(nodes)} node(s) offer it (the biggest has "
            f"{have}). Lower num_workers_per_node, num_cpus or num_gpus, or use a bigger cluster."
        )


# ----------------------------------------------------------------------------------- the context
class TrainingContext:
    """What `get_context()` returns inside `train_func` (Snowflake's context API)."""

    def __init__(self, *, world_rank: int, world_size: int, local_rank: int, local_world_size: int,
                 node_rank: int, dataset_map: dict[str, Any], hyper_params: dict[str, str],
                 model_dir: str, device: Any, progress: Any = None):
        self._world_rank, self._world_size = world_rank, world_size
        self._local_rank, self._local_world_size = local_rank, local_world_size
        self._node_rank = node_rank
        self._dataset_map = dataset_map
        self._hyper_params = hyper_params
        self._model_dir = model_dir
        self._device = device
        self._progress = progress
        self._metrics: dict[str, Any] = {}
        self._history: list[dict[str, Any]] = []
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

    def report(self, metrics: Mapping[str, Any]) -> None:
        """Record metrics (not a barrier: call from any rank, any number of times).

        Rank 0's latest value per key is the result's `get_metrics()`; every call of rank 0 is kept in
        `get_metrics_history()`. Values should be numbers or strings (tensors are turned into numbers).
        """
        if not isinstance(metrics, Mapping):
            raise TypeError(f"report() takes a dict of metric name → value, got {type(metrics).__name__}")
        clean = {str(k): _plain(v) for k, v in metrics.items()}
        with self._lock:
            self._metrics.update(clean)
            self._history.append(clean)
        if self._progress is not None and self._world_rank == 0:
            shown = "  ".join(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}" for k, v in clean.items())
            try:
                self._progress.put(f"[{len(self._history)}]  {shown}")
            except Exception:  # a watcher that went away must not fail training
                pass


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


def get_context() -> TrainingContext:
    """The running training function's context; RuntimeError anywhere else."""
    if _CURRENT is None:
        raise RuntimeError(
            "get_context() only works inside a training function run by PyTorchDistributor.run() "
            "(it describes that worker's rank, data and model folder)."
        )
    return _CURRENT


# ------------------------------------------------------------------ init_process_group tolerance
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
                raise ValueError(
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


# ----------------------------------------------------------------------------------- worker side
@dataclass
class _WorkerJob:
    train_func: Callable[[], Any]
    dataset_map: dict[str, Any]
    hyper_params: dict[str, str]
    request_id: str
    progress: Any = None


def _default_device():
    """This worker's torch device (see torch_device.device_for); pins CUDA's current device to it."""
    import ray
    import torch

    choice = device_for(ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    device = torch.device(str(choice))
    if choice.type == "cuda":
        if torch.cuda.is_available():
            torch.cuda.set_device(device)
        else:  # logical GPUs (tests) or a broken CUDA install: the decision stands, kernels would fail
            logger.warning("Ray assigned GPU %s to this worker, but torch sees no CUDA device.",
                           ray.get_gpu_ids())
    return device


def _node_ranks(ctx) -> tuple[int, int, int]:
    """(node rank, local rank, local world size) with a node = a Ray node (raylet).

    Ray Train groups workers by IP address; trainflow's scaling (num_nodes × num_workers_per_node)
    counts Ray nodes. Both agree on real clusters (one raylet per machine/pod); where several raylets
    share an address (ray.cluster_utils.Cluster) the Ray node ids decide. The torchrun-style
    environment variables are set to the same values.
    """
    import ray
    import torch.distributed as dist

    world = ctx.get_world_size()
    if world == 1 or not dist.is_initialized():
        return ctx.get_node_rank(), ctx.get_local_rank(), ctx.get_local_world_size()
    node_ids: list[Any] = [None] * world
    dist.all_gather_object(node_ids, ray.get_runtime_context().get_node_id())
    rank = ctx.get_world_rank()
    mine = node_ids[rank]
    order = list(dict.fromkeys(node_ids))  # nodes in order of their first world rank
    node_rank = order.index(mine)
    local_rank = node_ids[:rank].count(mine)
    local_world = node_ids.count(mine)
    os.environ.update(NODE_RANK=str(node_rank), LOCAL_RANK=str(local_rank), LOCAL_WORLD_SIZE=str(local_world))
    return node_rank, local_rank, local_world


def _worker_loop(job: _WorkerJob) -> dict[str, Any]:
    """Ray Train's train_loop_per_worker: set up the context, run train_func, checkpoint rank 0's model."""
    global _CURRENT
    import ray
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    node_rank, local_rank, local_world = _node_ranks(ctx)
    model_dir = tempfile.mkdtemp(prefix=f"trainflow-model-{job.request_id}-rank{rank}-")
    context = TrainingContext(
        world_rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world,
        node_rank=node_rank, dataset_map=job.dataset_map, hyper_params=dict(job.hyper_params),
        model_dir=model_dir, device=_default_device(), progress=job.progress,
    )
    try:
        _CURRENT = context
        try:
            with tolerate_user_process_group_init():
                job.train_func()
        finally:
            _CURRENT = None
        metrics = dict(context._metrics)
        if rank == 0:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(model_dir),
                             checkpoint_dir_name=CHECKPOINT_DIR_NAME)
        else:
            ray.train.report(metrics, checkpoint=None)  # a barrier: every rank reports once
        return {"metrics": metrics, "history": context._history}
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)


# ----------------------------------------------------------------------------------- storage
@dataclass(frozen=True)
class _Location:
    """An artifact location: a pyarrow filesystem, the path inside it, and how to show it to users."""

    fs: Any
    path: str
    display: str

    def child(self, *parts: str) -> _Location:
        sep = "/"
        path = sep.join([self.path.rstrip(sep), *parts])
        display = sep.join([self.display.rstrip(sep), *parts]) if "://" in self.display else \
            os.path.join(self.display, *parts)
        return _Location(self.fs, path, display)


def resolve_location(location: str | os.PathLike | None) -> _Location:
    """A local path (made absolute) or a URI via pyarrow.fs, falling back to fsspec."""
    import pyarrow.fs as pafs

    if location is None:
        location = DEFAULT_ARTIFACT_LOCATION
    location = os.fspath(location)
    if not isinstance(location, str) or not location.strip():
        raise ConfigError(f"artifact_stage_location={location!r} is invalid: use a path or a URI.")
    if "://" not in location:
        path = os.path.abspath(os.path.expanduser(location))
        return _Location(pafs.LocalFileSystem(), path, path)
    try:
        fs, path = pafs.FileSystem.from_uri(location)
        return _Location(fs, path, location.rstrip("/"))
    except (pa_errors() + (ValueError,)) as exc:
        try:
            import fsspec

            fsspec_fs, path = fsspec.core.url_to_fs(location)
        except Exception as exc2:  # noqa: BLE001 - unknown scheme / missing driver
            raise ConfigError(
                f"artifact_stage_location={location!r} cannot be opened ({exc}; fsspec: {exc2}). Use a "
                "local path or a URI pyarrow or an installed fsspec driver understands (s3://, gs://, file://)."
            ) from None
        return _Location(pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs)), path, location.rstrip("/"))


def pa_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError)


def copy_tree(src: _Location, dst: _Location) -> None:
    import pyarrow.fs as pafs

    dst.fs.create_dir(dst.path, recursive=True)
    infos = src.fs.get_file_info(pafs.FileSelector(src.path, recursive=True))
    for info in infos:
        rel = info.path[len(src.path.rstrip("/")) + 1:]
        target = f"{dst.path.rstrip('/')}/{rel}"
        if info.type == pafs.FileType.Directory:
            dst.fs.create_dir(target, recursive=True)
        elif info.type == pafs.FileType.File:
            pafs.copy_files(info.path, target, source_filesystem=src.fs, destination_filesystem=dst.fs)


def download_dir(location: str, local_dir: str | None = None) -> str:
    """Copy a model/checkpoint folder (path or URI) to a local folder; returns the local folder."""
    import pyarrow.fs as pafs

    src = resolve_location(location)
    if src.fs.get_file_info(src.path).type != pafs.FileType.Directory:
        raise ConfigError(f"{location!r} is not a folder (expected a model folder from PyTorchDistributor).")
    local = local_dir or tempfile.mkdtemp(prefix="trainflow-model-")
    copy_tree(src, _Location(pafs.LocalFileSystem(), os.path.abspath(local), os.path.abspath(local)))
    return local


# ----------------------------------------------------------------------------------- driver side
@dataclass
class PyTorchDistributorResult:
    """What run() returns: where the model and the checkpoint are, and rank 0's metrics."""

    request_id: str
    model_dir: str
    checkpoint_location: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    metrics_history: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 1

    def get_model_dir(self) -> str:
        """`<artifact_stage_location>/model/<request_id>`: what rank 0 wrote to get_model_dir()."""
        return self.model_dir

    def get_metrics(self) -> dict[str, Any]:
        """The latest value of every metric rank 0 reported with context.report()."""
        return dict(self.metrics)

    def get_metrics_history(self) -> list[dict[str, Any]]:
        """Every context.report() call of rank 0, in order."""
        return [dict(m) for m in self.metrics_history]

    def get_checkpoint_location(self) -> str | None:
        """The Ray Train checkpoint the model was copied from (for resuming/inspection)."""
        return self.checkpoint_location


class PyTorchDistributor:
    """Run `train_func` (no arguments) on `scaling_config` workers with DDP ready (Snowflake's API)."""

    def __init__(self, train_func: Callable[[], Any], scaling_config: PyTorchScalingConfig | None = None):
        self.train_func = train_func
        self.scaling_config = scaling_config or PyTorchScalingConfig()

    def run(self, *, dataset_map: Mapping[str, Any] | None = None,
            hyper_params: Mapping[str, str] | None = None,
            artifact_stage_location: str | os.PathLike | None = None,
            progress: Any = None) -> PyTorchDistributorResult:
        """Train; returns where rank 0's model folder was stored and rank 0's metrics.

        `progress` (optional): a callable or trainflow ProgressChannel receiving one line per
        context.report() call on rank 0.
        """
        from trainflow.cluster import cluster_nodes, ensure_cluster
        from trainflow.distributors.boosting import run_workers
        from trainflow.distributors.progress import ProgressChannel

        _check_train_func(self.train_func)
        scaling = self.scaling_config
        if not isinstance(scaling, PyTorchScalingConfig):
            raise ConfigError(f"scaling_config must be a PyTorchScalingConfig, got {type(scaling).__name__}.")
        scaling.check()
        data = _check_dataset_map(dataset_map)
        params = _check_hyper_params(hyper_params)
        location = resolve_location(artifact_stage_location)
        ensure_cluster()
        check_resources(scaling, cluster_nodes())

        request_id = f"{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        checkpoints = location.child("checkpoints")
        job = _WorkerJob(self.train_func, data, params, request_id)
        drain = own = None
        if progress is not None:
            if isinstance(progress, ProgressChannel):
                job.progress = progress
            else:
                job.progress = own = ProgressChannel()
                drain = own.drain_to(progress)
        trainer = functools.partial(_make_trainer, name=request_id, storage=checkpoints,
                                    backend=backend_for(scaling.resources.num_gpus))
        try:
            result, _ = run_workers(_worker_loop, job, scaling, trainer, "pytorch")
        finally:
            if drain is not None:
                drain.stop()
                own.close()
        if result.checkpoint is None:
            raise TrainingError("Training finished without rank 0's model checkpoint.")
        ckpt = _Location(checkpoints.fs, result.checkpoint.path,
                         checkpoints.child(request_id, CHECKPOINT_DIR_NAME).display)
        model = location.child("model", request_id)
        copy_tree(ckpt, model)
        ret = result.return_value or {}
        return PyTorchDistributorResult(
            request_id=request_id, model_dir=model.display, checkpoint_location=ckpt.display,
            metrics=dict(ret.get("metrics", result.metrics or {})),
            metrics_history=list(ret.get("history", [])), world_size=scaling.num_workers,
        )


def _make_trainer(loop, *, train_loop_config, scaling_config, run_config, name: str, storage: _Location,
                  backend: str):
    """run_workers' trainer factory: a TorchTrainer whose run lives in the artifact location.

    `backend` is torch_device.backend_for's choice (nccl for whole GPUs, else gloo). The run is named
    after the request id, so a rerun under the same name could resume it.
    """
    from ray.train import RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    config = RunConfig(name=name, storage_path=storage.path, storage_filesystem=storage.fs,
                       failure_config=run_config.failure_config,
                       checkpoint_config=run_config.checkpoint_config)
    return TorchTrainer(loop, train_loop_config=train_loop_config, scaling_config=scaling_config,
                        run_config=config, torch_config=TorchConfig(backend=backend))


def _check_train_func(fn: Any) -> None:
    if not callable(fn):
        raise ConfigError(f"train_func must be a function taking no arguments, got {type(fn).__name__}.")
    try:
        inspect.signature(fn).bind()
    except TypeError:
        raise ConfigError(
            f"train_func {getattr(fn, '__name__', fn)!r} must be callable with no arguments (read "
            "hyper-parameters and data with get_context() inside it)."
        ) from None
    except ValueError:
        pass  # builtins without a signature


def _check_dataset_map(dataset_map: Mapping[str, Any] | None) -> dict[str, Any]:
    if dataset_map is None:
        return {}
    if not isinstance(dataset_map, Mapping):
        raise ConfigError(f"dataset_map must be a dict of name → DataConnector/ShardedDataConnector, "
                          f"got {type(dataset_map).__name__}.")
    bad = [k for k in dataset_map if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"dataset_map keys must be strings, got {bad!r}.")
    return dict(dataset_map)


def _check_hyper_params(hyper_params: Mapping[str, str] | None) -> dict[str, str]:
    if hyper_params is None:
        return {}
    if not isinstance(hyper_params, Mapping):
        raise ConfigError(f"hyper_params must be a dict of str → str, got {type(hyper_params).__name__}.")
    for key, value in hyper_params.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigError(
                f"hyper_params must map str → str (as in Snowflake); {key!r}: {value!r} is "
                f"{type(key).__name__} → {type(value).__name__}. Pass str(value) and parse it in train_func."
            )
    return dict(hyper_params)
