"""Plain single-process baselines, run in a fresh subprocess per repeat (so the benchmark driver's own
memory stays clean). Prints one JSON line.

  python -m tfbench.plain xgb --meta META.json --rounds 100 --threads 2
  python -m tfbench.plain lgb --meta META.json --rounds 100 --threads 2

Timing starts after the imports: read Parquet (pyarrow, every file of the training folder) → matrix →
train; RMSE on the holdout is computed after the clock stops.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pyarrow.parquet as pq

from tfbench.data import load_holdout
from tfbench.probes import proc_status

BATCH_ROWS = 65_536


def batch_to_numpy(batch, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((batch.num_rows, n_features), dtype=np.float32)
    for j in range(n_features):
        x[:, j] = batch.column(j).to_numpy()
    return x, batch.column(n_features).to_numpy()


def xgb_params(threads: int, depth: int) -> dict:
    return {"objective": "reg:squarederror", "tree_method": "hist", "max_depth": depth, "eta": 0.1,
            "max_bin": 256, "nthread": threads}


def lgb_params(threads: int, depth: int) -> dict:
    return {"objective": "regression", "max_depth": depth, "num_leaves": 2 ** depth - 1, "learning_rate": 0.1,
            "max_bin": 255, "num_threads": threads, "verbosity": -1, "metric": "rmse"}


def run_xgb(meta: dict, rounds: int, threads: int, depth: int) -> dict:
    import xgboost as xgb

    n = meta["features"]

    class Batches(xgb.DataIter):
        """Arrow record batches → float32 numpy, one batch per next() (QuantileDMatrix makes 2 passes)."""

        def __init__(self, batches):
            super().__init__(release_data=True)
            self.batches, self.i = batches, 0

        def next(self, input_data) -> bool:
            if self.i == len(self.batches):
                return False
            x, y = batch_to_numpy(self.batches[self.i], n)
            input_data(data=x, label=y, feature_names=meta["feature_names"])
            self.i += 1
            return True

        def reset(self) -> None:
            self.i = 0

    t0 = time.perf_counter()
    table = pq.read_table(meta["train"], columns=meta["feature_names"] + [meta["label"]])
    t_read = time.perf_counter()
    dtrain = xgb.QuantileDMatrix(Batches(table.to_batches(max_chunksize=BATCH_ROWS)), nthread=threads)
    del table
    t_matrix = time.perf_counter()
    first = {}

    class First(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            if epoch == 0:
                first["t"] = time.perf_counter()
            return False

    booster = xgb.train(xgb_params(threads, depth), dtrain, num_boost_round=rounds, callbacks=[First()])
    t_train = time.perf_counter()
    peak = proc_status()["VmHWM"]  # before the holdout is loaded
    x, y = load_holdout(meta)
    rmse = float(np.sqrt(np.mean((booster.inplace_predict(x) - y) ** 2)))
    return {"read_s": t_read - t0, "matrix_s": t_matrix - t_read, "train_s": t_train - t_matrix,
            "total_s": t_train - t0, "first_round_s": first["t"] - t0, "rmse": rmse, "peak_rss": peak}


def run_lgb(meta: dict, rounds: int, threads: int, depth: int) -> dict:
    import lightgbm as lgb

    n = meta["features"]
    t0 = time.perf_counter()
    table = pq.read_table(meta["train"], columns=meta["feature_names"] + [meta["label"]])
    t_read = time.perf_counter()
    chunks = [batch_to_numpy(b, n) for b in table.to_batches(max_chunksize=BATCH_ROWS)]
    del table
    dtrain = lgb.Dataset([c[0] for c in chunks], label=np.concatenate([c[1] for c in chunks]),
                         feature_name=meta["feature_names"], params=lgb_params(threads, depth), free_raw_data=True)
    dtrain.construct()
    del chunks
    t_matrix = time.perf_counter()
    booster = lgb.train(lgb_params(threads, depth), dtrain, num_boost_round=rounds)
    t_train = time.perf_counter()
    peak = proc_status()["VmHWM"]  # before the holdout is loaded
    x, y = load_holdout(meta)
    rmse = float(np.sqrt(np.mean((booster.predict(x, num_threads=threads) - y) ** 2)))
    return {"read_s": t_read - t0, "matrix_s": t_matrix - t_read, "train_s": t_train - t_matrix,
            "total_s": t_train - t0, "rmse": rmse, "peak_rss": peak}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("framework", choices=["xgb", "lgb"])
    ap.add_argument("--meta", required=True)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depth", type=int, default=6)
    args = ap.parse_args()
    with open(args.meta) as fh:
        meta = json.load(fh)
    base = proc_status()["VmRSS"]
    out = (run_xgb if args.framework == "xgb" else run_lgb)(meta, args.rounds, args.threads, args.depth)
    out["rss_after_imports"] = base
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
