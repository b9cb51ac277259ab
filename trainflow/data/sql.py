"""Tables and queries in a DuckDB file or SQLite database, read-only, as Arrow batches.

A base table reads the same rows in the same order every time (DuckDB keeps insertion order, SQLite
scans by rowid), so it is split in place by row-offset ranges. A query or a view has no defined row
order: re-running it per shard with LIMIT/OFFSET gives overlapping and missing rows, so such a
source is not `stable` and is read once into a snapshot before anything splits it.
"""
from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from trainflow.data.sources import Source, row_ranges
from trainflow.errors import DataError, DataSourceNotFound
from trainflow.secrets import mask_text


@dataclass(frozen=True)
class SqlSource(Source):
    """A table or query in a DuckDB file or SQLite database, read-only, in row-offset ranges."""

    database: str  # normalised: "duckdb:<abs path>" or "sqlite:<abs path>"
    table: str | None = None
    query: str | None = None
    offset: int = 0
    limit: int | None = None

    @property
    def kind(self) -> str:
        return self.database.partition(":")[0]

    @property
    def path(self) -> str:
        return self.database.partition(":")[2]

    def is_stable(self) -> bool:
        """Only a base table (not a view, not a query) reads back in the same order."""
        if self.table is None:
            return False
        if self.kind == "duckdb":
            sql = ("SELECT table_type FROM information_schema.tables "
                   "WHERE lower(table_name) = lower(?) ORDER BY table_type LIMIT 1")
        else:
            sql = "SELECT CASE type WHEN 'table' THEN 'BASE TABLE' ELSE type END FROM sqlite_master " \
                  "WHERE name = ? COLLATE NOCASE LIMIT 1"
        conn = self._connect()
        try:
            row = conn.execute(sql, [self.table]).fetchone()
        finally:
            conn.close()
        if row is None:
            raise self._not_found()
        return row[0] == "BASE TABLE"

    # ------------------------------------------------------------------ connection
    def _relation(self) -> str:
        if self.table is not None:
            return quote_identifier(self.table)
        return f"({self.query}) AS q"

    def _connect(self):
        if not os.path.exists(self.path):
            raise DataSourceNotFound(
                f"Database file {self.path!r} does not exist. Build the demo warehouse with "
                "`python -m trainflow.data.demo` or point `database` at an existing DuckDB/SQLite file."
            )
        if self.kind == "duckdb":
            import duckdb

            return duckdb.connect(self.path, read_only=True)
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        conn.create_function("trainflow_hash", -1, row_hash, deterministic=True)  # frames' sample/random_split
        return conn

    def _execute(self, conn, sql: str):
        try:
            return conn.execute(sql)
        except Exception as exc:
            conn.close()
            raise self._translate(exc) from exc

    def _not_found(self) -> DataSourceNotFound:
        return DataSourceNotFound(
            f"Table {self.table!r} not found in {self.path!r}. Check the name (tables are "
            "matched case-insensitively in DuckDB) or build the demo warehouse with "
            "`python -m trainflow.data.demo`."
        )

    def _translate(self, exc: Exception) -> DataError:
        text = str(exc)
        if self.table is not None and ("does not exist" in text or "no such table" in text):
            return self._not_found()
        return DataError(f"Query on {self.path!r} failed: {mask_text(text)}")

    def _window(self) -> str:
        if self.limit is None and not self.offset:
            return ""
        limit = self.limit if self.limit is not None else -1
        return f" LIMIT {int(limit)} OFFSET {int(self.offset)}"

    # ------------------------------------------------------------------ Source
    def _read_schema(self) -> pa.Schema:
        if self.kind == "sqlite":
            conn = self._connect()
            try:
                return _sqlite_schema(conn, self._relation(), self)
            finally:
                conn.close()
        return next(self._read_batches(None, 1, window=" LIMIT 0")).schema

    def count_rows(self) -> int:
        conn = self._connect()
        try:
            total = self._execute(conn, f"SELECT count(*) FROM {self._relation()}").fetchone()[0]
        finally:
            conn.close()
        total = max(total - self.offset, 0)
        return total if self.limit is None else min(total, self.limit)

    def split(self, n: int, equal: bool = False) -> list[Source]:
        if not self.is_stable():
            raise DataError(
                f"The {self.describe()} has no defined row order, so it cannot be split in place: "
                "take DataConnector.snapshot() first (the pipeline and the estimators do)."
            )
        return [SqlSource(self.database, self.table, self.query, self.offset + a, b - a)
                for a, b in row_ranges(self.count_rows(), n, equal)]

    def _read_batches(self, columns, batch_rows, window: str | None = None) -> Iterator[pa.RecordBatch]:
        cols = ", ".join(quote_identifier(c) for c in columns) if columns else "*"
        sql = f"SELECT {cols} FROM {self._relation()}{self._window() if window is None else window}"
        conn = self._connect()
        try:
            if self.kind == "duckdb":
                try:
                    reader = conn.sql(sql).to_arrow_reader(batch_rows)
                except Exception as exc:
                    raise self._translate(exc) from exc
                empty = True
                for batch in reader:
                    empty = False
                    yield batch
                if empty:
                    yield pa.RecordBatch.from_pylist([], schema=reader.schema)
            else:
                schema = _sqlite_schema(conn, self._relation(), self)
                if columns:
                    schema = pa.schema([schema.field(c) for c in columns])
                yield from _sqlite_batches(self._execute(conn, sql), schema, batch_rows)
        finally:
            conn.close()

    def describe(self) -> str:
        what = f"table {self.table!r}" if self.table is not None else "query"
        return f"{what} in {self.path!r}"

    def origin(self) -> dict[str, Any]:
        stat = os.stat(self.path) if os.path.exists(self.path) else None
        where = {"table": self.table} if self.table is not None else {"query": mask_text(self.query or "")}
        return {"kind": self.kind, "database": mask_text(self.path), **where,
                "size": stat.st_size if stat else None}


