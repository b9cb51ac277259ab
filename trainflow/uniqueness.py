"""Exact `unique` checks over a whole table, without bringing a column to one process.

Validation runs batch by batch, so pandera's own `unique` would only see duplicates inside one batch.
Instead, every shard hashes each row's key (the unique column, or the columns of a table-level
`unique = [...]`) into one of `parts` partitions and hands each partition its keys with their global
row numbers; a partition then compares its keys exactly (the hash only routes: equal values always
meet in the same partition). Each process holds only its share of the key columns.

Pure pandas: the Ray tasks that run these functions live in the load step.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa_pd

from trainflow.validation import MAX_EXAMPLES, plain_value

ROW = "__trainflow_row__"


@dataclass(frozen=True)
class UniqueKey:
    """One uniqueness rule: a column's `unique=True`, or a table-level `unique=[columns]`."""

    columns: tuple[str, ...]
    table_level: bool

    @property
    def check(self) -> str:  # pandera's names for the two checks, so reports read the same
        return "multiple_fields_uniqueness" if self.table_level else "field_uniqueness"


def unique_keys(schema: pa_pd.DataFrameSchema) -> list[UniqueKey]:
    keys = [UniqueKey((name,), False) for name, column in schema.columns.items() if column.unique]
    table = schema.unique
    if table:
        keys.append(UniqueKey(tuple([table] if isinstance(table, str) else table), True))
    return keys


def without_uniqueness(schema: pa_pd.DataFrameSchema) -> pa_pd.DataFrameSchema:
    """The schema for the row-wise batch checks: uniqueness is checked globally instead."""
    out = schema.update_columns({name: {"unique": False} for name, c in schema.columns.items() if c.unique}) \
        if any(c.unique for c in schema.columns.values()) else copy.deepcopy(schema)
    out.unique = None
    return out


def partition_keys(frame: pd.DataFrame, keys: Sequence[UniqueKey], parts: int,
                   row_offset: int) -> list[list[pd.DataFrame]]:
    """`out[p][k]`: the rows of `frame` whose key `k` hashes to partition `p` (key columns + row)."""
    rows = pd.RangeIndex(row_offset, row_offset + len(frame))
    out: list[list[pd.DataFrame]] = [[] for _ in range(parts)]
    for key in keys:
        values = frame[list(key.columns)].reset_index(drop=True)
        values[ROW] = rows
        bucket = pd.util.hash_pandas_object(values[list(key.columns)], index=False).to_numpy() % parts
        for p in range(parts):
            out[p].append(values[bucket == p])
    return out


def duplicate_records(keys: Sequence[UniqueKey], pieces: Sequence[list[pd.DataFrame]]) -> list[dict]:
    """Failure records (validation's shape) for the keys of one partition; `pieces[s][k]` comes from
    shard `s`."""
    records = []
    for k, key in enumerate(keys):
        frames = [piece[k] for piece in pieces if len(piece[k])]
        if not frames:
            continue
        values = pd.concat(frames, ignore_index=True)
        dup = values[values.duplicated(subset=list(key.columns), keep=False)].sort_values(ROW)
        if dup.empty:
            continue
        examples = [{"row": int(row[ROW]), **{c: plain_value(row[c]) for c in key.columns}}
                    for _, row in dup.head(MAX_EXAMPLES).iterrows()]
        records.append({"column": None if key.table_level else key.columns[0], "check": key.check,
                        "failure_count": len(dup), "examples": examples})
    return records
