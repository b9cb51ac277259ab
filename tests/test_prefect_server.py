"""The per-user local Prefect server: loopback, in TRAINFLOW_HOME, stopped by its watchdog when idle.

The idle policy is a pure function and is tested as one; one real server with a tiny idle timeout
shows the watchdog keeping it while a process is attached and stopping it once none is.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from trainflow import prefect_server
from trainflow.errors import ConfigError
from trainflow.lifecycle import Activity, Attachments, Decision, IdlePolicy, watch

TRAINFLOW = str(Path(sys.executable).with_name("trainflow"))
NOW = 1_000_000.0


def idle(last_used: float = 0.0) -> Activity:
    return Activity(active_runs=0, attached=(), last_used=last_used)


@pytest.mark.parametrize("activity, last_busy, stop", [
    (idle(), NOW - 600, True),                                   # idle exactly the limit: stop
    (idle(), NOW - 599, False),                                  # not yet
    (idle(last_used=NOW - 10), NOW - 3600, False),               # a client was just handed the server
    (Activity(1, (), 0.0), NOW - 3600, False),                   # a flow run Running/Pending
    (Activity(0, ({"kind": "serve", "pid": 1},), 0.0), NOW - 3600, False),  # a serve attached
    (None, NOW - 3600, False),                                   # not observable: never stop on a guess
])
def test_idle_policy_stops_only_after_the_idle_time_with_nothing_active(activity, last_busy, stop):
    assert IdlePolicy(idle_minutes=10).decide(activity, last_busy, NOW).stop is stop


def test_idle_policy_keep_and_never_stay_up():
    assert not IdlePolicy(10, keep=True).decide(idle(), NOW - 10**6, NOW).stop
    assert not IdlePolicy(None).decide(idle(), NOW - 10**6, NOW).stop
    assert "trainflow server start" in IdlePolicy(10, keep=True).describe()


def test_idle_minutes_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("X_IDLE", "2.5")
    assert IdlePolicy.from_env("X_IDLE", 30).idle_minutes == 2.5
    monkeypatch.setenv("X_IDLE", "never")
    assert IdlePolicy.from_env("X_IDLE", 30).idle_minutes is None
    monkeypatch.delenv("X_IDLE")
    assert IdlePolicy.from_env("X_IDLE", 30).idle_minutes == 30
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv("X_IDLE", bad)
        with pytest.raises(ConfigError, match="X_IDLE"):
            IdlePolicy.from_env("X_IDLE", 30)


class ScriptedService:
    """A service whose activity follows a script: the watchdog loop's own logic, no server needed."""

    def __init__(self, script: list[Activity], clock: list[float]):
        self.script, self.clock, self.decisions, self.stopped = script, clock, [], False

    def lock(self):
        return contextlib.nullcontext()

    def alive(self) -> bool:
        return not self.stopped

    def policy(self) -> IdlePolicy:
        return IdlePolicy(idle_minutes=1)

    def activity(self) -> Activity:
        return self.script.pop(0)

    def record(self, decision: Decision, now: float) -> None:
        self.decisions.append((now, decision))

    def stop(self) -> None:
        self.stopped = True


def test_watchdog_counts_idle_time_from_the_last_busy_check():
    clock = [0.0]
    busy = Activity(1, (), 0.0)
    service = ScriptedService([busy, busy, idle(), idle(), idle(), idle(), idle()], clock)

    def pause(seconds: float) -> None:
        clock[0] += 20

    assert watch(service, clock=lambda: clock[0], pause=pause) == "stopped"
    # busy at t=0 and t=20; idle from then: 40 s, 20 s... it stops at t=80 (60 s after the last busy check)
    assert [now for now, d in service.decisions if d.stop] == [80.0]
    assert service.stopped


def test_an_attachment_ends_with_its_process_even_when_killed(tmp_path):
    folder = tmp_path / "attached"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom trainflow.lifecycle import "
         "Attachments\nwith Attachments(Path(sys.argv[1])).attach('serve'):\n    print('held', flush=True)\n"
         "    time.sleep(600)\n", str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        live = Attachments(folder).live()
        assert [(a["kind"], a["pid"]) for a in live] == [("serve", holder.pid)]
        with Attachments(folder).attach("run"):
            assert sorted(a["kind"] for a in Attachments(folder).live()) == ["run", "serve"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert Attachments(folder).live() == []
    assert list(folder.glob("*.json")) == []  # the dead process's file was cleaned up


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # this test's process started it: a stopped one must not stay a zombie


def _wait_for(condition, timeout_s: float, what: str, reap: tuple[int, ...] = ()) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        for pid in reap:
            _reap(pid)
        time.sleep(0.2)


def _gone(pid: int) -> bool:
    _reap(pid)
    return not os.path.exists(f"/proc/{pid}")


def test_idle_server_stays_while_attached_and_stops_by_itself_after(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TRAINFLOW_HOME", str(home))
    monkeypatch.setenv("TRAINFLOW_SERVER_IDLE_MINUTES", "0.03")  # 1.8 s; the watchdog looks every 0.45 s
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with prefect_server.attach("serve") as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            assert resp.status == 200
        assert (home / "prefect" / "prefect.db").exists()  # its SQLite lives in the trainflow home
        state = json.loads((home / "prefect-server.json").read_text())
        pid, watchdog = state["pid"], state["watchdog_pid"]
        monkeypatch.delenv("PREFECT_API_URL")
        assert prefect_server.ensure_server() == url  # reused, not a second server

        done = subprocess.run([TRAINFLOW, "server", "status"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        for shown in (f"pid {pid}", url, str(home), "stops after 0.03 min", f"serve pid {os.getpid()}"):
            assert shown in done.stdout, done.stdout

        # Attached: checks made well past the idle time still keep it.
        used = json.loads((home / "prefect-server.json").read_text())["last_used"]
        _wait_for(lambda: (prefect_server.status().get("last_check") or {}).get("at", 0) > used + 4,
                  60, "a watchdog check 4 s after the last use")
        assert prefect_server.status()["last_check"]["reason"].startswith("busy")
        assert not _gone(pid)
    _wait_for(lambda: _gone(pid), 60, "the idle server to stop", reap=(watchdog,))
    _wait_for(lambda: _gone(watchdog), 30, "the watchdog to exit")
    assert prefect_server.running() is None and not (home / "prefect-server.json").exists()
    assert "stopped" in (home / "prefect-server.log").read_text()
    done = subprocess.run([TRAINFLOW, "server", "status", "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout) == {"running": False, "home": str(home)}


def test_explicit_api_url_is_used_as_is(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert prefect_server.ensure_server() == "http://127.0.0.1:9/api"
    with prefect_server.attach("run") as url:
        assert url == "http://127.0.0.1:9/api"
    assert not (tmp_path / "home" / "prefect-server.json").exists()
