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
* Worker loss: `context.report(metrics, checkpoint=state)` (every rank, e.g. once per epoch) saves
  rank 0's state under `<artifact_stage_location>/checkpoints/<request_id>`. If a worker dies, Ray
  Train restarts the worker group (up to `max_restarts`, default 3) and `train_func` runs again with
  `context.get_checkpoint()` returning that state, so it continues from the last checkpointed epoch.
* Modules: torch_context.py (get_context), torch_device.py (device/backend policy),
  torch_storage.py (artifact locations); this one holds the configs, the worker loop and the driver.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import inspect
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainflow.defaults import DEFAULT_MAX_RESTARTS
from trainflow.distributors.torch_context import (
    Resume,
    TrainingContext,
    active,
    get_context,
    tolerate_user_process_group_init,
)
from trainflow.distributors.torch_device import backend_for, device_for
from trainflow.distributors.torch_storage import Location, copy_tree, resolve_location
from trainflow.distributors.worker_output import forward_output
from trainflow.errors import ConfigError, ResourceError, TrainingError

logger = logging.getLogger(__name__)

CHECKPOINT_DIR_NAME = "final"
STATE_FILE = "state.pt"
HISTORY_FILE = "metrics_history.json"

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


def default_scaling(nodes: list) -> PyTorchScalingConfig:
    """Without a scaling config the resources are used automatically (Snowflake's rule): on the
    biggest node, one worker per GPU with its share of the CPUs, or one worker with every CPU."""
    if not nodes:
        return PyTorchScalingConfig()
    gpu_nodes = [n for n in nodes if n.gpus >= 1]
    if gpu_nodes:
        node = max(gpu_nodes, key=lambda n: (n.gpus, n.cpus))
        gpus = int(node.gpus)
        return PyTorchScalingConfig(num_workers_per_node=gpus, resource_requirements_per_worker=WorkerResourceConfig(
            num_cpus=max(1, math.floor(node.cpus / gpus)), num_gpus=1))
    node = max(nodes, key=lambda n: n.cpus)
    return PyTorchScalingConfig(resource_requirements_per_worker=WorkerResourceConfig(num_cpus=max(1, math.floor(node.cpus))))


def _trial_scaling() -> PyTorchScalingConfig | None:
    """Inside a tuner's trial: one worker with the trial's resources (see trainflow.tune.context)."""
    from trainflow.tune.context import trial_scaling

    share = trial_scaling("PyTorchDistributor")
    if share is None:
        return None
    cpus, gpus = share
    return PyTorchScalingConfig(resource_requirements_per_worker=WorkerResourceConfig(
        num_cpus=max(1, cpus), num_gpus=1 if gpus else 0))


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


@contextlib.contextmanager
def _ray_reports_recorded(context: TrainingContext):
    """A train_func written for Ray Train calls `ray.train.report(metrics, ...)`: its metrics also
    reach the result's `get_metrics()`, and the call still goes to Ray Train as written."""
    import ray.train

    original = ray.train.report

    def report(metrics: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        context.report(metrics)
        return original(metrics, *args, **kwargs)

    report.__wrapped__ = original  # trainflow's own reports (context.report's checkpoints) go straight to Ray
    ray.train.report = report
    try:
        yield
    finally:
        ray.train.report = original


def _worker_loop(job: _WorkerJob) -> dict[str, Any]:
    """Ray Train's train_loop_per_worker: set up the context (resuming from the latest checkpoint
    after a restart), run train_func, checkpoint rank 0's model folder."""
    import ray
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    node_rank, local_rank, local_world = _node_ranks(ctx)
    checkpoint = ray.train.get_checkpoint()
    model_dir = tempfile.mkdtemp(prefix=f"trainflow-model-{job.request_id}-rank{rank}-")
    context = TrainingContext(
        world_rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world,
        node_rank=node_rank, dataset_map=job.dataset_map, hyper_params=dict(job.hyper_params),
        model_dir=model_dir, device=_default_device(), progress=job.progress,
        checkpointer=functools.partial(_save_checkpoint, rank),
        resume=_read_resume(checkpoint) if checkpoint is not None else None,
    )
    forwarded = forward_output(job.progress.put, rank) if job.progress is not None else contextlib.nullcontext()
    try:
        with active(context), tolerate_user_process_group_init(), forwarded, _ray_reports_recorded(context):
            if takes_config(job.train_func):
                job.train_func(dict(job.hyper_params))  # Snowflake 2.6+ style: train_func(config)
            else:
                job.train_func()
        metrics = dict(context._metrics)
        if rank == 0:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(model_dir),
                             checkpoint_dir_name=CHECKPOINT_DIR_NAME)
        else:
            ray.train.report(metrics, checkpoint=None)  # a barrier: every rank reports once
        return {"metrics": metrics, "history": context._history}
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)


def _save_checkpoint(rank: int, metrics: dict[str, Any], state: Any, history: list[dict[str, Any]]) -> None:
    """context.report(..., checkpoint=state): every rank reports (a barrier); rank 0 attaches its state."""
    import ray.train
    import torch

    report = getattr(ray.train.report, "__wrapped__", ray.train.report)  # not recorded twice
    if rank != 0:
        report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="trainflow-checkpoint-") as folder:
        path = os.path.join(folder, STATE_FILE)
        torch.save(state, path)
        _check_loadable(path)
        with open(os.path.join(folder, HISTORY_FILE), "w") as fh:
            json.dump(history, fh)
        report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


