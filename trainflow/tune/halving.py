"""Successive halving as a pure policy: how many rounds each rung trains and how many trials go on.

Every trial first trains `min_rounds`; the best 1/`reduction_factor` continue to `reduction_factor`
times as many rounds, and so on, the last rung at `max_rounds`. The controller (pipeline/tune.py)
continues the kept boosters rather than training them again, so a rung costs only its new rounds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Rung:
    rounds: int  # total rounds a trial has after this rung
    trials: int  # how many trials train in it


def rungs(num_trials: int, min_rounds: int, max_rounds: int, reduction_factor: int) -> list[Rung]:
    """The rungs of a synchronous successive-halving run over `num_trials` trials."""
    plan, rounds, trials = [], min(min_rounds, max_rounds), num_trials
    while True:
        plan.append(Rung(rounds, trials))
        if rounds >= max_rounds:
            return plan
        rounds = min(rounds * reduction_factor, max_rounds)
        trials = max(1, math.ceil(trials / reduction_factor))


def keep(scores: dict[int, float], count: int, mode: str) -> list[int]:
    """The `count` best trial keys by score (ties: the earlier trial)."""
    sign = 1.0 if mode == "min" else -1.0
    ranked = sorted(scores, key=lambda k: (sign * scores[k] if math.isfinite(scores[k]) else math.inf, k))
    return ranked[:count]


def rounds_trained(plan: list[Rung]) -> int:
    """Boosting rounds the whole run trains (kept trials continue, so a rung adds only its new rounds)."""
    total, before = 0, 0
    for rung in plan:
        total += rung.trials * (rung.rounds - before)
        before = rung.rounds
    return total
