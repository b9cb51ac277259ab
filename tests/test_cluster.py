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
