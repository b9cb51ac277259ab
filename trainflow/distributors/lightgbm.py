"""LightGBMEstimator: distributed LightGBM on Ray, Snowflake ML's API.

With one worker this is plain `lgb.train` in a warm Ray worker. With N workers LightGBM's own
socket network runs its data-parallel tree learner, and three things keep the result equal to one
LightGBM on all rows (each was seen going wrong here without it):

- network: every worker merges the attempt's machine list (each worker's node IP and a port that
  was free there, gathered by the fit before each run of the workers) with
  `tree_learner="data_parallel"` and `pre_partition=True`. Without them nothing errors: each worker
  trains on its own shard and rank 0's model is kept.
- bins: distributed LightGBM finds each feature's bin boundaries on one machine's *local* rows (the
  features are split between machines and the results exchanged). With rows ordered by a feature,
  that feature's bins then cover only one worker's value range (holdout RMSE doubled in a test).
  So every worker contributes a proportional random sample of its rows (at most
  `bin_construct_sample_cnt` rows in all), every worker builds the same reference Dataset from the
  union, and the training and eval Datasets take their bins from it.
- metrics: LightGBM evaluates metrics on each worker's local rows only. Each round the workers
  exchange (value, rows) per metric and combine them into the global value (weighted means; RMSE
  through the mean square; gamma_deviance is a sum), so eval history, progress lines and early
  stopping see the same numbers on every worker — without that, workers could stop at different
  rounds and wait for each other forever. AUC, average precision, NDCG and MAP do not decompose:
  with several workers they are the row-weighted mean of the workers' values (a warning says so).

The exchanges go through a small Ray actor made for each multi-worker fit (`_Rendezvous`).
After training a worker frees LightGBM's network, so the warm process can join the next fit's.
"""
from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa

from trainflow.defaults import DEFAULT_CHECKPOINT_EVERY, DEFAULT_MAX_RESTARTS
from trainflow.distributors.boosting import (
    BoostingAdapter,
    DistributedBoostingEstimator,
    WorkerJob,
    WorkerResult,
)
from trainflow.distributors.checkpoint import (
    ResumeState,
    join_history,
    maybe_checkpoint,
)
from trainflow.distributors.controller import GangMember, Rendezvous
from trainflow.distributors.ingest import categorical_columns, read_shard
from trainflow.distributors.matrix import CACHE, matrix_keys
from trainflow.distributors.memory import MemoryMode
from trainflow.distributors.placement import Placement, ScalingRequest
from trainflow.distributors.pool import WorkerAddress
from trainflow.distributors.progress import format_metrics
from trainflow.errors import ConfigError, DataError, ResourceError, TrainingError
from trainflow.frameworks.lightgbm import LightGBMFramework
from trainflow.waiting import TIMEOUT_ENV, task_timeout_s

# LightGBM parameter aliases (https://lightgbm.readthedocs.io/en/latest/Parameters.html)
_THREADS = ("num_threads", "num_thread", "nthread", "nthreads", "n_jobs")
_VERBOSITY = ("verbosity", "verbose")
_METRIC = ("metric", "metrics", "metric_types")
_OBJECTIVE = ("objective", "objective_type", "app", "application", "loss")
_DEVICE = ("device_type", "device")
_TREE_LEARNER = ("tree_learner", "tree", "tree_type", "tree_learner_type")
_EARLY_STOPPING = ("early_stopping_round", "early_stopping_rounds", "early_stopping", "n_iter_no_change")
_BOOSTING = ("boosting", "boosting_type", "boost")
_CATEGORICAL = ("categorical_feature", "cat_feature", "categorical_column", "cat_column", "categorical_features")
_SAMPLE_CNT = ("bin_construct_sample_cnt", "subsample_for_bin")
_MIN_DATA_IN_LEAF = ("min_data_in_leaf", "min_data_per_leaf", "min_data", "min_child_samples", "min_samples_leaf")
_ROUNDS = ("num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees", "num_round", "num_rounds",
           "nrounds", "num_boost_round", "n_estimators", "max_iter")
