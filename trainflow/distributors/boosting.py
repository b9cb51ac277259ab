"""The shared core of the distributed gradient-boosting estimators (XGBoost, LightGBM).

The estimator validates in `fit`, asks the placement policy for workers, splits the data by reference
(one shard per worker, read by the worker itself), runs Ray Train, and translates failures into
trainflow errors. A framework adapter supplies only what differs: how a worker trains and how a
booster is loaded and used for prediction.
"""
from __future__ import annotations

import json
import re
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from trainflow.data.connector import DataConnector
from trainflow.distributors.fatal import clear, guarded
from trainflow.distributors.ingest import (
    categorical_columns,
    check_training_schema,
    collect_categories,
    read_shard,
    remote,
)
from trainflow.distributors.placement import Placement, ScalingRequest, decide_placement
from trainflow.distributors.progress import ProgressChannel
from trainflow.errors import ConfigError, DataError, NotFittedError, TrainflowError, TrainingError
from trainflow.waiting import bounded_get

MODEL_FILE = "model.bin"
PREDICT_ROWS_PER_TASK = 100_000
# Survive worker loss by default: a checkpoint every 50 rounds, up to 3 restarts of the worker group.
DEFAULT_CHECKPOINT_EVERY = 50
DEFAULT_MAX_RESTARTS = 3
HISTORY_FILE = "eval_history.json"


@dataclass
class WorkerJob:
    """Everything one worker needs, shipped once to every worker (shards are descriptions, not rows)."""

    adapter: BoostingAdapter
    train_shards: list[DataConnector]
    eval_shards: list[DataConnector] | None
    input_cols: list[str]
    label_col: str
    params: dict[str, Any]
    num_rounds: int
    cpus: int
    verbose_eval: int | None = None
    progress: ProgressChannel | None = None
    callbacks: list[Any] = field(default_factory=list)
    # categorical feature -> its categories (code = position); only for adapters that support them
    categories: dict[str, list] = field(default_factory=dict)
    # adapter-specific driver-side helpers (e.g. actor handles) set in BoostingAdapter.begin_fit
    extras: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int | None = None  # rounds between checkpoints (None: only the final model)
    resume: ResumeState | None = None  # set on a worker restarted from a checkpoint


@dataclass(frozen=True)
class ResumeState:
    """The latest checkpoint a restarted worker group continues from.

    `final`: the checkpoint is the finished model (the group was lost after its last report), so a
    restart reports it again instead of training.
    """

    model: bytes
    history: dict[str, dict[str, list[float]]]
    rounds_done: int
    best_iteration: int | None = None
    final: bool = False


@dataclass
class WorkerResult:
    model: bytes
    history: dict[str, dict[str, list[float]]]
    best_iteration: int | None = None


