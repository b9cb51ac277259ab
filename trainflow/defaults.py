"""Defaults the library and the job spec share, each written once."""
from __future__ import annotations

import os

# Survive worker loss by default: a checkpoint every 50 rounds, up to 3 restarts of the worker group.
DEFAULT_CHECKPOINT_EVERY = 50
DEFAULT_MAX_RESTARTS = 3
# The embedded warehouse `make demo` builds and specs name by default.
DEFAULT_DATABASE = "data/warehouse.duckdb"


def default_tracking_uri() -> str:
    """The MLflow store when MLFLOW_TRACKING_URI is unset: a SQLite file in the working dir (the
    ./mlruns file store is refused by MLflow 3.17 for the registry, so it is never the default)."""
    return f"sqlite:///{os.path.abspath('mlflow.db')}"


def sqlite_folder(uri: str) -> str | None:
    """The absolute folder of a `sqlite:///path` MLflow store's file; None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return os.path.dirname(os.path.abspath(uri.removeprefix("sqlite:///").split("?", 1)[0]))
