#!/usr/bin/env python
"""trainflow performance benchmark (issue 7): `make bench`, i.e. `.venv/bin/python bench/run.py`.

Rows (warm local Ray cluster, the measured cases alternate inside every repeat; median/min/max):
  (a) plain xgboost, one process, all cores: read Parquet → QuantileDMatrix (DataIter over Arrow record
      batches) → xgb.train. Run in a fresh subprocess per repeat; the clock starts after the imports.
  (b) XGBEstimator.fit (default scaling: 1 worker × all CPUs) on DataConnector.from_parquet.
  (c) the Ray Train docs recipe: 2 workers × 1 CPU, ray.data.read_parquet → get_dataset_shard → pandas →
      QuantileDMatrix → xgb.train (ray.train.xgboost.XGBoostTrainer, V2 API).
  (d) LightGBMEstimator.fit vs plain lgb.train (skipped with a note when trainflow.distributors.lightgbm
      does not import).
  (e) time from fit() to the end of the first boosting round: a TrainingCallback passed through
      XGBEstimator(callbacks=...) stamps it on rank 0 and writes a JSON file (no Ray round trip inside
      the measurement, unlike the verbose_eval progress queue).
  (f) peak worker RSS (VmHWM of the training worker process, read in that process) for (b) and (c), and
      amplification = (peak − RSS after imports) / raw float32 bytes of the worker's shard.
  (g) driver peak RSS of one XGBEstimator.fit at two sizes (1M and 8M rows), each in a fresh process.
  (h) RMSE of (b) vs (a) on a 200k-row holdout.
Plus profile rows: where (b)'s wall time goes (driver prep / Ray Train start / ingest / boosting /
finish), the empty Ray Train fit (XGBoostTrainer, 1 worker, no-op loop reporting a 1 KB checkpoint) and
a plain Ray task with the same CPUs.

Warm execution (issue 15): (b) touches the Parquet files before each fit (a scheduled run's new data), so
the warm worker reads and bins them again; (b2) refits the same data with other params (eta), which
reuses the worker's binned matrix;
(c2) XGBEstimator with the recipe's 2 workers x 1 CPU, and the fixed cost of a fit = fit wall time minus
the in-worker read + train (probe marks: job unpickled in the worker → after training), for the first fit
in the process (the warm-up: the worker pool starts) and in steady state.

The only instrumentation of the library: `trainflow.distributors.boosting.run_fit` is wrapped in this
process to timestamp when the controller starts and returns. Nothing under trainflow/ is edited.

Output: one table on stdout; JSON in bench/results/<timestamp>.json and bench/results/latest.json.
`run.py --report <result.json>` re-prints (and re-summarises) a saved result. See bench/README.md.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
# Ray workers inherit the environment of the raylet, which inherits the driver's: with bench/ on
# PYTHONPATH they can unpickle the probe callbacks in bench/tfbench.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH", "")) if p)
sys.path.insert(0, HERE)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from tfbench.data import ensure_dataset, load_holdout  # noqa: E402

MB = 1024 * 1024
WARMUP_ROWS = 50_000


# ------------------------------------------------------------------------------------ helpers
def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def touch(location: str) -> None:
    """New modification times for a Parquet file or folder (the data's identity changes)."""
    paths = [location] if os.path.isfile(location) else [
        os.path.join(root, f) for root, _, files in os.walk(location) for f in files]
    for path in paths:
        os.utime(path)


def rmse(pred, y) -> float:
    import numpy as np

    return float(np.sqrt(np.mean((np.asarray(pred, dtype=np.float64) - y) ** 2)))


def stats(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def subprocess_json(args: list[str], timeout: float) -> dict:
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy(), cwd=HERE)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(args[:2])}` failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
        with open("/proc/meminfo") as fh:
            info["mem_total_gb"] = round(int(fh.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        import trainflow

        info["trainflow_path"] = os.path.dirname(trainflow.__file__)
    except Exception:  # noqa: BLE001
        pass
    info["ray_train_env"] = {k: v for k, v in os.environ.items() if k.startswith("RAY_TRAIN_")}
    for mod in ("ray", "xgboost", "lightgbm", "pyarrow", "numpy", "pandas"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            info[mod] = None
    return info


# ------------------------------------------------------------------------------------ the cases
class Bench:
    def __init__(self, args):
        self.args = args
        self.threads = args.threads
        self.probe_dir = os.path.join(args.data_dir, "probes")
        self.storage = os.path.join(args.data_dir, "runs")
        os.makedirs(self.probe_dir, exist_ok=True)
        os.makedirs(self.storage, exist_ok=True)
        self.timeline: dict[str, float] = {}
        self.seq = 0
        self.holdout = None
        self.connectors: dict = {}  # one connector per file, reused like a user's notebook does

    # ---------------------------------------------------------------- setup
    def start_cluster(self) -> float:
        from trainflow.cluster import ensure_cluster

        t0 = time.time()
        ensure_cluster()
        took = time.time() - t0
        import trainflow.distributors.boosting as boosting

        original = getattr(boosting, "run_fit", None)
        if original is not None and not getattr(original, "_bench_wrapped", False):
            timeline = self.timeline

            def run_fit(*a, **k):
                timeline["rw_start"] = time.time()
                try:
                    return original(*a, **k)
                finally:
                    timeline["rw_end"] = time.time()

            run_fit._bench_wrapped = True
            boosting.run_fit = run_fit
        return took

    def _probe_path(self, name: str) -> str:
        self.seq += 1
        path = os.path.join(self.probe_dir, f"{name}-{os.getpid()}-{self.seq}.json")
        for p in (path, path + "-rank0.json", path + "-rank1.json"):
            if os.path.exists(p):
                os.remove(p)
        return path

    def xgb_params(self) -> dict:
        return {"max_depth": self.args.depth, "eta": 0.1, "max_bin": 256}

    # ---------------------------------------------------------------- (a) plain
    def plain(self, framework: str, meta: dict) -> dict:
        out = subprocess_json(["tfbench.plain", framework, "--meta", os.path.join(meta["root"], "meta.json"),
                               "--rounds", str(self.args.rounds), "--threads", str(self.threads),
                               "--depth", str(self.args.depth)], timeout=3600)
        out["wall_s"] = out["total_s"]
        return out

    # ---------------------------------------------------------------- (b) XGBEstimator
    def est_xgb(self, meta: dict, rounds: int | None = None, eta: float = 0.1, workers: int | None = None,
                new_data: bool = True) -> dict:
        """`new_data`: touch the files first, as a scheduled run sees new data, so the warm worker
        reads and bins them again; False measures a refit on data it already binned."""
        from trainflow.data import DataConnector
        from trainflow.distributors.xgboost import XGBEstimator, XGBScalingConfig
        from tfbench.probes import XGBProbe

        probe = self._probe_path("est-xgb")
        scaling = XGBScalingConfig(num_workers=workers, num_cpu_per_worker=1) if workers else None
        est = XGBEstimator(n_estimators=rounds or self.args.rounds, params={**self.xgb_params(), "eta": eta},
                           callbacks=[XGBProbe(probe)], scaling_config=scaling)
        conn = self.connectors.setdefault(meta["train"], DataConnector.from_parquet(meta["train"]))
        if new_data:
            touch(meta["train"])
        self.timeline.clear()
        t0 = time.time()
        booster = est.fit(conn, meta["feature_names"], meta["label"])
        t1 = time.time()
        with open(probe) as fh:
            p = json.load(fh)
        m, tl = p["marks"], dict(self.timeline)
        rec = {"wall_s": t1 - t0, "first_round_s": m["first_round"] - t0, "t0": t0, "t1": t1,
               "t_loop_end": m["after"],
               "phases": {
                   "driver_prep_s": tl["rw_start"] - t0 if "rw_start" in tl else None,
                   "workers_start_s": m["unpickled"] - tl.get("rw_start", t0),
                   "ingest_s": m["before"] - m["unpickled"],
                   "boost_s": m["after"] - m["before"],
                   "finish_s": tl.get("rw_end", t1) - m["after"],
                   "driver_load_s": t1 - tl["rw_end"] if "rw_end" in tl else None,
               },
               "fixed_s": (t1 - t0) - (m["after"] - m["unpickled"]),
               "worker_pid": p["pid"], "worker_trainflow": p.get("trainflow"),
               "worker_rss_after_imports": p["mem"]["unpickled"]["VmRSS"],
               "worker_rss_before_training": p["mem"]["before"]["VmRSS"],
               "worker_peak_rss": p["mem"]["after"]["VmHWM"],
               "shard_raw_bytes": meta["raw_bytes"]}
        rec["amplification"] = (rec["worker_peak_rss"] - rec["worker_rss_after_imports"]) / rec["shard_raw_bytes"]
        rec["rmse"] = rmse(booster.inplace_predict(self.holdout[0]), self.holdout[1]) if self.holdout else None
        return rec

    # ---------------------------------------------------------------- (c) Ray Train recipe
    def recipe(self, meta: dict, rounds: int | None = None) -> dict:
        from tfbench.plain import xgb_params
        from tfbench.raytrain import recipe_fit

        probe = self._probe_path("recipe")
        params = xgb_params(1, self.args.depth)
        booster, t0, t_read, t1 = recipe_fit(meta["train"], meta["label"], params, rounds or self.args.rounds,
                                     self.args.recipe_workers, self.storage, probe)
        ranks = []
        for r in range(self.args.recipe_workers):
            with open(f"{probe}-rank{r}.json") as fh:
                ranks.append(json.load(fh))
        per_rank = []
        for p in ranks:
            raw = p["rows"] * (meta["features"] + 1) * 4
            peak, base = p["mem"]["after"]["VmHWM"], p["mem"]["start"]["VmRSS"]
            per_rank.append({"rank": p["rank"], "pid": p["pid"], "rows": p["rows"], "peak_rss": peak,
                             "rss_after_imports": base, "shard_raw_bytes": raw,
                             "rss_shmem_after_data": p["mem"]["data"].get("RssShmem"),
                             "amplification": (peak - base) / raw})
        m = ranks[0]["marks"]
        worst = max(per_rank, key=lambda r: r["peak_rss"])
        # t0 for the Ray log timeline: when trainer.fit starts (after the driver-side read)
        rec = {"wall_s": t1 - t0, "first_round_s": m["first_round"] - t0, "t0": t_read, "t1": t1,
               "t_loop_end": m["after"],
               "phases": {"read_materialize_s": t_read - t0, "raytrain_start_s": m["start"] - t_read,
                          "data_to_pandas_s": m["data"] - m["start"],
                          "matrix_s": m["before"] - m["data"], "boost_s": m["after"] - m["before"],
                          "raytrain_finish_s": t1 - m["after"]},
               "ranks": per_rank, "worker_peak_rss": worst["peak_rss"],
               "amplification": max(r["amplification"] for r in per_rank)}
        rec["rmse"] = rmse(booster.inplace_predict(self.holdout[0]), self.holdout[1]) if self.holdout else None
        return rec

    # ---------------------------------------------------------------- (d) LightGBM
    def est_lgb(self, meta: dict, rounds: int | None = None) -> dict:
        from trainflow.data import DataConnector
        from trainflow.distributors.lightgbm import LightGBMEstimator
        from tfbench.plain import lgb_params
        from tfbench.probes import LGBProbe

        probe = self._probe_path("est-lgb")
        params = lgb_params(self.threads, self.args.depth)
        del params["num_threads"]  # the estimator sets it from the placement
        est = LightGBMEstimator(n_estimators=rounds or self.args.rounds, params=params,
                                callbacks=[LGBProbe(probe)])
        self.timeline.clear()
        t0 = time.time()
        booster = est.fit(DataConnector.from_parquet(meta["train"]), meta["feature_names"], meta["label"])
        t1 = time.time()
        with open(probe) as fh:
            p = json.load(fh)
        m, tl = p["marks"], dict(self.timeline)
        rec = {"wall_s": t1 - t0, "first_round_s": m["first_round"] - t0, "t0": t0, "t1": t1,
               "t_loop_end": m["after"],
               "phases": {"driver_prep_s": tl["rw_start"] - t0 if "rw_start" in tl else None,
                          "workers_start_s": m["unpickled"] - tl.get("rw_start", t0),
                          "ingest_and_round1_s": m["first_round"] - m["unpickled"],
                          "boost_rest_s": m["after"] - m["first_round"],
                          "finish_s": tl.get("rw_end", t1) - m["after"]},
               "fixed_s": (t1 - t0) - (m["after"] - m["unpickled"]),
               "worker_peak_rss": p["mem"]["after"]["VmHWM"],
               "worker_rss_after_imports": p["mem"]["unpickled"]["VmRSS"]}
        rec["amplification"] = (rec["worker_peak_rss"] - rec["worker_rss_after_imports"]) / meta["raw_bytes"]
        rec["rmse"] = rmse(booster.predict(self.holdout[0]), self.holdout[1]) if self.holdout else None
        return rec

    # ---------------------------------------------------------------- profile floors
    def floor(self) -> dict:
        from tfbench.raytrain import empty_fit, task_floor

        t0, t1 = empty_fit(self.threads, self.storage)
        return {"wall_s": t1 - t0, "t0": t0, "t1": t1, "task_s": task_floor(self.threads)}


def lightgbm_available() -> tuple[bool, str]:
    try:
        import trainflow.distributors.lightgbm  # noqa: F401
        return True, ""
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------------ report
def summarise(runs: dict[str, list[dict]], driver: list[dict], extra: dict) -> dict:
    def col(case, key, sub=None):
        vals = []
        for r in runs.get(case, []):
            v = r.get(sub, {}).get(key) if sub else r.get(key)
            vals.append(v)
        return stats([v for v in vals if v is not None])

    for r in runs.get("recipe", []):
        if r.get("ranks"):
            r["worker_peak_rss_sum"] = sum(k["peak_rss"] for k in r["ranks"])
    s = {case: {"wall_s": col(case, "wall_s"), "first_round_s": col(case, "first_round_s"),
                "worker_peak_rss": col(case, "worker_peak_rss"),
                "worker_peak_rss_sum": col(case, "worker_peak_rss_sum"), "amplification": col(case, "amplification"),
                "rmse": col(case, "rmse"), "fixed_s": col(case, "fixed_s"),
                "phases": {k: col(case, k, "phases") for k in (runs[case][0].get("phases") or {})}
                if runs.get(case) else {}}
         for case in runs}
    for case in ("plain_xgb", "plain_lgb"):
        if runs.get(case):
            s[case]["phases"] = {k: col(case, k) for k in ("read_s", "matrix_s", "train_s")}
            s[case]["peak_rss"] = col(case, "peak_rss")
    if runs.get("floor"):
        s["floor"]["task_s"] = col("floor", "task_s")
    for case in runs:
        keys = sorted({k for r in runs[case] for k in (r.get("raytrain_log") or {})})
        if keys:
            s[case]["raytrain_log"] = {k: col(case, k, "raytrain_log") for k in keys}
    s["driver_rss"] = driver
    s.update(extra)
    return s


def table(s: dict, args) -> list[list[str]]:
    rows: list[list[str]] = []

    def med(case, key="wall_s"):
        v = (s.get(case) or {}).get(key)
        return v["median"] if v else None

    def add(name, st, unit, scale=1.0, ratio=None, target="", fmt="{:.2f}"):
        if st is None:
            rows.append([name, unit, "-", "-", "-", "-", target])
            return
        f = lambda v: fmt.format(v / scale)  # noqa: E731
        rows.append([name, unit, f(st["median"]), f(st["min"]), f(st["max"]),
                     "-" if ratio is None else f"{ratio:.2f}x", target])

    plain = med("plain_xgb")
    add("(a) xgb plain: Parquet→QDM→train", (s.get("plain_xgb") or {}).get("wall_s"), "s", ratio=1.0 if plain else None)
    for case, name, target in (("est_xgb", "(b) XGBEstimator.fit 1w x all CPUs", "<=1.10x plain"),
                               ("est_xgb_other", "(b2) refit, same data, other params (eta)", "<=1.05x plain"),
                               ("recipe", f"(c) Ray Train recipe {args.recipe_workers}w x 1 CPU", ""),
                               ("est_xgb_2w", f"(c2) XGBEstimator.fit {args.recipe_workers}w x 1 CPU", "")):
        st = (s.get(case) or {}).get("wall_s")
        add(name, st, "s", ratio=st["median"] / plain if st and plain else None, target=target)
    if med("recipe") and med("est_xgb_2w"):
        rows.append(["    recipe / XGBEstimator, same workers (speed-up)", "x",
                     f"{med('recipe') / med('est_xgb_2w'):.2f}", "", "", "", ">=1.5x"])
    for case, name in (("est_xgb", "    fixed cost per fit, (b) steady state"),
                       ("est_xgb_other", "    fixed cost per fit, (b2)"),
                       ("est_xgb_2w", "    fixed cost per fit, (c2) 2 workers"),
                       ("est_lgb", "    fixed cost per fit, (d) LightGBMEstimator")):
        add(name, (s.get(case) or {}).get("fixed_s"), "s", target="<=1.0 s")
    first = ((s.get("warmups") or {}).get("est_xgb") or {}).get("fixed_s")
    if first is not None:
        add("    fixed cost, first fit in the process (pool starts)", {"median": first, "min": first, "max": first},
            "s", target="<=3 s")
    if s.get("ray_start_s") is not None:
        rs = s["ray_start_s"]
        add("    starting the embedded Ray (reported apart)", {"median": rs, "min": rs, "max": rs}, "s")
    if "lightgbm_skipped" in s:
        rows.append(["(d) LightGBM rows skipped: " + s["lightgbm_skipped"][:60], "", "", "", "", "", ""])
    else:
        lp = med("plain_lgb")
        add("(d) lgb plain: Parquet→Dataset→train", (s.get("plain_lgb") or {}).get("wall_s"), "s",
            ratio=1.0 if lp else None)
        st = (s.get("est_lgb") or {}).get("wall_s")
        add("(d) LightGBMEstimator.fit 1w x all CPUs", st, "s", ratio=st["median"] / lp if st and lp else None,
            target="<=1.10x lgb plain")
    pf = (s.get("plain_xgb") or {}).get("first_round_s")
    add("(e) fit() → end of round 1, XGBEstimator", (s.get("est_xgb") or {}).get("first_round_s"), "s",
        ratio=med("est_xgb", "first_round_s") / pf["median"] if pf and med("est_xgb", "first_round_s") else None,
        target=f"<={pf['median'] + 1.5:.1f} s (plain+1.5)" if pf else "<=plain+1.5 s")
    add("    plain: read start → end of round 1", pf, "s", ratio=1.0 if pf else None)
    add("    recipe: fit() → end of round 1", (s.get("recipe") or {}).get("first_round_s"), "s")
    est_peak, rec_peak = med("est_xgb", "worker_peak_rss"), med("recipe", "worker_peak_rss")
    add("(f) worker peak RSS, XGBEstimator", (s.get("est_xgb") or {}).get("worker_peak_rss"), "MB", MB,
        ratio=est_peak / rec_peak if est_peak and rec_peak else None, target="<=0.5x recipe", fmt="{:.0f}")
    add("(f) worker peak RSS, recipe (max rank)", (s.get("recipe") or {}).get("worker_peak_rss"), "MB", MB,
        ratio=1.0 if rec_peak else None, fmt="{:.0f}")
    rec_sum = med("recipe", "worker_peak_rss_sum")
    add(f"(f) worker peak RSS, recipe (sum of {args.recipe_workers} ranks)",
        (s.get("recipe") or {}).get("worker_peak_rss_sum"), "MB", MB,
        ratio=est_peak / rec_sum if est_peak and rec_sum else None, fmt="{:.0f}")
    add("    plain process peak RSS", (s.get("plain_xgb") or {}).get("peak_rss"), "MB", MB, fmt="{:.0f}")
    add("(f) worker mem amplification, XGBEstimator", (s.get("est_xgb") or {}).get("amplification"), "x",
        target="<=1.0")
    add("(f) worker mem amplification, recipe (max rank)", (s.get("recipe") or {}).get("amplification"), "x")
    if "lightgbm_skipped" not in s:
        add("    worker mem amplification, LightGBMEstimator", (s.get("est_lgb") or {}).get("amplification"), "x")
    drv = s.get("driver_rss") or []
    for d in drv:
        if "error" in d:
            rows.append([f"(g) driver peak RSS @ {d['rows']:,} rows: ERROR", "", "", "", "", "", ""])
            continue
        st = {"median": d["peak_rss"], "min": d["peak_rss"], "max": d["peak_rss"]}
        add(f"(g) driver peak RSS, fit @ {d['rows'] / 1e6:g}M rows", st, "MB", MB, fmt="{:.0f}")
    ok = [d for d in drv if "error" not in d]
    if len(ok) >= 2:
        delta = (ok[-1]["peak_rss"] - ok[0]["peak_rss"]) / MB
        rows.append([f"    driver peak growth {ok[0]['rows'] / 1e6:g}M → {ok[-1]['rows'] / 1e6:g}M", "MB",
                     f"{delta:+.0f}", "", "", "", "<=50 MB"])
    pr = med("plain_xgb", "rmse")
    add("(h) holdout RMSE, plain xgb", (s.get("plain_xgb") or {}).get("rmse"), "", fmt="{:.5f}", ratio=1.0 if pr else None)
    for case, name, target in (("est_xgb", "(h) holdout RMSE, XGBEstimator", "within 1%"),
                               ("recipe", "(h) holdout RMSE, recipe", "")):
        st = (s.get(case) or {}).get("rmse")
        add(name, st, "", fmt="{:.5f}", ratio=st["median"] / pr if st and pr else None, target=target)
    if "lightgbm_skipped" not in s:
        lpr = med("plain_lgb", "rmse")
        add("(h) holdout RMSE, lgb plain", (s.get("plain_lgb") or {}).get("rmse"), "", fmt="{:.5f}",
            ratio=1.0 if lpr else None)
        st = (s.get("est_lgb") or {}).get("rmse")
        add("(h) holdout RMSE, LightGBMEstimator", st, "", fmt="{:.5f}",
            ratio=st["median"] / lpr if st and lpr else None, target="within 1%")
    return rows


def profile_rows(s: dict) -> list[list[str]]:
    rows = []
    for case, title in (("plain_xgb", "(a) plain xgb"), ("est_xgb", "(b) XGBEstimator.fit"),
                        ("est_xgb_2w", "(c2) XGBEstimator.fit 2w"),
                        ("recipe", "(c) Ray Train recipe"), ("est_lgb", "(d) LightGBMEstimator.fit"),
                        ("plain_lgb", "(d) plain lgb")):
        for k, st in ((s.get(case) or {}).get("phases") or {}).items():
            if st:
                rows.append([title, k, f"{st['median']:.2f}", f"{st['min']:.2f}", f"{st['max']:.2f}"])
    for case, title in (("est_xgb", "(b) XGBEstimator.fit"), ("recipe", "(c) Ray Train recipe"),
                        ("est_lgb", "(d) LightGBMEstimator.fit"), ("floor", "Ray Train empty fit")):
        for k, st in ((s.get(case) or {}).get("raytrain_log") or {}).items():
            if st:
                rows.append([title, "ray log: " + k, f"{st['median']:.2f}", f"{st['min']:.2f}", f"{st['max']:.2f}"])
    fl = s.get("floor") or {}
    if fl.get("wall_s"):
        st = fl["wall_s"]
        rows.append(["Ray Train empty fit", "XGBoostTrainer 1w, no-op loop + 1KB ckpt",
                     f"{st['median']:.2f}", f"{st['min']:.2f}", f"{st['max']:.2f}"])
    if fl.get("task_s"):
        st = fl["task_s"]
        rows.append(["plain Ray task", "same CPUs, returns 1 KB", f"{st['median']:.2f}", f"{st['min']:.2f}",
                     f"{st['max']:.2f}"])
    return rows


def render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 or i == 1 and len(header) == 5 else str(c).rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


# ------------------------------------------------------------------------------------ main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=None, help="training rows (default 2,000,000; --quick 100,000)")
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=None, help="boosting rounds (default 100; --quick 20)")
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 3; --quick 2)")
    ap.add_argument("--quick", action="store_true", help="small smoke run (100k rows, 20 rounds, 2 repeats)")
    ap.add_argument("--data-dir", default="/tmp/trainflow-bench", help="where the Parquet data is generated")
    ap.add_argument("--driver-rows", default=None,
                    help="row counts for the driver-RSS check (default 1000000,8000000; --quick 100000,400000)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="plain runs' threads (default: all cores)")
    ap.add_argument("--recipe-workers", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma list of cases to skip: plain_xgb,est_xgb,recipe,lgb,"
                                                 "floor,driver")
    ap.add_argument("--tag", default="", help="free text stored in the JSON (e.g. what was changed)")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    quick = args.quick
    args.rows = args.rows or (100_000 if quick else 2_000_000)
    args.rounds = args.rounds or (20 if quick else 100)
    args.repeats = args.repeats or (2 if quick else 3)
    args.driver_rows = [int(x) for x in (args.driver_rows or ("100000,400000" if quick else "1000000,8000000")).split(",")
                        if x]
    args.skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    return args


def print_report(summary: dict, args, errors: list) -> tuple[list, list, list]:
    header = ["row", "unit", "median", "min", "max", "ratio", "target"]
    rows = table(summary, args)
    prof = profile_rows(summary)
    print()
    print(f"trainflow bench — {args.rows:,} rows × {args.features} float32 features, {args.rounds} rounds, "
          f"depth {args.depth}, hist; {args.repeats} repeats; {os.cpu_count()} CPUs")
    print(render(header, rows))
    print()
    print("where the time goes (seconds; median/min/max over repeats)")
    print(render(["case", "phase", "median", "min", "max"], prof))
    if errors:
        print(f"\n{len(errors)} measurement(s) failed; see 'errors' in the JSON.")
    return header, rows, prof


def rereport(path: str) -> int:
    """Recompute the summary and the tables of a saved result (after a change to this script)."""
    with open(path) as fh:
        result = json.load(fh)
    args = argparse.Namespace(**result["args"])
    s = result["summary"]
    extra = {k: s[k] for k in ("ray_start_s", "warmups", "lightgbm_skipped") if k in s}
    summary = summarise(result["runs"], s.get("driver_rss") or [], extra)
    header, rows, prof = print_report(summary, args, result.get("errors") or [])
    result.update(summary=summary, table=[header, *rows], profile=prof)
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1, default=str)
    return 0


def main(argv=None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--report":
        return rereport(sys.argv[2])
    args = parse_args(argv)
    started = time.time()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    log(f"rows={args.rows:,} features={args.features} rounds={args.rounds} depth={args.depth} "
        f"repeats={args.repeats} threads={args.threads} data={args.data_dir}")
    t = time.time()
    meta = ensure_dataset(args.data_dir, args.rows, args.features)
    warm = ensure_dataset(args.data_dir, WARMUP_ROWS, args.features)
    log(f"data ready in {time.time() - t:.1f}s: {meta['train']} ({meta['raw_bytes'] / MB:.0f} MB raw float32, "
        f"{meta['files']} files, {meta['row_groups']} row groups)")

    bench = Bench(args)
    bench.holdout = load_holdout(meta)
    lgb_ok, lgb_why = lightgbm_available()
    if not lgb_ok:
        log(f"NOTE: LightGBM rows skipped: trainflow.distributors.lightgbm does not import ({lgb_why})")
    if "lgb" in args.skip:
        lgb_ok, lgb_why = False, "skipped with --skip lgb"

    cases: list[tuple[str, callable]] = []
    if "plain_xgb" not in args.skip:
        cases.append(("plain_xgb", lambda: bench.plain("xgb", meta)))
    if "est_xgb" not in args.skip:
        cases.append(("est_xgb", lambda: bench.est_xgb(meta)))
        cases.append(("est_xgb_other", lambda: bench.est_xgb(meta, eta=0.2, new_data=False)))
        cases.append(("est_xgb_2w", lambda: bench.est_xgb(meta, workers=args.recipe_workers)))
    if "recipe" not in args.skip:
        cases.append(("recipe", lambda: bench.recipe(meta)))
    if "floor" not in args.skip:
        cases.append(("floor", bench.floor))
    if lgb_ok:
        cases.append(("plain_lgb", lambda: bench.plain("lgb", meta)))
        cases.append(("est_lgb", lambda: bench.est_lgb(meta)))

    ray_start = bench.start_cluster()
    log(f"local Ray started in {ray_start:.1f}s")
    warmups: dict[str, dict] = {}
    for name, fn in (("est_xgb", lambda: bench.est_xgb(warm, rounds=2)),
                     ("est_xgb_2w", lambda: bench.est_xgb(warm, rounds=2, workers=args.recipe_workers)),
                     ("recipe", lambda: bench.recipe(warm, rounds=2)),
                     ("est_lgb", lambda: bench.est_lgb(warm, rounds=2))):
        if name not in {c for c, _ in cases}:
            continue
        try:
            r = fn()
            warmups[name] = {"wall_s": r["wall_s"], "rows": WARMUP_ROWS, "fixed_s": r.get("fixed_s")}
            log(f"warm-up {name} ({WARMUP_ROWS:,} rows, 2 rounds): {r['wall_s']:.1f}s")
        except Exception as exc:  # noqa: BLE001
            warmups[name] = {"error": repr(exc)}
            log(f"warm-up {name} FAILED: {exc!r}")

    runs: dict[str, list[dict]] = {c: [] for c, _ in cases}
    errors: list[dict] = []
    for rep in range(args.repeats):
        order = cases[rep % len(cases):] + cases[:rep % len(cases)]  # rotate: no case always goes first
        for name, fn in order:
            load = os.getloadavg()[0]
            try:
                r = fn()
            except Exception as exc:  # noqa: BLE001
                errors.append({"case": name, "repeat": rep, "error": repr(exc), "trace": traceback.format_exc()})
                log(f"repeat {rep + 1} {name} FAILED: {exc!r}")
                continue
            r["repeat"], r["loadavg_1m_before"] = rep, load
            runs[name].append(r)
            extra = f"  first round {r['first_round_s']:.1f}s" if r.get("first_round_s") else ""
            if r.get("worker_peak_rss"):
                extra += f"  worker peak {r['worker_peak_rss'] / MB:.0f} MB amp {r['amplification']:.2f}"
            log(f"repeat {rep + 1}/{args.repeats} {name:9s} {r['wall_s']:7.2f}s{extra}  (load {load:.1f})")

    from tfbench.raylogs import attach, session_dir

    session = session_dir()
    attach([r for rs in runs.values() for r in rs], session)
    from trainflow.cluster import shutdown

    shutdown()  # (g) runs in fresh driver processes with their own embedded cluster
    driver: list[dict] = []
    if "driver" not in args.skip:
        for rows in args.driver_rows:
            dmeta = ensure_dataset(args.data_dir, rows, args.features)
            try:
                d = subprocess_json(["tfbench.driver_rss", "--meta", os.path.join(dmeta["root"], "meta.json"),
                                     "--rounds", "10", "--depth", str(args.depth)], timeout=3600)
                log(f"driver RSS @ {rows:,} rows: peak {d['peak_rss'] / MB:.0f} MB (before fit "
                    f"{d['rss_before_fit'] / MB:.0f} MB), fit {d['fit_s']:.1f}s")
            except Exception as exc:  # noqa: BLE001
                d = {"rows": rows, "error": repr(exc)}
                log(f"driver RSS @ {rows:,} rows FAILED: {exc!r}")
            driver.append(d)

    extra = {"ray_start_s": ray_start, "warmups": warmups}
    if not lgb_ok:
        extra["lightgbm_skipped"] = lgb_why
    summary = summarise(runs, driver, extra)
    header, rows, prof = print_report(summary, args, errors)

    result = {"timestamp": stamp, "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
              "machine": machine_info(), "data": meta, "summary": summary, "table": [header, *rows],
              "profile": prof, "runs": runs, "errors": errors, "elapsed_s": time.time() - started}
    os.makedirs(args.results_dir, exist_ok=True)
    path = os.path.join(args.results_dir, f"{stamp}.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1, default=str)
    shutil.copyfile(path, os.path.join(args.results_dir, "latest.json"))
    log(f"wrote {path} and latest.json ({time.time() - started:.0f}s in all)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
