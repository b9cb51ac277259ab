"""A session-like handle on a SQL database, so `session.table('TRAINING_DATA')` ports unchanged.

Its frames (trainflow.data.frame.SqlFrame) offer Snowpark's DataFrame operations, compiled to SQL.
"""
from __future__ import annotations

from dataclasses import dataclass

from trainflow.data.frame import GroupedFrame, SqlFrame, UnsupportedOperation
from trainflow.data.sql import normalise_database
from trainflow.defaults import DEFAULT_DATABASE

__all__ = ["DEFAULT_DATABASE", "GroupedFrame", "Session", "SqlFrame", "UnsupportedOperation", "connect"]


@dataclass(frozen=True)
class Session:
    """What `connect()` returns: `.table(name)` and `.sql(query)` on one database."""

    database: str

    def table(self, name: str) -> SqlFrame:
        return SqlFrame.table(self.database, name)

    def sql(self, query: str) -> SqlFrame:
        return SqlFrame.query(self.database, query)


def connect(target: str = DEFAULT_DATABASE) -> Session:
    """Open a DuckDB file (`path`, `duckdb:///path`) or SQLite database (`sqlite:///path`).

    Nothing is opened yet: the file is checked when rows are read, so a session travels to workers.
    """
    return Session(normalise_database(str(target)))
