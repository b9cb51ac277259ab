"""Ingestion for the boosting workers: Arrow batches of one shard → float32 feature/label chunks.

Also the driver-side checks that run from metadata before any worker starts, and the category lists
that make string features encode identically on every worker.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from trainflow.data.connector import DataConnector
from trainflow.errors import DataError
from trainflow.waiting import bounded_get


def read_shard(connector: DataConnector, input_cols: Sequence[str], label_col: str | None,
               where: str, categories: Mapping[str, Sequence] | None = None,
               ) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The worker's shard as float32 (features, label) chunks; labels checked for null/NaN here.

    Columns named in `categories` are encoded as the position of their value in that list (values
    not in it, and nulls, become NaN: missing).
    """
    return list(iter_shard(connector, input_cols, label_col, where, categories))


def iter_shard(connector: DataConnector, input_cols: Sequence[str], label_col: str | None,
               where: str, categories: Mapping[str, Sequence] | None = None,
               ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """read_shard one chunk at a time: a stream holds one batch, not the shard."""
    columns = list(input_cols) + ([label_col] if label_col else [])
    categories = categories or {}
    value_sets: dict[str, pa.Array] = {}
    for batch in connector.iter_batches(columns):
        if batch.num_rows == 0:
            continue
        features = np.empty((batch.num_rows, len(input_cols)), dtype=np.float32)
        for j, name in enumerate(input_cols):
            if name in categories:
                features[:, j] = _encode_categories(batch.column(j), name, categories[name], value_sets, where)
            else:
                features[:, j] = _column_to_numpy(batch.column(j), name)
        label = None
        if label_col:
            col = batch.column(len(input_cols))
            label = _column_to_numpy(col, label_col)
            bad = int(np.isnan(label).sum())  # nulls arrive as NaN
            if bad:
                raise DataError(
                    f"Label column {label_col!r} in {where} has {bad} null/NaN value(s). "
                    "Drop or fill those rows (e.g. filter `WHERE "
                    f"{label_col} IS NOT NULL`) before training."
                )
        yield features, label


def _column_to_numpy(col: pa.Array, name: str) -> np.ndarray:
    if pat.is_dictionary(col.type):
        col = col.dictionary_decode()
    if not (pat.is_integer(col.type) or pat.is_floating(col.type) or pat.is_boolean(col.type)):
        raise DataError(_non_numeric_message(name, col.type))
    if col.null_count:
        col = col.cast(pa.float64())  # nulls become NaN: missing values for the booster
    with np.errstate(over="ignore"):
        values = col.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    infinite = int(np.isinf(values).sum())
    if infinite:
        raise DataError(
            f"Column {name!r} has {infinite} infinite value(s) or value(s) beyond float32's range "
            "(about ±3.4e38). Replace them with null (missing) or clip them before training."
        )
    return values


def is_categorical_type(type_: pa.DataType) -> bool:
    """String and dictionary columns: what an adapter with categorical support encodes as categories."""
    return (pat.is_dictionary(type_) or pat.is_string(type_) or pat.is_large_string(type_)
            or pat.is_string_view(type_))


def categorical_columns(schema: pa.Schema, input_cols: Sequence[str]) -> list[str]:
    """The feature columns of `schema` (in input order) that are categorical by type."""
    return [c for c in input_cols if c in schema.names and is_categorical_type(schema.field(c).type)]


def _encode_categories(col: pa.Array, name: str, categories: Sequence, value_sets: dict[str, pa.Array],
                       where: str) -> np.ndarray:
    if not is_categorical_type(col.type):
        raise DataError(
            f"Feature column {name!r} is categorical (string/dictionary) in the training data but has type "
            f"{col.type} in {where}. Give it the same type everywhere (e.g. CAST({name} AS VARCHAR))."
        )
    if pat.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pat.is_string_view(col.type):
        col = col.cast(pa.string())
    values = value_sets.get(name)
    if values is None or values.type != col.type:
        try:
            values = value_sets[name] = pa.array(list(categories), type=col.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            raise DataError(
                f"Feature column {name!r} in {where} has type {col.type}, which does not match the categories "
                f"it was trained with (e.g. {list(categories)[:3]}). Give it the same type everywhere."
            ) from None
    codes = pc.index_in(col, value_set=values)  # null where the value is unknown or null
    return codes.cast(pa.float32()).to_numpy(zero_copy_only=False)


def collect_categories(connectors: Sequence[DataConnector], columns: Sequence[str]) -> dict[str, list]:
    """Every distinct non-null value of `columns` across `connectors`, sorted: one category list per
    column that every worker then encodes with (code = position), so codes agree across workers.

    Read by Ray tasks over shards (only these columns); only the distinct values reach the driver.
    """
    import ray

    from trainflow.cluster import ensure_cluster

    if not columns:
        return {}
    ensure_cluster()
    parts = max(1, int(ray.cluster_resources().get("CPU", 1)))
    task = remote(_distinct_values)
    found = bounded_get([task.remote(shard, list(columns)) for conn in connectors for shard in conn.split(parts)],
                        f"the category scan of {', '.join(map(repr, columns))} (Ray tasks over the training data)")
    out = {}
    for name in columns:
        values: set = set()
        for part in found:
            values.update(part[name])
        out[name] = sorted(values)
    return out


def _distinct_values(shard: DataConnector, columns: list[str]) -> dict[str, set]:
    seen: dict[str, set] = {name: set() for name in columns}
    for batch in shard.iter_batches(columns):
        for j, name in enumerate(columns):
            col = batch.column(j)
            if pat.is_dictionary(col.type):
                col = col.dictionary_decode()
            seen[name].update(pc.unique(col).drop_null().to_pylist())
    return seen


def _non_numeric_message(name: str, type_: pa.DataType) -> str:
    return (
        f"Feature column {name!r} has type {type_}, which is not numeric. Encode it as numbers "
        f"(e.g. CAST({name} AS DOUBLE) in SQL, or a category code) or leave it out of input_cols."
    )


def check_training_schema(conn: DataConnector, input_cols: list[str], label_col: str | None, what: str,
                          categorical: Collection[str] = ()) -> None:
    """Columns present and numeric (or named in `categorical`), data not empty: checked from metadata
    before any worker starts."""
    schema = conn.schema
    needed = list(input_cols) + ([label_col] if label_col else [])
    missing = [c for c in needed if c not in schema.names]
    if missing:
        raise DataError(
            f"Column(s) {missing} not found in the {what} ({conn.describe()}). Available columns: "
            f"{schema.names}. Fix input_cols/label_col or the query."
        )
    for name in needed:
        if name in categorical and name != label_col:
            continue
        type_ = schema.field(name).type
        if pat.is_dictionary(type_):
            type_ = type_.value_type
        if not (pat.is_integer(type_) or pat.is_floating(type_) or pat.is_boolean(type_) or pat.is_null(type_)):
            if name == label_col:
                raise DataError(f"Label column {name!r} has type {type_}; it must be numeric.")
            raise DataError(_non_numeric_message(name, type_))
    if label_col is not None and conn.count_rows() == 0:
        raise DataError(f"The {what} ({conn.describe()}) has no rows; there is nothing to train on.")


@functools.cache
def remote(fn: Callable):
    """`fn` as a 1-CPU Ray task (made once per function) that cannot see GPUs.

    Ray leaves every GPU visible to tasks that reserve none, and a GPU build of XGBoost opens a
    CUDA context (about 0.5 GB of GPU memory, kept by the pooled worker) as soon as such a task
    creates a Booster, on a GPU that training workers may own. Seen on an H100/H200 after a GPU fit.
    """
    import ray

    return ray.remote(num_cpus=1, runtime_env={"env_vars": {"CUDA_VISIBLE_DEVICES": ""}})(fn)
