"""The local Prefect server used when PREFECT_API_URL is not set: one per user, shared by projects.

Started on 127.0.0.1 with its state, SQLite and log in the trainflow home (`~/.trainflow`, or
`$TRAINFLOW_HOME`), and reused by every `trainflow` command of this user, from any directory. Every
flow run and every Ray worker reports to this one API, never to a temporary server of its own.

It does not outlive its use: a detached watchdog (`python -m trainflow.prefect_server watch PID`)
stops it once no flow run is Running/Pending and no trainflow process (`trainflow serve`, `trainflow
run`) is attached for `TRAINFLOW_SERVER_IDLE_MINUTES` (default 30), unless `trainflow server start`
asked it to stay. The policy and the watchdog loop are `trainflow.lifecycle`'s, not Prefect-specific.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trainflow.errors import ResourceError
from trainflow.lifecycle import Activity, Attachments, Decision, IdlePolicy, watch

HOME_ENV = "TRAINFLOW_HOME"
IDLE_ENV = "TRAINFLOW_SERVER_IDLE_MINUTES"
DEFAULT_IDLE_MINUTES = 30.0
START_TIMEOUT_S = 120
ACTIVE_STATES = ("RUNNING", "PENDING", "CANCELLING")
_exported: str | None = None  # the local server's URL this process exported as PREFECT_API_URL


def home() -> Path:
    """The trainflow home: `$TRAINFLOW_HOME`, else `~/.trainflow` (read each time: tests set it)."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".trainflow").expanduser().resolve()


def _state_file() -> Path:
    return home() / "prefect-server.json"


def _log_file() -> Path:
    return home() / "prefect-server.log"


def attachments() -> Attachments:
    return Attachments(home() / "attached")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _free_port(preferred: int = 4200) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise ResourceError("No free TCP port on 127.0.0.1 for the local Prefect server.")


@contextmanager
def _lock() -> Iterator[None]:
    home().mkdir(parents=True, exist_ok=True)
    with open(home() / "prefect-server.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _read_state() -> dict | None:
    try:
        return json.loads(_state_file().read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write_state(state: dict) -> None:
    tmp = _state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, _state_file())  # readers never see half a file


def running() -> dict | None:
    """The recorded local server if it answers, else None."""
    state = _read_state()
    return state if state is not None and _healthy(state["api_url"]) else None


def _answering(state: dict | None, patience_s: float = 15.0) -> dict | None:
    """The recorded server if it answers; a live one that is slow (a busy machine) gets `patience_s`."""
    if state is None:
        return None
    deadline = time.monotonic() + patience_s
    while not _healthy(state["api_url"]):
        if not _is_server(state["pid"]) or time.monotonic() > deadline:
            return None
        time.sleep(0.5)
    return state


def server_env(port: int) -> dict[str, str]:
    prefect_home = home() / "prefect"
    return dict(
        os.environ,
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}",
    )


def _given_api_url() -> str | None:
    """PREFECT_API_URL when the user set it (not when this process exported the local server's)."""
    url = os.environ.get("PREFECT_API_URL")
    return url if url and url != _exported else None


def ensure_server(*, keep: bool = False) -> str:
    """PREFECT_API_URL if set; else the local server's API URL (started if needed), exported for Ray.

    Counts as a use of the server (its idle time restarts); `keep` makes it stay until stopped.
    """
    if _given_api_url():
        return os.environ["PREFECT_API_URL"]
    with _lock():
        return _ensure_locked(keep)


def _ensure_locked(keep: bool) -> str:
    global _exported
    state = _answering(_read_state())
    if state is None:
        _stop_recorded()  # a recorded server that no longer answers is not left behind
        state = _start()
    state["last_used"] = time.time()
    state["keep"] = state.get("keep", False) or keep
    _write_state(state)
    _exported = os.environ["PREFECT_API_URL"] = state["api_url"]
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return state["api_url"]


@contextmanager
def attach(kind: str) -> Iterator[str]:
    """The API URL for the `with` block, with this process attached so the server stays up meanwhile.

    Getting the server and attaching happen under the lock the watchdog checks under, so the server
    cannot be stopped between the two. With PREFECT_API_URL set there is nothing to keep up.
    """
    if _given_api_url():
        yield os.environ["PREFECT_API_URL"]
        return
    with _lock():
        url = _ensure_locked(False)
        held = attachments().attach(kind)
        held.__enter__()
    try:
        yield url
    finally:
        held.__exit__(None, None, None)


