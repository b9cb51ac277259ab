"""TunerResults (Snowflake's): one row per trial, the best row, and the best trial's model."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class TrialResult:
    trial_id: str
    config: dict[str, Any]
    metrics: dict[str, float]
    seconds: float
    model: Any = None
    error: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)  # every report, in order
    profile: dict[str, Any] = field(default_factory=dict)  # in-worker seconds: ingest_s, train_s


@dataclass
class TunerResults:
    """`results`: metrics, `trial_id`, `time_total_s` and `config/<param>` per trial (an `error`
    column when a trial failed); `best_result`: the best row (a one-row DataFrame); `best_model`: what
    the best trial passed to `report(..., model=)`, or None."""

    results: pd.DataFrame
    best_result: pd.DataFrame
    best_model: Any
    trials: list[TrialResult] = field(default_factory=list, repr=False)


def build_results(trials: list[TrialResult], metric: str, mode: str) -> TunerResults:
    metric_keys = list(dict.fromkeys(k for t in trials for k in t.metrics))
    param_keys = list(dict.fromkeys(k for t in trials for k in t.config))
    rows = []
    for t in trials:
        row = {k: t.metrics.get(k, math.nan) for k in metric_keys}
        row.update(trial_id=t.trial_id, time_total_s=t.seconds)
        row.update({f"config/{k}": t.config.get(k) for k in param_keys})
        if any(x.error for x in trials):
            row["error"] = t.error
        rows.append(row)
    frame = pd.DataFrame(rows)
    best = best_trial(trials, metric, mode)
    index = trials.index(best) if best is not None else None
    best_row = frame.iloc[[index]].reset_index(drop=True) if index is not None else frame.iloc[0:0]
    return TunerResults(frame, best_row, best.model if best is not None else None, trials)


def best_trial(trials: list[TrialResult], metric: str, mode: str) -> TrialResult | None:
    """The trial with the best `metric` (the first one on a tie); None when no trial has it."""
    scored = [t for t in trials if t.error is None and math.isfinite(t.metrics.get(metric, math.nan))]
    if not scored:
        return None
    sign = 1.0 if mode == "min" else -1.0
    return min(scored, key=lambda t: sign * t.metrics[metric])
