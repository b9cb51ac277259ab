"""Batch prediction and scoring as Ray tasks over contiguous shards of a connector.

The driver ships the model once (`ray.put`) and references to the rows; each task reads its shard,
predicts batch by batch and returns predictions (in row order) or metric sufficient statistics
(trainflow.metrics), so no rows pass through the driver.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from trainflow.data.connector import DataConnector
from trainflow.data.sinks import PartsFolder
from trainflow.distributors.ingest import check_training_schema, read_shard, remote
from trainflow.distributors.runner import summary_line
from trainflow.errors import TrainflowError
from trainflow.waiting import bounded_get

if TYPE_CHECKING:
    from trainflow.distributors.boosting import BoostingAdapter

PREDICT_ROWS_PER_TASK = 100_000


def predict_connector(adapter: BoostingAdapter, booster: Any, connector: DataConnector,
                      input_cols: list[str]) -> np.ndarray:
    """Batch prediction as Ray tasks over contiguous shards; results concatenated in row order."""
    connector = connector.snapshot()  # predictions line up with the rows of one read
    categories = adapter.feature_categories(booster, connector.schema, input_cols)
    check_training_schema(connector, input_cols, None, "prediction data", categorical=list(categories))
    out = _map_shards(_predict_shard, adapter, booster, connector, input_cols, categories)
    return np.concatenate(out) if out else np.empty(0, dtype=np.float32)


def score_connector(adapter: BoostingAdapter, booster: Any, connector: DataConnector,
                    input_cols: list[str], label_col: str, task: str) -> dict:
    """Metric sufficient statistics over every shard (see trainflow.metrics); rows stay on workers."""
    from trainflow.metrics import merge

    connector = connector.snapshot()
    categories = adapter.feature_categories(booster, connector.schema, input_cols)
    check_training_schema(connector, input_cols, label_col, "eval data", categorical=list(categories))
    return merge(_map_shards(_score_shard, adapter, booster, connector, input_cols, label_col, task, categories))


def _map_shards(fn: Callable, adapter: BoostingAdapter, booster: Any, connector: DataConnector, *args) -> list:
    import ray

    from trainflow.cluster import ensure_cluster

    ensure_cluster()
    rows = connector.count_rows()
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    parts = max(1, min(cpus * 4, -(-rows // PREDICT_ROWS_PER_TASK)))
    model_ref = ray.put(booster)
    task = remote(fn)
    refs = [task.remote(adapter, model_ref, shard, *args) for shard in connector.split(parts)]
    return bounded_get(refs, f"{fn.__name__.strip('_').replace('_', ' ')} tasks over the {connector.describe()}")


def _predict_shard(adapter: BoostingAdapter, booster: Any, shard: DataConnector, input_cols: list[str],
                   categories: dict[str, list] | None = None):
    chunks = read_shard(shard, input_cols, None, shard.describe(), categories)
    preds = [adapter.predict(booster, features) for features, _ in chunks]
    return np.concatenate(preds) if preds else np.empty(0, dtype=np.float32)


def _score_shard(adapter: BoostingAdapter, booster: Any, shard: DataConnector, input_cols: list[str],
                 label_col: str, task: str, categories: dict[str, list] | None = None) -> dict:
    from trainflow.metrics import merge, partial_stats

    chunks = read_shard(shard, input_cols, label_col, f"the eval data ({shard.describe()})", categories)
    return merge([partial_stats(task, label, adapter.score(booster, features)) for features, label in chunks])


@dataclass(frozen=True)
class ModelToScore:
    """One model of a shared scoring pass: how it predicts and which columns it reads, in its order.

    `optional`: a failure to score it (its columns missing, its predictions unusable) is returned as
    a message instead of failing the pass, so a broken old model cannot stop a new one's evaluation.
    """

    adapter: BoostingAdapter
    model: Any
    input_cols: list[str]
    optional: bool = False


def score_models(models: Sequence[ModelToScore], connector: DataConnector, label_col: str,
                 task: str) -> list[dict | str]:
    """Metric sufficient statistics of several models over the same rows: one Ray task per shard reads
    each batch once and every model predicts it. Per model, merged stats, or (optional models only)
    the reason it could not be scored."""
    from trainflow.metrics import merge

    connector = connector.snapshot()
    out: list[dict | str | None] = [None] * len(models)
    plans, kept = [], []
    for i, m in enumerate(models):
        try:
            categories = m.adapter.feature_categories(m.model, connector.schema, m.input_cols)
            check_training_schema(connector, m.input_cols, label_col, "eval data", categorical=list(categories))
        except Exception as exc:  # noqa: BLE001 - an optional model's failure is data, not an error
            if not m.optional:
                raise
            out[i] = _failure_text(exc)
            continue
        plans.append((i, m.adapter, list(m.input_cols), categories, m.optional))
        kept.append(m.model)
    if plans:
        parts = _map_shards(_score_models_shard, tuple(plans), tuple(kept), connector, label_col, task)
        for k, (i, *_rest) in enumerate(plans):
            failed = [p[k] for p in parts if isinstance(p[k], str)]
            out[i] = failed[0] if failed else merge([p[k] for p in parts])
    return out


def score_to_parts(adapter: BoostingAdapter, model: Any, connector: DataConnector, features: list[str],
                   carry: list[str], prediction_column: str, run_column: str, run_id: str, folder: PartsFolder,
                   categories: dict[str, list] | None = None) -> list[int]:
    """Score every row into Parquet parts, one Ray task per shard writing its own part (see
    trainflow.data.sinks: a retried task replaces its part); returns each part's row count. Neither
    rows nor predictions pass through the driver."""
    import ray

    from trainflow.cluster import ensure_cluster

    ensure_cluster()
    connector = connector.snapshot()
    rows = connector.count_rows()
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    parts = max(1, min(cpus * 4, -(-rows // PREDICT_ROWS_PER_TASK)))
    model_ref = ray.put(model)
    task = remote(_score_shard_to_part)  # Ray retries a task whose worker died (max_retries 3)
    refs = [task.remote(adapter, model_ref, shard, i, features, carry, prediction_column, run_column, run_id,
                        folder, categories) for i, shard in enumerate(connector.split(parts))]
    try:
        return bounded_get(refs, f"scoring the {connector.describe()} ({parts} task(s))")
    except BaseException:
        for ref in refs:  # no task of a failed run may still publish a part after it
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=30)
        raise


def _score_shard_to_part(adapter: BoostingAdapter, model: Any, shard: DataConnector, index: int,
                         features: list[str], carry: list[str], prediction_column: str, run_column: str,
                         run_id: str, folder: PartsFolder, categories: dict[str, list] | None) -> int:
    where = f"the scoring data ({shard.describe()})"
    columns = list(dict.fromkeys([*features, *carry]))

    def scored():
        for batch in shard.iter_batches(columns):
            if batch.num_rows == 0:
                continue
            chunks = read_shard(_OneBatch(batch), features, None, where, categories)
            pred = np.concatenate([adapter.predict(model, x) for x, _ in chunks])
            if pred.ndim == 2:
                column = pa.FixedSizeListArray.from_arrays(pa.array(pred.reshape(-1)), pred.shape[1])
            else:
                column = pa.array(pred)
            out = {name: batch.column(batch.schema.get_field_index(name)) for name in carry}
            out[prediction_column] = column
            out[run_column] = pa.array([run_id] * batch.num_rows, pa.string())
            yield pa.RecordBatch.from_pydict(out)

    return folder.write(run_id, index, scored())


class _OneBatch:
    """A batch already read, offered to read_shard as a connector (each model takes its columns)."""

    def __init__(self, batch: pa.RecordBatch):
        self.batch = batch

    def iter_batches(self, columns: Sequence[str]):
        yield self.batch.select(list(columns))


def _score_models_shard(plans: tuple, models: tuple, shard: DataConnector, label_col: str, task: str) -> list:
    from trainflow.metrics import merge, partial_stats

    where = f"the eval data ({shard.describe()})"
    columns = list(dict.fromkeys([c for plan in plans for c in plan[2]] + [label_col]))
    stats: list[list] = [[] for _ in plans]
    failed: list[str | None] = [None] * len(plans)
    for batch in shard.iter_batches(columns):
        if batch.num_rows == 0:
            continue
        for k, ((_, adapter, cols, categories, optional), model) in enumerate(zip(plans, models)):
            if failed[k] is not None:
                continue
            try:
                for features, label in read_shard(_OneBatch(batch), cols, label_col, where, categories):
                    stats[k].append(partial_stats(task, label, adapter.score(model, features)))
            except Exception as exc:  # noqa: BLE001
                if not optional:
                    raise
                failed[k] = _failure_text(exc)
    return [failed[k] if failed[k] is not None else merge(stats[k]) for k in range(len(plans))]


def _failure_text(exc: BaseException) -> str:
    if isinstance(exc, TrainflowError):
        return str(exc)
    return f"{type(exc).__name__}: {summary_line(str(exc))}"