_L2_OBJECTIVES = {"regression", "regression_l2", "l2", "mean_squared_error", "mse", "l2_root",
                  "root_mean_squared_error", "rmse"}
_SERIAL_LEARNERS = {"serial", "feature", "feature_parallel"}
_NOT_DECOMPOSABLE = ("auc", "average_precision", "ndcg", "map")  # names, or name@k
_NO_METRIC = {"none", "null", "custom", "na", ""}


@dataclass(frozen=True)
class LightGBMScalingConfig(ScalingRequest):
    """num_workers=-1: one per node (one per GPU with GPUs); num_cpu_per_worker=-1: the node's CPUs;
    use_gpu=None: GPUs when the cluster has them."""


def _first(params: dict[str, Any], aliases: tuple[str, ...]) -> Any:
    return next((params[a] for a in aliases if a in params), None)


def _pop_all(params: dict[str, Any], aliases: tuple[str, ...]) -> Any:
    found = None
    for a in aliases:
        if a in params:
            value = params.pop(a)
            found = value if found is None else found
    return found


def _metric_names(params: dict[str, Any]) -> list[str]:
    metric = _first(params, _METRIC)
    if metric is None:
        return []
    names = metric.split(",") if isinstance(metric, str) else list(metric)
    return [str(n).strip() for n in names]


def _not_decomposable(metric: str) -> bool:
    base = metric.split("@")[0]
    return base in _NOT_DECOMPOSABLE or base == "auc_mu"


# ------------------------------------------------------------------------------- worker exchange
def _lost_group(message: str) -> TrainingError:
    """An exchange error a restart of the worker group can fix (a lost or stalled worker)."""
    error = TrainingError(message)
    error.transient = True  # retried by Ray Train, not recorded as fatal (distributors/fatal.py)
    return error


@functools.cache
def _rendezvous_cls():
    import ray

    @ray.remote(num_cpus=0)
    class _Rendezvous:
        """All-gather for one fit's workers: `allgather(generation, key, rank, value)` returns every
        rank's value.

        Each (re)started worker group first takes a number from `next_generation` (rank 0, then
        broadcast to the group). Numbers only grow, and taking one ends the previous generation: its
        waiting calls return an error, and a call of it that arrives later fails at once. So a lost
        group's call cannot reset or fill the new group's exchanges in whatever order Ray delivers
        calls (it keeps no submission order for an async actor).
        """

        def __init__(self, world: int):
            self._world = world
            self._generation = 0
            self._slots: dict = {}

        async def next_generation(self) -> int:
            self._generation += 1
            for slot in self._slots.values():  # the lost group's waiters: released with an error
                slot["stale"] = True
                slot["ready"].set()
            self._slots = {}
            return self._generation

        async def allgather(self, generation: int, key: str, rank: int, value: Any) -> list:
            import asyncio

            if generation != self._generation:
                raise _stale(generation, self._generation, key)
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = {"values": [None] * self._world, "in": 0, "out": 0,
                                           "ready": asyncio.Event(), "stale": False}
            slot["values"][rank] = value
            slot["in"] += 1
            if slot["in"] == self._world:
                slot["ready"].set()
            await slot["ready"].wait()
            if slot["stale"]:
                raise _stale(generation, self._generation, key)
            slot["out"] += 1
            if slot["out"] == self._world and self._slots.get(key) is slot:
                del self._slots[key]
            return slot["values"]

    return _Rendezvous


@dataclass(frozen=True)
class _Network:
    """One attempt's LightGBM network: the rendezvous generation and every rank's `ip:port`."""

    generation: int
    machines: list[str]

    def params(self, rank: int) -> dict[str, Any]:
        return {"machines": ",".join(self.machines), "num_machines": len(self.machines),
                "local_listen_port": int(self.machines[rank].rsplit(":", 1)[1])}


@dataclass(frozen=True)
class _Exchange:
    """A multi-worker fit's rendezvous actor and how long a worker waits at one of its exchanges."""

    actor: Any
    timeout_s: float


