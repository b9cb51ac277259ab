"""Retry only what may succeed on a second try: I/O hiccups, never a user's mistake."""
from __future__ import annotations

from typing import Any

from trainflow.errors import TrainflowError


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: no retry for trainflow's own errors (bad spec, data, resources)
    unless they say their cause is transient (a busy or unreachable model registry)."""
    try:
        state.result()
    except TrainflowError as exc:
        return exc.transient
    except Exception:
        return True
    return False
