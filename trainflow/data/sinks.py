"""Where batch scores go: Parquet parts written by the workers, and a table loaded from them.

Each scoring task writes one part, `part-<run id>-<shard>.parquet`. On a local or mounted disk it
writes a temporary name first (`.part-<run id>-<shard>.<pid>.tmp`, one per attempt) and renames it
when complete, so a killed worker leaves no half part and its retry replaces, never adds; on object
stores (s3://, gs://) an object appears only when its upload completes, so the part is written in
place. A rerun of the same run id first deletes that run's parts: it replaces its output.

A DuckDB or SQLite table sink is loaded from the parts by one process in one transaction (delete
the run id's rows, insert the parts): DuckDB allows one writing process per file, and the source
may be a table of the same file, which the scoring tasks read before the load starts.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainflow.data.sql import quote_identifier
from trainflow.errors import DataError
from trainflow.secrets import mask_text


@dataclass(frozen=True)
class PartsFolder:
    """A folder (path or URI) that holds the Parquet parts of scoring runs."""

    location: str

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        if "://" in self.location and not self.location.startswith("file://"):
            return pafs.FileSystem.from_uri(self.location)
        return pafs.LocalFileSystem(), os.path.abspath(self.location.removeprefix("file://"))

    def part_name(self, run_id: str, shard: int) -> str:
        return f"part-{run_id}-{shard:05d}.parquet"

    def _listed(self, run_id: str, parts: bool, temporary: bool) -> tuple[pafs.FileSystem, str, list[str]]:
        """(filesystem, folder, the run's complete parts and/or attempts' temporary files)."""
        fs, root = self._fs()
        info = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        run = re.escape(run_id)
        kinds = ([rf"part-{run}-\d{{5}}\.parquet"] if parts else []) + \
            ([rf"\.part-{run}-\d{{5}}\.\d+\.tmp"] if temporary else [])
        name = re.compile(rf"^({'|'.join(kinds)})$")
        return fs, root, sorted(i.path for i in info if i.is_file and name.match(os.path.basename(i.path)))

    def parts(self, run_id: str) -> list[str]:
        """Paths of the run's complete parts, in shard order."""
        return self._listed(run_id, parts=True, temporary=False)[2]

    def clear(self, run_id: str, temporary_only: bool = False) -> int:
        """Delete the run's parts and temporary files (a rerun replaces its output); with
        `temporary_only`, what killed attempts left (after every task of the run is done)."""
        fs, root, gone = self._listed(run_id, parts=not temporary_only, temporary=True)
        fs.create_dir(root, recursive=True)  # the scoring tasks write into it next
        for path in gone:
            fs.delete_file(path)
        return len(gone)

    def write(self, run_id: str, shard: int, batches: Iterator[pa.RecordBatch]) -> int:
        """One part from `batches` (none when there are no rows); returns its row count. Atomic on
        local disks (see module doc): the temporary file exists from the start of the attempt."""
        fs, root = self._fs()
        final = f"{root}/{self.part_name(run_id, shard)}"
        local = isinstance(fs, pafs.LocalFileSystem)
        path = f"{root}/.part-{run_id}-{shard:05d}.{os.getpid()}.tmp" if local else final
        rows, writer = 0, None
        try:
            with fs.open_output_stream(path) as out:
                for batch in batches:
                    writer = writer or pq.ParquetWriter(out, batch.schema)
                    writer.write_batch(batch)
                    rows += batch.num_rows
                if writer is not None:
                    writer.close()
            if writer is None:
                fs.delete_file(path)
            elif path != final:
                os.replace(path, final)
        except BaseException:
            # on an object store, closing the stream published what was written: take it back
            with contextlib.suppress(OSError):
                fs.delete_file(path)
            raise
        return rows


def staging_folder(database_path: str, run_id: str) -> PartsFolder:
    """Where a table sink's parts wait for the load: beside the database file."""
    return PartsFolder(os.path.join(os.path.dirname(os.path.abspath(database_path)), ".trainflow-scores", run_id))


def drop_staging(folder: PartsFolder) -> None:
    shutil.rmtree(folder.location, ignore_errors=True)


