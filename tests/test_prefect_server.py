"""The local Prefect server the CLI starts when PREFECT_API_URL is unset: loopback, reused, stoppable."""
from __future__ import annotations

import json
import os
import time
import urllib.request

from trainflow import prefect_server


def test_local_server_starts_once_on_loopback_and_stops(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    url = prefect_server.ensure_server()
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
        assert os.environ["PREFECT_API_URL"] == url
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            assert resp.status == 200
        state = json.loads((tmp_path / ".trainflow" / "prefect-server.json").read_text())
        assert (tmp_path / ".trainflow" / "prefect" / "prefect.db").exists()  # its SQLite lives here
        monkeypatch.delenv("PREFECT_API_URL")
        assert prefect_server.ensure_server() == url  # reused, not a second server
        assert json.loads((tmp_path / ".trainflow" / "prefect-server.json").read_text())["pid"] == state["pid"]
    finally:
        assert prefect_server.stop()
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{state['pid']}") and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            os.waitpid(state["pid"], os.WNOHANG)
        except ChildProcessError:
            pass
    assert not os.path.exists(f"/proc/{state['pid']}")
    assert prefect_server.running() is None


def test_explicit_api_url_is_used_as_is(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert prefect_server.ensure_server() == "http://127.0.0.1:9/api"
    assert not (tmp_path / ".trainflow" / "prefect-server.json").exists()