class BoostingAdapter:
    """What a framework must provide to the shared core."""

    name: str = ""
    # True: string/dictionary feature columns are encoded as category codes (see categorical_columns)
    supports_categorical: bool = False

    def trainer_cls(self):
        raise NotImplementedError

    def worker_params(self, params: dict[str, Any], placement: Placement) -> dict[str, Any]:
        raise NotImplementedError

    def train(self, job: WorkerJob, rank: int, world_size: int) -> WorkerResult:
        raise NotImplementedError

    def load(self, raw: bytes) -> Any:
        raise NotImplementedError

    def predict(self, booster: Any, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # Optional hooks; the defaults do nothing, so an adapter only overrides what it needs.
    def begin_fit(self, job: WorkerJob, placement: Placement) -> None:
        """Driver side, after planning and before any worker starts: probe devices, start helpers
        (stored in `job.extras`); raising here refuses the fit before training."""

    def end_fit(self, job: WorkerJob) -> None:
        """Driver side, after the workers are done (also on failure): release what begin_fit made."""

    def resumable(self, params: dict[str, Any]) -> bool:
        """Whether train() continues correctly from job.resume, a mid-run checkpoint, with these params.

        When not (e.g. early stopping, whose state is not in the checkpoint), no mid-run checkpoints
        are written and a restarted worker group trains from round 0. User callbacks are decided
        apart, the same way for every framework (see callbacks_resumable).
        """
        return False

    def early_stopping(self, params: dict[str, Any]) -> tuple[str, Any] | None:
        """(param name, value) when `params` turn the framework's early stopping on, else None."""
        return None

    def score(self, model: Any, features: np.ndarray) -> np.ndarray:
        """Predictions on the task's scale, what trainflow.metrics reads: a value (regression),
        P(class 1) (binary) or (n, k) class probabilities. `predict` gives the model's native output,
        which for some objectives is a margin or a class id (see trainflow.frameworks.xgboost.MARGIN_LINK)."""
        return self.predict(model, features)

    def feature_categories(self, booster: Any, schema: pa.Schema, input_cols: list[str]) -> dict[str, list]:
        """Categorical feature -> its categories as the trained booster encodes them (for prediction)."""
        return {}


# ------------------------------------------------------------------------------- worker side
RESUMABLE_ATTR = "trainflow_resumable"


def callbacks_resumable(callbacks: Sequence[Any]) -> bool:
    """Whether a fit with these user callbacks may resume from a mid-run checkpoint.

    A callback keeps its state (best round so far, rounds without improvement, a schedule's position)
    in the worker's memory, not in the checkpoint, so a resumed fit would continue with a fresh one:
    as with early_stopping_rounds, such a fit writes no mid-run checkpoints and a restarted worker
    group trains from round 0 (with a fresh copy of each callback). A callback that keeps no state
    and counts rounds from the model says so with `trainflow_resumable = True`.
    """
    return all(getattr(cb, RESUMABLE_ATTR, False) is True for cb in callbacks)


def _worker_loop(job: WorkerJob) -> None:
    """Ray Train's train_loop_per_worker: resume from the latest checkpoint if any, train this rank,
    report the model from rank 0 at the end."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        job.resume = read_checkpoint(checkpoint)
    if job.resume is not None and job.resume.final:
        # Lost after the finished model was reported: report it again rather than train anew.
        report(rank, job.resume.model, job.resume.history, job.resume.best_iteration, final=True)
        return
    result = job.adapter.train(job, rank, world)
    report(rank, result.model, result.history, result.best_iteration, final=True)


def report(rank: int, model: bytes | None, history: dict, best_iteration: int | None = None,
           rounds_done: int | None = None, final: bool = False) -> None:
    """Report to Ray Train from every rank (it is a barrier); rank 0 attaches the model as checkpoint."""
    import ray.train

    metrics = {f"{data}-{name}": values[-1] for data, m in history.items() for name, values in m.items()}
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, MODEL_FILE), "wb") as fh:
            fh.write(model)
        with open(os.path.join(tmp, HISTORY_FILE), "w") as fh:
            json.dump({"history": history, "best_iteration": best_iteration, "rounds_done": rounds_done,
                       "final": final}, fh)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def read_checkpoint(checkpoint) -> ResumeState:
    with checkpoint.as_directory() as folder:
        with open(os.path.join(folder, MODEL_FILE), "rb") as fh:
            model = fh.read()
        with open(os.path.join(folder, HISTORY_FILE)) as fh:
            meta = json.load(fh)
    rounds = meta.get("rounds_done")
    if rounds is None:
        rounds = max((len(v) for m in meta["history"].values() for v in m.values()), default=0)
    return ResumeState(model, meta["history"], rounds, meta.get("best_iteration"), bool(meta.get("final")))


def maybe_checkpoint(job: WorkerJob, rank: int, done: int, model: Callable[[], bytes],
                     history: Callable[[], dict]) -> None:
    """After round `done` (counted from the first round of the fit, resumed rounds included): every
    `job.checkpoint_every` rounds, not the last (fit reports that), a checkpoint to resume from.

    Called by every rank after the same round, so the report barrier lines up. `model` and `history`
    are only called when a checkpoint is due.
    """
    every = job.checkpoint_every
    if every and done % every == 0 and done < job.num_rounds:
        report(rank, model() if rank == 0 else None, history(), rounds_done=done)


def join_history(before: dict, after: dict) -> dict:
    """Per-round metrics of a resumed run: the checkpoint's rounds, then the new ones (as floats)."""
    out = {d: {m: list(v) for m, v in ms.items()} for d, ms in before.items()}
    for data, metrics in after.items():
        for name, values in metrics.items():
            out.setdefault(data, {}).setdefault(name, []).extend(float(v) for v in values)
    return out


# ------------------------------------------------------------------------------- driver side
def _storage_root() -> str:
    """Where Ray Train puts the final checkpoint; must be shared storage on a multi-node cluster."""
    return os.environ.get("TRAINFLOW_STORAGE") or os.path.join(tempfile.gettempdir(), "trainflow-runs")


def run_workers(loop: Callable[[Any], None], config: Any, placement: Placement, trainer_cls, name: str,
                max_restarts: int = 0):
    """Run `loop(config)` on `placement` with Ray Train; return the Result, worker errors translated.

    A worker group that fails (a worker killed, a node lost) is restarted up to `max_restarts` times;
    the loop then finds the latest checkpoint with `ray.train.get_checkpoint()`.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

    run_name = f"{name}-{uuid.uuid4().hex[:8]}"
    trainer = trainer_cls(
        guarded(loop, run_name),
        train_loop_config=config,
        scaling_config=placement.ray_scaling_config(),
        run_config=RunConfig(name=run_name, storage_path=_storage_root(),
                             failure_config=FailureConfig(max_failures=max_restarts),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    try:
        return trainer.fit(), os.path.join(_storage_root(), run_name)
    except WorkerGroupError as exc:
        error = _translate_worker_failure(exc.worker_failures)
        if max_restarts and isinstance(error, TrainingError):
            error = TrainingError(f"{error} (gave up after {max_restarts} restart(s) from the latest checkpoint)")
        raise error from None
    except ControllerError as exc:
        raise TrainingError(f"Ray Train's controller failed: {exc.controller_failure}") from exc
    finally:
        clear(run_name)


def _translate_worker_failure(failures: dict[int, BaseException]) -> TrainflowError:
    for rank in sorted(failures):
        cause = getattr(failures[rank], "cause", None) or failures[rank]
        if isinstance(cause, TrainflowError):
            return cause  # as raised: its report, problems and transient flag travel with it
    rank = min(failures)
    cause = getattr(failures[rank], "cause", None) or failures[rank]
    return TrainingError(
        f"Training failed on worker rank {rank}: {type(cause).__name__}: {_summary(str(cause))}. "
        "Set TRAINFLOW_WORKER_LOGS=1 to see the workers' own output."
    )


def _summary(text: str) -> str:
    """The first informative line of a worker error (native libraries append backtraces)."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("[bt]", "Stack trace", "Traceback", "File ")):
            # "[12:00:00] /src/learner.cc:123: Check failed: ..." → "Check failed: ..."
            return re.sub(r"^\[[\d:]+\] [^ ]+:\d+: ", "", line)[:500]
    return text.strip()[:500] or "unknown error"


class DistributedBoostingEstimator:
    """Base of XGBEstimator / LightGBMEstimator; constructors only store arguments (sklearn style)."""

    _adapter: BoostingAdapter
    _default_objective: str

    def __init__(self, n_estimators: int = 100, objective: str | None = None,
                 params: dict[str, Any] | None = None, scaling_config: ScalingRequest | None = None,
                 callbacks: list[Any] | None = None, *, checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
                 max_restarts: int = DEFAULT_MAX_RESTARTS):
        self.n_estimators = n_estimators
        self.objective = objective if objective is not None else self._default_objective
        self.params = params
        self.scaling_config = scaling_config
        self.callbacks = callbacks
        self.checkpoint_every = checkpoint_every
        self.max_restarts = max_restarts

    # -------------------------------------------------------------------- planning
    def _training_params(self) -> tuple[dict[str, Any], int]:
        params = dict(self.params or {})
        rounds = params.pop("n_estimators", params.pop("num_boost_round", self.n_estimators))
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
            raise ConfigError(f"n_estimators={rounds!r} is invalid: use an integer >= 1.")
        params.setdefault("objective", self.objective)
        return params, rounds

    def plan(self) -> tuple[Placement, dict[str, Any], int]:
        """Decide placement and the per-worker params without training (used by fit and by tests)."""
        from trainflow.cluster import cluster_nodes

        request = self.scaling_config or ScalingRequest()
        # A Placement is a decision already made (the pipeline's plan step): used as it is.
        placement = request if isinstance(request, Placement) else decide_placement(_as_request(request),
                                                                                    cluster_nodes())
        params, rounds = self._training_params()
        return placement, self._adapter.worker_params(params, placement), rounds

    # -------------------------------------------------------------------- fit
    def fit(self, dataset: Any, input_cols: Sequence[str], label_col: str, eval_set: Any = None,
            verbose_eval: int | bool | None = None, *,
            progress: Callable[[str], None] | ProgressChannel | None = None):
        """Train on every row of `dataset` across the cluster; returns the native booster.

        `progress` receives the `verbose_eval` lines (default: print); pass a ProgressChannel to have
        another process (a Prefect flow) drain them.
        """
        from trainflow.cluster import ensure_cluster

        input_cols, label_col = _check_columns_args(input_cols, label_col)
        period = _check_verbose(verbose_eval)
        ensure_cluster()
        # One fixed set of rows for every step of the fit (a query is read once, then split).
        train = _as_connector(dataset, "dataset").snapshot()
        evaluation = _as_connector(eval_set, "eval_set").snapshot() if eval_set is not None else None
        categorical = categorical_columns(train.schema, input_cols) if self._adapter.supports_categorical else []
        for conn, what in ((train, "training data"), (evaluation, "eval_set")):
            if conn is not None:
                check_training_schema(conn, input_cols, label_col, what, categorical=categorical)
        placement, params, rounds = self.plan()
        stopping = self._adapter.early_stopping(params)
        if stopping is not None and evaluation is None:
            raise ConfigError(
                f"params[{stopping[0]!r}]={stopping[1]!r} turns on early stopping, which watches the eval "
                f"set's metric, but fit got no eval_set. Pass eval_set=... to fit (in a job spec: data.eval "
                f"or data.eval_fraction), or remove {stopping[0]!r} from params."
            )
        rows = train.count_rows()
        if rows < placement.num_workers:  # an eval shard may be empty, a training one not
            raise DataError(
                f"The training data ({train.describe()}) has {rows} row(s), fewer than the "
                f"{placement.num_workers} workers: each worker needs rows. Use fewer workers "
                "(scaling num_workers) or more data."
            )

        every = _check_every(self.checkpoint_every)  # checked even where the fit will not use it
        resumable = self._adapter.resumable(params) and callbacks_resumable(self.callbacks or [])
        job = WorkerJob(
            adapter=self._adapter,
            train_shards=train.split(placement.num_workers),
            eval_shards=evaluation.split(placement.num_workers) if evaluation is not None else None,
            input_cols=input_cols, label_col=label_col, params=params, num_rounds=rounds,
            cpus=placement.cpus_per_worker, verbose_eval=period, callbacks=list(self.callbacks or []),
            checkpoint_every=every if resumable else None,
        )
        if categorical:
            job.categories = collect_categories([c for c in (train, evaluation) if c is not None], categorical)
        restarts = check_restarts(self.max_restarts)
        drain = own_channel = None
        if period:
            if isinstance(progress, ProgressChannel):
                job.progress = progress
            else:
                job.progress = own_channel = ProgressChannel()
                drain = own_channel.drain_to(progress or (lambda line: print(line, flush=True)))
        try:
            self._adapter.begin_fit(job, placement)
            try:
                result, run_dir = run_workers(_worker_loop, job, placement, self._adapter.trainer_cls(),
                                              self._adapter.name, max_restarts=restarts)
            finally:
                self._adapter.end_fit(job)
        finally:
            if drain is not None:
                drain.stop()
                own_channel.close()
        self._load_result(result, run_dir)
        self.placement_ = placement
        self.input_cols_ = input_cols
        return self.booster_

    def _load_result(self, result, run_dir: str) -> None:
        if result.checkpoint is None:
            raise TrainingError("Training finished without a model checkpoint from rank 0.")
        with result.checkpoint.as_directory() as folder:
            with open(os.path.join(folder, MODEL_FILE), "rb") as fh:
                raw = fh.read()
            with open(os.path.join(folder, HISTORY_FILE)) as fh:
                meta = json.load(fh)
        self.booster_ = self._adapter.load(raw)
        self.eval_results_ = meta["history"]
        self.best_iteration_ = meta["best_iteration"]
        if os.path.isdir(run_dir):  # the checkpoint only carried the model here; don't let runs pile up
            shutil.rmtree(run_dir, ignore_errors=True)

    # -------------------------------------------------------------------- fitted state
    def _fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet: call fit(dataset, input_cols, label_col) first."
            )

    def get_booster(self):
        """The trained native booster (the same object `fit` returned)."""
        self._fitted()
        return self.booster_

    def get_eval_results(self) -> dict[str, dict[str, list[float]]]:
        """`{"train": {metric: [per round]}, "eval": {...}}` as recorded during fit."""
        self._fitted()
        return self.eval_results_

    def predict(self, dataset: Any) -> np.ndarray:
        """One prediction per row of `dataset`, in row order (shards predicted in parallel on Ray)."""
        self._fitted()
        return predict_connector(self._adapter, self.booster_, _as_connector(dataset, "dataset"),
                                 self.input_cols_)


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
    return f"{type(exc).__name__}: {_summary(str(exc))}"


