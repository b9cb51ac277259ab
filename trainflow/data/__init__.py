"""Data access: connectors (lazy descriptions of rows) and the embedded SQL warehouse."""
from trainflow.data.connector import DataConnector
from trainflow.data.sharded import ShardedDataConnector
from trainflow.data.warehouse import Session, SqlFrame, connect

__all__ = ["DataConnector", "ShardedDataConnector", "Session", "SqlFrame", "connect"]