_STATE_CHECKED = False


def _check_loadable(path: str) -> None:
    """The first checkpoint of a worker is read back as a restart would read it (weights_only), so
    a state that cannot be resumed fails now, with the fix, rather than on every restart."""
    global _STATE_CHECKED
    import torch

    if _STATE_CHECKED:
        return
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError and friends
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            "context.report(checkpoint=...) got a state that torch.load(weights_only=True) cannot read back "
            f"({first[:200]}). Use tensors, numbers, strings, lists and dicts (e.g. torch.as_tensor(array) "
            "for numpy arrays); model.state_dict() and optimizer.state_dict() are fine."
        ) from None
    _STATE_CHECKED = True


def _read_resume(checkpoint) -> Resume | None:
    """The state a restarted run continues from; None for the final model folder (nothing to resume)."""
    import torch

    with checkpoint.as_directory() as folder:
        path = os.path.join(folder, STATE_FILE)
        if not os.path.exists(path):
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)  # no pickle of arbitrary objects
        with open(os.path.join(folder, HISTORY_FILE)) as fh:
            history = json.load(fh)
    return Resume(state, history)


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

    def __init__(self, train_func: Callable[[], Any], scaling_config: PyTorchScalingConfig | None = None,
                 *, max_restarts: int = DEFAULT_MAX_RESTARTS):
        self.train_func = train_func
        self.scaling_config = scaling_config  # None: decided from the cluster in run() (default_scaling)
        self.max_restarts = max_restarts

    def run(self, *, dataset_map: Mapping[str, Any] | None = None,
            hyper_params: Mapping[str, str] | None = None,
            artifact_stage_location: str | os.PathLike | None = None,
            progress: Any = None) -> PyTorchDistributorResult:
        """Train; returns where rank 0's model folder was stored and rank 0's metrics.

        `progress` (optional): a callable or trainflow ProgressChannel receiving one line per
        context.report() call on rank 0.
        """
        from trainflow.cluster import cluster_nodes, ensure_cluster
        from trainflow.distributors.checks import check_restarts
        from trainflow.distributors.runner import run_workers
        from trainflow.distributors.progress import ProgressChannel

        _check_train_func(self.train_func)
        scaling = self.scaling_config
        if scaling is not None and not isinstance(scaling, PyTorchScalingConfig):
            raise ConfigError(f"scaling_config must be a PyTorchScalingConfig, got {type(scaling).__name__}.")
        if scaling is not None:
            scaling.check()
        restarts = check_restarts(self.max_restarts)
        data = _check_dataset_map(dataset_map)
        params = _check_hyper_params(hyper_params)
        location = resolve_location(artifact_stage_location)
        ensure_cluster()
        nodes = cluster_nodes()
        scaling = scaling if scaling is not None else (_trial_scaling() or default_scaling(nodes))
        check_resources(scaling, nodes)
        # Every worker splits the same rows: a query is read once here, not once per worker.
        data = {name: value.snapshot() if hasattr(value, "snapshot") else value for name, value in data.items()}

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
        trainer = functools.partial(_make_trainer, backend=backend_for(scaling.resources.num_gpus))
        try:
            # named after the request id, so a rerun under the same name could resume it
            result, _ = run_workers(_worker_loop, job, scaling, trainer, "pytorch", max_restarts=restarts,
                                    run_name=request_id, storage_path=checkpoints.path,
                                    storage_filesystem=checkpoints.fs)
        finally:
            if drain is not None:
                drain.stop()
                own.close()
        if result.checkpoint is None:
            raise TrainingError("Training finished without rank 0's model checkpoint.")
        ckpt = Location(checkpoints.fs, result.checkpoint.path,
                         checkpoints.child(request_id, CHECKPOINT_DIR_NAME).display)
        model = location.child("model", request_id)
        copy_tree(ckpt, model)
        ret = result.return_value or {}
        return PyTorchDistributorResult(
            request_id=request_id, model_dir=model.display, checkpoint_location=ckpt.display,
            metrics=dict(ret.get("metrics", result.metrics or {})),
            metrics_history=list(ret.get("history", [])), world_size=scaling.num_workers,
        )


def _make_trainer(loop, *, train_loop_config, scaling_config, run_config, backend: str):
    """run_workers' trainer factory: a TorchTrainer with torch_device.backend_for's choice of
    backend (nccl for whole GPUs, else gloo)."""
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(loop, train_loop_config=train_loop_config, scaling_config=scaling_config,
                        run_config=run_config, torch_config=TorchConfig(backend=backend))


def takes_config(fn: Any) -> bool | None:
    """False: `train_func()`; True: `train_func(config)` (the hyper-parameters dict); None: neither fits."""
    try:
        signature = inspect.signature(fn)
    except ValueError:
        return False  # builtins without a signature
    for wants_config, args in ((False, ()), (True, ({},))):
        try:
            signature.bind(*args)
            return wants_config
        except TypeError:
            continue
    return None


def _check_train_func(fn: Any) -> None:
    if not callable(fn):
        raise ConfigError(f"train_func must be a function taking no arguments, got {type(fn).__name__}.")
    if takes_config(fn) is None:
        raise ConfigError(
            f"train_func {getattr(fn, '__name__', fn)!r} must be callable with no arguments, or with one "
            "(`config`: the hyper-parameters); read data with get_context() inside it."
        )


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
