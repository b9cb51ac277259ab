"""Errors that a restart cannot fix are not retried.

Ray Train restarts a failed worker group whatever the cause. Losing a worker is worth a restart, but
a trainflow error that is not transient (bad data, bad parameters) would only happen again, after
reading and training all over. The first worker that hits such an error records it in Ray's internal
key-value store (under the run's name), and a restarted group raises it at once.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from trainflow.errors import TrainflowError

_NAMESPACE = "trainflow"


def guarded(loop: Callable[[Any], Any], run_name: str) -> Callable[[Any], Any]:
    """`loop` for Ray Train, raising at once an error an earlier attempt of `run_name` recorded."""
    return functools.partial(_run, loop, f"fatal:{run_name}")


def clear(run_name: str) -> None:
    """Driver side, when the fit is over: forget what the run recorded."""
    from ray.experimental import internal_kv

    if internal_kv._internal_kv_initialized():
        internal_kv._internal_kv_del(f"fatal:{run_name}", namespace=_NAMESPACE)


def _run(loop: Callable[[Any], Any], key: str, config: Any) -> Any:
    import ray.cloudpickle as pickle
    from ray.experimental import internal_kv

    recorded = internal_kv._internal_kv_get(key, namespace=_NAMESPACE)
    if recorded:
        raise pickle.loads(recorded)
    try:
        return loop(config)
    except TrainflowError as exc:
        if not exc.transient:
            try:
                internal_kv._internal_kv_put(key, pickle.dumps(exc), overwrite=False, namespace=_NAMESPACE)
            except Exception:  # noqa: BLE001 - an exception that does not pickle is retried as before
                pass
        raise
