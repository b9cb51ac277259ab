"""How a worker holds its shard while it trains: in memory, or in xgboost's external memory.

`in_memory` (the default) reads the shard into float32 chunks and bins it into a QuantileDMatrix
(about 2x the raw float32 shard at its peak). `external` streams the shard batch by batch into an
`ExtMemQuantileDMatrix` whose binned pages live in a cache folder on node-local scratch disk; xgboost
maps the pages in while it boosts, so a worker's anonymous memory stays a fraction of the shard.
Which frameworks offer which modes is the plug-in's `memory_modes`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from trainflow.errors import ConfigError

MemoryMode = Literal["in_memory", "external"]
MEMORY_MODES: tuple[str, ...] = ("in_memory", "external")
SCRATCH_ENV = "TRAINFLOW_SCRATCH"
_PREFIX = "trainflow-extmem-"


def check_memory(mode: object, accepted: tuple[str, ...], who: str) -> str:
    """`mode` if `who` (a framework) can train that way; a ConfigError listing what it can."""
    if mode not in MEMORY_MODES:
        raise ConfigError(f"memory={mode!r} is not a memory mode (accepted: {', '.join(MEMORY_MODES)}).")
    if mode not in accepted:
        raise ConfigError(f"memory={mode!r} is not available for {who} (accepted: {', '.join(accepted)}); "
                          "external memory trains with xgboost.")
    return str(mode)


def scratch_setting() -> str | None:
    """The driver's $TRAINFLOW_SCRATCH, checked, for the fit's workers (None: each worker's temp folder).
    Never object storage: xgboost maps its cache pages into memory."""
    raw = os.environ.get(SCRATCH_ENV) or None
    if raw is not None and "://" in raw:
        raise ConfigError(f"{SCRATCH_ENV}={raw!r} is a URI; the external-memory cache needs a folder on each "
                          "worker's own disk (xgboost maps it into memory). Set it to a local path, e.g. /mnt/scratch.")
    return raw


def new_cache_folder(root: str | None) -> Path:
    """A fresh cache folder for this process's fit under `root` (None: the system temp folder); first
    removes folders of processes that are gone (a worker killed mid-fit leaves its cache behind; the
    next external-memory fit on the node sweeps it)."""
    root = Path(root or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f"{_PREFIX}*"):
        pid = old.name[len(_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=root))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
