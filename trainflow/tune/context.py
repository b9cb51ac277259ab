"""Inside a trial: `get_tuner_context()` gives the trial's hyper-parameters, datasets and `report`.

The context also carries the trial's resources, so that a trainflow trainer called by `train_func`
without a scaling config trains on exactly what the tuner set aside for the trial (decided once by
the tuner, passed down here).
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainflow.errors import ConfigError, InvalidArgument, OutsideTrainingError


@dataclass(frozen=True)
class TrialResources:
    """What one trial may use; `held` when the trial's own process holds them (a train_func that
    trains by itself), rather than the trainers it calls."""

    cpus: int
    gpus: int = 0
    held: bool = False


@dataclass
class TunerContext:
    trial_id: str
    hyper_params: dict[str, Any]
    dataset_map: dict[str, Any] | None
    resources: TrialResources | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)
    model: Any = None

    def get_hyper_params(self) -> dict[str, Any]:
        """This trial's parameters: {name: value} for every key of the search space."""
        return dict(self.hyper_params)

    def get_dataset_map(self) -> dict[str, Any] | None:
        """The `dataset_map` given to `Tuner.run` (name -> DataConnector), the same rows in every trial."""
        return self.dataset_map

    def report(self, metrics: Mapping[str, Any], model: Any = None) -> None:
        """Record this trial's metrics (the last report counts) and optionally its model."""
        if not isinstance(metrics, Mapping) or not metrics:
            raise InvalidArgument(f"report(metrics={metrics!r}): pass a non-empty dict, e.g. {{'rmse': 0.31}}.")
        values = {}
        for key, value in metrics.items():
            try:
                values[str(key)] = float(value)
            except (TypeError, ValueError):
                raise InvalidArgument(f"report: metric {key!r}={value!r} is not a number.") from None
        self.reports.append(values)
        if model is not None:
            self.model = model


_current: contextvars.ContextVar[TunerContext | None] = contextvars.ContextVar("trainflow_trial", default=None)


def get_tuner_context() -> TunerContext:
    """The running trial's context; only inside the `train_func` a `Tuner` runs."""
    ctx = _current.get()
    if ctx is None:
        raise OutsideTrainingError("get_tuner_context() only works inside the train_func run by Tuner.run().")
    return ctx


@contextlib.contextmanager
def running(ctx: TunerContext) -> Iterator[TunerContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def trial_scaling(trainer: str) -> tuple[int, int] | None:
    """(CPUs, GPUs) a trainer without a scaling config uses inside a trial; None outside trials.

    A trial whose own process holds the resources cannot lend them to a trainer, which would wait
    for them forever: that is refused at once, with the fix.
    """
    ctx = _current.get()
    if ctx is None or ctx.resources is None:
        return None
    if ctx.resources.held:
        raise ConfigError(
            f"train_func called {trainer} in a trial that holds its resources itself, so the trainer's "
            "workers would wait for them. Pass TunerConfig(uses_snowflake_trainer=True): the trial then "
            "only coordinates and its trainers get resource_per_trial."
        )
    return ctx.resources.cpus, ctx.resources.gpus
