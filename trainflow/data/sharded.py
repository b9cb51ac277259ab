"""ShardedDataConnector: data pre-split into one shard per training worker."""
from __future__ import annotations

from typing import Any

from trainflow.data.connector import DataConnector
from trainflow.errors import DataError


class ShardedDataConnector:
    """Holds the whole data; `get_shard()` inside a training function returns this rank's part.

    Shards are disjoint and cover every row; with `equal=True` each has the same row count (the
    remainder rows are dropped, as every worker must take the same number of steps).
    """

    def __init__(self, connector: DataConnector, equal: bool = False):
        self._connector = connector
        self._equal = equal

    @classmethod
    def from_dataframe(cls, df: Any, equal: bool = False, **kwargs: Any) -> ShardedDataConnector:
        return cls(DataConnector.from_dataframe(df, **kwargs), equal=equal)

    @classmethod
    def from_ray_dataset(cls, ds: Any, equal: bool = False) -> ShardedDataConnector:
        return cls(DataConnector.from_ray_dataset(ds), equal=equal)

    @classmethod
    def from_sources(cls, session: Any, sources: Any, equal: bool = False, **kwargs: Any) -> ShardedDataConnector:
        return cls(DataConnector.from_sources(session, sources, **kwargs), equal=equal)

    @classmethod
    def from_connector(cls, connector: DataConnector, equal: bool = False) -> ShardedDataConnector:
        return cls(connector, equal=equal)

    @property
    def connector(self) -> DataConnector:
        return self._connector

    def snapshot(self) -> ShardedDataConnector:
        """The same sharding over one fixed read of the data (see DataConnector.snapshot)."""
        connector = self._connector.snapshot()
        return self if connector is self._connector else ShardedDataConnector(connector, self._equal)

    def pinned(self) -> ShardedDataConnector:
        """The same sharding over pinned rows (see DataConnector.pinned)."""
        connector = self._connector.pinned()
        return self if connector is self._connector else ShardedDataConnector(connector, self._equal)

    def shards(self, world_size: int) -> list[DataConnector]:
        return self._connector.split(world_size, equal=self._equal)

    def get_shard(self) -> DataConnector:
        """This worker's shard (call inside a distributed training function)."""
        from trainflow.data.rank import current_rank_and_world

        if not self._connector.is_stable():
            raise DataError(
                f"get_shard() on the {self._connector.describe()}: it has no defined row order, so each "
                "worker would read different rows. Pass it to PyTorchDistributor.run(dataset_map=...), "
                "which reads it once, or call .snapshot() on the driver first."
            )
        rank, world = current_rank_and_world()
        return self.shards(world)[rank]

    def __repr__(self) -> str:
        return f"ShardedDataConnector({self._connector.describe()}, equal={self._equal})"
