"""Defaults the library and the job spec share, each written once."""
from __future__ import annotations

# Survive worker loss by default: a checkpoint every 50 rounds, up to 3 restarts of the worker group.
DEFAULT_CHECKPOINT_EVERY = 50
DEFAULT_MAX_RESTARTS = 3
# The embedded warehouse `make demo` builds and specs name by default.
DEFAULT_DATABASE = "data/warehouse.duckdb"
