"""How a worker holds its shard while it trains (`memory=` on the estimators, `trainer.memory`).

- `in_memory` reads the shard into float32 chunks, then bins them into a QuantileDMatrix (~1.9x the raw
  float32 shard at its peak).
- `low` (xgboost) streams the shard into the QuantileDMatrix one batch at a time, read again on each of
  xgboost's passes: the same bins, ~1.2-1.3x, and faster to ingest from Parquet than holding the chunks
  (a table read in place is queried again on each pass).
- `external` (xgboost) streams it into an ExtMemQuantileDMatrix whose binned pages live in a cache folder
  on node-local scratch disk (~0.7x; boosting ~1.4x slower).
- `auto` (the default) takes the first of the plug-in's `memory_modes` (its order of preference) that fits
  the memory a worker gets and the free scratch disk (`choose_memory`, a policy with no cluster in it).
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
# (rows x (features + 1) x 4), measured by bench/memory.py at 2M and 8M x 32 (in_memory 1.85-1.93,
# low 1.18-1.28, external 0.69-0.76, cache 0.57), with headroom.
FACTORS = {"in_memory": 2.0, "low": 1.35, "external": 0.75}
CACHE_FACTOR = 0.6
SCRATCH_ENV = "TRAINFLOW_SCRATCH"
_PREFIX = "trainflow-extmem-"


def check_memory(mode: object, accepted: tuple[str, ...], who: str) -> str:
    """`mode` if `who` (a framework) can train that way; a ConfigError listing what it can."""
    if mode not in MEMORY_MODES:
        raise ConfigError(f"memory={mode!r} is not a memory mode (accepted: {', '.join(MEMORY_MODES)}).")
    if mode != "auto" and mode not in accepted:
        raise ConfigError(f"memory={mode!r} is not available for {who} (accepted: {', '.join(accepted)}); "
                          f"{frameworks_with(str(mode))}.")
    return str(mode)


def frameworks_with(mode: str) -> str:
    """Which registered frameworks train with memory `mode`, as a sentence for an error message."""
    from trainflow import frameworks

    having = []
    for name in frameworks.names():
        try:
            if mode in frameworks.get(name).memory_modes:
                having.append(name)
        except ConfigError:  # a plug-in that fails to load is reported where a spec names it
            continue
    return f"memory {mode} trains with {', '.join(having)}" if having else f"no framework trains with memory {mode}"


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
    """`auto`: the first of the framework's modes (`accepted`, in its order of preference) whose memory
    (FACTORS x the largest raw shard) fits what a worker gets, and for external memory whose cache fits
    `scratch_free`; otherwise a ResourceError naming the numbers. A mode the user set is used as it is.
    Unknown memory or disk (None) is taken to fit."""
    if requested != "auto":
        return MemoryChoice(requested, "as set")
    has = "unknown" if worker_memory is None else _size(worker_memory)
    first = accepted[0]
    for mode in accepted:
        need = FACTORS[mode] * shard_bytes
        disk = CACHE_FACTOR * shard_bytes if mode == "external" else 0.0
        if (worker_memory is None or need <= worker_memory) and (scratch_free is None or disk <= scratch_free):
            why = f"a {_size(shard_bytes)} raw shard needs ~{_size(need)}"
            if mode != first:
                why += f" ({first} ~{_size(FACTORS[first] * shard_bytes)}, more than a worker's {has})"
            elif worker_memory is not None:
                why += f"; a worker has {has}"
            return MemoryChoice(mode, why + (f", and ~{_size(disk)} of scratch disk" if disk else ""))
    needs = ", ".join(f"{m} ~{_size(FACTORS[m] * shard_bytes)}"
                      + (f" and ~{_size(CACHE_FACTOR * shard_bytes)} of scratch disk" if m == "external" else "")
                      for m in accepted)
    free = "" if scratch_free is None or "external" not in accepted else f", the scratch disk {_size(scratch_free)} free"
    fixes = "use more workers (each gets a smaller shard), nodes with more memory" + (
        ", or a larger TRAINFLOW_SCRATCH disk" if "external" in accepted else ", or xgboost (memory: external)")
    raise ResourceError(f"A worker's shard ({_size(shard_bytes)} raw float32) fits none of the memory modes "
                        f"({needs}): a worker has {has}{free}. Fixes: {fixes}.")


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
