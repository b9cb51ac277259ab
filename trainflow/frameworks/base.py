"""What a framework plug-in provides, and the values the pipeline passes between its steps.

Generic code (the pipeline steps, the registry, the champion loader) receives a `Framework` as a
value and calls these methods; it never asks which framework it holds. A plug-in imports its
framework's libraries inside its methods, so listing the plug-ins costs nothing.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainflow.metrics import Task

if TYPE_CHECKING:
    import pandas as pd

    from trainflow.distributors.boosting import BoostingAdapter
    from trainflow.distributors.placement import Placement
    from trainflow.distributors.progress import ProgressChannel
    from trainflow.pipeline.load import LoadedData
    from trainflow.spec import JobSpec


@dataclass
class FitOutcome:
    """What the fit step hands to evaluate and register: the plug-in that trained, its own result
    (a fitted estimator, a distributor's result), the placement it ran on, and the fit's wall time."""

    framework: Framework
    result: Any
    seconds: float
    placement: Placement | None = None
    memory: str = ""  # how the workers held their shards, and why (said in the flow log)
    _model: Any = field(default=None, repr=False)

    @property
    def model(self) -> Any:
        """The trained native model (a Booster, an nn.Module), fetched from the result once."""
        if self._model is None:
            self._model = self.framework.model(self)
        return self._model


class Framework:
    """One training framework, as the pipeline and the registry see it (see trainflow/frameworks/)."""

    name: str = ""
    # objective -> the task its predictions serve; the spec accepts exactly these objectives
    objectives: Mapping[str, Task] = {}
    default_objective: str = ""
    # rows MLflow needs in the input example (pytorch: 2, so the exported batch size stays dynamic)
    min_example_rows: int = 1
    # how its workers may hold their shards, in order of preference: memory auto takes the first that
    # fits (trainer.memory; see distributors/memory.py)
    memory_modes: tuple[str, ...] = ("in_memory",)

    def task(self, objective: str | None) -> Task:
        return self.objectives[objective or self.default_objective]

    # -------------------------------------------------------------- plan and fit
    def placement(self, spec: JobSpec) -> Placement:
        """Workers and per-worker resources for the spec's scaling on the current cluster: decided
        once, in the plan step, and passed to fit."""
        raise NotImplementedError

    def prepare(self, placement: Placement) -> None:
        """After planning: start what the fit will need (warm workers) while the pipeline goes on.
        Optional; the default does nothing."""

    def fit(self, spec: JobSpec, data: LoadedData, placement: Placement,
            progress: Callable[[str], None] | ProgressChannel | None) -> FitOutcome:
        raise NotImplementedError

    def model(self, outcome: FitOutcome) -> Any:
        """The native model of a fit's result."""
        raise NotImplementedError

    # -------------------------------------------------------------- tuning
    def trial_metrics(self, objective: str | None) -> list[str]:
        """The eval metrics an in-flow search (a spec's `tune:`) can score this framework's trials
        on; [] when the framework has no in-flow search."""
        return []

    def trial_fit(self, spec: JobSpec, data: LoadedData, placement: Placement, overrides: dict[str, Any],
                  metric: str, rounds_done: Any = None) -> tuple[FitOutcome, list[float]]:
        """Fit with `overrides` (n_estimators, params.<name>) on top of the spec's trainer; returns the
        outcome and `metric` on the eval data after each round. `rounds_done` is an earlier trial
        outcome to continue from (successive halving), or None."""
        raise NotImplementedError

    # -------------------------------------------------------------- scoring
    def scorer(self) -> BoostingAdapter:
        """How Ray scoring tasks run this framework's models (predict/score per batch)."""
        raise NotImplementedError

    def load_registered(self, folder: str) -> Any:
        """A model logged by `log_model`, read from its downloaded MLflow folder, ready to score."""
        raise NotImplementedError

    # -------------------------------------------------------------- registry
    def log_model(self, model: Any, example: pd.DataFrame) -> Any:
        """Log `model` in the framework's MLflow flavour (inside an active run) as `model`, with a
        signature and the input example; returns MLflow's ModelInfo."""
        raise NotImplementedError

    def importance(self, model: Any) -> dict[str, float]:
        """Feature -> importance (gain), or {} when the framework has none."""
        return {}

    def run_params(self, spec: JobSpec, outcome: FitOutcome) -> dict[str, Any]:
        """The framework's own MLflow params of a run (the pipeline adds data and task params)."""
        return {}

    def run_tags(self, outcome: FitOutcome) -> dict[str, str]:
        return {}

    def reproduce_overrides(self, run_params: Mapping[str, str]) -> list[str]:
        """`--set` overrides that make a rerun of a stored spec train as the recorded run did (its
        placement and thread counts, deterministic modes), from that run's params."""
        return []

    def eval_history(self, outcome: FitOutcome) -> dict[str, dict[str, list[float]]]:
        """{split: {metric: [per round/epoch]}} as recorded during the fit."""
        return {}

    def __repr__(self) -> str:
        return f"<framework {self.name}>"
