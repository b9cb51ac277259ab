"""When an embedded background service stops by itself: the idle policy, attachments, the watchdog.

Generic over the service: the local Prefect server uses it today (`trainflow.prefect_server`); an
embedded Ray kept warm between runs can use the same three parts with its own `Service`:

- `IdlePolicy` decides, as a pure function of what was observed, whether the service may stop.
- `Attachments` records the client processes that need the service (a `trainflow serve`, a
  `trainflow run`): each holds a lock on its own file, so a process that dies, even by SIGKILL,
  is detached by the kernel and never keeps the service alive.
- `watch` is the loop of the detached watchdog process that observes the service, asks the policy
  and stops the service when the policy says so.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from trainflow.errors import ConfigError


@dataclass(frozen=True)
class Activity:
    """What uses the service right now, as one watchdog check saw it."""

    active_runs: int              # flow runs Running, Pending or Cancelling (jobs, for a Ray)
    attached: tuple[dict, ...]    # live client processes (see Attachments)
    last_used: float              # epoch seconds when a client last asked for the service

    @property
    def busy(self) -> bool:
        return self.active_runs > 0 or bool(self.attached)


@dataclass(frozen=True)
class Decision:
    stop: bool
    reason: str


@dataclass(frozen=True)
class IdlePolicy:
    """Stop after `idle_minutes` with nothing active; never when `keep` or `idle_minutes` is None."""

    idle_minutes: float | None = 30.0
    keep: bool = False  # `trainflow server start` asked the service to stay

    @classmethod
    def from_env(cls, variable: str, default: float, *, keep: bool = False) -> IdlePolicy:
        """`variable` holds minutes (decimals allowed) or `never`; unset means `default`."""
        raw = os.environ.get(variable, "").strip().lower()
        if not raw:
            return cls(default, keep)
        if raw in ("never", "none", "off"):
            return cls(None, keep)
        try:
            minutes = float(raw)
        except ValueError:
            minutes = -1.0
        if not minutes > 0:
            raise ConfigError(f"{variable}={raw!r} is not a number of minutes > 0 or 'never'; "
                              f"e.g. {variable}=30")
        return cls(minutes, keep)

    def decide(self, activity: Activity | None, last_busy: float, now: float) -> Decision:
        """`activity` None means the service could not be observed: never stop on a guess.

        Idle time counts from the later of the last check that saw it busy and the last client request,
        so a client that has just been handed the service gets the full `idle_minutes` to use it.
        """
        if self.keep:
            return Decision(False, "kept: asked to stay by `trainflow server start`")
        if activity is None:
            return Decision(False, "kept: could not observe its activity")
        if activity.busy:
            return Decision(False, f"busy: {activity.active_runs} flow run(s) Running/Pending, "
                                   f"{len(activity.attached)} attached")
        if self.idle_minutes is None:
            return Decision(False, "kept: idle stop is off")
        idle_s = now - max(last_busy, activity.last_used)
        limit_s = self.idle_minutes * 60
        if idle_s >= limit_s:
            return Decision(True, f"stopped: idle {idle_s:.0f}s >= {limit_s:.0f}s")
        return Decision(False, f"idle {idle_s:.0f}s of {limit_s:.0f}s")

    def describe(self) -> str:
        if self.keep:
            return "stays until `trainflow server stop` (started by `trainflow server start`)"
        if self.idle_minutes is None:
            return "stays until `trainflow server stop` (idle stop is off)"
        return (f"stops after {self.idle_minutes:g} min with no flow run Running/Pending "
                f"and no trainflow process attached")

    def poll_seconds(self) -> float:
        """How often the watchdog looks: a quarter of the idle time, between 0.2 s and 30 s."""
        if self.idle_minutes is None:
            return 30.0
        return min(30.0, max(0.2, self.idle_minutes * 60 / 4))


class Attachments:
    """Client processes attached to a service: one locked file per client in `folder`."""

    def __init__(self, folder: Path):
        self.folder = folder

    @contextmanager
    def attach(self, kind: str, **info: Any) -> Iterator[dict]:
        """Hold an attachment for the `with` block (and at most for this process's life)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"kind": kind, "pid": os.getpid(), "cwd": os.getcwd(), "since": time.time(), **info}
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        tmp = self.folder / f".{name}"
        fh: IO[str] = open(tmp, "w")
        try:
            fcntl.flock(fh, fcntl.LOCK_SH)  # locked before it is visible under its real name
            fh.write(json.dumps(record))
            fh.flush()
            os.replace(tmp, self.folder / name)
            yield record
        finally:
            (self.folder / name).unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)
            fh.close()

    def live(self) -> list[dict]:
        """The attachments whose process still holds its lock; the files of dead ones are removed."""
        found = []
        for path in sorted(self.folder.glob("[!.]*.json")) if self.folder.exists() else []:
            try:
                fh = open(path)
            except FileNotFoundError:
                continue
            with fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    try:
                        found.append(json.loads(fh.read()))
                    except ValueError:
                        found.append({"kind": "unknown", "file": path.name})
                    continue
                path.unlink(missing_ok=True)  # nobody holds it: its process ended without detaching
        return found


class Service(Protocol):
    """What the watchdog needs from a service (the Prefect server; later an embedded Ray)."""

    def lock(self) -> AbstractContextManager: ...
    def alive(self) -> bool: ...
    def policy(self) -> IdlePolicy: ...
    def activity(self) -> Activity | None: ...
    def record(self, decision: Decision, now: float) -> None: ...
    def stop(self) -> None: ...


def watch(service: Service, *, clock: Callable[[], float] = time.time,
          pause: Callable[[float], None] = time.sleep) -> str:
    """Check the service every `policy.poll_seconds()` until it is gone or the policy stops it.

    Each check runs under the service's lock, which clients also take to get the service: a client
    either attaches before the check (and keeps it) or finds it stopped (and starts a new one).
    """
    last_busy = clock()
    while True:
        with service.lock():
            if not service.alive():
                return "gone"
            policy = service.policy()
            activity = service.activity()
            now = clock()
            if activity is None or activity.busy:
                last_busy = now
            decision = policy.decide(activity, last_busy, now)
            service.record(decision, now)
            if decision.stop:
                service.stop()
                return "stopped"
        pause(policy.poll_seconds())