# ----------------------------------------------------------------------------------- SQLite types
def _declared_type(decl: str) -> pa.DataType | None:
    """SQLite's affinity rules on a declared column type; None when the data must say (no type,
    dates, which SQLite stores as text or numbers)."""
    decl = decl.upper()
    if not decl or any(word in decl for word in ("DATE", "TIME")):
        return None
    if "INT" in decl:
        return pa.int64()
    if any(word in decl for word in ("CHAR", "CLOB", "TEXT")):
        return pa.string()
    if "BLOB" in decl:
        return pa.binary()
    if any(word in decl for word in ("REAL", "FLOA", "DOUB")):
        return pa.float64()
    if "BOOL" in decl:
        return pa.bool_()
    scale = re.search(r"\(\s*\d+\s*,\s*(\d+)\s*\)", decl)  # NUMERIC(p, s) / DECIMAL(p, s)
    return pa.int64() if scale and int(scale.group(1)) == 0 else pa.float64()


_STORED = {"integer": pa.int64(), "real": pa.float64(), "text": pa.string(), "blob": pa.binary()}


def _sqlite_schema(conn: sqlite3.Connection, relation: str, source: SqlSource) -> pa.Schema:
    """Column types from the declared types (a temporary view gives them for a query too); columns
    without one (expressions) are typed by the values they hold in all rows, not by the first row."""
    view = "trainflow_typed"
    try:
        conn.execute(f"CREATE TEMP VIEW IF NOT EXISTS {view} AS SELECT * FROM {relation}")
        info = conn.execute(f"PRAGMA table_info({view})").fetchall()
        conn.execute(f"DROP VIEW {view}")
    except sqlite3.Error as exc:
        raise source._translate(exc) from exc
    names = [row[1] for row in info]
    types = {row[1]: _declared_type(row[2] or "") for row in info}
    untyped = [n for n in names if types[n] is None]
    if untyped:
        probes = ", ".join(f"group_concat(DISTINCT typeof({quote_identifier(n)}))" for n in untyped)
        found = source._execute(conn, f"SELECT {probes} FROM {relation}").fetchone()
        for name, kinds in zip(untyped, found):
            stored = {k for k in (kinds or "").split(",") if k and k != "null"}
            if stored <= {"integer", "real"} and "real" in stored:
                types[name] = pa.float64()
            elif len(stored) == 1:
                types[name] = _STORED[stored.pop()]
            elif stored:
                raise DataError(
                    f"Column {name!r} of the {source.describe()} holds values of several types "
                    f"({', '.join(sorted(stored))}); CAST it in the query to the type you mean."
                )
            else:
                types[name] = pa.null()
    return pa.schema([pa.field(n, types[n]) for n in names])


def _sqlite_batches(cur: sqlite3.Cursor, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """SQLite rows → Arrow batches of `schema`."""
    empty = True
    while rows := cur.fetchmany(batch_rows):
        empty = False
        arrays = []
        for field, values in zip(schema, zip(*rows)):
            try:
                arrays.append(pa.array(values, type=field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise DataError(
                    f"Column {field.name!r} is declared {field.type} but holds a value that is not "
                    f"({exc}); CAST it in the query or fix the column's values."
                ) from None
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    if empty:
        yield schema.empty_table().to_batches()[0] if schema.names else pa.RecordBatch.from_pylist([])


def row_hash(seed: int, *values: Any) -> int:
    """SQLite's `trainflow_hash`: a stable 63-bit hash of a row's values (not Python's salted hash())."""
    digest = hashlib.blake2b(repr((seed, values)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


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
            path = rest.removeprefix("/")  # ///rel/path, ////abs/path (SQLAlchemy style)
            return f"{kind}:{os.path.abspath(path)}"
    if "://" in target:
        raise DataError(
            f"Unsupported database {mask_text(target)!r}: use a DuckDB file path, duckdb:///path or sqlite:///path."
        )
    kind = "sqlite" if target.endswith((".sqlite", ".sqlite3", ".db")) else "duckdb"
    return f"{kind}:{os.path.abspath(target)}"
