"""Tuner (Snowflake's): run `train_func` once per configuration the search suggests, on Ray.

The tuner is the controller: the search algorithm decides what to try (search.py), `plan_trials`
how trials share the cluster (plan.py); the tuner submits each trial as a Ray task, tells the search
each result and collects the rows. The datasets are pinned once for the whole run, so every trial
trains on the same rows, and trainers called by the trials reuse the matrices their warm workers
built from them (one read and binning per worker, not one per trial).
"""
from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from trainflow.errors import ConfigError, ResourceError, TrainflowError, TrainingError
from trainflow.tune.config import TunerConfig
from trainflow.tune.context import TunerContext, running
from trainflow.tune.plan import TrialPlan, calls_trainflow_trainer, plan_trials
from trainflow.tune.results import TrialResult, TunerResults, build_results
from trainflow.tune.space import parse_space

log = logging.getLogger("trainflow.tune")


class Tuner:
    """`Tuner(train_func, search_space, tuner_config).run(dataset_map=None) -> TunerResults`."""

    def __init__(self, train_func: Callable[[], None], search_space: Mapping[str, Any], tuner_config: TunerConfig):
        self.train_func = train_func
        self.search_space = search_space
        self.tuner_config = tuner_config

    def run(self, dataset_map: Mapping[str, Any] | None = None, *,
            progress: Callable[[str], None] | None = None) -> TunerResults:
        """Run the trials; `progress` gets one line per finished trial (default: the log)."""
        from trainflow.cluster import cluster_nodes

        config = self.tuner_config
        if not isinstance(config, TunerConfig):
            raise ConfigError(f"tuner_config must be a TunerConfig, got {type(config).__name__}.")
        if not callable(self.train_func):
            raise ConfigError("train_func must be a function that takes no arguments and calls "
                              "get_tuner_context().report(...).")
        config.check()
        space = parse_space(self.search_space)
        uses_trainer = (config.uses_snowflake_trainer if config.uses_snowflake_trainer is not None
                        else calls_trainflow_trainer(self.train_func))
        plan = plan_trials(config, cluster_nodes(), uses_trainer)
        searcher = config.search_alg.searcher(space, config.num_trials, config.mode, plan.concurrency)
        pinned = _pin(dataset_map)
        try:
            trials = _Run(self.train_func, config, plan, pinned, progress or log.info).run(searcher)
        finally:
            for name, conn in (pinned or {}).items():
                if dataset_map is not None and conn is not dataset_map[name] and hasattr(conn, "release"):
                    conn.release()
        if all(t.error is not None for t in trials):
            raise TrainingError(f"Every trial failed ({len(trials)}); the first: {trials[0].error}")
        return build_results(trials, config.metric, config.mode)


def _pin(dataset_map: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if dataset_map is None:
        return None
    if not isinstance(dataset_map, Mapping):
        raise ConfigError(f"dataset_map must be a dict of name -> DataConnector, got {type(dataset_map).__name__}.")
    return {name: (conn.pinned() if hasattr(conn, "pinned") else conn) for name, conn in dataset_map.items()}


class _Run:
    """One tuning run's loop: keep `plan.concurrency` trials running until the search is done."""

    def __init__(self, train_func: Callable[[], None], config: TunerConfig, plan: TrialPlan,
                 datasets: dict[str, Any] | None, progress: Callable[[str], None]):
        self.train_func, self.config, self.plan = train_func, config, plan
        self.datasets, self.progress = datasets, progress
        self.prefix = uuid.uuid4().hex[:5]

    def run(self, searcher: Any) -> list[TrialResult]:
        import ray

        from trainflow.waiting import TIMEOUT_ENV, task_timeout_s

        timeout = task_timeout_s()
        res = self.plan.resources
        remote = ray.remote(_trial_main).options(
            num_cpus=res.cpus if res.held else 0, num_gpus=res.gpus if res.held else 0, max_retries=0,
            name="trainflow-trial")
        pending: dict[Any, tuple[int, int, str, dict[str, Any], float]] = {}
        done: dict[int, TrialResult] = {}
        number = 0
        try:
            while True:
                while len(pending) < self.plan.concurrency:
                    suggestion = searcher.suggest()
                    if suggestion is None:
                        break
                    key, params = suggestion
                    trial_id = f"{self.prefix}_{number:05d}"
                    ctx = TunerContext(trial_id, params, self.datasets, res)
                    pending[remote.remote(self.train_func, ctx)] = (number, key, trial_id, params, time.monotonic())
                    number += 1
                if not pending:
                    break
                oldest = min(started for *_, started in pending.values())
                ready, _ = ray.wait(list(pending), num_returns=1,
                                    timeout=max(0.0, oldest + timeout - time.monotonic()))
                if not ready:
                    raise ResourceError(
                        f"A trial ran or waited for its resources longer than {timeout:g}s "
                        f"(resources per trial: {res.cpus} CPU, {res.gpus} GPU). Free the cluster's CPUs "
                        f"(see `ray status`), lower resource_per_trial, or raise {TIMEOUT_ENV}."
                    )
                for ref in ready:
                    n, key, trial_id, params, started = pending.pop(ref)
                    result = self._collect(ref, trial_id, params, time.monotonic() - started)
                    searcher.observe(key, result.metrics.get(self.config.metric) if result.error is None else None)
                    done[n] = result
                    self.progress(_line(result, self.config.metric, len(done), searcher.planned))
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        return [done[n] for n in sorted(done)]

    def _collect(self, ref: Any, trial_id: str, params: dict[str, Any], seconds: float) -> TrialResult:
        import ray
        from ray.exceptions import RayError, RayTaskError

        try:
            reports, model, took = ray.get(ref)
        except RayTaskError as exc:
            cause = exc.cause if exc.cause is not None else exc
            if isinstance(cause, TrainflowError) and not cause.transient:
                raise cause from None  # bad parameters or data: every other trial would fail the same way
            return TrialResult(trial_id, params, {}, seconds, error=f"{type(cause).__name__}: {cause}")
        except RayError as exc:  # the trial's process was lost
            return TrialResult(trial_id, params, {}, seconds, error=f"{type(exc).__name__}: {exc}")
        metrics = reports[-1] if reports else {}
        if self.config.metric not in metrics:
            said = f"reported {sorted(metrics)}" if reports else "never called report()"
            raise ConfigError(
                f"Trial {trial_id} {said}, but TunerConfig.metric is {self.config.metric!r}: call "
                f"get_tuner_context().report(metrics={{{self.config.metric!r}: value}}) in train_func, or set "
                "metric to one of the reported keys."
            )
        return TrialResult(trial_id, params, metrics, took, model=model, history=reports)


def _trial_main(train_func: Callable[[], None], ctx: TunerContext) -> tuple[list[dict], Any, float]:
    """In the trial's Ray task: run train_func with the trial's context."""
    start = time.perf_counter()
    with running(ctx):
        train_func()
    return ctx.reports, ctx.model, time.perf_counter() - start


def _line(result: TrialResult, metric: str, done: int, planned: int) -> str:
    if result.error is not None:
        return f"trial {result.trial_id} ({done}/{planned}) failed: {result.error}"
    value = result.metrics.get(metric, math.nan)
    params = ", ".join(f"{k}={_short(v)}" for k, v in result.config.items())
    return f"trial {result.trial_id} ({done}/{planned}): {metric}={value:.6g} in {result.seconds:.1f}s ({params})"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)
