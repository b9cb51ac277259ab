"""Fit: train the spec's model on the planned placement; the framework's plug-in does the work."""
from __future__ import annotations

from collections.abc import Callable

from trainflow import frameworks
from trainflow.distributors.progress import ProgressChannel
from trainflow.frameworks import FitOutcome
from trainflow.pipeline.load import LoadedData
from trainflow.pipeline.plan import FitPlan
from trainflow.spec import JobSpec

__all__ = ["FitOutcome", "fit"]


def fit(spec: JobSpec, data: LoadedData, plan: FitPlan,
        progress: Callable[[str], None] | ProgressChannel | None = None) -> FitOutcome:
    return frameworks.get(spec.trainer.framework).fit(spec, data, plan.placement, progress)
