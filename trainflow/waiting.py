"""Bounded waits on Ray: every `ray.get` of trainflow's own tasks goes through `bounded_get`.

A Ray task waits for a free CPU; if something else holds the cluster's CPUs, an unbounded `ray.get`
hangs silently. Here the wait ends with a ResourceError saying what was awaited, and a trainflow
error raised inside the task comes back as itself, without Ray's wrapping.
"""
from __future__ import annotations

import os
from typing import Any

from trainflow.errors import ResourceError, TrainflowError

DEFAULT_TASK_TIMEOUT_S = 1800.0
TIMEOUT_ENV = "TRAINFLOW_TASK_TIMEOUT_S"


def task_timeout_s() -> float:
    """Seconds a driver waits for its Ray tasks (TRAINFLOW_TASK_TIMEOUT_S, default 30 minutes)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if not raw:
        return DEFAULT_TASK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ResourceError(f"{TIMEOUT_ENV}={raw!r} is invalid: use a number of seconds > 0.")
    return value


def bounded_get(refs: Any, what: str, timeout_s: float | None = None) -> Any:
    """`ray.get(refs)` that gives up after `timeout_s` (default `task_timeout_s()`).

    `what` names the work in the error, e.g. "validating the training data (4 Ray tasks)".
    """
    import ray
    from ray.exceptions import GetTimeoutError, RayTaskError

    timeout = task_timeout_s() if timeout_s is None else timeout_s
    try:
        return ray.get(refs, timeout=timeout)
    except GetTimeoutError:
        for ref in refs if isinstance(refs, list) else [refs]:
            try:
                ray.cancel(ref, force=True)
            except ValueError:  # an actor's task: Ray only cancels those without force
                ray.cancel(ref)
        raise ResourceError(
            f"Gave up after {timeout:g}s waiting for {what}. The tasks need free CPUs: the cluster's "
            "CPUs may be held by other work (see `ray status`). Free them, add nodes, or raise "
            f"{TIMEOUT_ENV}."
        ) from None
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, TrainflowError):
            raise cause from None
        raise
