"""Search algorithms (Snowflake's `snowflake.ml.modeling.tune.search`): what to try next.

Each algorithm is a small immutable config; `searcher(...)` makes the stateful object a tuning run
asks for configurations (`suggest`) and tells the results (`observe`). The engines are Optuna's
samplers (random, grid) and the `bayesian-optimization` package (what Snowflake's BayesOpt uses).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from trainflow.errors import ConfigError
from trainflow.tune.sampling import Uniform
from trainflow.tune.space import SearchSpace

__all__ = ["BayesOpt", "GridSearch", "RandomSearch", "SearchAlgorithm", "Searcher"]


class Searcher:
    """One tuning run's suggestions. `suggest()` gives a trial's parameters, or None when done."""

    def suggest(self) -> tuple[int, dict[str, Any]] | None:
        """(key, parameters) of the next trial, or None when the search has made all it plans."""
        raise NotImplementedError

    def observe(self, key: int, value: float | None) -> None:
        """Trial `key` ended with metric `value` (None: it failed or reported no metric)."""

    planned: int = 0  # how many trials this run makes


class SearchAlgorithm:
    def searcher(self, space: SearchSpace, num_trials: int, mode: str, concurrency: int) -> Searcher:
        raise NotImplementedError


class _OptunaSearcher(Searcher):
    """Every grid point `repeats` times, the sampled parameters drawn by an Optuna sampler."""

    def __init__(self, space: SearchSpace, sampler: Any, repeats: int, mode: str):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.study = optuna.create_study(sampler=sampler, direction="minimize" if mode == "min" else "maximize")
        self.distributions = {name: f.distribution() for name, f in space.sampled.items()}
        self.todo = deque(point for point in space.grid_points() for _ in range(repeats))
        self.planned = len(self.todo)
        self.trials: dict[int, Any] = {}

    def suggest(self) -> tuple[int, dict[str, Any]] | None:
        if not self.todo:
            return None
        point = self.todo.popleft()
        trial = self.study.ask(self.distributions)
        self.trials[trial.number] = trial
        params = {**self.space.fixed, **point, **trial.params}
        return trial.number, {name: params[name] for name in self.space.names}

    def observe(self, key: int, value: float | None) -> None:
        import optuna

        trial = self.trials.pop(key)
        if value is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, value)


@dataclass(frozen=True)
class RandomSearch(SearchAlgorithm):
    """`num_trials` random draws of the sampled parameters (for every grid point, as Ray Tune does)."""

    random_state: int | None = None

    def searcher(self, space: SearchSpace, num_trials: int, mode: str, concurrency: int) -> Searcher:
        from optuna.samplers import RandomSampler

        return _OptunaSearcher(space, RandomSampler(seed=self.random_state), num_trials, mode)


@dataclass(frozen=True)
class GridSearch(SearchAlgorithm):
    """Every combination of the listed values, once each (num_trials does not apply)."""

    def searcher(self, space: SearchSpace, num_trials: int, mode: str, concurrency: int) -> Searcher:
        from optuna.samplers import RandomSampler

        if space.sampled:
            names = ", ".join(sorted(space.sampled))
            raise ConfigError(f"GridSearch tries listed values only, but {names} is a sampling function: "
                              "list its values (e.g. [0.01, 0.1]) or use RandomSearch/BayesOpt.")
        return _OptunaSearcher(space, RandomSampler(seed=0), 1, mode)


_UTILITIES = {"ucb", "ei", "poi"}


@dataclass(frozen=True)
class BayesOpt(SearchAlgorithm):
    """Bayesian optimisation over continuous (uniform) parameters, with the bayesian-optimization
    package as Snowflake does. `utility_kwargs`: {'kind': 'ucb'|'ei'|'poi', 'kappa': 2.576, 'xi': 0.0}."""

    utility_kwargs: dict[str, Any] | None = None
    random_state: int | None = None

    def searcher(self, space: SearchSpace, num_trials: int, mode: str, concurrency: int) -> Searcher:
        others = [n for n, f in space.sampled.items() if not isinstance(f, Uniform)] + list(space.grid)
        if others:
            raise ConfigError(
                "Invalid search space configuration: BayesOpt requires all sampling functions to be of type "
                f"'Uniform'. Not uniform: {', '.join(others)}. Use uniform(...) (cast inside train_func, e.g. "
                "int(v)) or RandomSearch."
            )
        return _BayesSearcher(space, num_trials, mode, concurrency, self._acquisition(), self.random_state)

    def _acquisition(self) -> Any:
        from bayes_opt import acquisition

        kwargs = dict(self.utility_kwargs or {})
        unknown = set(kwargs) - {"kind", "kappa", "xi"}
        if unknown or kwargs.get("kind", "ucb") not in _UTILITIES:
            raise ConfigError(f"BayesOpt utility_kwargs={self.utility_kwargs!r} is invalid: use keys kind "
                              "('ucb', 'ei' or 'poi'), kappa and xi.")
        kind = kwargs.get("kind", "ucb")
        if kind == "ucb":
            return acquisition.UpperConfidenceBound(kappa=kwargs.get("kappa", 2.576))
        if kind == "ei":
            return acquisition.ExpectedImprovement(xi=kwargs.get("xi", 0.0))
        return acquisition.ProbabilityOfImprovement(xi=kwargs.get("xi", 0.0))


class _BayesSearcher(Searcher):
    def __init__(self, space: SearchSpace, num_trials: int, mode: str, concurrency: int, acquisition: Any,
                 seed: int | None):
        from bayes_opt import BayesianOptimization
        from bayes_opt.acquisition import ConstantLiar

        if concurrency > 1:  # pending trials count as 'lies' so parallel suggestions differ
            acquisition = ConstantLiar(acquisition)
        bounds = {name: (f.lower, f.upper) for name, f in space.sampled.items()}
        self.optimizer = BayesianOptimization(f=None, pbounds=bounds, acquisition_function=acquisition,
                                              verbose=0, allow_duplicate_points=True,
                                              random_state=seed)
        self.space, self.sign = space, (-1.0 if mode == "min" else 1.0)  # the package maximises
        self.planned, self.made = num_trials, 0
        self.points: dict[int, dict[str, float]] = {}

    def suggest(self) -> tuple[int, dict[str, Any]] | None:
        if self.made == self.planned:
            return None
        key, self.made = self.made, self.made + 1
        self.points[key] = {k: float(v) for k, v in self.optimizer.suggest().items()}
        params = {**self.space.fixed, **self.points[key]}
        return key, {name: params[name] for name in self.space.names}

    def observe(self, key: int, value: float | None) -> None:
        point = self.points.pop(key)
        if value is not None:
            self.optimizer.register(point, self.sign * value)
