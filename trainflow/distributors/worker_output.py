"""What a training function prints or warns, copied to the run's progress channel (the flow-run log).

Prefect does not see output from Ray workers (prefect#14494), and Ray shows it only on the driver's
console (`TRAINFLOW_WORKER_LOGS=1`). While `train_func` runs, each worker's printed lines (stdout) and
Python warnings also go to the channel as `rank N: line` (the console still gets them), rate-limited
so that a chatty loop cannot flood the log: a burst, then a steady rate; what was dropped is counted
and said with the next line that passes, and when the function ends.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass
class RateLimit:
    """A token bucket: `burst` lines at once, then `per_second`; counts what it refused."""

    burst: int = 50
    per_second: float = 5.0
    tokens: float = field(init=False)
    last: float | None = field(default=None, init=False)
    dropped: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def allow(self, now: float) -> bool:
        if self.last is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.per_second)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.dropped += 1
        return False

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped


class _Tee(io.TextIOBase):
    """Writes through to the original stream and hands each complete line to `emit`."""

    def __init__(self, original, emit: Callable[[str], None]):
        self._original, self._emit, self._partial = original, emit, ""

    def write(self, text: str) -> int:
        self._original.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        self._original.flush()

    def finish(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = ""

    @property
    def encoding(self):  # what libraries that write bytes ask for
        return getattr(self._original, "encoding", "utf-8")

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def forward_output(put: Callable[[str], None], rank: int, limit: RateLimit | None = None,
                   clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Copy this process's printed lines and warnings to `put` as `rank N: ...` while inside."""
    limit = limit or RateLimit()
    lock = threading.Lock()

    def say_dropped() -> None:
        dropped = limit.take_dropped()
        if dropped:
            put(f"rank {rank}: ({dropped} more line(s) not shown here: over the rate limit)")

    def emit(line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        with lock:
            if limit.allow(clock()):
                say_dropped()
                with contextlib.suppress(Exception):  # the watcher is gone: training goes on
                    put(f"rank {rank}: {line}")

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        emit(f"{category.__name__}: {message} ({os.path.basename(filename)}:{lineno})")
        original_show(message, category, filename, lineno, file or original_err, line)  # not again through the tee

    # stdout only: Ray Train's own log lines go to stderr
    out = _Tee(sys.stdout, emit)
    original_out, original_err, original_show = sys.stdout, sys.stderr, warnings.showwarning
    sys.stdout, warnings.showwarning = out, show
    try:
        yield
    finally:
        sys.stdout, warnings.showwarning = original_out, original_show
        out.finish()
        with lock, contextlib.suppress(Exception):
            say_dropped()
