#!/usr/bin/env python
"""Batch-scoring benchmark (issue 19): `make bench-score`, i.e. `.venv/bin/python bench/score.py`.

A registered xgboost model (100 rounds, depth 6, trained here) scores the bench's Parquet data
(32 float32 features, label carried through) into a Parquet folder, at each size (default 1M and 8M):
  (s1) trainflow's scoring job (`run_scoring`: resolve, check the input against the training schema
       and digest it (one read), score into one part per Ray task (a second read), publish, record),
       in a fresh process whose peak RSS (VmHWM) is the driver's memory;
  (s2) the same read -> predict -> write pipeline in plain processes, one per CPU, each with its share
       of the row groups (pyarrow read, xgboost inplace_predict with 1 thread, ParquetWriter).
Reported: rows/s of s1's score step and of the whole job, s2's rows/s, score step / plain (target
>= 0.8), and the driver's peak RSS by size (target: flat within 50 MB).
Output: a table on stdout; JSON in bench/results/score-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from tfbench.data import ensure_dataset, load_holdout


def register(meta: dict, store: str) -> str:
    """A plain xgboost model on the holdout rows, registered as trainflow would (champion)."""
    import pandas as pd
    import xgboost as xgb

    from trainflow.registry import PromotionRule, register_model

    x, y = load_holdout(meta)
    booster = xgb.train({"max_depth": 6, "eta": 0.1, "nthread": os.cpu_count()}, xgb.DMatrix(x, y), 100)
    os.environ["MLFLOW_TRACKING_URI"] = store
    example = pd.DataFrame(x[:5], columns=meta["feature_names"])
    model = register_model(experiment="bench-score", model_name="bench-score", framework="xgboost", model=booster,
                           input_example=example, params={}, metrics={"rmse": 0.0}, eval_history=None,
                           feature_names=meta["feature_names"], feature_importance=None,
                           rule=PromotionRule("rmse", "min"))
    return model.uri


def trainflow_job(meta_path: str, model_uri: str, out: str) -> dict:
    """s1 in a fresh process: its VmHWM is the driver's peak memory for this size only."""
    code = f"""
import json, time, sys
sys.path.insert(0, {HERE!r})
from tfbench.probes import proc_status
from trainflow.cluster import ensure_cluster
from trainflow.pipeline import score as step
from trainflow.spec import parse_score_spec
meta = json.load(open({meta_path!r}))
ensure_cluster()
spec = parse_score_spec({{"name": "bench-score", "model": {model_uri!r}, "source": {{"parquet": meta["train"]}},
                         "sink": {{"parquet": {out!r}}}, "carry": [meta["label"]]}})
before = proc_status()["VmRSS"]
t = {{}}
t0 = time.perf_counter(); model = step.resolve(spec); t["resolve"] = time.perf_counter() - t0
t0 = time.perf_counter(); data = step.check(spec, model); t["check"] = time.perf_counter() - t0
t0 = time.perf_counter(); parts = step.score(spec, model, data, "bench"); t["score"] = time.perf_counter() - t0
t0 = time.perf_counter(); rows = step.publish(spec, "bench", parts); t["publish"] = time.perf_counter() - t0
t0 = time.perf_counter(); step.record(spec, model, data, "bench", rows, parts); t["record"] = time.perf_counter() - t0
print("RESULT " + json.dumps({{"rows": rows, "steps": t, "rss_before": before, "peak_rss": proc_status()["VmHWM"]}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=3600)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(line.removeprefix("RESULT "))


def _plain_worker(args: tuple) -> int:
    pieces, features, label, model_path, out = args
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xgboost as xgb

    booster = xgb.Booster(model_file=model_path)
    booster.set_param({"nthread": 1})
    rows = 0
    with pq.ParquetWriter(out, pa.schema([(label, pa.float32()), ("prediction", pa.float32())])) as writer:
        for path, group in pieces:
            table = pq.ParquetFile(path).read_row_group(group, columns=[*features, label])
            for batch in table.to_batches(max_chunksize=65_536):
                x = __import__("numpy").column_stack([batch.column(f).to_numpy() for f in features])
                pred = booster.inplace_predict(x)
                writer.write_batch(pa.record_batch({label: batch.column(label), "prediction": pa.array(pred)}))
                rows += batch.num_rows
    return rows


def plain_pipeline(meta: dict, model_uri: str, out: str, cpus: int) -> dict:
    """s2: one plain process per CPU, each reading, predicting and writing its share of row groups."""
    import glob
    import multiprocessing as mp

    import mlflow.xgboost
    import pyarrow.parquet as pq

    model_path = os.path.join(out, "model.json")
    os.makedirs(out, exist_ok=True)
    mlflow.xgboost.load_model(model_uri).save_model(model_path)
    pieces = [(f, g) for f in sorted(glob.glob(os.path.join(meta["train"], "*.parquet")))
              for g in range(pq.ParquetFile(f).metadata.num_row_groups)]
    shares = [pieces[i::cpus] for i in range(cpus)]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(cpus) as pool:
        rows = sum(pool.map(_plain_worker, [(s, meta["feature_names"], meta["label"], model_path,
                                             os.path.join(out, f"part-{i}.parquet")) for i, s in enumerate(shares)]))
    return {"rows": rows, "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,8000000", help="row counts, comma-separated")
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--data-dir", default="/tmp/trainflow-bench")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    cpus = os.cpu_count() or 1
    work = tempfile.mkdtemp(prefix="trainflow-bench-score-")
    store = f"sqlite:///{work}/mlflow.db"
    results = {}
    model_uri = None
    for rows in [int(s) for s in args.sizes.split(",")]:
        meta = ensure_dataset(args.data_dir, rows, args.features)
        meta_path = os.path.join(meta["root"], "meta.json")
        model_uri = model_uri or register(meta, store)
        env_before = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = store
        plain = plain_pipeline(meta, model_uri, os.path.join(work, f"plain-{rows}"), cpus)
        job = trainflow_job(meta_path, model_uri, os.path.join(work, f"tf-{rows}"))
        if env_before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_before
        steps = job["steps"]
        results[rows] = {"plain_rows_s": plain["rows"] / plain["seconds"], "plain_s": plain["seconds"],
                         "score_rows_s": job["rows"] / steps["score"], "job_rows_s": job["rows"] / sum(steps.values()),
                         "steps_s": steps, "driver_peak_mb": job["peak_rss"] / 2**20,
                         "driver_before_mb": job["rss_before"] / 2**20}
        assert job["rows"] == plain["rows"] == rows, (job["rows"], plain["rows"], rows)
    header = ["rows", "plain rows/s", "score step rows/s", "score/plain", "whole job rows/s", "check s", "score s",
              "driver peak MB"]
    table = [[f"{n:,}", f"{r['plain_rows_s']:,.0f}", f"{r['score_rows_s']:,.0f}",
              f"{r['score_rows_s'] / r['plain_rows_s']:.2f}", f"{r['job_rows_s']:,.0f}",
              f"{r['steps_s']['check']:.1f}", f"{r['steps_s']['score']:.1f}", f"{r['driver_peak_mb']:.0f}"]
             for n, r in results.items()]
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    peaks = [r["driver_peak_mb"] for r in results.values()]
    print(f"driver peak spread across sizes: {max(peaks) - min(peaks):.0f} MB (target <= 50)")
    os.makedirs(args.results_dir, exist_ok=True)
    path = os.path.join(args.results_dir, f"score-{_dt.datetime.now():%Y%m%d-%H%M%S}.json")
    with open(path, "w") as fh:
        json.dump({"args": vars(args), "cpus": cpus, "results": {str(k): v for k, v in results.items()},
                   "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}, fh, indent=2)
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
