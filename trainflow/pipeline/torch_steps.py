"""The pipeline's steps for `framework: pytorch` (shard, fit, evaluate, register).

Kept apart from the boosting code paths; `shard.py`, `fit.py`, `evaluate.py` and `register.py` hand
over to these functions when the spec's framework is pytorch.

The model folder convention the pipeline relies on (the shipped example
`trainflow.examples.credit_mlp:train_func` follows it): rank 0 writes to `get_model_dir()`

* `model.pt`   — a `state_dict`;
* `model.json` — `{"module": "package.module:ModuleClass", "kwargs": {...}}`: the nn.Module class
  to build (with those keyword arguments) before loading the state_dict. Its `forward(x)` takes the
  raw feature columns as float32 `(n, n_features)` in the spec's `features` order and returns
  predictions: `(n,)`/`(n, 1)` values (regression), P(class 1) (binary), `(n, k)` probabilities
  (multiclass).

The train function receives the spec's `trainer.hyper_params` plus `input_cols` (JSON list of the
spec's features), `label_col` and `task`; those three come from the spec and override same-named keys.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainflow.data import ShardedDataConnector
from trainflow.distributors.boosting import BoostingAdapter
from trainflow.distributors.placement import Placement
from trainflow.distributors.pytorch import (
    PyTorchDistributor,
    PyTorchDistributorResult,
    PyTorchScalingConfig,
    WorkerResourceConfig,
    check_resources,
)
from trainflow.distributors.torch_storage import download_dir
from trainflow.errors import ConfigError
from trainflow.secrets import mask_text, resolve_env
from trainflow.pipeline.fit import FitOutcome
from trainflow.pipeline.load import LoadedData
from trainflow.pipeline.shard import ShardPlan
from trainflow.spec import JobSpec

MODEL_STATE = "model.pt"
MODEL_META = "model.json"


def scaling_config(spec: JobSpec) -> PyTorchScalingConfig:
    s = spec.trainer.scaling
    return PyTorchScalingConfig(
        num_nodes=s.num_nodes, num_workers_per_node=s.num_workers_per_node,
        resource_requirements_per_worker=WorkerResourceConfig(num_cpus=s.num_cpus, num_gpus=s.num_gpus),
    )


# ------------------------------------------------------------------------------------------ shard
def plan(spec: JobSpec, data: LoadedData) -> ShardPlan:
    """World size = num_nodes × num_workers_per_node, checked against the cluster now (not at fit)."""
    from trainflow.cluster import cluster_nodes

    scaling = scaling_config(spec)
    scaling.check()
    check_resources(scaling, cluster_nodes())
    res = scaling.resources
    cpus = int(res.num_cpus) if float(res.num_cpus).is_integer() else res.num_cpus
    placement = Placement(num_workers=scaling.num_workers, cpus_per_worker=cpus, use_gpu=res.num_gpus > 0)
    rows = [s.count_rows() for s in data.train.split(scaling.num_workers)]
    return ShardPlan(placement, rows)


# ------------------------------------------------------------------------------------------- fit
def resolve_train_func(ref: str) -> Callable[[], Any]:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"trainer.train_func={ref!r}: cannot import {module_name!r} ({exc}). Make the "
                          "module importable (installed, or on PYTHONPATH) on the driver and the Ray workers.") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"trainer.train_func={ref!r}: {module_name} has no function {attr!r}.")
    return fn


def hyper_params(spec: JobSpec) -> dict[str, str]:
    given = {k: resolve_env(v, f"trainer.hyper_params.{k}") for k, v in spec.trainer.hyper_params.items()}
    return {**given, "input_cols": json.dumps(list(spec.features)),
            "label_col": spec.label, "task": spec.task}


@dataclass
class TorchFitOutcome(FitOutcome):
    """FitOutcome for pytorch: `estimator` is None; the run's result and placement are here."""

    result: PyTorchDistributorResult | None = None
    placement: Placement | None = None
    _module: Any = field(default=None, repr=False)

    @property
    def model(self) -> Any:
        """The trained nn.Module, loaded (once) from the model folder in the artifact location."""
        if self._module is None:
            self._module = load_model(self.result.get_model_dir())
        return self._module


def fit(spec: JobSpec, data: LoadedData, shard_plan: ShardPlan, progress: Any = None) -> TorchFitOutcome:
    fn = resolve_train_func(spec.trainer.train_func)
    distributor = PyTorchDistributor(fn, scaling_config(spec), max_restarts=spec.trainer.max_restarts)
    dataset_map = {"train": ShardedDataConnector.from_connector(data.train),
                   "eval": ShardedDataConnector.from_connector(data.eval)}
    start = time.perf_counter()
    result = distributor.run(dataset_map=dataset_map, hyper_params=hyper_params(spec),
                             artifact_stage_location=os.environ.get("TRAINFLOW_ARTIFACTS") or None,
                             progress=progress)
    return TorchFitOutcome("pytorch", None, time.perf_counter() - start, result=result,
                           placement=shard_plan.placement)


