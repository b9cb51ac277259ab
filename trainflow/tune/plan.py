"""How trials share the cluster: a pure policy, decided once per tuning run (tested without Ray)."""
from __future__ import annotations

import dis
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainflow.distributors.placement import NodeResources
from trainflow.errors import ResourceError
from trainflow.tune.config import TunerConfig
from trainflow.tune.context import TrialResources

# what a train_func that trains through trainflow refers to
TRAINERS = ("XGBEstimator", "LightGBMEstimator", "PyTorchDistributor")


@dataclass(frozen=True)
class TrialPlan:
    concurrency: int  # trials at once, over the whole cluster
    resources: TrialResources


def plan_trials(config: TunerConfig, nodes: list[NodeResources], uses_trainer: bool) -> TrialPlan:
    """Concurrency (`max_concurrent_trials` per node, default 1) and each trial's resources
    (`resource_per_trial`, default the biggest node's share). A trial that uses trainflow trainers
    only coordinates: the trainers reserve the trial's resources; any other trial holds them itself."""
    per_node = config.max_concurrent_trials or 1
    if not nodes:
        raise ResourceError("The Ray cluster has no alive nodes to run trials on.")
    biggest = max(nodes, key=lambda n: (n.cpus, n.gpus))
    asked = config.resource_per_trial or {}
    cpus = int(asked.get("CPU", max(1, int(biggest.cpus // per_node))))
    gpus = int(asked.get("GPU", int(biggest.gpus // per_node)))
    for kind, each, have in (("CPU", cpus, biggest.cpus), ("GPU", gpus, biggest.gpus)):
        if each * per_node > have:
            raise ResourceError(
                f"Insufficient {kind} resources. Required: {each * per_node:g} ({per_node} concurrent "
                f"trial(s) per node x {each:g}), Available: {have:g} on the biggest node. Reduce "
                f"max_concurrent_trials ({per_node}) or resource_per_trial['{kind}'] ({each:g}), or add "
                f"bigger nodes."
            )
    if cpus < 1 and not uses_trainer:
        raise ResourceError("resource_per_trial['CPU'] is 0, but this train_func trains by itself: give "
                            "each trial at least 1 CPU.")
    return TrialPlan(per_node * len(nodes), TrialResources(cpus, gpus, held=not uses_trainer))


def calls_trainflow_trainer(func: Callable[..., Any], depth: int = 3) -> bool:
    """Whether `func` uses XGBEstimator, LightGBMEstimator or PyTorchDistributor: by name (also as an
    attribute, `xgboost.XGBEstimator`), through an alias of the class, or in a function of the user's
    it calls (up to `depth` calls deep). A miss is safe: the trainer then refuses with the fix."""
    code = getattr(func, "__code__", None)
    if code is None or depth < 0:
        return False
    scope = dict(getattr(func, "__globals__", {}))
    for name, cell in zip(code.co_freevars, getattr(func, "__closure__", None) or ()):
        try:
            scope[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
    for name in _names(code, set()):
        if name in TRAINERS:
            return True
        value = scope.get(name)
        if isinstance(value, type) and value.__name__ in TRAINERS and value.__module__.startswith("trainflow."):
            return True
        if isinstance(value, types.FunctionType) and value is not func and not value.__module__.startswith(
                "trainflow.") and calls_trainflow_trainer(value, depth - 1):
            return True
    return False


def _names(code: types.CodeType, seen: set[int]) -> set[str]:
    """Every name a code object and the functions defined in it refer to."""
    if id(code) in seen:
        return set()
    seen.add(id(code))
    found = set(code.co_names) | set(code.co_freevars)
    found |= {i.argval for i in dis.get_instructions(code) if isinstance(i.argval, str)}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _names(const, seen)
    return found
