"""One plug-in per training framework: the only place that knows one.

Each module here (`xgboost`, `lightgbm`, `pytorch`) defines one `Framework` object with the same
surface (objectives, plan, fit, scoring, MLflow flavour, importance, run params), as MLflow's flavours
do. `get(name)` is the only dispatch: the pipeline steps and the registry receive the plug-in as a
value. Adding a framework is one module with a `Framework` subclass and one `register(...)` call;
a separate package makes it known to every process (driver, Ray workers, `trainflow serve`) with an
entry point in the group `trainflow.frameworks` naming that module's plug-in object.
"""
from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points

from trainflow.errors import ConfigError
from trainflow.frameworks.base import FitOutcome, Framework, Task

__all__ = ["FitOutcome", "Framework", "Task", "get", "names", "register"]

# Built in: imported on first use, so `names()` and the spec import no framework library.
_BUILTIN = {"xgboost": "trainflow.frameworks.xgboost", "lightgbm": "trainflow.frameworks.lightgbm",
            "pytorch": "trainflow.frameworks.pytorch"}
_REGISTERED: dict[str, Framework] = {}
ENTRY_POINT_GROUP = "trainflow.frameworks"


@functools.cache
def _installed() -> dict[str, object]:
    """Plug-ins other packages declare (name -> entry point), loaded on first use."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def register(framework: Framework) -> Framework:
    """Make `framework` available as `get(framework.name)` (and to job specs run in this process)."""
    if not framework.name or not framework.objectives or framework.default_objective not in framework.objectives:
        raise ConfigError(f"{type(framework).__name__}: a framework plug-in needs a name, its objectives and a "
                          "default objective among them")
    _REGISTERED[framework.name] = framework
    return framework


def names() -> tuple[str, ...]:
    return tuple(dict.fromkeys([*_BUILTIN, *_installed(), *_REGISTERED]))


def get(name: str) -> Framework:
    """The plug-in called `name`; a ConfigError listing the known ones otherwise."""
    if name not in _REGISTERED and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])  # registers itself
    elif name not in _REGISTERED and isinstance(name, str) and name in _installed():
        try:
            plugin = _installed()[name].load()
        except Exception as exc:  # noqa: BLE001 - a third-party package's import error, named
            raise ConfigError(f"framework {name!r} (entry point {_installed()[name].value!r} in group "
                              f"{ENTRY_POINT_GROUP!r}) does not load: {type(exc).__name__}: {exc}") from None
        if not isinstance(plugin, Framework) or plugin.name != name:
            raise ConfigError(f"the entry point {name!r} in group {ENTRY_POINT_GROUP!r} must name a Framework "
                              f"object whose name is {name!r}; it names {plugin!r}")
        register(plugin)
    try:
        return _REGISTERED[name]
    except (KeyError, TypeError):
        raise ConfigError(f"framework {name!r} is not known; known frameworks: {', '.join(names())}") from None