def load_model(model_dir: str):
    """Rebuild the nn.Module from `model.json` + `model.pt` in a model folder (path or URI)."""
    import torch

    local = download_dir(model_dir)
    try:
        meta_path = os.path.join(local, MODEL_META)
        if not os.path.exists(meta_path) or not os.path.exists(os.path.join(local, MODEL_STATE)):
            raise ConfigError(
                f"The model folder {mask_text(model_dir)} lacks {MODEL_STATE} and/or {MODEL_META}. For the pipeline, "
                f"train_func must save on rank 0 the state_dict as {MODEL_STATE} and "
                '{"module": "package.module:Class", "kwargs": {...}} as ' + MODEL_META +
                " in get_context().get_model_dir() (see trainflow/examples/credit_mlp.py)."
            )
        with open(meta_path) as fh:
            meta = json.load(fh)
        ref = meta.get("module", "")
        module_name, _, attr = ref.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"{MODEL_META} in {model_dir} names module {ref!r}, which cannot be "
                              f"imported ({exc}); use \"package.module:Class\".") from None
        module = cls(**meta.get("kwargs", {}))
        state = torch.load(os.path.join(local, MODEL_STATE), map_location="cpu", weights_only=True)
        module.load_state_dict(state)
        return module.eval()
    finally:
        shutil.rmtree(local, ignore_errors=True)


# -------------------------------------------------------------------------------------- evaluate
class TorchModuleAdapter(BoostingAdapter):
    """Lets the boosting scorer (Ray task per shard, metric partial sums) run an nn.Module."""

    name = "pytorch"

    def predict(self, module: Any, features: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = module(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        out = out.detach().cpu().numpy()
        return out.reshape(-1) if out.ndim == 2 and out.shape[1] == 1 else out


class ExportedModule:
    """A `torch.export` archive (how MLflow logs pytorch models) that pickles as its bytes and loads
    on first call in the process that runs it (the loaded module itself does not pickle)."""

    def __init__(self, archive: bytes):
        self.archive = archive
        self._module = None

    def __getstate__(self) -> dict:
        return {"archive": self.archive}

    def __setstate__(self, state: dict) -> None:
        self.archive, self._module = state["archive"], None

    def __call__(self, x: Any) -> Any:
        if self._module is None:
            import io

            import torch

            self._module = torch.export.load(io.BytesIO(self.archive)).module()
        return self._module(x)


# -------------------------------------------------------------------------------------- register
def eval_history(history: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """`split-metric` keys of rank 0's reports → {split: {metric: [values]}} (others under train)."""
    out: dict[str, dict[str, list[float]]] = {}
    for entry in history:
        for key, value in entry.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            split, sep, metric = key.partition("-")
            if not sep or split not in ("train", "eval", "valid", "validation"):
                split, metric = "train", key
            out.setdefault(split, {}).setdefault(metric, []).append(float(value))
    return out


def register(spec: JobSpec, outcome: TorchFitOutcome, metrics: Mapping[str, float], data: LoadedData):
    from trainflow.pipeline.register import promotion
    from trainflow.registry import register_model

    features = list(spec.features)
    example = data.train.to_pandas(limit=5)[features]
    t = spec.trainer
    p = outcome.placement
    result = outcome.result
    params = {"framework": t.framework, "objective": t.objective, "train_func": t.train_func,
              **{f"hyper_params.{k}": v for k, v in t.hyper_params.items()},
              "num_nodes": t.scaling.num_nodes, "num_workers_per_node": t.scaling.num_workers_per_node,
              "num_workers": p.num_workers if p else result.world_size,
              "cpus_per_worker": t.scaling.num_cpus, "gpus_per_worker": t.scaling.num_gpus,
              "train_rows": data.train_rows, "eval_rows": data.eval_rows, "eval_source": data.eval_source,
              "model_dir": result.get_model_dir()}
    return register_model(
        experiment=spec.name, model_name=spec.register.model_name, framework="pytorch",
        model=outcome.model, input_example=example, params=params,
        eval_history=eval_history(result.get_metrics_history()), feature_names=features,
        feature_importance=None,
        tags={"trainflow.spec": spec.name, "trainflow.fit_seconds": f"{outcome.seconds:.2f}",
              "trainflow.request_id": result.request_id, "trainflow.task": spec.task,
              "trainflow.label": spec.label},
        **promotion(spec, metrics),
    )
