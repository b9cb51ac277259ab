"""DataConnector: a lazy, picklable description of training data with Arrow outputs."""
from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from trainflow.data.sources import (
    DEFAULT_BATCH_ROWS,
    ArrowSource,
    ParquetSource,
    RayDatasetSource,
    Source,
)
from trainflow.data.sql import SqlSource, normalise_database
from trainflow.data.warehouse import DEFAULT_DATABASE, SqlFrame
from trainflow.errors import DataError


class DataConnector:
    """Same role as Snowflake's DataConnector: where the rows are, not the rows themselves.

    Creating one reads nothing; pickling one is cheap (in-memory tables travel as one object-store
    reference), so connectors move freely to Ray workers and Prefect tasks.
    """

    def __init__(self, source: Source):
        self._source = source

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_dataframe(cls, df: Any, ingestor_class: Any = None, **kwargs: Any) -> DataConnector:
        """A session table/query, pandas DataFrame, pyarrow Table or Ray Dataset.

        Snowflake's `ingestor_class` and extra keyword arguments are accepted and ignored (trainflow
        reads Arrow itself), with a warning that says so."""
        _ignored("from_dataframe", ingestor_class, kwargs)
        if isinstance(df, DataConnector):
            return cls(df._source)
        if isinstance(df, SqlFrame):
            return cls(df.source)
        if isinstance(df, pd.DataFrame):
            return cls(ArrowSource(pa.Table.from_pandas(df, preserve_index=False)))
        if isinstance(df, pa.Table):
            return cls(ArrowSource(df))
        if isinstance(df, pa.RecordBatch):
            return cls(ArrowSource(pa.Table.from_batches([df])))
        if _is_ray_dataset(df):
            return cls.from_ray_dataset(df)
        raise DataError(
            f"DataConnector.from_dataframe got {type(df).__name__}: pass session.table(...)/session.sql(...) "
            "from trainflow.data.connect, a pandas DataFrame, a pyarrow Table or a Ray Dataset."
        )

    @classmethod
    def from_parquet(cls, path: str, columns: Sequence[str] | None = None) -> DataConnector:
        """A Parquet file, folder, glob or URI (s3://, gs://, file://)."""
        return cls(ParquetSource(str(path), tuple(columns) if columns else None))

    @classmethod
    def from_sql(cls, query: str, database: str = DEFAULT_DATABASE, *, session: Any = None,
                 ingestor_class: Any = None, **kwargs: Any) -> DataConnector:
        """A SQL query on a DuckDB file (default the embedded warehouse) or `sqlite:///` database; with
        Snowflake's `session=` (a trainflow session), on that session's database."""
        _ignored("from_sql", ingestor_class, kwargs)
        target = session.database if session is not None else normalise_database(database)
        return cls(SqlSource(target, query=query))

    @classmethod
    def from_sources(cls, session: Any, sources: Sequence[Any], ingestor_class: Any = None,
                     **kwargs: Any) -> DataConnector:
        """Several sources read as one, in order (Snowflake's from_sources): session frames, table
        names of `session`, Parquet paths, frames or connectors."""
        from trainflow.data.sources import ConcatSource

        _ignored("from_sources", ingestor_class, kwargs)
        if not sources:
            raise DataError("from_sources needs at least one source.")
        parts = []
        for src in sources:
            if isinstance(src, str):
                parts.append(cls.from_parquet(src) if src.endswith(".parquet") or "/" in src
                             else cls.from_dataframe(session.table(src)))
            else:
                parts.append(cls.from_dataframe(src))
        return cls(ConcatSource([p.source for p in parts], " + ".join(p.describe() for p in parts), read_once=True))

    @classmethod
    def from_ray_dataset(cls, ds: Any) -> DataConnector:
        return cls(RayDatasetSource(ds))

    # ---------------------------------------------------------------- description
    @property
    def source(self) -> Source:
        return self._source

    @property
    def schema(self) -> pa.Schema:
        return self._source.schema()

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def count_rows(self) -> int:
        return self._source.count_rows()

    def describe(self) -> str:
        return self._source.describe()

    def identity(self) -> str | None:
        """See Source.identity: names these rows as they are now, or None."""
        return self._source.identity()

    def origin(self) -> dict[str, Any]:
        """See Source.origin: where these rows come from (files, database and query), for lineage."""
        return self._source.origin()

    def is_stable(self) -> bool:
        """Whether reading twice gives the same rows in the same order (then it splits in place)."""
        return self._source.is_stable()

    def snapshot(self) -> DataConnector:
        """This data as one fixed set of rows: itself when stable (tables, Parquet, in-memory
        frames), else read once into Ray's object store (queries, views, lazy Ray Datasets).

        Split, validate, train and predict on the snapshot, so that every step sees the same rows.
        """
        source = self._source.snapshot()
        return self if source is self._source else DataConnector(source)

    def pinned(self) -> DataConnector:
        """This data as one fixed set of rows that names itself (`identity()`): itself for Parquet
        and in-memory data, else a snapshot. Repeated fits on a pinned connector (a tuner's trials)
        see the same rows and reuse what the workers built from them (distributors/matrix.py)."""
        fixed = self.snapshot()
        if fixed.identity() is not None:
            return fixed
        from trainflow.data.snapshot import take_snapshot

        return DataConnector(take_snapshot(fixed._source))

    def split(self, n: int, equal: bool = False) -> list[DataConnector]:
        """`n` disjoint connectors that together cover every row, in order (for workers).

        A source without a defined row order is read once (`snapshot()`) and that read is split.
        """
        if n < 1:
            raise DataError(f"Cannot split data into {n} shards: use 1 or more.")
        return [DataConnector(s) for s in self._source.snapshot().split(n, equal)]

    # ---------------------------------------------------------------- outputs
    def iter_batches(
        self, columns: Sequence[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        """Stream Arrow record batches with only `columns` read."""
        return self._source.iter_batches(columns, batch_rows)

    def to_arrow(self, columns: Sequence[str] | None = None, limit: int | None = None) -> pa.Table:
        batches, rows = [], 0
        for batch in self.iter_batches(columns):
            if limit is not None and rows + batch.num_rows >= limit:
                batches.append(batch.slice(0, limit - rows))
                break
            batches.append(batch)
            rows += batch.num_rows
        if not batches:
            empty = self.schema.empty_table()
            return empty if columns is None else empty.select(list(columns))
        return pa.Table.from_batches(batches)

    def to_pandas(self, limit: int | None = None) -> pd.DataFrame:
        """The rows as pandas (all of them, or the first `limit`), numpy-backed dtypes."""
        return self.to_arrow(limit=limit).to_pandas()

    def to_torch_dataset(self, *, batch_size: int | None = None, shuffle: bool = False,
                         drop_last_batch: bool = True, seed: int | None = None,
                         columns: Sequence[str] | None = None):
        """A torch IterableDataset of dicts column → tensor (see trainflow/data/torch.py for shapes).

        `batch_size=None` yields single rows (scalar columns `(1,)`); an int yields batches with
        scalar columns as `(B, 1)`. `shuffle` uses `seed` (drawn once when None), a new order per
        epoch. `drop_last_batch` drops a final batch shorter than `batch_size`.
        """
        from trainflow.data.torch import TorchDataset

        return TorchDataset(self, batch_size=batch_size, shuffle=shuffle, drop_last_batch=drop_last_batch,
                            seed=seed, columns=columns)

    def to_ray_dataset(self):
        """A Ray Dataset; shards are read by Ray tasks, never through the driver."""
        import ray
        import ray.data

        from trainflow.cluster import ensure_cluster

        ensure_cluster()
        src = self._source
        if isinstance(src, RayDatasetSource):
            return src.dataset
        if isinstance(src, ParquetSource) and src.pieces is None:
            return ray.data.read_parquet(src.location, columns=list(src.columns) if src.columns else None)
        src = src.snapshot()
        n = max(1, min(64, int(ray.cluster_resources().get("CPU", 1)) * 2))
        parts = src.split(n) if src.count_rows() >= n else [src]
        reader = _remote_reader()
        return ray.data.from_arrow_refs([reader.remote(p) for p in parts])

    def __repr__(self) -> str:
        return f"DataConnector({self.describe()})"


def _is_ray_dataset(obj: Any) -> bool:
    return type(obj).__module__.startswith("ray.data") and hasattr(obj, "iter_batches")


@functools.cache
def _remote_reader():
    """The Ray task that reads one shard, defined on first use so importing needs no Ray."""
    import ray

    @ray.remote(num_cpus=1)
    def read_shard(source: Source) -> pa.Table:
        return pa.Table.from_batches(list(source.iter_batches()), schema=source.schema())

    return read_shard


def _ignored(where: str, ingestor_class: Any, kwargs: dict[str, Any]) -> None:
    names = (["ingestor_class"] if ingestor_class is not None else []) + sorted(kwargs)
    if names:
        import warnings

        warnings.warn(f"DataConnector.{where}: {', '.join(names)} ignored: trainflow reads Arrow from the source "
                      "itself (Snowflake's ingestors have no counterpart here).", stacklevel=3)
