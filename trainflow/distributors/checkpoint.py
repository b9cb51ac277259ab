"""Boosting checkpoints: rank 0 writes one every few rounds; a restarted fit continues from the latest.

A checkpoint is one file under the run's folder in the checkpoint storage (`TRAINFLOW_STORAGE`, a
path or a URI pyarrow opens; on a multi-node cluster it must be storage every node reaches): a
length-prefixed JSON record (eval history, rounds done) followed by the model's bytes. It is written
under a temporary name and renamed, so a reader never sees half a checkpoint; the two latest are kept.
The finished model does not go through storage: rank 0 returns it to the fit.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainflow.distributors.torch_storage import Location, resolve_location

if TYPE_CHECKING:
    from trainflow.distributors.boosting import WorkerJob

STORAGE_ENV = "TRAINFLOW_STORAGE"
_PREFIX, _KEEP = "ckpt-", 2


def storage_root() -> str:
    """Where fits keep checkpoints: TRAINFLOW_STORAGE, else a temp folder (one node only)."""
    return os.environ.get(STORAGE_ENV) or os.path.join(tempfile.gettempdir(), "trainflow-runs")


@dataclass(frozen=True)
class ResumeState:
    """The latest checkpoint a restarted fit continues from."""

    model: bytes
    history: dict[str, dict[str, list[float]]]
    rounds_done: int


@dataclass(frozen=True)
class CheckpointStore:
    """One run's checkpoints (picklable: it travels to the workers inside the job)."""

    location: Location

    @classmethod
    def for_run(cls, name: str) -> CheckpointStore:
        return cls(resolve_location(storage_root()).child(f"{name}-{uuid.uuid4().hex[:8]}"))

    def save(self, state: ResumeState) -> None:
        fs, folder = self.location.fs, self.location.path
        fs.create_dir(folder, recursive=True)
        meta = json.dumps({"history": state.history, "rounds_done": state.rounds_done}).encode()
        final = f"{folder}/{_PREFIX}{state.rounds_done:09d}"
        partial = f"{final}.{uuid.uuid4().hex[:8]}.tmp"
        with fs.open_output_stream(partial) as out:
            out.write(len(meta).to_bytes(8, "big"))
            out.write(meta)
            out.write(state.model)
        fs.move(partial, final)
        for old in self._names()[:-_KEEP]:
            with contextlib.suppress(OSError):
                fs.delete_file(f"{folder}/{old}")

    def latest(self) -> ResumeState | None:
        names = self._names()
        if not names:
            return None
        with self.location.fs.open_input_stream(f"{self.location.path}/{names[-1]}") as src:
            raw = src.read()
        size = int.from_bytes(raw[:8], "big")
        meta = json.loads(raw[8:8 + size])
        return ResumeState(bytes(raw[8 + size:]), meta["history"], int(meta["rounds_done"]))

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.location.fs.delete_dir(self.location.path)

    def _names(self) -> list[str]:
        import pyarrow.fs as pafs

        infos = self.location.fs.get_file_info(pafs.FileSelector(self.location.path, allow_not_found=True))
        names = [i.base_name for i in infos if i.base_name.startswith(_PREFIX) and not i.base_name.endswith(".tmp")]
        return sorted(names)  # zero-padded round numbers sort in order


def maybe_checkpoint(job: WorkerJob, rank: int, done: int, model: Callable[[], bytes],
                     history: Callable[[], dict]) -> None:
    """After round `done` (counted from the first round of the fit, resumed rounds included): every
    `job.checkpoint_every` rounds, not the last (fit returns that one), rank 0 saves a checkpoint.
    `model` and `history` are only called when one is due."""
    every = job.checkpoint_every
    if rank == 0 and job.checkpoints is not None and every and done % every == 0 and done < job.num_rounds:
        job.checkpoints.save(ResumeState(model(), history(), done))


def join_history(before: dict, after: dict) -> dict:
    """Per-round metrics of a resumed run: the checkpoint's rounds, then the new ones (as floats)."""
    out = {d: {m: list(v) for m, v in ms.items()} for d, ms in before.items()}
    for data, metrics in after.items():
        for name, values in metrics.items():
            out.setdefault(data, {}).setdefault(name, []).extend(float(v) for v in values)
    return out
