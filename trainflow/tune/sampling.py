"""Sampling functions of a search space (Snowflake's `uniform`, `loguniform`, `randint`, `choice`).

Each is a small immutable value that knows its Optuna distribution; the search algorithms never ask
which kind they hold. In a search space, a plain list is a grid axis and any other value is fixed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainflow.errors import InvalidArgument


class SamplingFunction:
    """One parameter's distribution."""

    def distribution(self) -> Any:
        """The Optuna distribution that samples this parameter."""
        raise NotImplementedError


@dataclass(frozen=True)
class Uniform(SamplingFunction):
    lower: float
    upper: float

    def distribution(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.lower, self.upper)


@dataclass(frozen=True)
class LogUniform(SamplingFunction):
    lower: float
    upper: float

    def distribution(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.lower, self.upper, log=True)


@dataclass(frozen=True)
class RandInt(SamplingFunction):
    lower: int
    upper: int  # exclusive, as Snowflake's (and numpy's) randint

    def distribution(self) -> Any:
        from optuna.distributions import IntDistribution

        return IntDistribution(self.lower, self.upper - 1)


@dataclass(frozen=True)
class Choice(SamplingFunction):
    options: tuple

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(self.options)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(f"{what}={value!r} is invalid: use a finite number.")
    return value


def uniform(lower: float, upper: float) -> Uniform:
    """A float drawn uniformly from [lower, upper]."""
    lo, hi = _number(lower, "uniform lower"), _number(upper, "uniform upper")
    if not lo < hi:
        raise InvalidArgument(f"uniform({lower!r}, {upper!r}): lower must be below upper.")
    return Uniform(float(lo), float(hi))


def loguniform(lower: float, upper: float) -> LogUniform:
    """A float drawn uniformly in log space from [lower, upper] (both > 0)."""
    lo, hi = _number(lower, "loguniform lower"), _number(upper, "loguniform upper")
    if not 0 < lo < hi:
        raise InvalidArgument(f"loguniform({lower!r}, {upper!r}): use 0 < lower < upper.")
    return LogUniform(float(lo), float(hi))


def randint(lower: int, upper: int) -> RandInt:
    """An integer drawn uniformly from lower (inclusive) to upper (exclusive)."""
    for value, what in ((lower, "lower"), (upper, "upper")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(f"randint {what}={value!r} is invalid: use an integer.")
    if not lower < upper:
        raise InvalidArgument(f"randint({lower!r}, {upper!r}) is empty: the upper bound is exclusive, "
                              "so use lower < upper.")
    return RandInt(lower, upper)


def choice(options: Sequence[Any]) -> Choice:
    """One of `options`, each equally likely."""
    if isinstance(options, (str, bytes)) or not isinstance(options, Sequence) or not options:
        raise InvalidArgument(f"choice({options!r}) is invalid: pass a non-empty list, e.g. choice(['gbtree', 'dart']).")
    return Choice(tuple(options))
