"""Where rows come from: small picklable descriptions that read themselves as Arrow record batches.

A source never holds rows it did not receive from the user. `split(n)` cuts a source into `n`
contiguous, disjoint sources (by Parquet row group / row range, SQL offset range, object-store slice)
so each Ray worker reads its own part directly; concatenating the shards in order gives the source.
SQL sources live in `trainflow.data.sql`, the read-once snapshot in `trainflow.data.snapshot`.
"""
from __future__ import annotations

import glob as _glob
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainflow.data.types import normalise_batch, normalise_schema
from trainflow.errors import DataError, DataSourceNotFound
from trainflow.secrets import mask_text

DEFAULT_BATCH_ROWS = 65_536


def row_ranges(total: int, n: int, equal: bool) -> list[tuple[int, int]]:
    """`n` contiguous [start, stop) ranges covering `total` rows; `equal` drops the remainder."""
    if equal:
        size = total // n
        return [(i * size, (i + 1) * size) for i in range(n)]
    return [(total * i // n, total * (i + 1) // n) for i in range(n)]


class Source:
    """Interface every source implements.

    Subclasses read (`_read_schema`, `_read_batches`); the base applies the type rules of
    `trainflow.data.types` there, so every consumer (validation, fit, predict, to_pandas) sees the
    same column types.
    """

    #: True when reading the same rows twice gives the same rows in the same order, so `split` can
    #: cut the source in place. A query without a defined order (GROUP BY, DISTINCT, joins, random())
    #: is not stable: it is read once into a snapshot (trainflow.data.snapshot) before it is split.
    stable: bool = True

    def schema(self) -> pa.Schema:
        return normalise_schema(self._read_schema())

    def iter_batches(
        self, columns: Sequence[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        where = self.describe()
        for batch in self._read_batches(columns, batch_rows):
            yield normalise_batch(batch, where)

    def is_stable(self) -> bool:
        return self.stable

    def snapshot(self) -> Source:
        """This source if it is stable, else its rows read once (see trainflow.data.snapshot)."""
        return self if self.is_stable() else self._snapshot()

    def _snapshot(self) -> Source:
        from trainflow.data.snapshot import take_snapshot

        return take_snapshot(self)

    def release(self) -> None:
        """Let go of rows this source holds on the cluster's behalf (snapshots); others hold none."""

    def count_rows(self) -> int:
        raise NotImplementedError

    def identity(self) -> str | None:
        """A name for exactly these rows as they are now (files with their size and modification
        time, object-store blocks), or None when that cannot be told cheaply. Equal identities mean
        equal values, so a warm worker may reuse what it built from them (distributors/matrix.py)."""
        return None

    def split(self, n: int, equal: bool = False) -> list[Source]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def origin(self) -> dict[str, Any]:
        """Where these rows come from, for lineage: files with size and modification time, or the
        database and table/query text. Secrets in locations are masked; no rows are read."""
        return {"kind": type(self).__name__, "description": self.describe()}

    def _read_schema(self) -> pa.Schema:
        raise NotImplementedError

    def _read_batches(self, columns: Sequence[str] | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError


# --------------------------------------------------------------------------------------- Parquet
@dataclass(frozen=True)
class _Piece:
    path: str
    row_group: int
    start: int  # row offset inside the row group
    stop: int


@dataclass
class ParquetSource(Source):
    """Parquet file, folder, glob or URI (s3://, gs://, file://), read with pyarrow."""

    location: str
    columns: tuple[str, ...] | None = None
    pieces: tuple[_Piece, ...] | None = None  # set on shards; None = every row group of every file
    _files: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    def _fs_and_files(self) -> tuple[pafs.FileSystem, list[str]]:
        loc = self.location
        if "://" in loc and not loc.startswith("file://"):
            try:
                fs, root = pafs.FileSystem.from_uri(loc)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
                raise DataError(f"Cannot open Parquet location {mask_text(loc)!r}: {mask_text(str(exc))}. "
                                "Check the URI (credentials with '/' or '@' must be URL-encoded, or given "
                                "through the environment).") from None
        else:
            fs, root = pafs.LocalFileSystem(), os.path.abspath(loc.removeprefix("file://"))
        if self._files is not None:
            return fs, list(self._files)
        if any(ch in root for ch in "*?["):
            if isinstance(fs, pafs.LocalFileSystem):
                files = sorted(_glob.glob(root, recursive=True))
            else:
                base = root.split("*")[0].rsplit("/", 1)[0]
                import fnmatch

                sel = fs.get_file_info(pafs.FileSelector(base, recursive=True))
                files = sorted(i.path for i in sel if i.is_file and fnmatch.fnmatch(i.path, root))
        else:
            info = fs.get_file_info(root)
            if info.type == pafs.FileType.NotFound:
                raise DataSourceNotFound(
                    f"Parquet path {mask_text(self.location)!r} does not exist. Check the path (relative paths are "
                    f"read from {os.getcwd()!r}) or pass a URI such as s3://bucket/prefix/."
                )
            if info.type == pafs.FileType.Directory:
                sel = fs.get_file_info(pafs.FileSelector(root, recursive=True))
                files = sorted(
                    i.path for i in sel
                    if i.is_file and not os.path.basename(i.path).startswith(("_", "."))
                )
            else:
                files = [root]
        if not files:
            raise DataSourceNotFound(
                f"No Parquet files match {mask_text(self.location)!r}. Check the folder or glob pattern."
            )
        object.__setattr__(self, "_files", tuple(files))
        return fs, files

    def _open(self, fs: pafs.FileSystem, path: str) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(fs.open_input_file(path))
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"Cannot read Parquet file {mask_text(path)!r}: {mask_text(str(exc))}") from exc

    def _all_pieces(self) -> list[_Piece]:
        if self.pieces is not None:
            return list(self.pieces)
        fs, files = self._fs_and_files()
        out = []
        for path in files:
            meta = self._open(fs, path).metadata
            for rg in range(meta.num_row_groups):
                out.append(_Piece(path, rg, 0, meta.row_group(rg).num_rows))
        return out

    def _read_schema(self) -> pa.Schema:
        fs, files = self._fs_and_files()
        schema = self._open(fs, files[0]).schema_arrow
        if self.columns:
            _require_columns(schema, self.columns, self.describe())
            schema = pa.schema([schema.field(c) for c in self.columns])
        return schema

    def count_rows(self) -> int:
        return sum(p.stop - p.start for p in self._all_pieces())

    def split(self, n: int, equal: bool = False) -> list[Source]:
        pieces = self._all_pieces()
        bounds, pos = [], 0
        for p in pieces:
            bounds.append((pos, p))
            pos += p.stop - p.start
        shards = []
        for start, stop in row_ranges(pos, n, equal):
            chosen = []
            for offset, p in bounds:
                lo, hi = max(start, offset), min(stop, offset + p.stop - p.start)
                if lo < hi:
                    chosen.append(_Piece(p.path, p.row_group, p.start + lo - offset, p.start + hi - offset))
            shards.append(ParquetSource(self.location, self.columns, tuple(chosen), self._files))
        return shards

    def _read_batches(self, columns, batch_rows):
        columns = list(columns) if columns is not None else (list(self.columns) if self.columns else None)
        fs, _ = self._fs_and_files()
        handles: dict[str, pq.ParquetFile] = {}
        for p in self._all_pieces():
            if p.path not in handles:
                handles = {p.path: self._open(fs, p.path)}  # keep one file open at a time
            table = handles[p.path].read_row_group(p.row_group, columns=columns)
            if p.start or p.stop < table.num_rows:
                table = table.slice(p.start, p.stop - p.start)
            yield from table.to_batches(max_chunksize=batch_rows)

    def describe(self) -> str:
        return f"Parquet {mask_text(self.location)!r}"

    def origin(self) -> dict[str, Any]:
        fs, files = self._fs_and_files()  # a shard names its files in its pieces; no footer is read
        files = sorted({p.path for p in self.pieces}) if self.pieces is not None else files
        scheme = "" if isinstance(fs, pafs.LocalFileSystem) else self.location.split("://", 1)[0] + "://"
        return {"kind": "parquet", "location": mask_text(self.location),
                "files": [{"uri": mask_text(scheme + i.path), "size": i.size,
                           "mtime": _iso(i.mtime_ns) if i.mtime_ns is not None else None}
                          for i in fs.get_file_info(files)]}

    def identity(self) -> str | None:
        fs, _ = self._fs_and_files()
        pieces = self._all_pieces()
        files = sorted({p.path for p in pieces})
        stats = []
        for info in fs.get_file_info(files):
            if info.mtime_ns is None or info.size is None:
                return None  # a store that does not say when a file changed
            stats.append((info.path, info.size, info.mtime_ns))
        return "parquet:" + repr((stats, [(p.path, p.row_group, p.start, p.stop) for p in pieces], self.columns))


# ---------------------------------------------------------------------------------- in-memory
class ArrowSource(Source):
    """A pandas DataFrame / pyarrow Table the user already holds.

    When pickled (to reach a Ray worker or a Prefect task) the table goes once into Ray's object store
    and only its reference travels; shards are slices of that one object.
    """

    def __init__(self, table: pa.Table | None = None, ref=None, start: int = 0, stop: int | None = None,
                 uid: str | None = None):
        self._table = table
        self._ref = ref
        self.start = start
        self.stop = stop
        self._uid = uid  # names this table once it is in the object store (see identity)

    def _full(self) -> pa.Table:
        if self._table is None:
            import ray

            self._table = ray.get(self._ref)
        return self._table

    def _sliced(self) -> pa.Table:
        table = self._full()
        stop = table.num_rows if self.stop is None else self.stop
        return table.slice(self.start, stop - self.start)

    def __getstate__(self):
        if self._ref is None:
            import ray

            from trainflow.cluster import ensure_cluster

            ensure_cluster()
            self._ref, self._uid = ray.put(self._table), uuid.uuid4().hex
        return {"ref": self._ref, "start": self.start, "stop": self.stop, "uid": self._uid}

    def __setstate__(self, state):
        self._table = None
        self._ref, self.start, self.stop = state["ref"], state["start"], state["stop"]
        self._uid = state.get("uid")

    def _read_schema(self) -> pa.Schema:
        return self._full().schema

    def count_rows(self) -> int:
        stop = self._full().num_rows if self.stop is None else self.stop
        return stop - self.start

    def split(self, n: int, equal: bool = False) -> list[Source]:
        self.__getstate__()  # make sure shards share one object-store copy
        return [
            ArrowSource(self._table, self._ref, self.start + a, self.start + b, self._uid)
            for a, b in row_ranges(self.count_rows(), n, equal)
        ]

    def _read_batches(self, columns, batch_rows):
        table = self._sliced()
        if columns is not None:
            _require_columns(table.schema, columns, self.describe())
            table = table.select(list(columns))
        yield from table.to_batches(max_chunksize=batch_rows)

    def describe(self) -> str:
        return "in-memory table"

    def origin(self) -> dict[str, Any]:
        return {"kind": "in-memory", "rows": self.count_rows()}

    def identity(self) -> str | None:
        # an object-store object never changes; the uid, made when it was put, tells apart the objects
        # a retried task puts under the same id
        return f"arrow:{self._uid}:{self._ref.hex()}:{self.start}:{self.stop}" if self._uid else None


# --------------------------------------------------------------------------------- Ray Dataset
class RayDatasetSource(Source):
    """A Ray Dataset; shards come from `Dataset.split`, which keeps blocks in the object store."""

    def __init__(self, dataset):
        self.dataset = dataset

    def is_stable(self) -> bool:
        """A lazy Dataset re-executes its plan on every read; a materialized one reads its blocks."""
        from ray.data.dataset import MaterializedDataset

        return isinstance(self.dataset, MaterializedDataset)

    def _snapshot(self) -> Source:
        return RayDatasetSource(self.dataset.materialize())

    def _read_schema(self) -> pa.Schema:
        schema = self.dataset.schema()
        base = getattr(schema, "base_schema", schema)
        if isinstance(base, pa.Schema):
            return base
        return pa.schema(list(zip(schema.names, [pa.from_numpy_dtype(t) for t in schema.types])))

    def count_rows(self) -> int:
        return self.dataset.count()

    def split(self, n: int, equal: bool = False) -> list[Source]:
        return [RayDatasetSource(part) for part in self.dataset.split(n, equal=equal)]

    def _read_batches(self, columns, batch_rows):
        ds = self.dataset.select_columns(list(columns)) if columns is not None else self.dataset
        for batch in ds.iter_batches(batch_size=batch_rows, batch_format="pyarrow"):
            yield from batch.to_batches()

    def describe(self) -> str:
        return "Ray Dataset"


def _iso(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat()


def _require_columns(schema: pa.Schema, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise DataError(
            f"Column(s) {missing} not found in {where}. Available columns: {schema.names}."
        )


# ------------------------------------------------------------------------------- block samples
class ConcatSource(Source):
    """Several sources read one after another (used for block-sampled train/eval splits).

    `split(n)` hands each shard a contiguous group of whole parts, so shards stay disjoint and in order.
    """

    def __init__(self, parts: Sequence[Source], label: str, origin: dict[str, Any] | None = None,
                 read_once: bool = False):
        self.parts = list(parts)
        self.label = label
        self._origin = origin  # the whole source the parts were cut from
        # a few large parts (DataConnector.from_sources) split evenly only after one read into blocks
        self.read_once = read_once

    def is_stable(self) -> bool:
        return not self.read_once and all(p.is_stable() for p in self.parts)

    def release(self) -> None:
        for part in self.parts:
            part.release()

    def _read_schema(self) -> pa.Schema:
        if not self.parts:
            raise DataError(f"{self.label} has no rows.")
        return self.parts[0].schema()

    def count_rows(self) -> int:
        return sum(p.count_rows() for p in self.parts)

    def split(self, n: int, equal: bool = False) -> list[Source]:
        if equal:
            raise DataError("Equal-sized shards of a sampled split are not supported; use equal=False.")
        groups: list[list[Source]] = [[] for _ in range(n)]
        total = max(1, self.count_rows())
        start = 0
        for part in self.parts:  # a part goes to the shard its first row falls in
            groups[min(n - 1, start * n // total)].append(part)
            start += part.count_rows()
        return [ConcatSource(group, self.label, self._origin) for group in groups]

    def _read_batches(self, columns, batch_rows):
        want = None
        for part in self.parts:
            for batch in part.iter_batches(columns, batch_rows):
                want = want or batch.schema
                if batch.schema != want:  # the same columns from sources that type them differently
                    batch = _conform(batch, want, part.describe(), self.parts[0].describe())
                yield batch

    def identity(self) -> str | None:
        parts = [p.identity() for p in self.parts]
        return None if None in parts else "concat:" + repr(parts)

    def describe(self) -> str:
        return self.label

    def origin(self) -> dict[str, Any]:
        return self._origin if self._origin is not None else {"kind": "parts",
                                                              "parts": [p.origin() for p in self.parts]}


def _conform(batch: pa.RecordBatch, schema: pa.Schema, where: str, first: str) -> pa.RecordBatch:
    if batch.schema.names != schema.names:
        raise DataError(f"The {where} has columns {batch.schema.names}, but the {first} has {schema.names}: "
                        "sources read together need the same columns in the same order (select them).")
    try:
        return batch.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise DataError(f"The {where} types its columns differently from the {first} ({exc}); CAST them to "
                        "the same types.") from None


def sample_blocks(source: Source, fraction: float, seed: int = 0,
                  blocks: int = 200) -> tuple[ConcatSource, ConcatSource]:
    """Split rows into (rest, sample) by randomly chosen contiguous blocks (~`fraction` of the rows).

    Block sampling keeps reads sequential and works on every source; with 200 blocks a table sorted by
    some column still gives an eval set drawn from its whole range.
    """
    import random

    total = source.count_rows()
    parts = source.split(max(1, min(blocks, total)))
    order = list(range(len(parts)))
    random.Random(seed).shuffle(order)
    chosen = set(order[: max(1, round(fraction * len(parts)))]) if len(parts) > 1 else set()
    where = source.describe()
    origin = source.origin()
    rest = ConcatSource([p for i, p in enumerate(parts) if i not in chosen], f"{where} (train part)", origin)
    sample = ConcatSource([p for i, p in enumerate(parts) if i in chosen], f"{where} (eval part)", origin)
    return rest, sample
