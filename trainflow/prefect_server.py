"""The local Prefect server used when PREFECT_API_URL is not set: one per working directory.

Started once on 127.0.0.1 with its SQLite under `.trainflow/prefect/`, left running for later runs and
for its UI, and reused while healthy. Every flow run and every Ray worker reports to this one API,
never to a temporary server of its own. `trainflow server stop` ends it (by the pid recorded here).
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
from contextlib import contextmanager
from pathlib import Path

from trainflow.errors import ResourceError

HOME = Path(".trainflow")
STATE = HOME / "prefect-server.json"
LOG = HOME / "prefect-server.log"
START_TIMEOUT_S = 120


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
def _lock():
    HOME.mkdir(exist_ok=True)
    with open(HOME / "prefect-server.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def running() -> dict | None:
    """The recorded local server if it answers, else None."""
    if not STATE.exists():
        return None
    state = json.loads(STATE.read_text())
    return state if _healthy(state["api_url"]) else None


def server_env(port: int) -> dict[str, str]:
    home = (HOME / "prefect").resolve()
    return dict(
        os.environ,
        PREFECT_HOME=str(home),
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
    )


def ensure_server() -> str:
    """PREFECT_API_URL if set; else the local server's API URL (started if needed), exported for Ray."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    with _lock():
        state = running()
        if state is None:
            state = _start()
    os.environ["PREFECT_API_URL"] = state["api_url"]
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return state["api_url"]


def _start() -> dict:
    port = _free_port()
    env = server_env(port)
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    prefect = str(Path(sys.executable).with_name("prefect"))
    with open(LOG, "ab") as log:
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
            state = {"pid": proc.pid, "api_url": url, "ui_url": f"http://127.0.0.1:{port}"}
            STATE.write_text(json.dumps(state))
            return state
        time.sleep(0.5)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    tail = LOG.read_text(errors="replace")[-1500:] if LOG.exists() else ""
    raise ResourceError(
        f"The local Prefect server did not start within {START_TIMEOUT_S}s (log: {LOG}). "
        f"Set PREFECT_API_URL to use another server. Last log lines:\n{tail}"
    )


def stop() -> bool:
    """Stop the local server this project started (its process group, by the recorded pid)."""
    if not STATE.exists():
        return False
    state = json.loads(STATE.read_text())
    STATE.unlink(missing_ok=True)
    try:
        cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False  # already gone
    if b"server" not in cmdline or not any(b"prefect" in part for part in cmdline):
        return False  # the pid now belongs to someone else: leave it alone
    os.killpg(state["pid"], signal.SIGTERM)
    return True
