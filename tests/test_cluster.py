"""Embedded Ray binds loopback only; a dead RAY_ADDRESS fails in seconds, not minutes."""
from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time


def _listening() -> list[tuple[str, int]]:
    """(ip, port) of every listening TCP socket on this machine (IPv4 and IPv6, from /proc)."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                local, state = line.split()[1], line.split()[3]
                if state != "0A":
                    continue
                hexip, hexport = local.split(":")
                raw = bytes.fromhex(hexip)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # host byte order
                ip = ipaddress.ip_address(words)
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                    ip = ip.ipv4_mapped
                out.append((ip, int(hexport, 16)))
    return out


def test_embedded_ray_listens_on_loopback_only(ray_cluster):
    import ray

    node = next(n for n in ray.nodes() if n["Alive"])
    ports = {node["NodeManagerPort"], node["ObjectManagerPort"],
             int(ray.get_runtime_context().gcs_address.rsplit(":", 1)[1])}
    exposed = [(str(ip), port) for ip, port in _listening() if port in ports and not ip.is_loopback]
    assert node["NodeManagerAddress"] == "127.0.0.1"
    assert exposed == []


def test_dead_ray_address_fails_within_seconds():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    env = dict(os.environ, RAY_ADDRESS=f"127.0.0.1:{port}")
    code = ("from trainflow.cluster import ensure_cluster\n"
            "from trainflow.errors import ResourceError\n"
            "try:\n    ensure_cluster()\nexcept ResourceError as e:\n    print('REFUSED', e)\n")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert time.perf_counter() - start < 20
    assert "REFUSED" in done.stdout and f"127.0.0.1:{port}" in done.stdout


def test_a_ray_client_connection_whose_server_dies_at_start_is_made_again(monkeypatch, caplog):
    """ray#63202: Ray Client's per-connection server sometimes dies in fork; a new connection gets a new one.
    The fork race cannot be caused on demand, so ray.init answers as the proxy does when it happens."""
    import ray

    from trainflow import cluster

    died = ConnectionAbortedError("Initialization failure from server:\nTraceback ...\nRuntimeError: Starting "
                                  "Ray client server failed. See ray_client_server_23000.err for detailed logs.")
    calls = []

    def init(**kwargs):
        calls.append(kwargs["address"])
        if len(calls) < 3:
            raise died

    def failing(error):
        def init(**kwargs):
            calls.append(kwargs["address"])
            raise error
        return init

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    cluster._init_existing("ray://10.0.0.1:10001", None)
    assert calls == ["ray://10.0.0.1:10001"] * 3
    assert "ray#63202" in caplog.text and "attempt 3 of 3" in caplog.text

    calls.clear()  # a server that keeps dying: the error reaches the caller after the last attempt
    monkeypatch.setattr(ray, "init", failing(died))
    try:
        cluster._init_existing("ray://10.0.0.1:10001", None)
        raise AssertionError("no error")
    except ConnectionAbortedError as exc:
        assert exc is died and len(calls) == cluster.CLIENT_ATTEMPTS

    calls.clear()  # another failure, or the same text from a GCS address, is not retried
    for address, error in (("ray://10.0.0.1:10001", ConnectionError("refused")), ("10.0.0.1:6379", died)):
        monkeypatch.setattr(ray, "init", failing(error))
        try:
            cluster._init_existing(address, None)
            raise AssertionError("no error")
        except ConnectionError as exc:
            assert exc is error
    assert calls == ["ray://10.0.0.1:10001", "10.0.0.1:6379"]