def _stale(generation: int, current: int, key: str) -> TrainingError:
    return _lost_group(
        f"LightGBM's {key!r} exchange of worker group generation {generation} was abandoned: a restarted "
        f"worker group (generation {current}) replaced it."
    )


class _Peers:
    """This worker's view of the rendezvous, for the current worker group only.

    The fit takes the group's generation number from the actor before each run of the workers and
    gives it to every rank, so a restarted group never joins an exchange that the lost group left
    half done.
    Every wait is bounded: a peer that never arrives ends in a TrainingError, not a hang.
    """

    def __init__(self, actor, rank: int, generation: int, timeout_s: float):
        self._actor, self._rank, self._generation, self._timeout = actor, rank, generation, timeout_s

    def allgather(self, key: str, value: Any) -> list:
        return self.get(self._actor.allgather.remote(self._generation, key, self._rank, value),
                         f"every worker at LightGBM's {key!r} exchange")

    def get(self, ref, what: str) -> Any:
        """`ray.get(ref)` bounded by the fit's timeout; `what` names what was awaited in the error."""
        import ray
        from ray.exceptions import GetTimeoutError, RayTaskError

        try:
            return ray.get(ref, timeout=self._timeout)
        except GetTimeoutError:
            raise _lost_group(
                f"Worker rank {self._rank} gave up after {self._timeout:g}s waiting for {what} (worker group "
                f"generation {self._generation}, through the fit's rendezvous actor): another worker was lost "
                "or stalled, or the cluster's CPUs are held by other work (see `ray status`). If a round "
                f"really takes that long, raise {TIMEOUT_ENV}."
            ) from None
        except RayTaskError as exc:
            if isinstance(exc.cause, TrainingError):
                raise exc.cause from None
            raise


class _GlobalMetrics:
    """First after-iteration callback: replace each local metric value by its all-worker value."""

    def __init__(self, peers: _Peers, rows: dict[str, int]):
        self.order = -(10**9)  # before every other callback (LightGBM gives user callbacks negative orders)
        self.before_iteration = False
        self._peers, self._rows = peers, rows

    def __call__(self, env) -> None:
        results = env.evaluation_result_list
        if not results:
            return
        mine = [(float(r[2]), self._rows[r[0]]) for r in results]
        everyone = self._peers.allgather(f"metrics-{env.iteration}", mine)
        for i, r in enumerate(results):
            value = _combine(r[1], [w[i] for w in everyone])
            # lightgbm >= 4.7 passes EvalResult named tuples (whose _replace breaks), older 4.x plain tuples
            rest = list(r)[3:]
            kind = type(r) if hasattr(r, "metric_value") else (lambda *fields: fields)
            results[i] = kind(r[0], r[1], value, *rest)


def _combine(metric: str, parts: list[tuple[float, int]]) -> float:
    parts = [(v, n) for v, n in parts if n > 0]
    total = sum(n for _, n in parts)
    if total == 0:
        return float("nan")
    if metric == "rmse":
        return math.sqrt(sum(v * v * n for v, n in parts) / total)
    if metric == "gamma_deviance":  # LightGBM reports this one as a sum over rows
        return sum(v for v, _ in parts)
    return sum(v * n for v, n in parts) / total


class _RankZeroCallbacks:
    """The user's after-iteration callbacks, run on rank 0 only (their side effects happen once), in
    their own order, with their decision to stop (LightGBM's EarlyStopException) shared with every
    rank each round through the rendezvous.

    Without it, rank 0 leaves lgb.train when lgb.early_stopping says stop and the other ranks wait
    for it in LightGBM's network forever. Every rank holds one, so every rank joins each exchange.
    """

    def __init__(self, callbacks: list, rank: int, peers: _Peers | None):
        self.order = 10**9  # after trainflow's and LightGBM's own callbacks
        self.before_iteration = False
        # LightGBM's rule for callbacks without an order: their position, before any that has one
        ordered = sorted(enumerate(callbacks), key=lambda ic: getattr(ic[1], "order", ic[0] - len(callbacks)))
        self._callbacks = [cb for _, cb in ordered] if rank == 0 else []
        self._peers = peers

    def __call__(self, env) -> None:
        stop = None
        try:
            for cb in self._callbacks:
                cb(env)
        except lgb.callback.EarlyStopException as exc:
            stop = exc
        if self._peers is not None:
            mine = None if stop is None else (stop.best_iteration, stop.best_score)
            decision = self._peers.allgather(f"stop-{env.iteration}", mine)[0]
            stop = None if decision is None else lgb.callback.EarlyStopException(*decision)
        if stop is not None:
            raise stop


