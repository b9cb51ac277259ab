"""A search space read once: each parameter is sampled, a grid axis (a plain list) or fixed."""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from trainflow.errors import ConfigError
from trainflow.tune.sampling import SamplingFunction


@dataclass(frozen=True)
class SearchSpace:
    sampled: dict[str, SamplingFunction]
    grid: dict[str, tuple]
    fixed: dict[str, Any]

    @property
    def names(self) -> list[str]:
        """Every parameter, in the order the user wrote them."""
        return list(self._order)

    def grid_points(self) -> Iterator[dict[str, Any]]:
        """Every combination of the grid axes (the last axis varies fastest), or one empty point."""
        keys = list(self.grid)
        for values in itertools.product(*(self.grid[k] for k in keys)):
            yield dict(zip(keys, values))

    def grid_size(self) -> int:
        size = 1
        for values in self.grid.values():
            size *= len(values)
        return size

    _order: tuple[str, ...] = ()


def parse_space(search_space: Mapping[str, Any]) -> SearchSpace:
    if not isinstance(search_space, Mapping):
        raise ConfigError(f"search_space must be a dict of parameter name -> values, got {type(search_space).__name__}.")
    if not search_space:
        raise ConfigError("The search space is empty: give at least one parameter, e.g. "
                          "{'learning_rate': uniform(0.01, 0.3)}.")
    sampled, grid, fixed = {}, {}, {}
    for name, value in search_space.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"search_space key {name!r} is invalid: use parameter names (strings).")
        if isinstance(value, SamplingFunction):
            sampled[name] = value
        elif isinstance(value, (list, tuple)):
            if not value:
                raise ConfigError(f"search_space[{name!r}] is an empty list: list the grid values to try.")
            grid[name] = tuple(value)
        else:
            fixed[name] = value
    if not sampled and not grid:
        raise ConfigError("The search space has only fixed values: make at least one parameter a sampling "
                          "function (uniform, loguniform, randint, choice) or a list of grid values.")
    return SearchSpace(sampled, grid, fixed, tuple(search_space))
