"""Where rows come from: small picklable descriptions that read themselves as Arrow record batches.

A source never holds rows it did not receive from the user. `split(n)` cuts a source into `n`
contiguous, disjoint sources (by Parquet row group / row range, SQL offset range, object-store slice)
so each Ray worker reads its own part directly; concatenating the shards in order gives the source.
"""
from __future__ import annotations

import glob as _glob
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainflow.errors import DataError, DataSourceNotFound
from trainflow.secrets import mask_text

DEFAULT_BATCH_ROWS = 65_536


def _ranges(total: int, n: int, equal: bool) -> list[tuple[int, int]]:
    """`n` contiguous [start, stop) ranges covering `total` rows; `equal` drops the remainder."""
    if equal:
        size = total // n
        return [(i * size, (i + 1) * size) for i in range(n)]
    return [(total * i // n, total * (i + 1) // n) for i in range(n)]


class Source:
    """Interface every source implements."""

    def schema(self) -> pa.Schema:
        raise NotImplementedError

    def count_rows(self) -> int:
        raise NotImplementedError

    def split(self, n: int, equal: bool = False) -> list[Source]:
        raise NotImplementedError

    def iter_batches(
        self, columns: Sequence[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def describe(self) -> str:
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

    def schema(self) -> pa.Schema:
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
        for start, stop in _ranges(pos, n, equal):
            chosen = []
            for offset, p in bounds:
                lo, hi = max(start, offset), min(stop, offset + p.stop - p.start)
                if lo < hi:
                    chosen.append(_Piece(p.path, p.row_group, p.start + lo - offset, p.start + hi - offset))
            shards.append(ParquetSource(self.location, self.columns, tuple(chosen), self._files))
        return shards

    def iter_batches(self, columns=None, batch_rows=DEFAULT_BATCH_ROWS):
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


# ------------------------------------------------------------------------------------------ SQL
@dataclass(frozen=True)
class SqlSource(Source):
    """A table or query in a DuckDB file or SQLite database, read-only, in row-offset ranges."""

    database: str  # normalised: "duckdb:<abs path>" or "sqlite:<abs path>"
    table: str | None = None
    query: str | None = None
    offset: int = 0
    limit: int | None = None

    @property
    def _kind_path(self) -> tuple[str, str]:
        kind, _, path = self.database.partition(":")
        return kind, path

    def _relation(self) -> str:
        if self.table is not None:
            return quote_identifier(self.table)
        return f"({self.query}) AS q"

    def _connect(self):
        kind, path = self._kind_path
        if not os.path.exists(path):
            raise DataSourceNotFound(
                f"Database file {path!r} does not exist. Build the demo warehouse with "
                "`python -m trainflow.data.demo` or point `database` at an existing DuckDB/SQLite file."
            )
        if kind == "duckdb":
            import duckdb

            return duckdb.connect(path, read_only=True)
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def _run(self, sql: str):
        conn = self._connect()
        try:
            return conn, conn.execute(sql)
        except Exception as exc:
            conn.close()
            raise self._translate(exc) from exc

    def _translate(self, exc: Exception) -> DataError:
        text = str(exc)
        if self.table is not None and ("does not exist" in text or "no such table" in text):
            return DataSourceNotFound(
                f"Table {self.table!r} not found in {self._kind_path[1]!r}. Check the name (tables are "
                "matched case-insensitively in DuckDB) or build the demo warehouse with "
                "`python -m trainflow.data.demo`."
            )
        return DataError(f"Query on {self._kind_path[1]!r} failed: {text}")

    def _window(self) -> str:
        if self.limit is None and not self.offset:
            return ""
        limit = self.limit if self.limit is not None else -1
        return f" LIMIT {int(limit)} OFFSET {int(self.offset)}"

    def schema(self) -> pa.Schema:
        # DuckDB types a LIMIT 0 result; SQLite only types values, so it needs one row.
        peek = " LIMIT 0" if self._kind_path[0] == "duckdb" else " LIMIT 1"
        return next(self._batches(None, 1, peek)).schema

    def count_rows(self) -> int:
        conn, cur = self._run(f"SELECT count(*) FROM {self._relation()}")
        try:
            total = cur.fetchone()[0]
        finally:
            conn.close()
        total = max(total - self.offset, 0)
        return total if self.limit is None else min(total, self.limit)

    def split(self, n: int, equal: bool = False) -> list[Source]:
        total = self.count_rows()
        return [
            SqlSource(self.database, self.table, self.query, self.offset + a, b - a)
            for a, b in _ranges(total, n, equal)
        ]

    def iter_batches(self, columns=None, batch_rows=DEFAULT_BATCH_ROWS):
        return self._batches(columns, batch_rows, self._window())

    def _batches(self, columns, batch_rows: int, window: str) -> Iterator[pa.RecordBatch]:
        cols = ", ".join(quote_identifier(c) for c in columns) if columns else "*"
        sql = f"SELECT {cols} FROM {self._relation()}{window}"
        if self._kind_path[0] == "duckdb":
            conn = self._connect()
            try:
                cur = conn.sql(sql)
            except Exception as exc:
                conn.close()
                raise self._translate(exc) from exc
        else:
            conn, cur = self._run(sql)
        try:
            if self._kind_path[0] == "duckdb":
                reader = cur.to_arrow_reader(batch_rows)
                empty = True
                for batch in reader:
                    empty = False
                    yield batch
                if empty:
                    yield pa.RecordBatch.from_pylist([], schema=reader.schema)
            else:
                yield from _sqlite_batches(cur, batch_rows)
        finally:
            conn.close()

    def describe(self) -> str:
        what = f"table {self.table!r}" if self.table is not None else "query"
        return f"{what} in {self._kind_path[1]!r}"


def _sqlite_batches(cur: sqlite3.Cursor, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """SQLite rows → Arrow batches; the first batch fixes the column types."""
    names = [d[0] for d in cur.description]
    schema = None
    while rows := cur.fetchmany(batch_rows):
        batch = pa.RecordBatch.from_arrays([pa.array(col) for col in zip(*rows)], names=names)
        if schema is None:
            schema = batch.schema
        elif batch.schema != schema:
            try:
                batch = batch.cast(schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(
                    f"SQLite column types change between rows ({exc}); CAST the columns in the query."
                ) from exc
        yield batch
    if schema is None:
        yield pa.RecordBatch.from_arrays([pa.array([], pa.null()) for _ in names], names=names)


def quote_identifier(name: str) -> str:
    """Quote a SQL identifier so a table/column name can never inject SQL."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise DataError(f"Invalid SQL identifier {name!r}: use a non-empty table/column name.")
    return '"' + name.replace('"', '""') + '"'


def normalise_database(target: str) -> str:
    """`data/x.duckdb`, `duckdb:///path`, `sqlite:///path` → `kind:<absolute path>`."""
    for scheme, kind in (("duckdb://", "duckdb"), ("sqlite://", "sqlite")):
        if target.startswith(scheme):
            rest = target[len(scheme):]
            path = rest[1:] if rest.startswith("/") else rest  # ///rel/path, ////abs/path (SQLAlchemy style)
            return f"{kind}:{os.path.abspath(path)}"
    if "://" in target:
        raise DataError(
            f"Unsupported database {mask_text(target)!r}: use a DuckDB file path, duckdb:///path or sqlite:///path."
        )
    kind = "sqlite" if target.endswith((".sqlite", ".sqlite3", ".db")) else "duckdb"
    return f"{kind}:{os.path.abspath(target)}"


# ---------------------------------------------------------------------------------- in-memory
class ArrowSource(Source):
    """A pandas DataFrame / pyarrow Table the user already holds.

    When pickled (to reach a Ray worker or a Prefect task) the table goes once into Ray's object store
    and only its reference travels; shards are slices of that one object.
    """

    def __init__(self, table: pa.Table | None = None, ref=None, start: int = 0, stop: int | None = None):
        self._table = table
        self._ref = ref
        self.start = start
        self.stop = stop

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
            self._ref = ray.put(self._table)
        return {"ref": self._ref, "start": self.start, "stop": self.stop}

    def __setstate__(self, state):
        self._table = None
        self._ref, self.start, self.stop = state["ref"], state["start"], state["stop"]

    def schema(self) -> pa.Schema:
        return self._full().schema

    def count_rows(self) -> int:
        stop = self._full().num_rows if self.stop is None else self.stop
        return stop - self.start

    def split(self, n: int, equal: bool = False) -> list[Source]:
        self.__getstate__()  # make sure shards share one object-store copy
        return [
            ArrowSource(self._table, self._ref, self.start + a, self.start + b)
            for a, b in _ranges(self.count_rows(), n, equal)
        ]

    def iter_batches(self, columns=None, batch_rows=DEFAULT_BATCH_ROWS):
        table = self._sliced()
        if columns is not None:
            _require_columns(table.schema, columns, self.describe())
            table = table.select(list(columns))
        yield from table.to_batches(max_chunksize=batch_rows)

    def describe(self) -> str:
        return "in-memory table"


# --------------------------------------------------------------------------------- Ray Dataset
class RayDatasetSource(Source):
    """A Ray Dataset; shards come from `Dataset.split`, which keeps blocks in the object store."""

    def __init__(self, dataset):
        self.dataset = dataset

    def schema(self) -> pa.Schema:
        schema = self.dataset.schema()
        base = getattr(schema, "base_schema", schema)
        if isinstance(base, pa.Schema):
            return base
        return pa.schema(list(zip(schema.names, [pa.from_numpy_dtype(t) for t in schema.types])))

    def count_rows(self) -> int:
        return self.dataset.count()

    def split(self, n: int, equal: bool = False) -> list[Source]:
        return [RayDatasetSource(part) for part in self.dataset.split(n, equal=equal)]

    def iter_batches(self, columns=None, batch_rows=DEFAULT_BATCH_ROWS):
        ds = self.dataset.select_columns(list(columns)) if columns is not None else self.dataset
        for batch in ds.iter_batches(batch_size=batch_rows, batch_format="pyarrow"):
            yield from batch.to_batches()

    def describe(self) -> str:
        return "Ray Dataset"


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

    def __init__(self, parts: Sequence[Source], label: str):
        self.parts = list(parts)
        self.label = label

    def schema(self) -> pa.Schema:
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
        return [ConcatSource(group, self.label) for group in groups]

    def iter_batches(self, columns=None, batch_rows=DEFAULT_BATCH_ROWS):
        for part in self.parts:
            yield from part.iter_batches(columns, batch_rows)

    def describe(self) -> str:
        return self.label


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
    rest = ConcatSource([p for i, p in enumerate(parts) if i not in chosen], f"{where} (train part)")
    sample = ConcatSource([p for i, p in enumerate(parts) if i in chosen], f"{where} (eval part)")
    return rest, sample