class _Checkpoint:
    """On every rank: a resumable checkpoint every `checkpoint_every` rounds (see maybe_checkpoint)."""

    def __init__(self, job: WorkerJob, rank: int, before: dict, history: dict):
        self.order = 25  # after record_evaluation (20), so this round's metrics are in `history`
        self.before_iteration = False
        self._job, self._rank, self._before, self._history = job, rank, before, history

    def __call__(self, env) -> None:
        # env.iteration counts the checkpoint's rounds too (lgb.train continues from init_model's)
        maybe_checkpoint(self._job, self._rank, env.iteration + 1, lambda: env.model.model_to_string().encode(),
                         lambda: join_history(self._before, self._history))


class _Progress:
    def __init__(self, job: WorkerJob):
        self.order = 40  # after record_evaluation (20) and early stopping (30)
        self.before_iteration = False
        self._job = job

    def __call__(self, env) -> None:
        done = env.iteration + 1
        period, last = self._job.verbose_eval, self._job.num_rounds
        if done == 1 or done % period == 0 or done == last:
            latest: dict[str, dict[str, float]] = {}
            for r in env.evaluation_result_list:
                latest.setdefault(r[0], {})[r[1]] = r[2]
            self._job.progress.put(format_metrics(done, latest))


# ------------------------------------------------------------------------------- data on a worker
def _local_sample(chunks: list[tuple[np.ndarray, Any]], size: int, seed: int) -> np.ndarray:
    rows = sum(len(f) for f, _ in chunks)
    picked = np.sort(np.random.default_rng(seed).choice(rows, size=min(size, rows), replace=False))
    out, start = [], 0
    for features, _ in chunks:
        stop = start + len(features)
        lo, hi = np.searchsorted(picked, [start, stop])
        out.append(features[picked[lo:hi] - start])
        start = stop
    return np.concatenate(out) if out else np.empty((0, chunks[0][0].shape[1]), np.float32)


def _stack(chunks: list[tuple[np.ndarray, Any]], single: bool = False) -> tuple[Any, np.ndarray]:
    """Features and labels for lgb.Dataset.

    lgb.Dataset takes the list of 2-D chunks as is (LGBM_DatasetCreateFromMats): no concatenated copy.
    `single`: one 2-D array instead, which a resumed fit needs (LightGBM scores the rows with the
    checkpoint's trees through its predictor, which takes no list).
    """
    features = [f for f, _ in chunks]
    if single:
        features = features[0] if len(features) == 1 else np.concatenate(features)
    return features, np.concatenate([y for _, y in chunks])


def _categorical_names(job: WorkerJob, user: Any) -> list[str]:
    names = [c for c in job.input_cols if c in job.categories]
    if user is None:
        return names
    if isinstance(user, str):
        text = user[len("name:"):] if user.startswith("name:") else user
        user = [int(u) if u.strip().isdigit() else u.strip() for u in text.split(",") if u.strip()]
    for item in user:
        name = job.input_cols[item] if isinstance(item, int) and 0 <= item < len(job.input_cols) else item
        if name not in job.input_cols:
            raise ConfigError(f"params['categorical_feature'] names {item!r}, which is not in input_cols "
                              f"{job.input_cols}.")
        if name not in names:
            names.append(name)
    return [c for c in job.input_cols if c in names]


