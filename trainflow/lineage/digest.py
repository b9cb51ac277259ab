"""A digest of a table's logical values that does not depend on how the rows were read.

Each row is hashed from its values in a canonical form (numbers as float64 with -0.0 = 0.0 and 64-bit
integers kept exact, text whatever its Arrow encoding, times as UTC seconds + nanoseconds in any unit),
and the row hashes are summed modulo 2**64, plainly and after a bit mix (a second, independent sum).
A sum does not care about row order, so shards, batches, block sampling or a re-sharded rerun give the
same digest; duplicated rows still count twice. Workers compute `batch_digest` per batch and the driver
only adds up the small `ContentDigest`s.
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

_KEY = "trainflow-rows-1"  # pandas' hash keys are 16 characters
_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class ContentDigest:
    """Row count and two order-independent sums of row hashes over the named columns."""

    columns: tuple[str, ...]
    rows: int = 0
    sums: tuple[int, int] = (0, 0)

    def __add__(self, other: ContentDigest) -> ContentDigest:
        if other.columns != self.columns:
            raise ValueError(f"digests of different columns: {self.columns} and {other.columns}")
        return ContentDigest(self.columns, self.rows + other.rows,
                             tuple((a + b) & _MASK for a, b in zip(self.sums, other.sums, strict=True)))

    @property
    def hexdigest(self) -> str:
        """What lineage records: changes when any value, row count or the column set changes."""
        text = "|".join([*self.columns, str(self.rows), *(f"{s:016x}" for s in self.sums)])
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def total(columns: Sequence[str], parts: Iterable[ContentDigest]) -> ContentDigest:
    out = ContentDigest(tuple(sorted(columns)))
    for part in parts:
        out = out + part
    return out


def batch_digest(batch: pa.RecordBatch | pa.Table, columns: Sequence[str]) -> ContentDigest:
    """The digest of one batch's rows over `columns` (their order does not matter)."""
    names = tuple(sorted(columns))
    if batch.num_rows == 0:
        return ContentDigest(names)
    hashes = np.zeros(batch.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrap-around is the point: everything modulo 2**64
        for name in names:
            hashes = hashes * _PRIME ^ _column_hashes(batch.column(batch.schema.get_field_index(name)))
        mixed = (hashes ^ (hashes >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9)
        sums = (int(hashes.sum(dtype=np.uint64)), int(mixed.sum(dtype=np.uint64)))
    return ContentDigest(names, batch.num_rows, sums)


_PRIME = np.uint64(0x100000001B3)
_TIME_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _hash(values: np.ndarray) -> np.ndarray:
    from pandas.util import hash_array

    return hash_array(values, hash_key=_KEY, categorize=False)


def _column_hashes(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One hash per row of the column's logical values, whatever Arrow type carried them."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pat.is_dictionary(array.type):
        array = array.dictionary_decode()
    t = array.type
    if pat.is_boolean(t) or pat.is_integer(t) or pat.is_floating(t) or pat.is_decimal(t):
        values = pc.cast(array, pa.float64(), safe=False).to_numpy(zero_copy_only=False) + 0.0  # -0.0 -> 0.0
        out = _hash(values)  # nulls are NaN
        if pat.is_integer(t) and t.bit_width == 64:
            # a 64-bit integer that float64 cannot hold exactly (ids above 2**53): mix in what it lost
            exact = pc.fill_null(array, 0).to_numpy()
            with np.errstate(invalid="ignore"):  # values past the integer's range: any residue will do
                lost = exact - np.where(np.isnan(values), 0.0, values).astype(exact.dtype)
            odd = lost != 0
            if odd.any():
                out[odd] ^= _hash(lost[odd].astype(np.int64)) * _PRIME
        return out
    if pat.is_string(t) or pat.is_large_string(t) or getattr(pat, "is_string_view", lambda _: False)(t):
        return _hash(np.asarray(pc.cast(array, pa.large_string()).to_pylist(), dtype=object))
    if pat.is_timestamp(t) or pat.is_duration(t):
        return _time_hashes(array, _TIME_UNITS[t.unit])
    if pat.is_date(t):
        days = pc.cast(pc.cast(array, pa.date32(), safe=False), pa.int32())
        return _with_nulls(array, _hash(pc.fill_null(days, 0).to_numpy().astype(np.int64)))
    return _hash(np.asarray([repr(v) for v in array.to_pylist()], dtype=object))


def _time_hashes(array: pa.Array, per_second: int) -> np.ndarray:
    """Instants (UTC) and durations as (whole seconds, nanoseconds) whatever their unit: no cast to
    nanoseconds, which overflows for dates past 2262."""
    ticks = pc.fill_null(pc.cast(array, pa.int64()), 0).to_numpy()
    seconds, rest = np.divmod(ticks, per_second)
    out = _hash(seconds) ^ (_hash(rest * (1_000_000_000 // per_second)) * _PRIME)
    return _with_nulls(array, out)


@functools.cache
def _null_hash() -> np.uint64:
    return _hash(np.array([np.nan]))[0]  # a null hashes as a missing number does


def _with_nulls(array: pa.Array, hashes: np.ndarray) -> np.ndarray:
    if array.null_count:
        hashes[np.asarray(pc.is_null(array))] = _null_hash()
    return hashes