# ------------------------------------------------------------------------------- checks
def _check_columns_args(input_cols: Sequence[str], label_col: str) -> tuple[list[str], str]:
    if isinstance(input_cols, str) or not input_cols or not all(isinstance(c, str) for c in input_cols):
        raise ConfigError(f"input_cols={input_cols!r} is invalid: pass a non-empty list of column names.")
    if len(set(input_cols)) != len(input_cols):
        raise ConfigError(f"input_cols={list(input_cols)!r} lists a column twice.")
    if not isinstance(label_col, str) or not label_col:
        raise ConfigError(f"label_col={label_col!r} is invalid: pass the name of the label column.")
    if label_col in input_cols:
        raise ConfigError(f"label_col {label_col!r} is also in input_cols; a model cannot use its label as a feature.")
    return list(input_cols), label_col


def _check_every(every: int | None) -> int | None:
    if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
        raise ConfigError(f"checkpoint_every={every!r} is invalid: use None (final model only) or an integer >= 1.")
    return every


def check_restarts(restarts: int) -> int:
    if not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 0:
        raise ConfigError(f"max_restarts={restarts!r} is invalid: use an integer >= 0.")
    return restarts


def _check_verbose(verbose_eval: int | bool | None) -> int | None:
    if verbose_eval is None or verbose_eval is False:
        return None
    if verbose_eval is True:
        return 1
    if not isinstance(verbose_eval, int) or verbose_eval < 1:
        raise ConfigError(f"verbose_eval={verbose_eval!r} is invalid: use None, True or an integer >= 1.")
    return verbose_eval


def _as_connector(data: Any, what: str) -> DataConnector:
    try:
        return DataConnector.from_dataframe(data)
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None


def _as_request(config: Any) -> ScalingRequest:
    return ScalingRequest(config.num_workers, config.num_cpu_per_worker, config.use_gpu)
