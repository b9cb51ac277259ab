"""Run one boosting fit on warm workers: attempts, restarts from the latest checkpoint, errors.

The fit's CPUs are held for the whole fit (a placement group); each attempt leases one warm worker
per bundle (see pool.py), lets the framework adapter open its rendezvous (xgboost's tracker,
LightGBM's machine list), runs every rank and waits. What happens after a failure is decided by a
pure policy (`after_failure`): a worker lost or a transient error restarts the group from the latest
checkpoint, up to `max_restarts` times; an error a restart cannot fix is raised at once, as raised.
This replaces Ray Train's per-fit controller, worker group and their processes for boosting fits.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainflow.distributors.checkpoint import CheckpointStore, ResumeState
from trainflow.distributors.pool import Gang, WorkerAddress, lost_errors, reserve
from trainflow.distributors.runner import translate_worker_failure
from trainflow.errors import TrainflowError, TrainingError

if TYPE_CHECKING:
    from trainflow.distributors.boosting import BoostingAdapter, WorkerJob, WorkerResult
    from trainflow.distributors.placement import Placement


@dataclass(frozen=True)
class GangMember:
    """Who a worker is in this attempt, and what the adapter's rendezvous gave every rank."""

    rank: int
    world_size: int
    attempt: int = 0
    collective: Any = None


@dataclass
class Rendezvous:
    """An adapter's per-attempt meeting point: `collective` goes to every rank, `close(ok)` runs on
    the driver when the attempt ends."""

    collective: Any = None
    close: Callable[[bool], None] = field(default=lambda ok: None)


@dataclass(frozen=True)
class Failure:
    """The first thing that went wrong in an attempt: the rank, the error, and whether the worker
    process itself was lost (killed, out of memory, its node gone)."""

    rank: int
    error: BaseException
    lost: bool


RESTART = "restart"
_DRAIN_S = 30.0  # how long the other ranks of a failed attempt get to stop, once told to


def after_failure(failure: Failure, attempt: int, max_restarts: int) -> str | TrainflowError:
    """RESTART, or the error to raise. Attempt 0 is the first run; `max_restarts` restarts follow."""
    error = failure.error
    if isinstance(error, TrainflowError) and not error.transient:
        return error  # bad data or parameters: a restart would read and train again for the same error
    if attempt < max_restarts:
        return RESTART
    error = translate_worker_failure({failure.rank: error})
    if max_restarts and isinstance(error, TrainingError):
        error = TrainingError(f"{error} (gave up after {max_restarts} restart(s) from the latest checkpoint)")
    return error


def run_fit(job: WorkerJob, placement: Placement, max_restarts: int, name: str,
            start: ResumeState | None = None) -> WorkerResult:
    """Train `job` on `placement`; rank 0's result. `start`: a model to continue (its rounds count
    towards `job.num_rounds`). Checkpoints live under the run's folder in the checkpoint storage
    until the fit ends."""
    adapter = job.adapter
    job.checkpoints = CheckpointStore.for_run(name)
    resume = start
    attempt = 0
    try:
        with reserve(placement.num_workers, placement.cpus_per_worker, placement.use_gpu, name) as reservation:
            while True:
                try:
                    with reservation.gang() as gang:
                        outcome = _attempt(adapter, job, gang, attempt, resume)
                except lost_errors() as exc:  # a worker lost while the attempt was being set up
                    outcome = Failure(0, exc, lost=True)
                if not isinstance(outcome, Failure):
                    return outcome
                decision = after_failure(outcome, attempt, max_restarts)
                if decision != RESTART:
                    raise decision from (None if decision is outcome.error else outcome.error)
                if outcome.lost:
                    reservation.settle()  # its node may be gone: restart once Ray knows
                attempt += 1
                resume = job.checkpoints.latest() or start
    finally:
        job.checkpoints.remove()


def _attempt(adapter: BoostingAdapter, job: WorkerJob, gang: Gang, attempt: int,
             resume: ResumeState | None) -> WorkerResult | Failure:
    world = len(gang.workers)
    meeting = adapter.begin_attempt(job, gang.addresses, attempt)
    ok = False
    try:
        refs = [worker.run.remote(train_rank, job, GangMember(rank, world, attempt, meeting.collective), resume)
                for rank, worker in enumerate(gang.workers)]
        outcome = _wait(refs, gang)
        ok = not isinstance(outcome, Failure)
        return outcome
    finally:
        meeting.close(ok)


def _wait(refs: list[Any], gang: Gang) -> WorkerResult | Failure:
    """Rank 0's result, or the attempt's failure. After a first failure the other ranks (perhaps
    waiting for the failed one inside a collective) are stopped, and their outcomes collected."""
    import ray

    pending = {ref: rank for rank, ref in enumerate(refs)}
    result, failures = None, []
    try:
        while pending and not failures:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            outcome = _outcome(pending.pop(ref), ref)
            if isinstance(outcome, Failure):
                failures.append(outcome)
            elif outcome is not None:
                result = outcome
        if not failures:
            return result
        if len(refs) > 1:
            gang.lose(list(range(len(refs))))  # a collective's state is not reusable after a failure
        elif failures[0].lost:
            gang.lose([failures[0].rank])
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=_DRAIN_S)
        for ref in ready:  # collected, so Ray does not log them as unhandled errors
            outcome = _outcome(pending.pop(ref), ref)
            if isinstance(outcome, Failure):
                failures.append(outcome)
            elif outcome is not None:
                result = outcome
        if result is not None:
            return result  # rank 0 finished, so every rank trained every round: its model stands
        # usually the first failure is the cause and the others its echo ("the other end is closed"),
        # but an error that no restart can fix decides, wherever it arrived
        fatal = [f for f in failures if isinstance(f.error, TrainflowError) and not f.error.transient]
        return (fatal or failures)[0]
    finally:
        if pending:  # interrupted (Ctrl-C, a cancelled flow run), or stuck: stop what still runs
            gang.lose(list(pending.values()))


def _outcome(rank: int, ref: Any) -> Any:
    """A rank's return value, or its Failure."""
    import ray
    from ray.exceptions import RayError, RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:  # raised by the training code; the process is fine
        return Failure(rank, exc.cause if exc.cause is not None else exc, lost=False)
    except RayError as exc:  # the worker process is gone
        return Failure(rank, exc, lost=True)


def train_rank(job: WorkerJob, member: GangMember, resume: ResumeState | None) -> WorkerResult | None:
    """In the worker: train this rank; only rank 0's result (the model) travels back."""
    from trainflow.data.rank import training_as

    with training_as(member.rank, member.world_size):
        result = job.adapter.train(job, member, resume)
    return result if member.rank == 0 else None


__all__ = ["RESTART", "Failure", "GangMember", "Rendezvous", "WorkerAddress", "after_failure", "run_fit",
           "train_rank"]
