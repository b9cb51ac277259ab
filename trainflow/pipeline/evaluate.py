"""Evaluate: distributed batch prediction on the eval data, reduced to the spec's metrics."""
from __future__ import annotations

from trainflow.distributors.boosting import score_connector
from trainflow.metrics import finalize
from trainflow.pipeline.fit import FitOutcome
from trainflow.pipeline.load import LoadedData
from trainflow.spec import JobSpec


def evaluate(spec: JobSpec, outcome: FitOutcome, data: LoadedData) -> dict[str, float]:
    if outcome.framework == "pytorch":
        from trainflow.pipeline import torch_steps

        return torch_steps.evaluate(spec, outcome, data)
    est = outcome.estimator
    stats = score_connector(est._adapter, est.get_booster(), data.eval, list(spec.features), spec.label,
                            spec.task)
    return finalize(spec.task, stats, list(spec.evaluate.metrics))
