"""Before any worker starts on an existing cluster: check, in seconds, what a run needs from every node.

Each alive node runs one small task (no CPU reserved) that reports its package versions, whether it
reads the probe file the driver wrote into each storage location, and whether it reaches the Prefect
and MLflow servers. `judge` (pure: tested without a cluster) turns the reports into problems, each
with one fix; `check_cluster` acts: probes, judges, and raises `PreflightError` listing them all.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from urllib.parse import urlsplit

from trainflow.errors import PreflightError

PACKAGES = ("ray", "xgboost", "lightgbm", "torch", "pyarrow")
TIMEOUT_ENV = "TRAINFLOW_PREFLIGHT_TIMEOUT_S"
SKIP_ENV = "TRAINFLOW_PREFLIGHT"  # "0": skip (a cluster checked by other means)
DEFAULT_TIMEOUT_S = 10.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
# Locations whose contents must outlive the run: what is in them, and storage that outlives a job
# (checkpoints need not).
LASTING = {"TRAINFLOW_ARTIFACTS": ("the run's PyTorch artifacts", "s3://..., gs://..., or a shared mount"),
           "MLFLOW_TRACKING_URI": ("the registry and every model registered in it",
                                   "a tracking server, or a SQLite file on shared storage")}


@dataclass(frozen=True)
class Location:
    """A storage location the run's workers and driver share, and the probe file the driver wrote there."""

    variable: str  # e.g. TRAINFLOW_STORAGE
    root: str  # a local path or a URI
    probe: str  # the probe file's path/URI under root
    token: str  # what the probe file holds
    default: str = ""  # what the root is when the variable is unset ("" when it is set)

    @property
    def label(self) -> str:
        return f"{self.variable} (unset: {self.default})" if self.default else self.variable


@dataclass(frozen=True)
class Service:
    name: str  # PREFECT_API_URL / MLFLOW_TRACKING_URI
    url: str


@dataclass(frozen=True)
class NodeReport:
    """What one node saw."""

    node_id: str
    address: str
    python: str
    versions: Mapping[str, str | None]
    unreadable: Mapping[str, str] = field(default_factory=dict)  # variable -> why
    unreachable: Mapping[str, str] = field(default_factory=dict)  # service name -> why


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what} Fix: {self.fix}"


def judge(driver: NodeReport, reports: Sequence[NodeReport], silent: Mapping[str, str],
          locations: Sequence[Location], services: Sequence[Service],
          temporary_folder: str | None = None) -> list[Problem]:
    """Problems with running on these nodes, from the driver's own report and each node's.

    `silent` maps nodes that did not answer in time (or could not run the probe) to why.
    `temporary_folder` is the driver's working folder when Ray deletes it after the run (a Ray job's
    `working_dir`): what must outlive the run may not live there."""
    problems: list[Problem] = []
    for loc in locations:
        if temporary_folder and loc.variable in LASTING and _inside(loc.root, temporary_folder):
            what, outlives = LASTING[loc.variable]
            problems.append(Problem(
                f"{loc.label} is {loc.root!r}, inside the Ray job's working folder, which Ray deletes when "
                f"the job ends: {what} would be lost.",
                f"pass {loc.variable} to the job (ray job submit --runtime-env-json "
                f"'{{\"env_vars\": {{\"{loc.variable}\": \"...\"}}}}') naming storage that outlives it "
                f"({outlives})."))
    for node, why in silent.items():
        problems.append(Problem(f"Node {node} did not answer the preflight ({why}).",
                                "check the node with `ray status`, or raise TRAINFLOW_PREFLIGHT_TIMEOUT_S on a "
                                "slow cluster; if it cannot import trainflow, leave TRAINFLOW_SHIP_CODE unset."))
    for r in reports:
        if r.python != driver.python:
            problems.append(Problem(f"Node {r.address} runs Python {r.python}, the driver {driver.python}.",
                                    f"run the same Python {driver.python} on every node and the driver."))
        for pkg in PACKAGES:
            mine, theirs = driver.versions.get(pkg), r.versions.get(pkg)
            if mine is not None and theirs != mine:
                problems.append(Problem(
                    f"Node {r.address} has {pkg} {theirs or '(not installed)'}, the driver {pkg} {mine}.",
                    f"install the project's pins on every node (pip install '{pkg}=={mine}')."))
    for loc in locations:
        bad = sorted({r.address for r in reports if loc.variable in r.unreadable})
        if bad:
            why = next(r.unreadable[loc.variable] for r in reports if loc.variable in r.unreadable)
            problems.append(Problem(
                f"{loc.label} is {loc.root!r}, but a file the driver wrote there is not readable on "
                f"node(s) {', '.join(bad)} ({why}): it is local to the driver's machine.",
                f"set {loc.variable} to storage every node and the driver share "
                "(s3://..., gs://..., or a shared mount such as NFS at the same path on every machine)."))
    remote = sorted({r.address for r in reports if r.address != driver.address})
    for svc in services:
        bad = sorted({r.address for r in reports if svc.name in r.unreachable})
        host = urlsplit(svc.url).hostname or ""
        if bad:
            why = next(r.unreachable[svc.name] for r in reports if svc.name in r.unreachable)
            problems.append(Problem(f"{svc.name}={svc.url} is not reachable from node(s) {', '.join(bad)} ({why}).",
                                    _service_fix(svc)))
        elif host in _LOOPBACK and remote:
            problems.append(Problem(
                f"{svc.name}={svc.url} is this machine's loopback address; node(s) {', '.join(remote)} "
                "are other machines and cannot reach it.", _service_fix(svc)))
    return problems


def _inside(root: str, folder: str) -> bool:
    if "://" in root:
        return False
    root, folder = os.path.abspath(root), os.path.abspath(folder)
    return root == folder or root.startswith(folder.rstrip(os.sep) + os.sep)


