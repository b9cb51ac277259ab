"""Ray Train's own timeline of each fit, from its controller/worker logs in the Ray session folder.

Ray Train V2 writes structured JSON logs under `<session>/logs/train/`: one `ray-train-sys-controller-*`
file per controller (= per fit) with "[Worker Group Initialization] ... in X s" lines, and one
`ray-train-sys-worker-*` file per worker with the time the checkpoint was reported.
"""
from __future__ import annotations

import datetime as _dt
import glob
import json
import os
import re

_PATTERNS = {
    "pg_ready_s": re.compile(r"Placement group ready in ([\d.]+)s"),
    "actors_created_s": re.compile(r"(\d+) worker actors created in ([\d.]+)s"),
    "train_context_init_s": re.compile(r"Train context initialized on workers in ([\d.]+)s"),
    "worker_group_start_s": re.compile(r"Worker group startup completed in ([\d.]+)s total"),
}


def session_dir() -> str | None:
    try:
        import ray

        return ray._private.worker._global_node.get_session_dir_path()
    except Exception:  # noqa: BLE001
        return None


def _ts(asctime: str) -> float:
    return _dt.datetime.strptime(asctime, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _lines(path: str):
    with open(path) as fh:
        for line in fh:
            try:
                d = json.loads(line)
                yield _ts(d["asctime"]), d.get("message", "")
            except (ValueError, KeyError):
                continue


def controller_timelines(session: str) -> list[dict]:
    """One dict per controller log: first/last timestamps, the logged durations, shutdown time."""
    out = []
    for path in glob.glob(os.path.join(session, "logs", "train", "ray-train-sys-controller-*.log")):
        rec: dict = {"file": os.path.basename(path)}
        for ts, msg in _lines(path):
            rec.setdefault("first_ts", ts)
            rec["last_ts"] = ts
            if "Requesting resources" in msg:
                rec.setdefault("requesting_ts", ts)
            if "Attempting to start training worker group" in msg:
                rec.setdefault("wg_attempt_ts", ts)
            if "Shutting down" in msg and "workers" in msg:
                rec.setdefault("shutdown_ts", ts)
            for key, pat in _PATTERNS.items():
                m = pat.search(msg)
                if m and key not in rec:
                    rec[key] = float(m.groups()[-1])
        out.append(rec)
    return sorted(out, key=lambda r: r.get("first_ts", 0))


def attach(records: list[dict], session: str | None) -> None:
    """Give each record with absolute `t0`/`t1` the controller timeline that falls inside it."""
    if not session:
        return
    timelines = controller_timelines(session)
    for rec in records:
        t0, t1 = rec.get("t0"), rec.get("t1")
        if t0 is None:
            continue
        match = [c for c in timelines if t0 - 0.5 <= c.get("first_ts", 0) <= t1 + 0.5]
        if len(match) != 1:
            continue
        c = match[0]
        tl = {k: c[k] for k in ("pg_ready_s", "actors_created_s", "train_context_init_s", "worker_group_start_s")
              if k in c}
        tl["driver_to_controller_log_s"] = c["first_ts"] - t0
        if "shutdown_ts" in c:
            end = rec.get("t_loop_end")
            if end is not None:
                tl["loop_end_to_controller_shutdown_s"] = c["shutdown_ts"] - end
            tl["controller_shutdown_to_fit_return_s"] = t1 - c["shutdown_ts"]
        rec["raytrain_log"] = tl
