"""What runs inside the Ray Train worker: timestamps and memory of one fit, written to a JSON file.

XGBoost: `XGBProbe` is an `xgboost.callback.TrainingCallback` passed through `XGBEstimator(callbacks=...)`
(trainflow runs user callbacks on rank 0). LightGBM: `LGBProbe` is a LightGBM callback.

Marks (wall clock, `time.time()`, same host as the driver):
  unpickled   the WorkerJob (which carries this object) was unpickled in the worker: the training loop
              is starting; trainflow, xgboost, pyarrow are imported. VmRSS here is the worker's
              "after imports" baseline.
  before      before_training: the DMatrix/Dataset is built (data read + quantised), first round next.
  first_round after round 1 finished.
  after       after_training: every round done.
VmHWM (peak RSS of the process since it started) is read at `after`.

Ray Train may unpickle the job in other processes too (controller); values are recorded at unpickle time
and only written from the process that trains, so they always belong to the training worker.
"""
from __future__ import annotations

import json
import os
import time

import xgboost as xgb


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of a process, in bytes (from /proc/<pid>/status)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS (per-fit peaks in a reused process)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


class _Marks:
    def __init__(self, path: str):
        self.path = path
        self._fresh()

    def _fresh(self):
        self.marks: dict[str, float] = {}
        self.mem: dict[str, dict[str, int]] = {}
        self.pid = os.getpid()

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path = state["path"]
        self._fresh()
        self.marks["unpickled"] = time.time()
        _reset_peak_rss()  # a warm worker's VmHWM would otherwise hold an earlier fit's peak
        self.mem["unpickled"] = proc_status()

    def mark(self, name: str, memory: bool = False) -> None:
        self.marks[name] = time.time()
        if memory:
            self.mem[name] = proc_status()

    def dump(self, **extra) -> None:
        if os.getpid() != self.pid:
            return
        import sys

        tf = sys.modules.get("trainflow")
        data = {"pid": self.pid, "marks": self.marks, "mem": self.mem,
                "trainflow": getattr(tf, "__file__", None), **extra}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, self.path)


class XGBProbe(xgb.callback.TrainingCallback, _Marks):
    trainflow_resumable = True  # timestamps only: a fit with the probe checkpoints like one without

    def __init__(self, path: str):
        xgb.callback.TrainingCallback.__init__(self)
        _Marks.__init__(self, path)

    def before_training(self, model):
        self.mark("before", memory=True)
        return model

    def after_iteration(self, model, epoch, evals_log) -> bool:
        if epoch == 0:
            self.mark("first_round")
            self.dump()  # visible even if the fit dies later
        return False

    def after_training(self, model):
        self.mark("after", memory=True)
        self.dump()
        return model


class LGBProbe(_Marks):
    """LightGBM callback (called after each iteration; order after trainflow's own callbacks)."""

    order = 50
    before_iteration = False
    trainflow_resumable = True

    def __call__(self, env) -> None:
        if env.iteration == env.begin_iteration:
            self.mark("first_round", memory=True)
            self.dump()
        if env.iteration + 1 == env.end_iteration:
            self.mark("after", memory=True)
            self.dump()


class MemProbe(XGBProbe):
    """XGBProbe plus a sampler thread that tracks the peak of RssAnon (anonymous memory: what
    external memory bounds; the cache pages xgboost maps in are file-backed, RssFile) from unpickling to
    after_training, and the size of the external-memory cache under $TRAINFLOW_SCRATCH at its end."""

    def __setstate__(self, state):
        super().__setstate__(state)
        import threading

        self.peak: dict[str, int] = dict(self.mem["unpickled"])
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            now = proc_status()
            for key in ("RssAnon", "VmRSS", "RssFile"):
                self.peak[key] = max(self.peak.get(key, 0), now.get(key, 0))

    def after_training(self, model):
        self._stop.set()
        root = os.environ.get("TRAINFLOW_SCRATCH", "")
        cache = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files) if root else 0
        self.mark("after", memory=True)
        self.dump(peak=self.peak, cache_bytes=cache)
        return model
