"""Connect to Ray: `RAY_ADDRESS` when set, otherwise an embedded local cluster on 127.0.0.1.

The embedded cluster is started once per process and reused by every fit, so the second fit does not
pay Ray's start-up again. An existing cluster gets this project's code and settings with the
connection (`runtime_env.py`) and is checked before any worker starts (`preflight.py`).
"""
from __future__ import annotations

import logging
import os

from trainflow.distributors.placement import NodeResources
from trainflow.errors import ResourceError

# Safe defaults before Ray is imported anywhere in this process: loopback only, no usage stats.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray Train notices a finished worker group at its next health check (default every 2 s): measured
# in bench/, 0.2 s cuts ~3.6 s off every fit. Read by the controller, inherited from this process.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

import ray

from trainflow.cluster.preflight import SKIP_ENV, check_cluster
from trainflow.cluster.runtime_env import job_runtime_env, plan_shipment

# Set by `trainflow serve` next to RAY_ADDRESS when that is its own embedded cluster: nothing to ship or check.
EMBEDDED_ENV = "TRAINFLOW_EMBEDDED_RAY"
_unchecked: list[str] = []  # the existing cluster this process connected to, until its preflight passed


def ensure_cluster(num_cpus: int | None = None, num_gpus: int | None = None, *, check: bool = True) -> None:
    """Make sure this process is connected to Ray; start the embedded cluster if nothing is set.

    On an existing cluster (`RAY_ADDRESS`) the first call with `check` runs the preflight: the flow's
    task runner connects with `check=False`, so that a refusal fails the flow run, in its body.
    `num_cpus`/`num_gpus` only apply when an embedded cluster is started (tests declare logical GPUs).
    """
    if not ray.is_initialized():
        _connect(num_cpus, num_gpus)
    if check and _unchecked:
        _preflight()
        _unchecked.clear()


def _connect(num_cpus: int | None, num_gpus: int | None) -> None:
    address = os.environ.get("RAY_ADDRESS")
    try:
        if address:
            _probe(address)
            remote = os.environ.get(EMBEDDED_ENV) != address
            runtime_env = _shipment().runtime_env(job_runtime_env()) if remote else None
            _init_existing(address, runtime_env or None)
            _unchecked[:] = [address] if remote else []
        else:
            # Ray's default token auth stays on (token generated in ~/.ray on first start); only its
            # notice about that, printed on every start, is hidden.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            ray.init(
                address="local",  # always our own cluster, never one another process left running
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                log_to_driver=_worker_logs(),
                logging_level="WARNING",
                _node_ip_address="127.0.0.1",
            )
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        where = f"RAY_ADDRESS={address!r}" if address else "the embedded local Ray"
        raise ResourceError(
            f"Cannot connect to Ray at {where}: {exc}. Check that the cluster is running and reachable "
            "(`ray status`), or unset RAY_ADDRESS to use the embedded local cluster."
        ) from exc


# Ray Client's proxy forks a server per connection; the child sometimes dies in fork (ray#63202, open:
# about 1 in 15 connections, seen here in CI) and the connection fails with this text. A new connection
# gets a new server, so a few attempts turn a flaky start into a slower one.
CLIENT_SERVER_DIED = "Starting Ray client server failed"
CLIENT_ATTEMPTS = 3


def _init_existing(address: str, runtime_env: dict | None) -> None:
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=_worker_logs(),
                     logging_level="WARNING")
            return
        except ConnectionError as exc:
            if not _client_server_died(address, exc) or attempt == CLIENT_ATTEMPTS:
                raise
            ray.shutdown()
            logging.getLogger("trainflow").warning(
                "Ray Client's server for this connection died as it started (ray#63202); connecting "
                "again (attempt %d of %d)", attempt + 1, CLIENT_ATTEMPTS)


def _client_server_died(address: str, exc: BaseException) -> bool:
    """Whether a failed connection is Ray Client's server dying at its start, which a retry gets past."""
    return address.startswith("ray://") and CLIENT_SERVER_DIED in str(exc)


def _shipment():
    shipment = plan_shipment()
    logging.getLogger("trainflow").info("Connecting to RAY_ADDRESS: %s", shipment.describe())
    return shipment


def _preflight() -> None:
    """Check the cluster before any worker starts (again on the next call while it is not ready)."""
    if os.environ.get(SKIP_ENV, "1").strip().lower() not in ("0", "false", "no"):
        check_cluster()


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail within seconds on an unreachable RAY_ADDRESS (ray.init would retry for minutes)."""
    import socket

    if address == "auto":
        return  # Ray reads the local cluster's address file and fails fast itself when none runs
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ResourceError(
            f"RAY_ADDRESS={address!r} is not an address: use host:port (GCS, default port 6379), "
            "ray://host:10001 (Ray Client) or auto."
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ResourceError(
            f"Cannot reach the Ray cluster at RAY_ADDRESS={address!r} ({exc}). Start it (`ray start "
            "--head`), fix the address, or unset RAY_ADDRESS to use the embedded local cluster."
        ) from None


def _worker_logs() -> bool:
    """Ray workers' own output (Ray Train's chatter, user prints) is shown with TRAINFLOW_WORKER_LOGS=1.

    Training progress and errors reach the caller through trainflow itself, so the default is quiet.
    """
    return os.environ.get("TRAINFLOW_WORKER_LOGS", "0").lower() in ("1", "true", "yes")


def cluster_nodes() -> list[NodeResources]:
    """Alive nodes with their total CPUs/GPUs (ignores head-only nodes with no CPU)."""
    ensure_cluster()
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        nodes.append(NodeResources(node["NodeID"], float(res.get("CPU", 0)), float(res.get("GPU", 0)),
                                   float(res.get("memory", 0))))
    return [n for n in nodes if n.cpus > 0 or n.gpus > 0]


def shutdown() -> None:
    """Disconnect (and stop the embedded cluster if this process started it)."""
    if ray.is_initialized():
        ray.shutdown()
