"""One plug-in per training framework: the only place that knows one.

Each module here (`xgboost`, `lightgbm`, `pytorch`) defines one `Framework` object with the same
surface (objectives, plan, fit, scoring, MLflow flavour, importance, run params), as MLflow's flavours
do. `get(name)` is the only dispatch: the pipeline steps and the registry receive the plug-in as a
value. Adding a framework is one module with a `Framework` subclass and one `register(...)` call.
"""
from __future__ import annotations

import importlib

from trainflow.errors import ConfigError
from trainflow.frameworks.base import FitOutcome, Framework, Task

__all__ = ["FitOutcome", "Framework", "Task", "get", "names", "register"]

# Built in: imported on first use, so `names()` and the spec import no framework library.
_BUILTIN = {"xgboost": "trainflow.frameworks.xgboost", "lightgbm": "trainflow.frameworks.lightgbm",
            "pytorch": "trainflow.frameworks.pytorch"}
_REGISTERED: dict[str, Framework] = {}


def register(framework: Framework) -> Framework:
    """Make `framework` available as `get(framework.name)` (and to job specs run in this process)."""
    if not framework.name or not framework.objectives or framework.default_objective not in framework.objectives:
        raise ConfigError(f"{type(framework).__name__}: a framework plug-in needs a name, its objectives and a "
                          "default objective among them")
    _REGISTERED[framework.name] = framework
    return framework


def names() -> tuple[str, ...]:
    return tuple(dict.fromkeys([*_BUILTIN, *_REGISTERED]))


def get(name: str) -> Framework:
    """The plug-in called `name`; a ConfigError listing the known ones otherwise."""
    if name not in _REGISTERED and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])  # registers itself
    try:
        return _REGISTERED[name]
    except (KeyError, TypeError):
        raise ConfigError(f"framework {name!r} is not known; known frameworks: {', '.join(names())}") from None
