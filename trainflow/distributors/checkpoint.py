"""The boosting checkpoint format: one writer (`report`) and one reader (`read_checkpoint`).

A checkpoint is a folder with the model's bytes and a JSON record of the eval history, the best
iteration, the rounds done and whether it is the finished model. Ray Train keeps the latest ones in
its run storage; a restarted worker group resumes from it, and fit reads the final one.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainflow.distributors.boosting import WorkerJob  # noqa: F401

MODEL_FILE = "model.bin"
HISTORY_FILE = "eval_history.json"


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