def _dataset_keys(job: WorkerJob, rank: int, params: dict[str, Any], cat_names: list[str]):
    """Cache keys of this rank's train and eval Datasets: the data, and every parameter that shapes
    a Dataset (LightGBM's own list, aliases resolved; min_data_in_leaf too while feature_pre_filter
    is on, since it prunes features when the Dataset is built)."""
    shaping = lgb.Dataset(None, params=params).get_params()
    binning = ["lightgbm.Dataset", tuple(cat_names), *sorted((k, repr(v)) for k, v in shaping.items()),
               ("seed", repr(params.get("seed")))]  # also seeds the bin sample (data_random_seed)
    if str(shaping.get("feature_pre_filter", True)).lower() not in ("false", "0"):
        binning.append(("min_data_in_leaf", repr(_first(params, _MIN_DATA_IN_LEAF) or 20)))
    return matrix_keys(job.train_shards, job.eval_shards, rank, job.input_cols, job.label_col, job.categories,
                       tuple(binning))


# ------------------------------------------------------------------------------- the adapter
class _LightGBMAdapter(BoostingAdapter):
    name = "lightgbm"
    supports_categorical = True

    def resumable(self, params: dict[str, Any]) -> bool:
        # Early stopping keeps its best-round state outside the checkpoint; random forests refuse an
        # init_model ("init_score ... == nullptr" in rf.hpp). Both restart from round 0 instead.
        forest = str(_first(params, _BOOSTING) or "gbdt").lower() in ("rf", "random_forest")
        return self.early_stopping(params) is None and not forest

    def early_stopping(self, params: dict[str, Any]) -> tuple[str, Any] | None:
        key = next((a for a in _EARLY_STOPPING if a in params), None)
        if key is None or params[key] is None:
            return None
        try:
            on = int(params[key]) > 0  # LightGBM: <= 0 turns it off
        except (TypeError, ValueError):
            on = True  # lgb.early_stopping says what is wrong with the value
        return (key, params[key]) if on else None

    def worker_params(self, params: dict[str, Any], placement: Placement) -> dict[str, Any]:
        params = dict(params)
        _pop_all(params, _THREADS)
        params["num_threads"] = placement.cpus_per_worker
        if _first(params, _VERBOSITY) is None:
            params["verbosity"] = -1
        objective = str(_first(params, _OBJECTIVE) or "regression")
        if _first(params, _METRIC) is None and objective in _L2_OBJECTIVES:
            params["metric"] = "rmse"  # LightGBM's default is l2; rmse matches XGBoost's history
        if placement.use_gpu and _first(params, _DEVICE) is None:
            params["device_type"] = "gpu"  # Ray sets CUDA_VISIBLE_DEVICES: each worker sees only its GPU
        if placement.num_workers > 1:
            learner = str(_pop_all(params, _TREE_LEARNER) or "data_parallel")
            if learner in _SERIAL_LEARNERS:
                raise ConfigError(
                    f"tree_learner={learner!r} cannot train on {placement.num_workers} workers that each hold "
                    "a different part of the rows. Use 'data' (the default) or 'voting', or num_workers=1."
                )
            params["tree_learner"] = learner
            params["pre_partition"] = True
            # Unsplittable-feature pruning would count rows in the bin sample, not in all the data.
            params.setdefault("feature_pre_filter", False)
            rough = [m for m in _metric_names(params) if _not_decomposable(m)]
            if rough:
                warnings.warn(
                    f"Metric(s) {rough} cannot be combined exactly across {placement.num_workers} workers: "
                    "their eval history (and early stopping) use the row-weighted mean of each worker's value. "
                    "The evaluate step computes them exactly.", UserWarning, stacklevel=3,
                )
        return params

    # ---------------------------------------------------------------- driver-side hooks
    def begin_fit(self, job: WorkerJob, placement: Placement) -> _Exchange | None:
        if placement.use_gpu:
            _check_gpu_support(str(_first(job.params, _DEVICE) or "gpu"))
        if placement.num_workers > 1:
            from trainflow.distributors.pool import on_head_node

            # Losing a worker node must not take the exchange along, or every restart fails on it.
            # Found when a whole-node loss took rank 0 and this actor together (gave up after 3 restarts).
            actor = _rendezvous_cls().options(**on_head_node()).remote(placement.num_workers)
            return _Exchange(actor, task_timeout_s())  # the timeout decided here, the same on every worker
        return None

    def end_fit(self, helpers: _Exchange | None) -> None:
        if helpers is not None:
            import ray

            ray.kill(helpers.actor)

    def begin_attempt(self, job: WorkerJob, addresses: list[WorkerAddress], attempt: int) -> Rendezvous:
        if len(addresses) < 2:
            return Rendezvous()
        from trainflow.waiting import bounded_get

        generation = bounded_get(job.helpers.actor.next_generation.remote(), "LightGBM's rendezvous actor",
                                 job.helpers.timeout_s)
        return Rendezvous(_Network(generation, [f"{a.ip}:{a.port}" for a in addresses]))

    # ---------------------------------------------------------------- worker side
    def train(self, job: WorkerJob, member: GangMember, resume: ResumeState | None) -> WorkerResult:
        rank, world_size = member.rank, member.world_size
        started = time.perf_counter()
        params = dict(job.params)
        stopping = self.early_stopping(params)  # fit refused it without an eval set
        _pop_all(params, _EARLY_STOPPING)
        cat_names = _categorical_names(job, _pop_all(params, _CATEGORICAL))
        peers = None
        if world_size > 1:
            network: _Network = member.collective
            peers = _Peers(job.helpers.actor, rank, network.generation, job.helpers.timeout_s)
            params.update(network.params(rank), tree_learner=params.get("tree_learner", "data_parallel"),
                          pre_partition=True)
        # A resumed (or continued) fit starts from earlier trees: lgb.train scores the rows with them
        # while it builds the Datasets, which needs their raw rows, so it never takes cached ones.
        init_model = self.load(resume.model) if resume else None
        train_key, eval_key = (None, None) if init_model is not None else _dataset_keys(job, rank, params, cat_names)
        hit = train_key in CACHE and (job.eval_shards is None or eval_key in CACHE)
        if peers is not None:  # building the Datasets is collective (shared bins): every rank, or none
            hit = all(peers.allgather("dataset-cached", hit))
        if hit:
            dtrain, rows = CACHE.get(train_key)
            deval = CACHE.get(eval_key) if eval_key is not None else None
        else:
            CACHE.clear()  # other data: an earlier fit's Datasets must not share the worker's memory with these
            dtrain, deval, rows = self._datasets(job, rank, world_size, params, cat_names, peers, init_model)
            if init_model is None:
                CACHE.put(train_key, (dtrain, rows))
                CACHE.put(eval_key, deval)
        valid_sets, names = [dtrain], ["train"]
        if deval is not None:
            valid_sets.append(deval)
            names.append("eval")

        history: dict = {}
        callbacks: list[Any] = []
        if peers is not None:
            callbacks.append(_GlobalMetrics(peers, rows))  # rows["eval"] == 0 weighs a stand-in at zero
        callbacks.append(lgb.record_evaluation(history))
        before = resume.history if resume else {}
        callbacks.append(_Checkpoint(job, rank, before, history))
        if stopping is not None:
            callbacks.append(lgb.early_stopping(int(stopping[1]), verbose=False))
        if rank == 0 and job.progress is not None:
            callbacks.append(_Progress(job))
        before_round = [cb for cb in job.callbacks if getattr(cb, "before_iteration", False)]
        after_round = [cb for cb in job.callbacks if not getattr(cb, "before_iteration", False)]
        if rank == 0:
            callbacks.extend(before_round)  # they cannot stop the fit (lgb.train raises what they raise)
        if after_round:
            callbacks.append(_RankZeroCallbacks(after_round, rank, peers))
        ingest_s = time.perf_counter() - started
        booster = lgb.train(params, dtrain, num_boost_round=job.num_rounds - (resume.rounds_done if resume else 0),
                            valid_sets=valid_sets, valid_names=names, callbacks=callbacks, init_model=init_model)
        if world_size > 1:
            # Now, not when the booster is garbage-collected (which frees the process's network, perhaps
            # in the middle of the warm process's next fit). A failed multi-worker fit's workers are
            # not reused (controller.py).
            booster.free_network()
        # set when early stopping (the param's or a user's) stopped the fit, on every rank alike
        best = booster.best_iteration if booster.best_iteration > 0 else None
        if job.categories:
            # LightGBM's own record of category lists (also used by booster.predict on pandas categoricals)
            booster.pandas_categorical = [job.categories[c] for c in job.input_cols if c in job.categories]
        # model_to_string keeps the trees up to the best iteration when early stopping found one
        model = booster.model_to_string(num_iteration=best)
        history = join_history(before, history)
        profile = {"ingest_s": ingest_s, "train_s": time.perf_counter() - started - ingest_s, "matrix_reused": hit}
        return WorkerResult(model.encode(), history, best, profile)

    def _datasets(self, job: WorkerJob, rank: int, world_size: int, params: dict[str, Any], cat_names: list[str],
                  peers: _Peers | None, init_model: Any) -> tuple[lgb.Dataset, lgb.Dataset | None, dict[str, int]]:
        """Read this rank's shards into LightGBM Datasets (bins shared by every rank)."""
        chunks = read_shard(job.train_shards[rank], job.input_cols, job.label_col, "the training data",
                            categories=job.categories)
        eval_chunks = None
        if job.eval_shards is not None:
            eval_chunks = read_shard(job.eval_shards[rank], job.input_cols, job.label_col, "the eval_set",
                                     categories=job.categories)
        rows = {"train": sum(len(y) for _, y in chunks),
                "eval": sum(len(y) for _, y in eval_chunks) if eval_chunks is not None else 0}
        reference = None
        if peers is not None:
            counts = peers.allgather("rows", rows["train"])
            if min(counts) == 0:
                raise DataError(
                    f"The training data has too few rows for {world_size} workers (rows per worker: {counts}); "
                    "use fewer workers (num_workers) or more data."
                )
            reference = self._shared_bins(job, params, chunks, counts, peers, rank, cat_names)
        features, label = _stack(chunks, single=init_model is not None)
        dtrain = lgb.Dataset(features, label=label, feature_name=job.input_cols, params=params,
                             reference=reference, free_raw_data=True,
                             **({} if reference is not None else {"categorical_feature": cat_names or "auto"}))
        if init_model is None:
            dtrain.construct()
        del chunks, features, label
        deval = None
        if eval_chunks is not None:
            if rows["eval"] == 0:  # this worker's slice of a tiny eval set is empty: a 1-row stand-in
                eval_chunks = [(np.zeros((1, len(job.input_cols)), np.float32), np.ones(1, np.float32))]
            efeatures, elabel = _stack(eval_chunks, single=init_model is not None)
            deval = lgb.Dataset(efeatures, label=elabel, feature_name=job.input_cols, params=params,
                                reference=dtrain, free_raw_data=True)
            if init_model is None:
                deval.construct()
        return dtrain, deval, rows

    @staticmethod
    def _shared_bins(job: WorkerJob, params: dict[str, Any], chunks, counts: list[int], peers: _Peers,
                     rank: int, cat_names: list[str]) -> lgb.Dataset:
        """The same bin boundaries on every worker: a reference Dataset from a sample of all rows."""
        import ray

        total = sum(counts)
        budget = int(_first(params, _SAMPLE_CNT) or 200_000)
        share = min(counts[rank], math.ceil(budget * counts[rank] / total))
        seed = int(params.get("seed", params.get("data_random_seed", 0)) or 0)
        mine = ray.put(_local_sample(chunks, share, seed + 7919 * rank))
        refs = peers.allgather("bin-sample", [mine])
        sample = np.concatenate(peers.get([r[0] for r in refs], "the other workers' bin samples"))  # rank order
        # Built before lgb.train starts the network, so LightGBM finds every feature's bins locally
        # from this (identical) sample instead of one machine's own rows.
        return lgb.Dataset(sample, feature_name=job.input_cols, categorical_feature=cat_names or "auto",
                           params=params, free_raw_data=True).construct()

    # ---------------------------------------------------------------- model
    def load(self, raw: bytes) -> lgb.Booster:
        return lgb.Booster(model_str=raw.decode())

    def predict(self, booster: lgb.Booster, features: np.ndarray) -> np.ndarray:
        return booster.predict(features, num_threads=1)

    def feature_categories(self, booster: lgb.Booster, schema: pa.Schema,
                           input_cols: list[str]) -> dict[str, list]:
        # Same rule as LightGBM's pandas path: the categorical-typed columns, in order, take the stored
        # category lists in order.
        stored = booster.pandas_categorical or []
        if not stored:
            return {}
        names = categorical_columns(schema, input_cols)
        if len(names) != len(stored):
            raise DataError(
                f"The model was trained with {len(stored)} categorical (string/dictionary) feature(s), but the "
                f"data has {len(names)}: {names}. Give each feature the type it had in training."
            )
        return dict(zip(names, stored, strict=True))


