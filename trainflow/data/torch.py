"""`DataConnector.to_torch_dataset()`: a connector's rows as a PyTorch IterableDataset of dicts.

Types and shapes (the contract, same as Snowflake's):

* Iterated directly, values are NumPy arrays, as Snowflake's dataset yields; through a ``DataLoader``
  they are tensors (the loader converts them), with the shapes below.
* `batch_size=B`: each item is a batch ``{column: array}``; a scalar (1-D) column is ``(B, 1)``, a
  fixed-size list column, or a list column whose lists in the batch all have length k, ``(B, k)``;
  other columns (strings, ragged lists) a Python list of B values.
  Iterate it directly or with ``DataLoader(ds, batch_size=None)`` to get exactly these batches.
* `batch_size=None`: each item is one row; a scalar column is ``(1,)``, so
  ``DataLoader(ds, batch_size=n)`` stacks rows into ``(n, 1)`` — the same shape as a batch above.
* ``DataLoader(ds)`` on a batched dataset (the loader's default ``batch_size=1``) stacks one batch: a
  scalar column becomes ``(1, B)``. That is what Snowflake's documented PyTorch example indexes
  (``batch[col].T`` → ``(B, 1)``, concatenated along dim 1 into ``(B, n_features)``). A loader batch of
  ``k`` dataset batches gives ``(k, B)``. This works through torch's documented extension point,
  `default_collate_fn_map`, registered for this module's batch type only.

Rows are read as Arrow record batches from the connector (only the columns needed) and converted to
arrays without a pandas round trip. `shuffle=True` visits the data in a seeded random order: the
connector is cut into windows (at most `SHUFFLE_WINDOW_ROWS` rows), the windows are visited in a random
order and rows are permuted inside each window (a full permutation when the data fits one window).
Each pass over the dataset (epoch) uses a new order derived from the seed, so runs are reproducible.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.types as pat
import torch
from torch.utils.data import IterableDataset, get_worker_info
from torch.utils.data._utils.collate import default_collate_fn_map

from trainflow.data.sources import ArrowSource
from trainflow.errors import BatchShapeError, ConfigError, DataError

SHUFFLE_WINDOW_ROWS = 65_536
ROW_MODE_CHUNK = 4096  # rows converted at once when yielding single rows


class TorchBatch(dict):
    """One batch from a TorchDataset: a plain dict of column → array (or list) with one extra fact,
    which columns were scalar (expanded from ``(B,)`` to ``(B, 1)``), so a DataLoader that stacks
    batches can stack those as ``(k, B)``."""

    def __init__(self, data: Any = (), scalar_columns: frozenset[str] = frozenset()):
        super().__init__(data)
        self.scalar_columns = scalar_columns

    def __reduce__(self):  # pickles with its attribute (DataLoader worker processes send batches)
        return (type(self), (dict(self), self.scalar_columns))


def _collate_torch_batches(batch: list[TorchBatch], *, collate_fn_map=None) -> dict[str, Any]:
    """How `default_collate` stacks `k` TorchBatches: scalar columns (B, 1) → (k, B); others (k, ...)."""
    first = batch[0]
    out: dict[str, Any] = {}
    for key in first:
        values = [b[key] for b in batch]
        if not isinstance(values[0], (np.ndarray, torch.Tensor)):
            out[key] = values
            continue
        values = [torch.as_tensor(v) for v in values]
        if key in first.scalar_columns:
            values = [v.reshape(-1) for v in values]
        sizes = {tuple(v.shape) for v in values}
        if len(sizes) > 1:
            raise BatchShapeError(
                f"DataLoader cannot stack dataset batches of different sizes {sorted(sizes)} for column "
                f"{key!r}: use drop_last_batch=True, or DataLoader(ds, batch_size=None) to take the "
                "dataset's batches as they are."
            )
        out[key] = torch.stack(values, 0)
    return out


default_collate_fn_map[TorchBatch] = _collate_torch_batches


class TorchDataset(IterableDataset):
    """A picklable IterableDataset over a DataConnector (it holds the connector, never the rows)."""

    def __init__(self, connector, *, batch_size: int | None = None, shuffle: bool = False,
                 drop_last_batch: bool = True, seed: int | None = None,
                 columns: Sequence[str] | None = None):
        if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool)
                                       or batch_size < 1):
            raise ConfigError(f"batch_size={batch_size!r} is invalid: use None (single rows) or an integer >= 1.")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ConfigError(f"seed={seed!r} is invalid: use None or an integer.")
        self._connector = connector
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.drop_last_batch = bool(drop_last_batch)
        # Drawn once here, so every copy of this dataset (DataLoader worker processes) agrees on it.
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else seed
        self.columns = list(columns) if columns is not None else None
        self._epoch = 0

    def __repr__(self) -> str:
        return (f"TorchDataset({self._connector.describe()}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last_batch={self.drop_last_batch})")

    # ----------------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch = self._epoch
        self._epoch += 1
        info = get_worker_info()
        part, parts = (info.id, info.num_workers) if info is not None else (0, 1)
        chunk = self.batch_size or ROW_MODE_CHUNK
        drop_last = self.drop_last_batch if self.batch_size is not None else False
        chunks = _exact_chunks(self._tables(epoch), chunk, drop_last)
        for i, table in enumerate(chunks):
            if i % parts != part:  # DataLoader workers take turns, so no row is seen twice
                continue
            batch = _to_arrays(table)
            if self.batch_size is not None:
                yield batch
            else:
                yield from _rows(batch, table.num_rows)

    def _tables(self, epoch: int) -> Iterator[pa.Table]:
        """The connector's rows as Arrow tables, in storage order or in the seeded shuffled order."""
        conn = self._connector
        if not self.shuffle:
            for rb in conn.iter_batches(self.columns):
                if rb.num_rows:
                    yield pa.Table.from_batches([rb])
            return
        rng = np.random.default_rng([self.seed, epoch])
        if not conn.is_stable():  # shuffled windows are splits: they need one fixed read
            conn = self._connector = conn.snapshot()
        if isinstance(conn.source, ArrowSource):  # rows already in memory: windows are slices
            batches = [rb for rb in conn.iter_batches(self.columns) if rb.num_rows]
            whole = pa.Table.from_batches(batches) if batches else None
            rows = whole.num_rows if whole is not None else 0
            n = max(1, math.ceil(rows / SHUFFLE_WINDOW_ROWS))
            windows = [(lambda a=rows * i // n, b=rows * (i + 1) // n: whole.slice(a, b - a)) for i in range(n)]
        else:  # read one window at a time: memory stays bounded by the window
            rows = conn.count_rows()
            n = max(1, math.ceil(rows / SHUFFLE_WINDOW_ROWS))
            parts = conn.split(n) if n > 1 else [conn]
            windows = [(lambda p=p: _read(p, self.columns)) for p in parts]
        if not rows:
            return
        for w in rng.permutation(len(windows)):
            table = windows[w]()
            if table is not None and table.num_rows:
                yield table.take(pa.array(rng.permutation(table.num_rows)))


def _read(conn, columns) -> pa.Table | None:
    batches = [rb for rb in conn.iter_batches(columns) if rb.num_rows]
    return pa.Table.from_batches(batches) if batches else None


def _exact_chunks(tables: Iterator[pa.Table], size: int, drop_last: bool) -> Iterator[pa.Table]:
    """Re-cut a stream of tables into tables of exactly `size` rows (the last one may be short)."""
    pending: list[pa.Table] = []
    have = 0
    for table in tables:
        pending.append(table)
        have += table.num_rows
        if have < size:
            continue
        merged = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
        start = 0
        while have - start >= size:
            yield merged.slice(start, size)
            start += size
        rest = merged.slice(start)
        pending, have = ([rest] if rest.num_rows else []), rest.num_rows
    if have and not drop_last:
        yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]


def _to_arrays(table: pa.Table) -> TorchBatch:
    out: dict[str, Any] = {}
    scalar = set()
    for name, column in zip(table.column_names, table.columns):
        value, is_scalar = _column_to_numpy(column.combine_chunks(), name)
        out[name] = value
        if is_scalar:
            scalar.add(name)
    return TorchBatch(out, frozenset(scalar))


def _column_to_numpy(col: pa.Array, name: str) -> tuple[Any, bool]:
    """(array or list, whether it is a scalar column expanded to (B, 1)). Arrays are writable copies:
    torch refuses to wrap a read-only array without a warning."""
    type_ = col.type
    if pat.is_dictionary(type_):
        col = col.dictionary_decode()
        type_ = col.type
    if pat.is_integer(type_) or pat.is_floating(type_) or pat.is_boolean(type_):
        if col.null_count:  # nulls become NaN, as in the boosting trainers
            col = col.cast(pa.float64() if not pat.is_float32(type_) else pa.float32())
        arr = col.to_numpy(zero_copy_only=False)
        return np.array(arr, copy=True).reshape(-1, 1), True
    if (pat.is_list(type_) or pat.is_large_list(type_)) and _numeric(type_.value_type) and not col.null_count:
        import pyarrow.compute as pc

        lengths = pc.list_value_length(col)
        if len(col) and pc.min(lengths).as_py() == pc.max(lengths).as_py():  # as Snowflake: (B, k)
            col = col.cast(pa.list_(type_.value_type, pc.min(lengths).as_py()))
            type_ = col.type
    if pat.is_fixed_size_list(type_) and _numeric(type_.value_type):
        width = type_.list_size
        if col.null_count:
            raise DataError(f"Column {name!r} has null lists; fill or drop them before training.")
        flat = col.flatten()
        if flat.null_count:
            flat = flat.cast(pa.float64())
        arr = flat.to_numpy(zero_copy_only=False).reshape(len(col), width)
        return np.array(arr, copy=True), False
    if pat.is_decimal(type_):
        return col.cast(pa.float64()).to_numpy(zero_copy_only=False).copy().reshape(-1, 1), True
    return col.to_pylist(), False


def _numeric(type_: pa.DataType) -> bool:
    return pat.is_integer(type_) or pat.is_floating(type_) or pat.is_boolean(type_)


def _rows(batch: TorchBatch, n: int) -> Iterator[dict[str, Any]]:
    """Single rows: scalar columns (1,), fixed-size lists (k,), other values as they are."""
    for i in range(n):
        yield {k: v[i] for k, v in batch.items()}
