#!/usr/bin/env python
"""Worker memory by memory mode (issue 17): `make bench-memory`, i.e. `.venv/bin/python bench/memory.py`.

One XGBEstimator fit per case on the same Parquet data (default 8M rows x 32 float32 features, 50
rounds, default scaling: one worker with every CPU), each in a fresh process with its own local Ray
(a warm worker's memory would carry the previous case's), the cases alternating, median of `--repeats`:

  in_memory   the default: the shard is read into float32 chunks and binned into a QuantileDMatrix.
  external    trainer.memory external: the shard streams into an ExtMemQuantileDMatrix, binned pages
              in a cache on node-local scratch (TRAINFLOW_SCRATCH, set here to <data-dir>/scratch).

Columns: peak RssAnon and peak RSS of the training worker above its baseline (sampled every 10 ms from
unpickling the job to the end of training), each / the raw float32 bytes of the shard
(rows x (features+1) x 4); ingest (read + bin) and boosting seconds from the fit's profile; the cache's
size on disk at the end of training; holdout RMSE. Output: a table, and JSON in bench/results/.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH", "")) if p)
sys.path.insert(0, HERE)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["TRAINFLOW_MATRIX_CACHE"] = "0"  # no matrix kept between fits: each case's memory is its own
MODES = ("in_memory", "low", "external")


def one(mode: str, meta_path: str, rounds: int, depth: int, probe: str) -> dict:
    """The child process: one fit, its probe and the holdout RMSE, as JSON on stdout's last line."""
    import numpy as np

    from tfbench.data import load_holdout
    from tfbench.probes import MemProbe
    from trainflow.cluster import ensure_cluster
    from trainflow.data import DataConnector
    from trainflow.distributors.xgboost import XGBEstimator

    with open(meta_path) as fh:
        meta = json.load(fh)
    ensure_cluster()
    est = XGBEstimator(n_estimators=rounds, params={"max_depth": depth, "eta": 0.1, "max_bin": 256},
                       callbacks=[MemProbe(probe)], memory=mode)
    started = time.time()
    booster = est.fit(DataConnector.from_parquet(meta["train"]), meta["feature_names"], meta["label"])
    wall = time.time() - started
    with open(probe) as fh:
        p = json.load(fh)
    x, y = load_holdout(meta)
    rmse = float(np.sqrt(np.mean((booster.inplace_predict(x) - y) ** 2)))
    base = p["mem"]["unpickled"]
    raw = meta["raw_bytes"]
    return {"mode": mode, "wall_s": wall, "ingest_s": est.fit_profile_["ingest_s"],
            "train_s": est.fit_profile_["train_s"], "rmse": rmse, "raw_bytes": raw,
            "anon_peak_above_base": p["peak"]["RssAnon"] - base["RssAnon"],
            "rss_peak_above_base": p["peak"]["VmRSS"] - base["VmRSS"],
            "anon_ratio": (p["peak"]["RssAnon"] - base["RssAnon"]) / raw,
            "rss_ratio": (p["peak"]["VmRSS"] - base["VmRSS"]) / raw, "cache_bytes": p["cache_bytes"]}


def run_case(mode: str, args, meta: dict, seq: int) -> dict:
    probe = os.path.join(args.data_dir, "probes", f"memory-{mode}-{seq}.json")
    os.makedirs(os.path.dirname(probe), exist_ok=True)
    env = {**os.environ, "TRAINFLOW_SCRATCH": os.path.join(args.data_dir, "scratch")}
    out = subprocess.run([sys.executable, __file__, "--one", mode, "--meta", os.path.join(meta["root"], "meta.json"),
                          "--rounds", str(args.rounds), "--depth", str(args.depth), "--probe", probe],
                         capture_output=True, text=True, env=env, timeout=3600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} case failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    by = {m: [r for r in runs if r["mode"] == m] for m in MODES}
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "mode"} for m, rs in by.items() if rs}
    return med


def render(med: dict, args) -> str:
    gib = 1 << 30
    base = med["in_memory"]
    rows = [["case", "anon peak (GiB)", "anon / raw", "RSS peak / raw", "ingest s", "boost s", "cache (GiB)", "RMSE"]]
    for m, r in med.items():
        rows.append([m, f"{r['anon_peak_above_base'] / gib:.2f}", f"{r['anon_ratio']:.2f}", f"{r['rss_ratio']:.2f}",
                     f"{r['ingest_s']:.1f} ({r['ingest_s'] / base['ingest_s']:.2f}x)",
                     f"{r['train_s']:.1f} ({r['train_s'] / base['train_s']:.2f}x)", f"{r['cache_bytes'] / gib:.2f}",
                     f"{r['rmse']:.5f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"{args.rows:,} rows x {args.features} float32, {args.rounds} rounds, depth {args.depth}; "
             f"raw shard {base['raw_bytes'] / gib:.2f} GiB; median of {args.repeats}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=8_000_000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data-dir", default="/tmp/trainflow-bench")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--meta", help=argparse.SUPPRESS)
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.meta, args.rounds, args.depth, args.probe)))
        return 0
    from tfbench.data import ensure_dataset

    meta = ensure_dataset(args.data_dir, args.rows, args.features)
    runs = []
    for rep in range(args.repeats):
        for mode in MODES if rep % 2 == 0 else MODES[::-1]:
            print(f"[{time.strftime('%H:%M:%S')}] repeat {rep + 1}: {mode}", file=sys.stderr, flush=True)
            runs.append(run_case(mode, args, meta, len(runs)))
    med = summarise(runs)
    print(render(med, args))
    os.makedirs(args.results_dir, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = {"args": vars(args), "runs": runs, "median": med}
    for name in (f"memory-{stamp}.json", "memory-latest.json"):
        with open(os.path.join(args.results_dir, name), "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