def _probe_gpu(device_type: str) -> str | None:
    rng = np.random.default_rng(0)
    x = rng.random((64, 2))
    try:
        lgb.train({"device_type": device_type, "verbosity": -1, "min_data_in_leaf": 1, "num_threads": 1},
                  lgb.Dataset(x, label=x[:, 0]), num_boost_round=1)
    except lgb.basic.LightGBMError as exc:
        return str(exc).strip()
    return None


def _check_gpu_support(device_type: str) -> None:
    """Train one tiny tree with `device_type` on a GPU node before the real fit starts (only with GPUs)."""
    import ray

    probe = ray.remote(num_cpus=0, num_gpus=1)(_probe_gpu).remote(device_type)
    try:
        error = ray.get(probe, timeout=300)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(probe, force=True)
        return  # no GPU free to probe on; the fit itself will wait for one and report what happens
    if error:
        raise ResourceError(
            f"use_gpu is on, but LightGBM {lgb.__version__} on the GPU workers cannot train with "
            f"device_type={device_type!r}: {error}. LightGBM's GPU learner needs a build with GPU support "
            "(device_type='gpu': OpenCL, plus the GPU vendor's OpenCL driver on the GPU nodes; "
            "device_type='cuda': a CUDA build). Install one, or use use_gpu=False to train on CPUs."
        )


