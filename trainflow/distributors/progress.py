"""Training progress from rank 0 to whoever watches: a terminal, or a Prefect flow-run logger.

Rank 0 runs in a Ray worker; the watcher runs in another process (the driver or the flow). A small
queue actor carries the lines between them, and a thread on the watcher's side hands them to a callable.
"""
from __future__ import annotations

import threading
from collections.abc import Callable


class ProgressChannel:
    """A picklable handle on a queue actor; `put` from workers, `drain_to` on the watching side."""

    def __init__(self):
        from ray.util.queue import Queue

        self._queue = Queue(actor_options={"num_cpus": 0})

    def put(self, line: str) -> None:
        self._queue.put(line)

    def drain_to(self, sink: Callable[[str], None]) -> _Drain:
        return _Drain(self._queue, sink)

    def close(self) -> None:
        self._queue.shutdown()


class _Drain:
    """Forwards queued lines to `sink` on a daemon thread until `stop()` (which flushes what is left)."""

    def __init__(self, queue, sink: Callable[[str], None]):
        self._queue, self._sink = queue, sink
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainflow-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from ray.util.queue import Empty

        while not self._stopped.is_set():
            try:
                self._sink(self._queue.get(timeout=0.5))
            except Empty:
                continue
            except Exception:  # the queue actor is gone: nothing more will arrive
                return

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        try:
            for line in self._queue.get_nowait_batch(self._queue.qsize()):
                self._sink(line)
        except Exception:
            pass


def format_metrics(round_index: int, metrics: dict[str, dict[str, float]]) -> str:
    """`[10]  train-rmse: 0.1234  eval-rmse: 0.1301` (1-based round, like xgboost's own output)."""
    parts = [f"{data}-{name}: {value:.6g}" for data, values in metrics.items() for name, value in values.items()]
    return f"[{round_index}]  " + "  ".join(parts)
