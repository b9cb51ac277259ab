"""A whole framework plug-in in one small module: it predicts the training label's mean.

tests/test_layout.py runs it through every pipeline step to show that adding a framework is one module
plus `frameworks.register(...)` (or an entry point). A module of the `tests` package, so Ray workers
import it by name (a test module's own classes are not importable there).
"""
from __future__ import annotations

import time

import mlflow
import numpy as np

from trainflow.frameworks import FitOutcome, Framework


class MeanModel(mlflow.pyfunc.PythonModel):
    def __init__(self, mean: float):
        self.mean = mean

    def predict(self, context, model_input, params=None):
        return np.full(len(model_input), self.mean)


class MeanScorer:
    """What the shared scorer calls (BoostingAdapter's predict/score/feature_categories)."""

    def predict(self, model, features: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(None, features), dtype=np.float64)

    score = predict

    def feature_categories(self, model, schema, input_cols) -> dict:
        return {}


class MeanFramework(Framework):
    """A whole framework in a few lines: predicts the training label's mean, summed by Ray tasks."""

    name = "mean"
    objectives = {"regression": "regression"}
    default_objective = "regression"

    def placement(self, spec):
        from trainflow.distributors.placement import Placement

        return Placement(num_workers=2, cpus_per_worker=1, use_gpu=False)

    def fit(self, spec, data, placement, progress):
        import ray

        @ray.remote(num_cpus=placement.cpus_per_worker)
        def label_sum(shard, label):
            column = shard.to_arrow([label]).column(0).to_numpy()
            return float(column.sum()), len(column)

        start = time.perf_counter()
        shards = data.train.split(placement.num_workers)
        parts = ray.get([label_sum.remote(shard, spec.label) for shard in shards], timeout=120)
        total, rows = (sum(x) for x in zip(*parts))
        return FitOutcome(self, MeanModel(total / rows), time.perf_counter() - start, placement)

    def model(self, outcome):
        return outcome.result

    def scorer(self):
        return MeanScorer()

    def log_model(self, model, example):
        return mlflow.pyfunc.log_model(name="model", python_model=model, input_example=example)

    def load_registered(self, folder: str):
        return mlflow.pyfunc.load_model(folder).unwrap_python_model()
