"""Shard → training matrix in a warm worker: built once per data, columns and binning, then reused.

A second fit with other parameters on the same data (a tuner's trials, a refit) gets the matrix the
worker already read, converted and binned, instead of reading its shard again. The key names all a
matrix depends on: every shard of the fit (bins are agreed across workers, so another worker's rows
count too) and this rank, the columns and label, the category lists, and the framework's binning
parameters. Data that cannot name itself (a SQL query, a Ray Dataset: `Source.identity()` is None) is
never cached. Each worker process keeps `TRAINFLOW_MATRIX_CACHE` matrices (default 2: the last fit's
training and eval matrices; 0 turns reuse off), dropped before it builds matrices for other data, so
a worker never holds two fits' data at once; they go with the worker when it is idle for long.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainflow.data.connector import DataConnector

CACHE_ENV = "TRAINFLOW_MATRIX_CACHE"
DEFAULT_ENTRIES = 2


@dataclass(frozen=True)
class MatrixKey:
    """Everything a worker's matrix depends on."""

    data: str  # digest of every shard's identity and this rank
    columns: tuple[str, ...]
    label: str | None
    categories: str  # digest of the category lists
    binning: tuple  # the framework's parameters that shape the matrix


def matrix_key(shards: Sequence[DataConnector], rank: int, columns: Sequence[str], label: str | None,
               categories: Mapping[str, Sequence], binning: tuple) -> MatrixKey | None:
    """The key of rank `rank`'s matrix over `shards`, or None when the data cannot be named."""
    if _capacity() == 0:
        return None
    identities = [shard.identity() for shard in shards]
    if None in identities:
        return None
    data = hashlib.sha256(repr((identities, rank)).encode()).hexdigest()
    cats = hashlib.sha256(repr(sorted((k, list(v)) for k, v in categories.items())).encode()).hexdigest()
    return MatrixKey(data, tuple(columns), label, cats, binning)


def matrix_keys(train_shards: Sequence[DataConnector], eval_shards: Sequence[DataConnector] | None, rank: int,
                columns: Sequence[str], label: str | None, categories: Mapping[str, Sequence],
                binning: tuple) -> tuple[MatrixKey | None, MatrixKey | None]:
    """Keys of rank `rank`'s train and eval matrices; the eval matrix takes the train one's bins, so
    its key names the train key too (None where the data cannot be named or there is no eval set)."""
    train = matrix_key(train_shards, rank, columns, label, categories, binning)
    if eval_shards is None or train is None:
        return train, None
    return train, matrix_key(eval_shards, rank, columns, label, categories, (*binning, train))


class MatrixCache:
    """A process's matrices, least recently used out first."""

    def __init__(self):
        self._entries: OrderedDict[MatrixKey, Any] = OrderedDict()

    def __contains__(self, key: MatrixKey | None) -> bool:
        return key is not None and key in self._entries

    def get(self, key: MatrixKey) -> Any:
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: MatrixKey | None, matrix: Any) -> None:
        capacity = _capacity()
        if key is None or capacity == 0:
            return
        self._entries[key] = matrix
        self._entries.move_to_end(key)
        while len(self._entries) > capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


def _capacity() -> int:
    raw = os.environ.get(CACHE_ENV, "")
    try:
        return max(0, int(raw)) if raw else DEFAULT_ENTRIES
    except ValueError:
        return DEFAULT_ENTRIES


CACHE = MatrixCache()  # this worker process's
