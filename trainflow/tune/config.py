"""TunerConfig (Snowflake's): what to optimise and how many trials, with which resources."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainflow.errors import ConfigError
from trainflow.tune.search import RandomSearch, SearchAlgorithm


@dataclass
class TunerConfig:
    """`metric` is a key the train_func reports; `mode` 'min' or 'max'. `max_concurrent_trials` is
    per node (default 1 per node); `resource_per_trial` e.g. {'CPU': 2, 'GPU': 0} (default: a node's
    share per concurrent trial). `uses_snowflake_trainer`: None lets trainflow tell from train_func."""

    metric: str
    mode: str
    search_alg: SearchAlgorithm = field(default_factory=RandomSearch)
    num_trials: int = 5
    max_concurrent_trials: int | None = None
    resource_per_trial: dict[str, Any] | None = None
    uses_snowflake_trainer: bool | None = None

    def check(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise ConfigError(f"TunerConfig.metric={self.metric!r} is invalid: name a key your train_func "
                              "reports, e.g. metric='rmse'.")
        if self.mode not in ("min", "max"):
            raise ConfigError(f"TunerConfig.mode={self.mode!r} is invalid: use 'min' or 'max'.")
        if not isinstance(self.search_alg, SearchAlgorithm):
            raise ConfigError(f"TunerConfig.search_alg={self.search_alg!r} is invalid: use RandomSearch(), "
                              "GridSearch() or BayesOpt() from trainflow.tune.search.")
        for name in ("num_trials", "max_concurrent_trials"):
            value = getattr(self, name)
            if name == "max_concurrent_trials" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"TunerConfig.{name}={value!r} is invalid: use a positive integer.")
        if self.resource_per_trial is not None:
            res = self.resource_per_trial
            if not isinstance(res, dict) or set(res) - {"CPU", "GPU"}:
                raise ConfigError(f"TunerConfig.resource_per_trial={res!r} is invalid: use a dict with the "
                                  "keys 'CPU' and/or 'GPU', e.g. {'CPU': 2}.")
            for key, value in res.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
                    raise ConfigError(f"TunerConfig.resource_per_trial[{key!r}]={value!r} is invalid: "
                                      "use a whole number >= 0.")
        if self.uses_snowflake_trainer not in (None, True, False):
            raise ConfigError(f"TunerConfig.uses_snowflake_trainer={self.uses_snowflake_trainer!r} is "
                              "invalid: use True, False or None (tell from train_func).")