class LightGBMEstimator(DistributedBoostingEstimator):
    """Distributed LightGBM. `params` keys win over `n_estimators`/`objective`.

    Like XGBEstimator, a checkpoint every `checkpoint_every` rounds lets a fit survive the loss of
    workers (up to `max_restarts` restarts of the worker group from the latest checkpoint).
    """

    _adapter = _LightGBMAdapter()
    _default_objective = LightGBMFramework.default_objective  # the plug-in holds the framework's defaults
    _memory_modes = LightGBMFramework.memory_modes

    def __init__(self, n_estimators: int = 100, objective: str = "regression",
                 params: dict[str, Any] | None = None, scaling_config: LightGBMScalingConfig | None = None,
                 callbacks: list[Any] | None = None, *, checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
                 max_restarts: int = DEFAULT_MAX_RESTARTS, memory: MemoryMode = "auto"):
        super().__init__(n_estimators, objective, params, scaling_config, callbacks,
                         checkpoint_every=checkpoint_every, max_restarts=max_restarts, memory=memory)

    def _training_params(self) -> tuple[dict[str, Any], int]:
        # Like the base, but with LightGBM's own names for the number of rounds and the objective.
        params = dict(self.params or {})
        rounds = _pop_all(params, _ROUNDS)
        rounds = self.n_estimators if rounds is None else rounds
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
            raise ConfigError(f"n_estimators={rounds!r} is invalid: use an integer >= 1.")
        if _first(params, _OBJECTIVE) is None:
            params["objective"] = self.objective
        return params, rounds

    def fit(self, dataset, input_cols, label_col, eval_set=None, verbose_eval=None, **kwargs) -> lgb.Booster:
        return super().fit(dataset, input_cols, label_col, eval_set, verbose_eval, **kwargs)

    def _load_result(self, result: WorkerResult) -> None:
        super()._load_result(result)
        if self.best_iteration_:
            self.booster_.best_iteration = self.best_iteration_


__all__ = ["LightGBMEstimator", "LightGBMScalingConfig"]