def _service_fix(svc: Service) -> str:
    if svc.name == "PREFECT_API_URL":
        return ("run a Prefect server the nodes reach (`prefect server start --host 0.0.0.0` on a machine "
                "they can route to, or Prefect Cloud) and set PREFECT_API_URL to it before `trainflow run`.")
    return ("run an MLflow server the nodes reach (`mlflow server --host 0.0.0.0 "
            "--backend-store-uri postgresql://... --artifacts-destination s3://...`) and set MLFLOW_TRACKING_URI.")


# ------------------------------------------------------------------------------------------ acting
def check_cluster(environ: Mapping[str, str] | None = None) -> list[NodeReport]:
    """Probe every alive node and raise `PreflightError` with every problem found; bounded by
    $TRAINFLOW_PREFLIGHT_TIMEOUT_S (default 10 s). Returns the node reports when all is well."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    environ = os.environ if environ is None else environ
    timeout = float(environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
    deadline = time.monotonic() + timeout
    locations = _write_probes(storage_locations(environ))
    services = service_urls(environ)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        probe = ray.remote(num_cpus=0, max_retries=0)(_report)
        refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(locations, services): n for n in nodes}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=max(0.1, deadline - time.monotonic()))
        reports, silent = [], {}
        for ref in ready:
            node = refs[ref]
            try:
                reports.append(ray.get(ref, timeout=1))
            except Exception as exc:  # noqa: BLE001 - a node that cannot run the probe is a finding
                silent[node["NodeManagerAddress"]] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        for ref in pending:
            ray.cancel(ref, force=True)
            silent[refs[ref]["NodeManagerAddress"]] = f"no answer within {timeout:g}s"
        driver = _report((), (), ray.util.get_node_ip_address())
        problems = judge(driver, reports, silent, locations, services, _temporary_folder(environ))
    finally:
        _remove_probes(locations)
    if problems:
        raise PreflightError(problems)
    return reports


def _temporary_folder(environ: Mapping[str, str]) -> str | None:
    """The driver's working folder when it is a Ray job's `working_dir` (Ray deletes it with the job)."""
    from trainflow.cluster.runtime_env import job_runtime_env

    return os.getcwd() if job_runtime_env(environ).get("working_dir") else None


def storage_locations(environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(variable, root, what the root is when the variable is unset or "") for every storage the
    driver and the workers share."""
    from trainflow.defaults import default_tracking_uri, sqlite_folder
    from trainflow.distributors.checkpoint import STORAGE_ENV, storage_root
    from trainflow.distributors.torch_storage import ARTIFACTS_ENV, artifact_root

    def unset(variable: str, meaning: str) -> str:
        return "" if environ.get(variable) else meaning

    out = [(STORAGE_ENV, storage_root(), unset(STORAGE_ENV, "a temp folder")),
           (ARTIFACTS_ENV, os.path.abspath(artifact_root()), unset(ARTIFACTS_ENV, ".trainflow/artifacts"))]
    folder = sqlite_folder(environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri())
    if folder:  # the registry file itself: read by scoring workers
        out.append(("MLFLOW_TRACKING_URI", folder, unset("MLFLOW_TRACKING_URI", "a SQLite file in the working folder")))
    return out


def service_urls(environ: Mapping[str, str]) -> list[Service]:
    out = []
    if environ.get("PREFECT_API_URL"):
        out.append(Service("PREFECT_API_URL", environ["PREFECT_API_URL"]))
    uri = environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")):
        out.append(Service("MLFLOW_TRACKING_URI", uri))
    return out


def _write_probes(roots: list[tuple[str, str, str]]) -> list[Location]:
    from trainflow.distributors.torch_storage import resolve_location

    token = uuid.uuid4().hex
    out = []
    for variable, root, default in roots:
        where = resolve_location(root).child(".trainflow-preflight", f"{token}.probe")
        loc = Location(variable, root, where.path, token, default)
        try:
            where.fs.create_dir(where.path.rsplit("/", 1)[0], recursive=True)
            with where.fs.open_output_stream(where.path) as fh:
                fh.write(token.encode())
        except OSError as exc:
            raise PreflightError([Problem(f"{loc.label} is {root!r}, and the driver cannot write there ({exc}).",
                                          f"make {root!r} writable, or set {variable} elsewhere.")]) from None
        out.append(loc)
    return out


def _remove_probes(locations: list[Location]) -> None:
    from trainflow.distributors.torch_storage import resolve_location

    for loc in locations:
        try:
            resolve_location(loc.root).fs.delete_file(loc.probe)
        except OSError:
            pass


def _report(locations: Sequence[Location], services: Sequence[Service], address: str | None = None) -> NodeReport:
    """Runs on each node (and once on the driver, with nothing to probe)."""
    import platform

    import ray

    from trainflow.distributors.torch_storage import resolve_location

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    unreadable = {}
    for loc in locations:
        try:
            where = resolve_location(loc.root)
            with where.fs.open_input_stream(loc.probe) as fh:
                if fh.read().decode() != loc.token:
                    unreadable[loc.variable] = "it holds another file"
        except (OSError, ValueError) as exc:
            unreadable[loc.variable] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    unreachable = {}
    for svc in services:
        parts = urlsplit(svc.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((parts.hostname or "", port), timeout=3):
                pass
        except OSError as exc:
            unreachable[svc.name] = str(exc) or type(exc).__name__
    python = ".".join(platform.python_version_tuple()[:2])
    ctx = ray.get_runtime_context() if address is None else None
    return NodeReport(ctx.get_node_id() if ctx else "driver", address or ray.util.get_node_ip_address(),
                      python, versions, unreadable, unreachable)
