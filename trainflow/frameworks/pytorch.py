"""The pytorch plug-in: a `train_func` run by PyTorchDistributor, an nn.Module scored per batch, the
mlflow.pytorch flavour.

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

import copy
import importlib
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from trainflow.errors import ConfigError
from trainflow.frameworks import register
from trainflow.frameworks.base import FitOutcome, Framework, Task
from trainflow.secrets import mask_text, resolve_env

if TYPE_CHECKING:
    import pandas as pd

    from trainflow.distributors.boosting import BoostingAdapter
    from trainflow.distributors.placement import Placement
    from trainflow.distributors.pytorch import PyTorchScalingConfig
    from trainflow.distributors.progress import ProgressChannel
    from trainflow.pipeline.load import LoadedData
    from trainflow.spec import JobSpec

MODEL_STATE = "model.pt"
MODEL_META = "model.json"


class PyTorchFramework(Framework):
    name = "pytorch"
    # no native objective: the "objective" names the task
    objectives: dict[str, Task] = {"regression": "regression", "binary": "binary", "multiclass": "multiclass"}
    default_objective = "regression"
    min_example_rows = 2  # a 1-row example fixes the exported batch size to 1

    def placement(self, spec: JobSpec) -> Placement:
        """World size = num_nodes × num_workers_per_node, checked against the cluster now (not at fit)."""
        from trainflow.cluster import cluster_nodes
        from trainflow.distributors.placement import Placement
        from trainflow.distributors.pytorch import check_resources

        scaling = scaling_config(spec)
        scaling.check()
        check_resources(scaling, cluster_nodes())
        res = scaling.resources
        cpus = int(res.num_cpus) if float(res.num_cpus).is_integer() else res.num_cpus
        return Placement(num_workers=scaling.num_workers, cpus_per_worker=cpus, use_gpu=res.num_gpus > 0)

    def fit(self, spec: JobSpec, data: LoadedData, placement: Placement,
            progress: Callable[[str], None] | ProgressChannel | None) -> FitOutcome:
        from trainflow.data import ShardedDataConnector
        from trainflow.distributors.pytorch import PyTorchDistributor
        from trainflow.distributors.torch_storage import artifact_root

        fn = resolve_train_func(spec.trainer.train_func)
        distributor = PyTorchDistributor(fn, scaling_config(spec), max_restarts=spec.trainer.max_restarts)
        dataset_map = {"train": ShardedDataConnector.from_connector(data.train),
                       "eval": ShardedDataConnector.from_connector(data.eval)}
        start = time.perf_counter()
        result = distributor.run(dataset_map=dataset_map, hyper_params=hyper_params(spec),
                                 artifact_stage_location=artifact_root(), progress=progress)
        return FitOutcome(self, result, time.perf_counter() - start, placement)

    def model(self, outcome: FitOutcome) -> Any:
        """The trained nn.Module, loaded from the model folder in the artifact location."""
        return load_model(outcome.result.get_model_dir())

    def scorer(self) -> BoostingAdapter:
        from trainflow.distributors.torch_scoring import TorchModuleAdapter

        return TorchModuleAdapter()

    def load_registered(self, folder: str) -> Any:
        import mlflow.pytorch

        from trainflow.distributors.torch_scoring import ExportedModule

        module = mlflow.pytorch.load_model(folder)  # checks the archive and that it loads, here
        exported = os.path.join(folder, "data", "model.pt2")
        if os.path.exists(exported):  # a torch.export module does not pickle: ship the archive's bytes
            with open(exported, "rb") as fh:
                return ExportedModule(fh.read())
        return module

    def log_model(self, model: Any, example: pd.DataFrame) -> Any:
        # The pt2 default traces forward() on a tensor: give it float32 numpy (>1 row so the batch dim
        # stays dynamic), and a CPU eval copy so the caller's module is not mutated.
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        from trainflow.frameworks.mlflow_models import requirements

        module = copy.deepcopy(model).cpu().eval()
        x = example.to_numpy(np.float32).copy()  # writable: torch warns on read-only arrays
        with torch.no_grad():
            y = module(torch.from_numpy(x)).numpy()
        return mlflow.pytorch.log_model(module, name="model", input_example=x, signature=infer_signature(x, y),
                                        pip_requirements=requirements(mlflow.pytorch))

    def run_params(self, spec: JobSpec, outcome: FitOutcome) -> dict[str, Any]:
        t, p, result = spec.trainer, outcome.placement, outcome.result
        return {"train_func": t.train_func, **{f"hyper_params.{k}": v for k, v in t.hyper_params.items()},
                "num_nodes": t.scaling.num_nodes, "num_workers_per_node": t.scaling.num_workers_per_node,
                "num_workers": p.num_workers if p else result.world_size,
                "cpus_per_worker": t.scaling.num_cpus, "gpus_per_worker": t.scaling.num_gpus,
                "model_dir": result.get_model_dir()}

    def run_tags(self, outcome: FitOutcome) -> dict[str, str]:
        return {"trainflow.request_id": outcome.result.request_id}

    def eval_history(self, outcome: FitOutcome) -> dict[str, dict[str, list[float]]]:
        return eval_history(outcome.result.get_metrics_history())


def scaling_config(spec: JobSpec) -> PyTorchScalingConfig:
    from trainflow.distributors.pytorch import PyTorchScalingConfig, WorkerResourceConfig

    s = spec.trainer.scaling
    return PyTorchScalingConfig(
        num_nodes=s.num_nodes, num_workers_per_node=s.num_workers_per_node,
        resource_requirements_per_worker=WorkerResourceConfig(num_cpus=s.num_cpus, num_gpus=s.num_gpus),
    )


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


def load_model(model_dir: str):
    """Rebuild the nn.Module from `model.json` + `model.pt` in a model folder (path or URI)."""
    import torch

    from trainflow.distributors.torch_storage import download_dir

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


FRAMEWORK = register(PyTorchFramework())
