"""What a run on an existing Ray cluster takes with it: this project's code and the settings workers read.

The nodes of a real cluster have the third-party pins but not this project. So when trainflow
connects to `RAY_ADDRESS`, the trainflow package, the top-level `flows` and `tasks` packages and the
modules a spec names (`trainer.train_func`, a schema class) travel as Ray `py_modules`, and every
setting a worker reads (Prefect and MLflow URLs, checkpoint and artifact storage, scratch) as
`env_vars`. Ray merges this job-level environment into every task and actor, so the warm pool's own
`env_vars` add to it. The embedded local cluster needs none of it: its workers run this checkout.
"""
from __future__ import annotations

import importlib.util
import os
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainflow.defaults import default_tracking_uri
from trainflow.distributors.torch_storage import DEFAULT_ARTIFACT_LOCATION

SHIP_CODE_ENV = "TRAINFLOW_SHIP_CODE"  # "0": the nodes' image has this project installed
SHIP_MODULES_ENV = "TRAINFLOW_SHIP_MODULES"  # more modules to ship, comma-separated
SHIP_ENV_ENV = "TRAINFLOW_SHIP_ENV"  # more environment variables to pass on, comma-separated

PROJECT_MODULES = ("trainflow", "flows", "tasks")
# Read by code on workers. Paths among them are made absolute: a worker's working folder is not the driver's.
SETTINGS = ("PREFECT_API_URL", "PREFECT_API_KEY", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
            "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
            "MLFLOW_S3_ENDPOINT_URL")
PATH_SETTINGS = ("TRAINFLOW_STORAGE", "TRAINFLOW_ARTIFACTS", "TRAINFLOW_SCRATCH")
_EXCLUDES = ["__pycache__", "*.pyc", ".pytest_cache"]

_requested: list[str] = []


def ship_modules(names: Iterable[str]) -> None:
    """Ask for these modules (e.g. what a spec names) to travel with the next connection to a cluster."""
    for name in names:
        if name and name not in _requested:
            _requested.append(name)


@dataclass(frozen=True)
class Shipment:
    """The job-level runtime environment for a remote cluster: code folders/files and settings."""

    py_modules: tuple[str, ...] = ()
    env_vars: Mapping[str, str] = field(default_factory=dict)

    def runtime_env(self, job_env: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """For `ray.init`. Inside a Ray job (`ray job submit`), `job_env` is the job's own runtime
        environment: what it already sets wins (Ray refuses to merge two values for one key)."""
        job_env = job_env or {}
        env: dict[str, Any] = {}
        if self.py_modules and "py_modules" not in job_env:
            env["py_modules"] = list(self.py_modules)
            if "excludes" not in job_env:
                env["excludes"] = list(_EXCLUDES)
        given = job_env.get("env_vars") or {}
        env_vars = {k: v for k, v in self.env_vars.items() if k not in given}
        if env_vars:
            env["env_vars"] = env_vars
        return env

    def describe(self) -> str:
        code = ", ".join(Path(p).name for p in self.py_modules) or "no code (TRAINFLOW_SHIP_CODE=0)"
        return f"ships {code}; settings {', '.join(sorted(self.env_vars)) or 'none'}"


def plan_shipment(environ: Mapping[str, str] | None = None, modules: Iterable[str] = ()) -> Shipment:
    """Decide what a connection to a remote cluster ships: the project's packages plus `modules`
    (and $TRAINFLOW_SHIP_MODULES) that live outside site-packages, and the settings set here."""
    environ = os.environ if environ is None else environ
    env_vars = {name: environ[name] for name in SETTINGS if environ.get(name)}
    for name in PATH_SETTINGS:
        value = environ.get(name)
        if value:
            env_vars[name] = value if "://" in value else os.path.abspath(os.path.expanduser(value))
    # trainflow's own defaults are relative to the driver's working folder: workers get them resolved
    env_vars.setdefault("MLFLOW_TRACKING_URI", default_tracking_uri())
    env_vars.setdefault("TRAINFLOW_ARTIFACTS", os.path.abspath(DEFAULT_ARTIFACT_LOCATION))
    env_vars.update({n: environ[n] for n in _names(environ.get(SHIP_ENV_ENV, "")) if environ.get(n)})
    if environ.get(SHIP_CODE_ENV, "1").strip().lower() in ("0", "false", "no"):
        return Shipment((), env_vars)
    wanted = [*PROJECT_MODULES, *_requested, *modules, *_names(environ.get(SHIP_MODULES_ENV, ""))]
    paths: list[str] = []
    for name in wanted:
        path = module_path(name, installed_too=name in PROJECT_MODULES)
        if path is not None and path not in paths:
            paths.append(path)
    return Shipment(tuple(paths), env_vars)


def module_path(name: str, installed_too: bool = False) -> str | None:
    """The folder (a package) or file (a module) holding the top-level module of `name`; None when it
    is not found, or installed (site-packages, the standard library: the nodes have their own pins)
    unless `installed_too` (this project: the nodes do not have it)."""
    top = name.split(":", 1)[0].split(".", 1)[0]
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin in ("built-in", "frozen"):
        return None
    if spec.submodule_search_locations:
        where = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin:
        where = Path(spec.origin)
    else:
        return None
    installed = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    if not installed_too and any(where.resolve().is_relative_to(Path(r).resolve()) for r in installed):
        return None
    return str(where)


def job_runtime_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The runtime environment `ray job submit` gave this driver ({} outside a Ray job)."""
    import json

    raw = (os.environ if environ is None else environ).get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    return dict(json.loads(raw).get("runtime_env") or {}) if raw else {}


def spec_modules(spec: Any) -> list[str]:
    """The modules a job spec names: its schema class and its `trainer.train_func`."""
    refs = [getattr(spec, "schema_", None), getattr(getattr(spec, "trainer", None), "train_func", None)]
    return [r.split(":", 1)[0] for r in refs if isinstance(r, str)]


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]
