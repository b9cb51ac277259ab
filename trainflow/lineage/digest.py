"""A digest of a table's logical values that does not depend on how the rows were read.

Each row is hashed from its values in a canonical form (numbers as float64 with -0.0 = 0.0, text as
text whatever its Arrow encoding, times as UTC nanoseconds), and the row hashes are summed modulo
2**64, plainly and after a bit mix (a second, independent sum). A sum does not care about row order, so shards, batches, block sampling
or a re-sharded rerun give the same digest; duplicated rows still count twice. Workers compute
`batch_digest` per batch and the driver only adds up the small `ContentDigest`s.
"""
from __future__ import annotations

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
    import pandas as pd

    names = tuple(sorted(columns))
    if batch.num_rows == 0:
        return ContentDigest(names)
    frame = pd.DataFrame({f"c{i}": _canonical(batch.column(name)) for i, name in enumerate(names)})
    hashes = pd.util.hash_pandas_object(frame, index=False, hash_key=_KEY).to_numpy()
    with np.errstate(over="ignore"):  # wrap-around is the point: sums modulo 2**64
        mixed = (hashes ^ (hashes >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9)
        sums = (int(hashes.sum(dtype=np.uint64)), int(mixed.sum(dtype=np.uint64)))
    return ContentDigest(names, batch.num_rows, sums)


def _canonical(array: pa.Array | pa.ChunkedArray):
    """One representation per logical value, whatever the Arrow type that carried it."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pat.is_dictionary(array.type):
        array = array.dictionary_decode()
    t = array.type
    if pat.is_boolean(t) or pat.is_integer(t) or pat.is_floating(t) or pat.is_decimal(t):
        values = pc.cast(array, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        return values + 0.0  # -0.0 -> 0.0; nulls are NaN
    if pat.is_string(t) or pat.is_large_string(t) or getattr(pat, "is_string_view", lambda _: False)(t):
        return np.asarray(pc.cast(array, pa.large_string()).to_pylist(), dtype=object)
    if pat.is_timestamp(t):
        utc = array if t.tz is None else pc.cast(array, pa.timestamp(t.unit))
        return pc.cast(pc.cast(utc, pa.timestamp("ns")), pa.int64()).to_numpy(zero_copy_only=False)
    if pat.is_date(t):
        return pc.cast(pc.cast(array, pa.date32()), pa.int32()).to_numpy(zero_copy_only=False).astype(np.float64)
    return np.asarray([repr(v) for v in array.to_pylist()], dtype=object)