def load_table(database: str, table: str, parts: list[str], run_id: str, run_column: str) -> int:
    """Replace the run's rows of `table` with the parts' rows in one transaction; returns the rows."""
    kind, _, path = database.partition(":")
    if kind == "duckdb":
        return _load_duckdb(path, table, parts, run_id, run_column)
    return _load_sqlite(path, table, parts, run_id, run_column)


def _load_duckdb(path: str, table: str, parts: list[str], run_id: str, run_column: str) -> int:
    import duckdb

    try:
        con = duckdb.connect(path)
    except duckdb.Error as exc:
        error = DataError(f"Cannot open {mask_text(path)!r} to load the scores: {exc}. Another process may be "
                          "writing it (DuckDB allows one writer per file).")
        error.transient = "lock" in str(exc).lower()
        raise error from None
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            if parts:
                con.execute(f"CREATE TABLE IF NOT EXISTS {quote_identifier(table)} AS "
                            "SELECT * FROM read_parquet(?) WITH NO DATA", [parts])
            if parts or _duckdb_has(con, table):
                con.execute(f"DELETE FROM {quote_identifier(table)} WHERE {quote_identifier(run_column)} = ?", [run_id])
            if not parts:
                con.execute("COMMIT")
                return 0
            con.execute(f"INSERT INTO {quote_identifier(table)} BY NAME SELECT * FROM read_parquet(?)", [parts])
            rows = con.execute(f"SELECT count(*) FROM {quote_identifier(table)} WHERE {quote_identifier(run_column)} = ?",
                               [run_id]).fetchone()[0]
            con.execute("COMMIT")
            return int(rows)
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise DataError(f"Loading the scores into table {table!r} of {mask_text(path)!r} failed: {exc}. Nothing "
                            "was written. If the table exists with other columns, drop it or name another "
                            "sink.table.") from None
    finally:
        con.close()


def _duckdb_has(con, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [table]).fetchone()[0])


def _sqlite_type(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "INTEGER"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "REAL"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BLOB"
    return "TEXT"  # text, times (ISO), nested values (JSON)


def _load_sqlite(path: str, table: str, parts: list[str], run_id: str, run_column: str) -> int:
    import sqlite3

    con = sqlite3.connect(path, timeout=60, isolation_level=None)  # the transaction is spelled out below
    rows = 0
    try:
        con.execute("BEGIN IMMEDIATE")  # the CREATE too: a failed load leaves no new empty table
        schema = pq.read_schema(parts[0]) if parts else None
        if schema is not None:
            cols = ", ".join(f"{quote_identifier(f.name)} {_sqlite_type(f.type)}" for f in schema)
            con.execute(f"CREATE TABLE IF NOT EXISTS {quote_identifier(table)} ({cols})")
        exists = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=? COLLATE NOCASE",
                             [table]).fetchone()
        if exists:
            con.execute(f"DELETE FROM {quote_identifier(table)} WHERE {quote_identifier(run_column)} = ?", [run_id])
        for part in parts:
            pf = pq.ParquetFile(part)
            names = pf.schema_arrow.names
            sql = (f"INSERT INTO {quote_identifier(table)} ({', '.join(quote_identifier(n) for n in names)}) "
                   f"VALUES ({', '.join('?' for _ in names)})")
            for batch in pf.iter_batches(batch_size=50_000):
                values = [_sqlite_values(batch.column(i)) for i in range(batch.num_columns)]
                con.executemany(sql, zip(*values, strict=True))
                rows += batch.num_rows
        con.execute("COMMIT")
    except sqlite3.Error as exc:
        if con.in_transaction:
            con.execute("ROLLBACK")
        error = DataError(f"Loading the scores into table {table!r} of {mask_text(path)!r} failed: {exc}. Nothing "
                          "was written. If the table exists with other columns, drop it or name another sink.table.")
        error.transient = "locked" in str(exc).lower()
        raise error from None
    finally:
        con.close()
    return rows


def _sqlite_values(column: pa.Array) -> list:
    t = column.type
    if pa.types.is_nested(t):  # multiclass probabilities, lists: JSON text
        import json

        return [None if v is None else json.dumps(v) for v in column.to_pylist()]
    if pa.types.is_decimal(t):
        return [None if v is None else float(v) for v in column.to_pylist()]
    if pa.types.is_temporal(t):
        return [None if v is None else str(v) for v in column.to_pylist()]
    return column.to_pylist()
