"""The shared core of the distributed gradient-boosting estimators (XGBoost, LightGBM).

The estimator validates in `fit`, asks the placement policy for workers, splits the data by reference
(one shard per worker, read by the worker itself), and hands the job to the controller, which runs
it on warm workers and restarts it from checkpoints (controller.py). A framework adapter supplies only what differs: how a worker trains and how a
booster is loaded and used for prediction.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from trainflow.data.connector import DataConnector
from trainflow.defaults import DEFAULT_CHECKPOINT_EVERY, DEFAULT_MAX_RESTARTS
from trainflow.distributors.checkpoint import CheckpointStore, ResumeState
from trainflow.distributors.checks import (
    as_connector,
    as_request,
    check_columns_args,
    check_every,
    check_restarts,
    check_verbose,
)
from trainflow.distributors.controller import GangMember, Rendezvous, run_fit
from trainflow.distributors.ingest import (
    categorical_columns,
    check_training_schema,
    collect_categories,
)
from trainflow.distributors.memory import (
    MemoryChoice,
    MemoryMode,
    check_memory,
    choose_memory,
    scratch_free,
    scratch_setting,
    worker_memory,
)
from trainflow.distributors.placement import Placement, ScalingRequest, decide_placement
from trainflow.distributors.pool import WorkerAddress
from trainflow.distributors.progress import ProgressChannel
from trainflow.distributors.scoring import predict_connector
from trainflow.errors import ConfigError, DataError, NotFittedError

__all__ = ["DEFAULT_CHECKPOINT_EVERY", "DEFAULT_MAX_RESTARTS", "BoostingAdapter", "DistributedBoostingEstimator",
           "WorkerJob", "WorkerResult", "callbacks_resumable"]


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
    # what the adapter's begin_fit made for its workers (e.g. LightGBM's exchange actor), its own type
    helpers: Any = None
    checkpoint_every: int | None = None  # rounds between checkpoints (None: only the final model)
    checkpoints: CheckpointStore | None = None  # where rank 0 saves them (set by the controller)
    memory: MemoryMode = "in_memory"  # how a worker holds its shard (distributors/memory.py)
    scratch: str | None = None  # external memory: the cache's node-local root (None: the worker's temp folder)


@dataclass
class WorkerResult:
    model: bytes
    history: dict[str, dict[str, list[float]]]
    best_iteration: int | None = None
    # rank 0's seconds reading/binning (ingest_s) and boosting (train_s), and whether it reused a matrix
    profile: dict[str, Any] = field(default_factory=dict)


class BoostingAdapter:
    """What a framework must provide to the shared core."""

    name: str = ""
    # True: string/dictionary feature columns are encoded as category codes (see categorical_columns)
    supports_categorical: bool = False

    def worker_params(self, params: dict[str, Any], placement: Placement) -> dict[str, Any]:
        raise NotImplementedError

    def train(self, job: WorkerJob, member: GangMember, resume: ResumeState | None) -> WorkerResult:
        """Train rank `member.rank`'s part; `resume` is the checkpoint a restarted fit continues from."""
        raise NotImplementedError

    def load(self, raw: bytes) -> Any:
        raise NotImplementedError

    def predict(self, booster: Any, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # Optional hooks; the defaults do nothing, so an adapter only overrides what it needs.
    def begin_fit(self, job: WorkerJob, placement: Placement) -> Any:
        """Driver side, after planning and before any worker starts: probe devices, start helpers;
        what it returns reaches the workers as `job.helpers`. Raising here refuses the fit."""
        return None

    def end_fit(self, helpers: Any) -> None:
        """Driver side, after the workers are done (also on failure): release what begin_fit made."""

    def begin_attempt(self, job: WorkerJob, addresses: list[WorkerAddress], attempt: int) -> Rendezvous:
        """Driver side, before each run of the workers (the first and every restart): what every
        rank needs to find the others (xgboost's tracker, LightGBM's machine list); one worker
        needs nothing, which is the default."""
        return Rendezvous()

    def resumable(self, params: dict[str, Any]) -> bool:
        """Whether train() continues correctly from `resume`, a mid-run checkpoint, with these params.

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


# ------------------------------------------------------------------------------- driver side
def _trial_request(trainer: str) -> ScalingRequest | None:
    """Inside a tuner's trial: one worker with the trial's resources (see trainflow.tune.context)."""
    from trainflow.tune.context import trial_scaling

    share = trial_scaling(trainer)
    if share is None:
        return None
    cpus, gpus = share
    return ScalingRequest(num_workers=1, num_cpu_per_worker=max(1, cpus), use_gpu=gpus > 0)


class DistributedBoostingEstimator:
    """Base of XGBEstimator / LightGBMEstimator; constructors only store arguments (sklearn style)."""

    _adapter: BoostingAdapter
    _default_objective: str
    _memory_modes: tuple[str, ...] = ("in_memory",)  # the plug-in's memory_modes

    def __init__(self, n_estimators: int = 100, objective: str | None = None,
                 params: dict[str, Any] | None = None, scaling_config: ScalingRequest | None = None,
                 callbacks: list[Any] | None = None, *, checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
                 max_restarts: int = DEFAULT_MAX_RESTARTS, memory: MemoryMode = "auto"):
        self.n_estimators = n_estimators
        self.objective = objective if objective is not None else self._default_objective
        self.params = params
        self.scaling_config = scaling_config
        self.callbacks = callbacks
        self.checkpoint_every = checkpoint_every
        self.max_restarts = max_restarts
        self.memory = memory

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

        request = self.scaling_config or _trial_request(type(self).__name__) or ScalingRequest()
        # A Placement is a decision already made (the pipeline's plan step): used as it is.
        placement = request if isinstance(request, Placement) else decide_placement(as_request(request),
                                                                                    cluster_nodes())
        params, rounds = self._training_params()
        return placement, self._adapter.worker_params(params, placement), rounds

    # -------------------------------------------------------------------- fit
    def fit(self, dataset: Any, input_cols: Sequence[str], label_col: str, eval_set: Any = None,
            verbose_eval: int | bool | None = None, *,
            progress: Callable[[str], None] | ProgressChannel | None = None,
            init_model: DistributedBoostingEstimator | None = None):
        """Train on every row of `dataset` across the cluster; returns the native booster.

        `progress` receives the `verbose_eval` lines (default: print); pass a ProgressChannel to have
        another process (a Prefect flow) drain them. `init_model`: a fitted estimator of the same
        kind whose trees this fit continues (its rounds count towards n_estimators), as successive
        halving continues the trials it keeps.
        """
        from trainflow.cluster import ensure_cluster

        input_cols, label_col = check_columns_args(input_cols, label_col)
        period = check_verbose(verbose_eval)
        memory = check_memory(self.memory, self._memory_modes, type(self).__name__)
        ensure_cluster()
        # One fixed set of rows for every step of the fit (a query is read once, then split).
        train = as_connector(dataset, "dataset").snapshot()
        evaluation = as_connector(eval_set, "eval_set").snapshot() if eval_set is not None else None
        categorical = categorical_columns(train.schema, input_cols) if self._adapter.supports_categorical else []
        for conn, what in ((train, "training data"), (evaluation, "eval_set")):
            if conn is not None:
                check_training_schema(conn, input_cols, label_col, what, categorical=categorical)
        placement, params, rounds = self.plan()
        start = self._start_from(init_model, rounds)
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

        every = check_every(self.checkpoint_every)  # checked even where the fit will not use it
        resumable = self._adapter.resumable(params) and callbacks_resumable(self.callbacks or [])
        train_shards = train.split(placement.num_workers)
        scratch = scratch_setting()
        choice = self._memory_choice(memory, placement, train_shards, len(input_cols), scratch)
        job = WorkerJob(
            adapter=self._adapter,
            train_shards=train_shards,
            eval_shards=evaluation.split(placement.num_workers) if evaluation is not None else None,
            input_cols=input_cols, label_col=label_col, params=params, num_rounds=rounds,
            cpus=placement.cpus_per_worker, verbose_eval=period, callbacks=list(self.callbacks or []),
            checkpoint_every=every if resumable else None, memory=choice.mode,
            scratch=scratch if choice.mode == "external" else None,
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
            if memory == "auto" and choice.mode != self._memory_modes[0]:  # a fallback is said at once
                job.progress.put(f"worker memory: {choice.mode} ({choice.reason})")
        try:
            job.helpers = self._adapter.begin_fit(job, placement)
            try:
                result = run_fit(job, placement, restarts, self._adapter.name, start)
            finally:
                self._adapter.end_fit(job.helpers)
        finally:
            if drain is not None:
                drain.stop()
                own_channel.close()
        self._load_result(result)
        self.memory_ = choice
        self.placement_ = placement
        self.input_cols_ = input_cols
        self.rounds_ = rounds
        return self.booster_

    def _memory_choice(self, requested: str, placement: Placement, shards: list[DataConnector], features: int,
                       scratch: str | None) -> MemoryChoice:
        """The memory mode of this fit's workers (distributors/memory.py decides), before any starts."""
        if requested != "auto":
            return choose_memory(requested, self._memory_modes, 0, None, None)
        from trainflow.cluster import cluster_nodes

        shard_bytes = max(s.count_rows() for s in shards) * (features + 1) * 4
        nodes = cluster_nodes()
        fits = [(n.memory, n.cpus) for n in nodes if n.cpus >= placement.cpus_per_worker and n.gpus >= placement.gpus_per_worker]
        free = scratch_free(scratch) if len(nodes) == 1 else None  # the driver sees the only node's disk
        return choose_memory(requested, self._memory_modes, shard_bytes,
                             worker_memory(fits, placement.cpus_per_worker), free)

    def _start_from(self, init_model: DistributedBoostingEstimator | None, rounds: int) -> ResumeState | None:
        if init_model is None:
            return None
        if type(init_model) is not type(self) or not hasattr(init_model, "model_bytes_"):
            raise ConfigError(f"init_model must be a fitted {type(self).__name__}, got {type(init_model).__name__}.")
        if init_model.rounds_ > rounds:
            raise ConfigError(f"init_model already has {init_model.rounds_} rounds, more than n_estimators={rounds}.")
        return ResumeState(init_model.model_bytes_, init_model.eval_results_, init_model.rounds_)

    def _load_result(self, result: WorkerResult) -> None:
        self.booster_ = self._adapter.load(result.model)
        self.model_bytes_ = result.model
        self.eval_results_ = result.history
        self.best_iteration_ = result.best_iteration
        self.fit_profile_ = dict(result.profile)

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
        return predict_connector(self._adapter, self.booster_, as_connector(dataset, "dataset"),
                                 self.input_cols_)

