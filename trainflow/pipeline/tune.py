"""Tune: the spec's `tune:` search, between plan and evaluate, on the data loaded (and validated) once.

Trials run one after another, each on the plan's placement, through the framework's `trial_fit`;
the trial metric is the framework's own eval metric, recorded every round, so no trial needs a
prediction pass. The data is the run's snapshot, so each worker reads and bins its shard once for
the whole search and later trials train on the same matrix (distributors/matrix.py). With
`halving`, trials that fall behind stop early and the kept ones continue their boosters.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainflow import frameworks
from trainflow.errors import TrainflowError, TrainingError
from trainflow.frameworks import FitOutcome
from trainflow.pipeline.load import LoadedData
from trainflow.pipeline.plan import FitPlan
from trainflow.spec import JobSpec
from trainflow.tune.halving import Rung, keep, rungs
from trainflow.tune.results import TrialResult, best_trial
from trainflow.tune.space import parse_space


@dataclass
class TuneOutcome:
    """The best trial's fit (what evaluate and register take) and every trial's row."""

    best: FitOutcome
    best_trial: TrialResult
    trials: list[TrialResult]
    metric: str
    mode: str
    seconds: float
    curves: dict[str, list[float]] = field(default_factory=dict)  # trial id -> metric per round
    rounds_trained: int = 0
    reads: int = 0  # fits that read and binned the training data (the others reused a worker's matrix)


def tune(spec: JobSpec, data: LoadedData, plan: FitPlan,
         progress: Callable[[str], None] | None = None) -> TuneOutcome:
    t = spec.resolved_tune
    say = progress or (lambda line: None)
    framework = frameworks.get(spec.trainer.framework)
    space = parse_space(t.space())
    searcher = t.algorithm().searcher(space, t.num_trials, t.mode, 1)
    started = time.perf_counter()
    pinned = dataclasses.replace(data, train=data.train.pinned(), eval=data.eval.pinned())
    try:
        run = _search(spec, pinned, plan, framework, searcher, say)
    finally:  # snapshots made here (a table read in place has no name to key its matrix by) go now
        for ours, theirs in ((pinned.train, data.train), (pinned.eval, data.eval)):
            if ours is not theirs:
                ours.source.release()
    trials = [run.rows[k] for k in sorted(run.rows)]
    finished = [r for r in trials if r.metrics.get("rounds") == run.full_rounds(r)]
    best = best_trial(finished, t.metric, t.mode)
    if best is None:
        raise TrainingError(f"No trial finished with a finite {t.metric}; the first error: "
                            f"{next((r.error for r in trials if r.error), 'none')}")
    key = next(k for k, r in run.rows.items() if r is best)
    say(f"best trial {best.trial_id}: {t.metric}={best.metrics[t.metric]:.6g} ({_params(best.config)}); "
        f"{run.rounds} boosting rounds trained in {len(trials)} trials; the data read and binned "
        f"{run.reads} time(s)")
    outcome = run.outcomes[key]
    outcome.seconds = time.perf_counter() - started
    return TuneOutcome(outcome, best, trials, t.metric, t.mode, outcome.seconds, run.curves, run.rounds, run.reads)


def _search(spec: JobSpec, data: LoadedData, plan: FitPlan, framework: Any, searcher: Any,
            say: Callable[[str], None]) -> _Search:
    from trainflow.distributors.pool import holding

    run = _Search(spec, data, plan, framework, say)
    p = plan.placement
    with holding(p.num_workers, p.cpus_per_worker, p.use_gpu, "tune"):  # one reservation for every trial
        _trials(run, searcher, spec)
    return run


def _trials(run: _Search, searcher: Any, spec: JobSpec) -> None:
    t = spec.resolved_tune
    if t.halving is None:
        scores: dict[int, float] = {}
        while (suggestion := searcher.suggest()) is not None:
            key, params = suggestion
            value = run.trial(key, params, None)
            searcher.observe(key, value)
            scores[key] = value if value is not None else math.nan
            run.keep_only(keep(scores, 1, t.mode))  # one booster in memory: the best so far
    else:
        plan_rungs = rungs(searcher.planned, t.halving.min_rounds, spec.trainer.n_estimators,
                           t.halving.reduction_factor)
        run.halving(searcher, plan_rungs)


class _Search:
    def __init__(self, spec: JobSpec, data: LoadedData, plan: FitPlan, framework: Any,
                 say: Callable[[str], None]):
        self.spec, self.data, self.plan, self.framework, self.say = spec, data, plan, framework, say
        self.rows: dict[int, TrialResult] = {}
        self.outcomes: dict[int, FitOutcome] = {}
        self.curves: dict[str, list[float]] = {}
        self.rounds = 0
        self.reads = 0

    def full_rounds(self, row: TrialResult) -> int:
        return int(row.config.get("n_estimators", self.spec.trainer.n_estimators))

    def trial(self, key: int, params: dict[str, Any], rounds: int | None) -> float | None:
        """Train trial `key` to `rounds` (None: its full n_estimators), continuing its earlier fit."""
        t = self.spec.resolved_tune
        trial_id = f"trial-{key:03d}"
        overrides = dict(params) if rounds is None else {**params, "n_estimators": rounds}
        before = self.outcomes.get(key)
        start = time.perf_counter()
        try:
            outcome, curve = self.framework.trial_fit(self.spec, self.data, self.plan.placement, overrides,
                                                      t.metric, before)
        except TrainflowError as exc:
            if not exc.transient:
                raise  # bad parameters or data: the other trials would fail the same way
            self.rows[key] = TrialResult(trial_id, params, {}, time.perf_counter() - start, error=str(exc))
            self.say(f"{trial_id} failed: {exc}")
            return None
        done_before = before.result.rounds_ if before is not None else 0
        self.rounds += outcome.result.rounds_ - done_before
        self.reads += 0 if outcome.result.fit_profile_.get("matrix_reused") else 1
        self.outcomes[key] = outcome
        self.curves[trial_id] = curve
        value = curve[-1] if curve else math.nan
        earlier = self.rows.get(key)
        seconds = (earlier.seconds if earlier else 0.0) + time.perf_counter() - start
        spent = dict(earlier.profile) if earlier else {}
        for name, took in outcome.result.fit_profile_.items():
            if name.endswith("_s"):
                spent[name] = spent.get(name, 0.0) + took
        self.rows[key] = TrialResult(trial_id, params, {t.metric: value, "rounds": outcome.result.rounds_},
                                     seconds, profile=spent)
        self.say(f"{trial_id}: {t.metric}={value:.6g} after {outcome.result.rounds_} rounds "
                 f"({_params(params)})")
        return value

    def keep_only(self, keys: list[int]) -> None:
        """Drop the boosters of every other trial (their rows stay)."""
        for key in [k for k in self.outcomes if k not in keys]:
            del self.outcomes[key]

    def halving(self, searcher: Any, plan: list[Rung]) -> None:
        t = self.spec.resolved_tune
        scores: dict[int, float] = {}
        params_of: dict[int, dict[str, Any]] = {}
        first = plan[0]
        while (suggestion := searcher.suggest()) is not None:
            key, params = suggestion
            params_of[key] = params
            value = self.trial(key, params, first.rounds)
            scores[key] = value if value is not None else math.nan
            searcher.observe(key, value)
        alive = list(scores)
        for rung in plan[1:]:
            alive = keep({k: scores[k] for k in alive}, rung.trials, t.mode)
            self.keep_only(alive)
            for key in alive:
                value = self.trial(key, params_of[key], rung.rounds)
                scores[key] = value if value is not None else math.nan


def trials_table(tuned: TuneOutcome) -> list[dict[str, Any]]:
    """One row per trial, the best first (a Prefect table artifact, the MLflow parent run's table)."""
    sign = 1.0 if tuned.mode == "min" else -1.0

    def order(row: TrialResult) -> tuple:
        value = row.metrics.get(tuned.metric, math.nan)
        return (-row.metrics.get("rounds", 0), sign * value if math.isfinite(value) else math.inf)

    return [{"trial": r.trial_id, tuned.metric: round(r.metrics.get(tuned.metric, math.nan), 6),
             "rounds": r.metrics.get("rounds"), "seconds": round(r.seconds, 2),
             **{k: v for k, v in r.config.items()}, **({"error": r.error} if r.error else {})}
            for r in sorted(tuned.trials, key=order)]


def trials_chart(tuned: TuneOutcome, width: int = 40) -> str:
    """Metric by trial as a text bar chart (markdown), for the Prefect UI where images need a URL."""
    values = [(r.trial_id, r.metrics.get(tuned.metric, math.nan), r.metrics.get("rounds")) for r in tuned.trials]
    finite = [v for _, v, _ in values if math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    span = (high - low) or 1.0
    lines = [f"{tuned.metric} by trial ({tuned.mode} is better; bar length from {low:.6g} to {high:.6g})", ""]
    for trial_id, value, rounds in values:
        bar = "#" * (1 + round((value - low) / span * (width - 1))) if math.isfinite(value) else "failed"
        mark = "  <- best" if trial_id == tuned.best_trial.trial_id else ""
        lines.append(f"{trial_id}  {value:10.6g}  {rounds!s:>5} rounds  {bar}{mark}")
    return "```\n" + "\n".join(lines) + "\n```"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in params.items())
