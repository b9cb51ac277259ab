"""A session-like handle on a SQL database, so `session.table('TRAINING_DATA')` ports unchanged."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from trainflow.data.sql import SqlSource, normalise_database
from trainflow.defaults import DEFAULT_DATABASE



@dataclass(frozen=True)
class SqlFrame:
    """A lazy table or query (like a Snowpark DataFrame): nothing runs until rows are asked for."""

    source: SqlSource

    @property
    def columns(self) -> list[str]:
        return list(self.source.schema().names)

    @property
    def schema(self) -> pa.Schema:
        return self.source.schema()

    def count(self) -> int:
        return self.source.count_rows()

    def limit(self, n: int) -> SqlFrame:
        return SqlFrame(SqlSource(self.source.database, self.source.table, self.source.query,
                                  self.source.offset, n))

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_batches(list(self.source.iter_batches()), schema=self.source.schema())

    def to_pandas(self) -> pd.DataFrame:
        return self.to_arrow().to_pandas()


@dataclass(frozen=True)
class Session:
    """What `connect()` returns: `.table(name)` and `.sql(query)` on one database."""

    database: str

    def table(self, name: str) -> SqlFrame:
        return SqlFrame(SqlSource(self.database, table=name))

    def sql(self, query: str) -> SqlFrame:
        return SqlFrame(SqlSource(self.database, query=query))


def connect(target: str = DEFAULT_DATABASE) -> Session:
    """Open a DuckDB file (`path`, `duckdb:///path`) or SQLite database (`sqlite:///path`).

    Nothing is opened yet: the file is checked when rows are read, so a session travels to workers.
    """
    return Session(normalise_database(str(target)))
