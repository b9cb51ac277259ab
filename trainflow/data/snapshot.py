"""One read of a source whose row order is not defined, kept as Arrow blocks in Ray's object store.

Re-running a query per shard (LIMIT/OFFSET with no ORDER BY) is not a partition of its result: a
GROUP BY, DISTINCT, join, `random()` or parallel scan can hand two workers the same rows and skip
others. So such a source is read once, by one Ray task that streams its result into object-store
blocks, and everything after (validation, the eval split, fit, evaluate, the registered input
example) reads those blocks. Shards are row ranges over the blocks: disjoint and complete.

The blocks live in Ray's object store, so every node of the cluster can read them, and they spill to
disk under memory pressure. The process that took the snapshot owns them; they go when the last
reference does (`release()` drops them at the end of a pipeline run). `SnapshotInfo` describes what
was read (origin, rows, blocks) for lineage.
"""
from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from trainflow.data.sources import (
    DEFAULT_BATCH_ROWS,
    Source,
    _require_columns,
    row_ranges,
)
from trainflow.errors import ConfigError, ResourceError

BLOCK_BYTES = 64 * 1024 * 1024  # a block is cut once it holds this many bytes of Arrow data


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot holds, without its rows: for logs and lineage."""

    origin: str
    rows: int
    blocks: int
    nbytes: int
    seconds: float
    source: dict[str, Any] = field(default_factory=dict)  # the read source's origin(), for lineage
    # unique per read: a retried task makes objects with the same ids, perhaps of other rows
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class _Slice:
    block: int
    start: int
    stop: int


class SnapshotSource(Source):
    """Rows read once from `origin` into object-store blocks; shards are slices of those blocks."""

    stable = True

    def __init__(self, refs: Sequence[Any], rows: Sequence[int], schema: pa.Schema, info: SnapshotInfo,
                 slices: Sequence[_Slice] | None = None):
        self.refs = list(refs)
        self.rows = list(rows)
        self._schema = schema
        self.info = info
        self.slices = list(slices) if slices is not None else [
            _Slice(i, 0, n) for i, n in enumerate(self.rows) if n
        ]

    def _read_schema(self) -> pa.Schema:
        return self._schema

    def count_rows(self) -> int:
        return sum(s.stop - s.start for s in self.slices)

    def split(self, n: int, equal: bool = False) -> list[Source]:
        bounds, pos = [], 0
        for s in self.slices:
            bounds.append((pos, s))
            pos += s.stop - s.start
        shards = []
        for start, stop in row_ranges(pos, n, equal):
            chosen = []
            for offset, s in bounds:
                lo, hi = max(start, offset), min(stop, offset + s.stop - s.start)
                if lo < hi:
                    chosen.append(_Slice(s.block, s.start + lo - offset, s.start + hi - offset))
            shards.append(SnapshotSource(self.refs, self.rows, self._schema, self.info, chosen))
        return shards

    def _read_batches(self, columns, batch_rows):
        import ray

        if columns is not None:
            _require_columns(self._schema, columns, self.describe())
        empty = True
        for s in self.slices:
            table = ray.get(self.refs[s.block])  # a local object-store read: zero-copy
            if s.start or s.stop < table.num_rows:
                table = table.slice(s.start, s.stop - s.start)
            if columns is not None:
                table = table.select(list(columns))
            for batch in table.to_batches(max_chunksize=batch_rows):
                empty = False
                yield batch
        if empty:
            schema = self._schema if columns is None else pa.schema([self._schema.field(c) for c in columns])
            yield pa.RecordBatch.from_pylist([], schema=schema)

    def describe(self) -> str:
        return self.info.origin

    def origin(self) -> dict[str, Any]:
        return {**self.info.source, "read_once": True}

    def identity(self) -> str | None:
        return f"snapshot:{self.info.uid}:" + repr([(self.refs[s.block].hex(), s.start, s.stop) for s in self.slices])

    def release(self) -> None:
        """Drop this handle's references to the blocks (the object store frees them with the last)."""
        self.refs, self.slices = [], []


def take_snapshot(source: Source, timeout_s: float | None = None) -> SnapshotSource:
    """Read `source` once, in one Ray task, into object-store blocks; no rows pass through here."""
    import ray

    from trainflow.cluster import ensure_cluster
    from trainflow.waiting import bounded_get, task_timeout_s

    ensure_cluster()
    _refuse_ray_client(source)
    timeout = task_timeout_s() if timeout_s is None else timeout_s
    start = time.monotonic()
    stream = _reader().remote(source, BLOCK_BYTES)
    refs = []
    while True:
        ready, _ = ray.wait([stream], timeout=max(0.0, timeout - (time.monotonic() - start)))
        if not ready:
            ray.cancel(stream, force=True)
            raise ResourceError(
                f"Gave up after {timeout:g}s reading the {source.describe()} into the run's snapshot. "
                "The read needs one free CPU: the cluster's CPUs may be held by other work (see "
                "`ray status`); free them, add nodes, or raise TRAINFLOW_TASK_TIMEOUT_S."
            )
        try:
            refs.append(next(stream))
        except StopIteration:
            break
    meta = bounded_get(refs.pop(), f"the snapshot of the {source.describe()}", timeout_s=timeout)
    info = SnapshotInfo(source.describe(), sum(meta["rows"]), len(meta["rows"]), meta["nbytes"],
                        time.monotonic() - start, source.origin())
    return SnapshotSource(refs, meta["rows"], meta["schema"], info)


def _read_blocks(source: Source, block_bytes: int):
    """Streaming Ray task: yield the source's rows as Arrow tables, then their row counts + schema.

    An error raised while reading becomes the stream's last item, which the caller raises.
    """
    rows, nbytes, pending, size, schema = [], 0, [], 0, None
    for batch in source.iter_batches(None, DEFAULT_BATCH_ROWS):
        schema = schema or batch.schema
        if batch.num_rows:
            pending.append(batch)
            size += batch.nbytes
        if size >= block_bytes:
            rows.append(sum(b.num_rows for b in pending))
            nbytes += size
            yield pa.Table.from_batches(pending, schema=schema)
            pending, size = [], 0
    if pending:
        rows.append(sum(b.num_rows for b in pending))
        nbytes += size
        yield pa.Table.from_batches(pending, schema=schema)
    yield {"rows": rows, "nbytes": nbytes, "schema": schema or source.schema()}


def _refuse_ray_client(source: Source) -> None:
    """The snapshot is a streaming Ray task, which Ray Client (ray://) cannot run: say so up front."""
    from ray.util.client import ray as client

    if client.is_connected():
        raise ConfigError(
            f"The {source.describe()} is read once into a snapshot by a streaming Ray task, which Ray "
            "Client (RAY_ADDRESS=ray://...) does not support. Run the driver on a node of the cluster "
            "(RAY_ADDRESS=<head>:6379) or submit it with `ray job submit`; or read a table or Parquet "
            "files, which need no snapshot."
        )


@functools.cache
def _reader():
    import ray

    # max_retries=0: re-running a query without a defined order after a lost node could hand back
    # other rows under the same snapshot; a lost snapshot is an error, not a silent change of data.
    return ray.remote(num_cpus=1, max_retries=0, num_returns="streaming")(_read_blocks)
