"""XGBEstimator: distributed XGBoost on Ray, Snowflake ML's API.

With several workers every rank joins xgboost's own collective (`xgboost.collective`, the documented
interface for custom launchers) through a RabitTracker that the fit starts for each attempt.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

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
from trainflow.distributors.ingest import iter_shard, read_shard
from trainflow.distributors.matrix import CACHE, matrix_keys
from trainflow.distributors.memory import MemoryMode, new_cache_folder
from trainflow.distributors.placement import Placement, ScalingRequest
from trainflow.distributors.pool import WorkerAddress
from trainflow.distributors.progress import format_metrics
from trainflow.frameworks.xgboost import MARGIN_LINK, XGBoostFramework


@dataclass(frozen=True)
class XGBScalingConfig(ScalingRequest):
    """num_workers=-1: one per node (one per GPU with GPUs); num_cpu_per_worker=-1: the node's CPUs;
    use_gpu=None: GPUs when the cluster has them."""


class _ChunkIter(xgb.DataIter):
    """Feeds pre-read float32 chunks to QuantileDMatrix without concatenating them."""

    def __init__(self, chunks, feature_names: list[str]):
        super().__init__(release_data=True)
        # a worker whose shard is empty still joins the collective with an empty matrix
        empty = [(np.empty((0, len(feature_names)), np.float32), np.empty(0, np.float32))]
        self._chunks, self._names, self._i = chunks or empty, feature_names, 0

    def next(self, input_data) -> bool:
        if self._i == len(self._chunks):
            return False
        features, label = self._chunks[self._i]
        input_data(data=features, label=label, feature_names=self._names)
        self._i += 1
        return True

    def reset(self) -> None:
        self._i = 0


class _StreamIter(xgb.DataIter):
    """Streams a shard to a QuantileDMatrix one batch at a time, read again on each of xgboost's
    passes; for ExtMemQuantileDMatrix the binned pages go to files under `cache_prefix`."""

    def __init__(self, read: Callable[[], Iterator], feature_names: list[str], cache_prefix: str | None):
        super().__init__(cache_prefix=cache_prefix, release_data=True)
        self._read, self._names = read, feature_names
        self._stream: Iterator | None = None
        self._sent = False

    def next(self, input_data) -> bool:
        if self._stream is None:
            self._stream, self._sent = self._read(), False
        chunk = next(self._stream, None)
        if chunk is None:
            if self._sent:
                return False
            # a worker whose shard is empty still joins the collective with an empty matrix
            chunk = (np.empty((0, len(self._names)), np.float32), np.empty(0, np.float32))
        self._sent = True
        input_data(data=chunk[0], label=chunk[1], feature_names=self._names)
        return True

    def reset(self) -> None:
        self._stream = None


class _Progress(xgb.callback.TrainingCallback):
    def __init__(self, job: WorkerJob):
        self.job = job

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        done = model.num_boosted_rounds()  # `epoch` restarts at 0 when training continues a checkpoint
        if done % self.job.verbose_eval == 0 or done == 1 or done == self.job.num_rounds:
            latest = {d: {m: v[-1] for m, v in ms.items()} for d, ms in evals_log.items()}
            self.job.progress.put(format_metrics(done, latest))
        return False


class _Checkpoint(xgb.callback.TrainingCallback):
    """On every rank: a resumable checkpoint every `checkpoint_every` rounds (see maybe_checkpoint)."""

    def __init__(self, job: WorkerJob, rank: int, before: dict):
        self.job, self.rank, self.before = job, rank, before

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        # `epoch` restarts at 0 when training continues a checkpoint; the booster knows the true round
        maybe_checkpoint(self.job, self.rank, model.num_boosted_rounds(), lambda: bytes(model.save_raw("ubj")),
                         lambda: join_history(self.before, evals_log))
        return False


def _overrides(callback: xgb.callback.TrainingCallback, method: str) -> bool:
    return getattr(type(callback), method, None) is not getattr(xgb.callback.TrainingCallback, method)


class _RankZeroCallbacks(xgb.callback.TrainingCallback):
    """The user's callbacks, run on rank 0 only (their side effects happen once), with their decision
    to stop shared with every rank each round through xgboost's collective broadcast.

    Without the broadcast, rank 0 leaves the boosting loop when a callback says stop (EarlyStopping)
    and the other ranks wait for it in the next round's allreduce forever. Every rank holds one of
    these, so every rank takes part in the same broadcasts.
    """

    def __init__(self, callbacks: list[xgb.callback.TrainingCallback], rank: int, world_size: int):
        self.callbacks = list(callbacks) if rank == 0 else []
        self.shared = world_size > 1
        # from the whole list, known on every rank: every rank broadcasts the same number of times
        self.share_before = self.shared and any(_overrides(c, "before_iteration") for c in callbacks)

    def before_training(self, model):
        for c in self.callbacks:
            model = c.before_training(model)
        return model

    def after_training(self, model):
        for c in self.callbacks:
            model = c.after_training(model)
        return model

    def before_iteration(self, model, epoch: int, evals_log) -> bool:
        stop = any(c.before_iteration(model, epoch, evals_log) for c in self.callbacks)  # as xgboost: any()
        return _from_rank_zero(stop) if self.share_before else stop

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        stop = any(c.after_iteration(model, epoch, evals_log) for c in self.callbacks)
        return _from_rank_zero(stop) if self.shared else stop


def _wait_quietly(tracker) -> None:
    try:
        tracker.wait_for()
    except xgb.core.XGBoostError:
        pass  # freed after a failed attempt: the controller reports what failed


def _from_rank_zero(stop: bool) -> bool:
    from xgboost import collective

    return bool(collective.broadcast(bool(stop), 0))


class _XGBAdapter(BoostingAdapter):
    name = "xgboost"

    def resumable(self, params: dict[str, Any]) -> bool:
        return self.early_stopping(params) is None  # its best-round state is not checkpointed

    def early_stopping(self, params: dict[str, Any]) -> tuple[str, Any] | None:
        rounds = params.get("early_stopping_rounds")
        return ("early_stopping_rounds", rounds) if rounds else None  # xgboost: 0/None = off

    def begin_attempt(self, job: WorkerJob, addresses: list[WorkerAddress], attempt: int) -> Rendezvous:
        if len(addresses) < 2:
            return Rendezvous()  # one worker trains alone: no collective
        import threading

        import ray
        from xgboost.tracker import RabitTracker

        tracker = RabitTracker(n_workers=len(addresses), host_ip=ray.util.get_node_ip_address(), sortby="task")
        tracker.start()
        waiter = threading.Thread(target=_wait_quietly, args=(tracker,), name="trainflow-rabit-tracker", daemon=True)
        waiter.start()

        def close(ok: bool) -> None:
            if ok:
                waiter.join(timeout=10)
            try:
                tracker.free()  # also ends a wait_for still running (its workers are gone)
            except xgb.core.XGBoostError:
                pass

        return Rendezvous(tracker.worker_args(), close)

    def worker_params(self, params: dict[str, Any], placement: Placement) -> dict[str, Any]:
        params = dict(params)
        params.setdefault("tree_method", "hist")
        params["nthread"] = placement.cpus_per_worker
        if placement.use_gpu:
            params["device"] = "cuda"  # Ray sets CUDA_VISIBLE_DEVICES: each worker sees only its GPU
        return params

    def train(self, job: WorkerJob, member: GangMember, resume: ResumeState | None) -> WorkerResult:
        if member.world_size == 1:
            return self._train(job, member.rank, 1, resume)
        from xgboost.collective import CommunicatorContext

        # sortby="task": ranks follow these ids, so the tracker's rank is the fit's rank
        with CommunicatorContext(**member.collective, dmlc_task_id=f"{member.rank:08d}"):
            return self._train(job, member.rank, member.world_size, resume)

    def _train(self, job: WorkerJob, rank: int, world_size: int, resume: ResumeState | None) -> WorkerResult:
        params = dict(job.params)
        started = time.perf_counter()
        if job.memory == "external":
            scratch = new_cache_folder(job.scratch)
            try:
                dtrain, deval = self._external_matrices(job, rank, params.get("max_bin"), scratch)
                return self._boost(job, rank, world_size, resume, params, dtrain, deval, started, False)
            finally:  # the matrices map the cache files: dropped first, then the folder goes
                dtrain = deval = None
                shutil.rmtree(scratch, ignore_errors=True)
        dtrain, deval, reused = self._matrices(job, rank, world_size, params.get("max_bin"))
        return self._boost(job, rank, world_size, resume, params, dtrain, deval, started, reused)

    def _boost(self, job: WorkerJob, rank: int, world_size: int, resume: ResumeState | None, params: dict,
               dtrain, deval, started: float, reused: bool) -> WorkerResult:
        early_stopping = params.pop("early_stopping_rounds", None)
        ingest_s = time.perf_counter() - started
        evals = [(dtrain, "train")] + ([(deval, "eval")] if deval is not None else [])
        before = resume.history if resume else {}
        callbacks = [_Checkpoint(job, rank, before)]
        if job.progress is not None and rank == 0:
            callbacks.append(_Progress(job))
        if job.callbacks:
            callbacks.append(_RankZeroCallbacks(job.callbacks, rank, world_size))
        history: dict = {}
        booster = xgb.train(
            params, dtrain, num_boost_round=job.num_rounds - (resume.rounds_done if resume else 0),
            evals=evals, evals_result=history, verbose_eval=False, callbacks=callbacks,
            early_stopping_rounds=early_stopping,  # fit refused it without an eval set
            xgb_model=self.load(resume.model) if resume else None,  # continue from the checkpoint
        )
        # set by early stopping, the param's or a user's EarlyStopping callback (rank 0 reports the model)
        best = getattr(booster, "best_iteration", None)
        # The model leaves the worker configured for CPU prediction (where fitted models are mostly
        # used); a device=cuda booster given numpy rows warns about mismatched devices on every call.
        booster.set_param({"device": "cpu"})
        profile = {"ingest_s": ingest_s, "train_s": time.perf_counter() - started - ingest_s, "matrix_reused": reused,
                   "memory": job.memory}
        return WorkerResult(bytes(booster.save_raw("ubj")), join_history(before, history), best, profile)

    @staticmethod
    def _matrices(job: WorkerJob, rank: int, world_size: int, max_bin: int | None):
        """(train, eval or None, reused): this rank's QuantileDMatrix pair, from the warm worker's
        cache when it already built it for the same data and binning (distributors/matrix.py)."""
        binning = ("xgboost.QuantileDMatrix", max_bin)
        train_key, eval_key = matrix_keys(job.train_shards, job.eval_shards, rank, job.input_cols, job.label_col,
                                          job.categories, binning)
        hit = train_key in CACHE and (job.eval_shards is None or eval_key in CACHE)
        if world_size > 1:  # building a matrix is a collective step: every rank builds, or none
            from xgboost import collective

            hit = int(collective.allreduce(np.array([int(hit)], dtype=np.int32), collective.Op.MIN)[0]) == 1
        if hit:
            return CACHE.get(train_key), CACHE.get(eval_key) if eval_key is not None else None, True
        CACHE.clear()  # other data: an earlier fit's matrices must not share the worker's memory with these

        def source(shards: list, what: str) -> xgb.DataIter:
            # low: the shard is read again on each of xgboost's passes, one batch in memory at a time;
            # in_memory: read once into float32 chunks, which stay until the matrix is built
            if job.memory == "low":
                return _StreamIter(lambda: iter_shard(shards[rank], job.input_cols, job.label_col, what),
                                   job.input_cols, None)
            return _ChunkIter(read_shard(shards[rank], job.input_cols, job.label_col, what), job.input_cols)

        dtrain = xgb.QuantileDMatrix(source(job.train_shards, "the training data"), nthread=job.cpus, max_bin=max_bin)
        deval = None
        if job.eval_shards is not None:
            deval = xgb.QuantileDMatrix(source(job.eval_shards, "the eval_set"), ref=dtrain, nthread=job.cpus,
                                        max_bin=max_bin)
        CACHE.put(train_key, dtrain)
        CACHE.put(eval_key, deval)
        return dtrain, deval, False

    @staticmethod
    def _external_matrices(job: WorkerJob, rank: int, max_bin: int | None, scratch: Path):
        """(train, eval or None): this rank's ExtMemQuantileDMatrix pair, streamed from its shards, with
        their pages under `scratch`. Never kept for a later fit: the cache goes with this one."""
        CACHE.clear()  # an earlier fit's in-memory matrices must not stay beside this one

        def stream(shards: list, what: str) -> _StreamIter:
            return _StreamIter(lambda: iter_shard(shards[rank], job.input_cols, job.label_col, what),
                               job.input_cols, str(scratch / ("train" if shards is job.train_shards else "eval")))

        dtrain = xgb.ExtMemQuantileDMatrix(stream(job.train_shards, "the training data"), nthread=job.cpus,
                                           max_bin=max_bin)
        deval = None
        if job.eval_shards is not None:
            deval = xgb.ExtMemQuantileDMatrix(stream(job.eval_shards, "the eval_set"), ref=dtrain, nthread=job.cpus,
                                              max_bin=max_bin)
        return dtrain, deval

    def load(self, raw: bytes) -> xgb.Booster:
        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        return booster

    def predict(self, booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
        booster.set_param({"nthread": 1, "device": "cpu"})  # 1-CPU tasks that see no GPU (ingest.remote)
        return booster.inplace_predict(features)

    def score(self, booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
        from trainflow.metrics import apply_link

        link = MARGIN_LINK.get(json.loads(booster.save_config())["learner"]["objective"]["name"])
        if link is None:
            return self.predict(booster, features)
        booster.set_param({"nthread": 1, "device": "cpu"})
        return apply_link(link, booster.inplace_predict(features, predict_type="margin"))


class XGBEstimator(DistributedBoostingEstimator):
    """Distributed XGBoost. `params` keys win over `n_estimators`/`objective`.

    Beyond Snowflake's arguments: a checkpoint every `checkpoint_every` rounds lets a fit survive the
    loss of workers (up to `max_restarts` restarts of the worker group from the latest checkpoint).
    `memory="external"` trains each worker's shard from xgboost's external memory (binned pages in a
    cache on node-local scratch disk, `TRAINFLOW_SCRATCH`) instead of holding it in memory.
    """

    _adapter = _XGBAdapter()
    _default_objective = XGBoostFramework.default_objective  # the plug-in holds the framework's defaults
    _memory_modes = XGBoostFramework.memory_modes

    def __init__(self, n_estimators: int = 100, objective: str = "reg:squarederror",
                 params: dict[str, Any] | None = None, scaling_config: XGBScalingConfig | None = None,
                 callbacks: list[Any] | None = None, *, checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
                 max_restarts: int = DEFAULT_MAX_RESTARTS, memory: MemoryMode = "auto"):
        super().__init__(n_estimators, objective, params, scaling_config, callbacks,
                         checkpoint_every=checkpoint_every, max_restarts=max_restarts, memory=memory)

    def fit(self, dataset, input_cols, label_col, eval_set=None, verbose_eval=None, **kwargs) -> xgb.Booster:
        return super().fit(dataset, input_cols, label_col, eval_set, verbose_eval, **kwargs)


__all__ = ["XGBEstimator", "XGBScalingConfig"]
