"""How a worker holds its shard while it trains: in memory, or in xgboost's external memory.

`auto` (the default) decides per fit from the shard's raw size, the memory a worker gets and the free
scratch disk (`choose_memory`, a policy with no cluster in it). `in_memory` reads the shard into float32 chunks and bins it into a QuantileDMatrix
(about 2x the raw float32 shard at its peak). `external` streams the shard batch by batch into an
`ExtMemQuantileDMatrix` whose binned pages live in a cache folder on node-local scratch disk; xgboost
maps the pages in while it boosts, so a worker's anonymous memory stays a fraction of the shard.
Which frameworks offer which modes is the plug-in's `memory_modes`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trainflow.errors import ConfigError, ResourceError

MemoryMode = Literal["auto", "in_memory", "low", "external"]
MEMORY_MODES: tuple[str, ...] = ("auto", "in_memory", "low", "external")
# Peak anonymous memory of a worker's fit and the cache on disk, per raw float32 shard byte
# (rows x (features + 1) x 4), measured by bench/memory.py at 8M x 32 (1.85, 0.69, 0.58) with headroom.
IN_MEMORY_FACTOR = 2.0
EXTERNAL_FACTOR = 0.75
CACHE_FACTOR = 0.6
SCRATCH_ENV = "TRAINFLOW_SCRATCH"
_PREFIX = "trainflow-extmem-"


def check_memory(mode: object, accepted: tuple[str, ...], who: str) -> str:
    """`mode` if `who` (a framework) can train that way; a ConfigError listing what it can."""
    if mode not in MEMORY_MODES:
        raise ConfigError(f"memory={mode!r} is not a memory mode (accepted: {', '.join(MEMORY_MODES)}).")
    if mode != "auto" and mode not in accepted:
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


@dataclass(frozen=True)
class MemoryChoice:
    """The mode a fit's workers train in, and why (said in the flow log)."""

    mode: str
    reason: str


def choose_memory(requested: str, accepted: Sequence[str], shard_bytes: int, worker_memory: float | None,
                  scratch_free: float | None) -> MemoryChoice:
    """`auto`: in memory when ~IN_MEMORY_FACTOR x the largest shard fits the memory a worker gets, else
    external memory where the framework has it and both its memory and its cache (on `scratch_free`)
    fit; otherwise a ResourceError naming the numbers. A mode the user set is used as it is. Unknown
    memory or disk (None) is taken to fit."""
    if requested != "auto":
        return MemoryChoice(requested, "as set")
    need = IN_MEMORY_FACTOR * shard_bytes
    has = "unknown" if worker_memory is None else _size(worker_memory)
    if worker_memory is None or need <= worker_memory:
        return MemoryChoice("in_memory", f"a {_size(shard_bytes)} raw shard needs ~{_size(need)}; a worker has {has}")
    anon, disk = EXTERNAL_FACTOR * shard_bytes, CACHE_FACTOR * shard_bytes
    if "external" in accepted:
        if anon <= worker_memory and (scratch_free is None or disk <= scratch_free):
            return MemoryChoice("external", f"a {_size(shard_bytes)} raw shard needs ~{_size(need)} in memory, more "
                                            f"than a worker's {has}; from external memory ~{_size(anon)}, "
                                            f"and ~{_size(disk)} of scratch disk")
        disk_note = "" if scratch_free is None else f" and ~{_size(disk)} of scratch disk ({_size(scratch_free)} free)"
        fixes = (f"external memory needs ~{_size(anon)}{disk_note}; use more workers (each gets a smaller shard), "
                 f"nodes with more memory, or a larger TRAINFLOW_SCRATCH disk")
    else:
        fixes = "use more workers (each gets a smaller shard), nodes with more memory, or xgboost with memory: external"
    raise ResourceError(f"A worker's shard ({_size(shard_bytes)} raw float32) needs ~{_size(need)} to train in memory "
                        f"but a worker has {has}; {fixes}.")


def worker_memory(node_memory: Sequence[tuple[float, float]], cpus_per_worker: int) -> float | None:
    """The memory one worker gets: its CPUs' share of the smallest node's memory, over
    (memory bytes, CPUs) of the nodes it may run on; None when a node does not report memory."""
    shares = [memory * min(1.0, cpus_per_worker / cpus) for memory, cpus in node_memory if cpus > 0]
    if not shares or min(m for m, _ in node_memory) <= 0:
        return None
    return min(shares)


def scratch_free(root: str | None) -> float | None:
    """Free bytes on the disk of the scratch root (the driver's view: meaningful on a one-node cluster)."""
    try:
        return float(shutil.disk_usage(root or tempfile.gettempdir()).free)
    except OSError:
        return None


def _size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