def _start() -> dict:
    port = _free_port()
    env = server_env(port)
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    prefect = str(Path(sys.executable).with_name("prefect"))
    log_path = _log_file()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _healthy(url):
            policy = IdlePolicy.from_env(IDLE_ENV, DEFAULT_IDLE_MINUTES)
            state = {"pid": proc.pid, "api_url": url, "ui_url": f"http://127.0.0.1:{port}", "home": str(home()),
                     "started_at": time.time(), "last_used": time.time(), "keep": False,
                     "idle_minutes": policy.idle_minutes}
            state["watchdog_pid"] = _start_watchdog(proc.pid)
            _write_state(state)
            return state
        time.sleep(0.5)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
    raise ResourceError(
        f"The local Prefect server did not start within {START_TIMEOUT_S}s (log: {log_path}). "
        f"Set PREFECT_API_URL to use another server. Last log lines:\n{tail}"
    )


def _start_watchdog(server_pid: int) -> int:
    env = dict(os.environ, **{HOME_ENV: str(home())})
    with open(_log_file(), "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "trainflow.prefect_server", "watch", str(server_pid)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True, cwd=str(home()))
    return proc.pid


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _is_server(pid: int) -> bool:
    cmd = _cmdline(pid)
    return b"server" in cmd and any(b"prefect" in part for part in cmd)


def _is_watchdog(pid: int) -> bool:
    return b"trainflow.prefect_server" in _cmdline(pid)


def _stop_recorded() -> bool:
    """Stop the recorded server and its watchdog (by pid, only if the pid is still theirs)."""
    state = _read_state()
    _state_file().unlink(missing_ok=True)
    if state is None:
        return False
    watchdog = state.get("watchdog_pid")
    if watchdog and watchdog != os.getpid() and _is_watchdog(watchdog):
        os.kill(watchdog, signal.SIGTERM)
    if not _is_server(state["pid"]):
        return False  # already gone, or the pid now belongs to someone else: leave it alone
    os.killpg(state["pid"], signal.SIGTERM)
    return True


def stop() -> bool:
    """Stop the local server of this trainflow home (its process group, by the recorded pid)."""
    with _lock():
        return _stop_recorded()


def keep_running() -> str:
    """`trainflow server start`: the server (started if needed) stays until `trainflow server stop`."""
    return ensure_server(keep=True)


def _count_active_runs(api_url: str) -> int:
    body = json.dumps({"flow_runs": {"state": {"type": {"any_": list(ACTIVE_STATES)}}}}).encode()
    req = urllib.request.Request(f"{api_url}/flow_runs/count", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(json.loads(resp.read()))


def _policy_of(state: dict) -> IdlePolicy:
    return IdlePolicy(state.get("idle_minutes", DEFAULT_IDLE_MINUTES), bool(state.get("keep")))


def status() -> dict[str, Any]:
    """What runs: pid, URL, home, idle policy, attached processes, active runs, the last check."""
    state = running()
    info: dict[str, Any] = {"running": state is not None, "home": str(home())}
    if state is None:
        return info
    try:
        active: int | None = _count_active_runs(state["api_url"])
    except OSError:
        active = None
    info.update({k: state.get(k) for k in ("pid", "api_url", "ui_url", "started_at", "last_used",
                                           "idle_minutes", "keep", "watchdog_pid", "last_check")})
    info.update(policy=_policy_of(state).describe(), active_runs=active, attached=attachments().live(),
                watchdog_alive=bool(state.get("watchdog_pid")) and _is_watchdog(state["watchdog_pid"]))
    return info


class _PrefectService:
    """The local server as `trainflow.lifecycle.watch` sees it."""

    def __init__(self, pid: int):
        self.pid = pid

    def lock(self):
        return _lock()

    def alive(self) -> bool:
        state = _read_state()
        return state is not None and state["pid"] == self.pid and _is_server(self.pid)

    def policy(self) -> IdlePolicy:
        return _policy_of(_read_state() or {})

    def activity(self) -> Activity | None:
        state = _read_state() or {}
        try:
            runs = _count_active_runs(state["api_url"])
        except (OSError, KeyError, ValueError):
            return None  # not answering now: the policy keeps it rather than guess
        return Activity(runs, tuple(attachments().live()), float(state.get("last_used", 0)))

    def record(self, decision: Decision, now: float) -> None:
        state = _read_state()
        if state is not None:
            state["last_check"] = {"at": now, "reason": decision.reason}
            _write_state(state)

    def stop(self) -> None:
        _stop_recorded()


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "watch":
        outcome = watch(_PrefectService(int(argv[1])))
        print(f"trainflow watchdog: Prefect server pid {argv[1]} {outcome}", flush=True)
        return 0
    print("usage: python -m trainflow.prefect_server watch SERVER_PID", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
