#!/usr/bin/env python
"""Tuning benchmark (issue 16): `make bench-tune`, i.e. `.venv/bin/python bench/tune.py`.

One search of N trials x R rounds on the bench's Parquet data (default 2M x 32, 16 trials, 100 rounds),
the same configurations both ways, one trial at a time with every core:
  (t1) trainflow's spec search (pipeline load -> plan -> tune): the workers read and bin the data once
       and every trial trains on that matrix.
  (t2) plain Ray Tune, one xgboost process per trial (a function trainable with all CPUs): each trial
       reads the Parquet, builds its QuantileDMatrix and trains.
Reported: wall of each search, the sum of the trials' pure boosting time (in-trial xgb.train seconds),
wall / boosting (target <= 1.3 for t1), per-trial overhead = (wall - ingests - boosting) / trials
(target <= 0.5 s for t1), and t2's wall / t1's wall. One repeat: run it twice to see the spread.
Output: a table on stdout; JSON in bench/results/tune-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH", "")) if p)
sys.path.insert(0, HERE)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from tfbench.data import ensure_dataset


def configs(trials: int, seed: int) -> list[dict]:
    """The search's configurations, drawn once by trainflow's RandomSearch so both sides try the same."""
    from trainflow.tune import loguniform, randint
    from trainflow.tune.search import RandomSearch
    from trainflow.tune.space import parse_space

    searcher = RandomSearch(random_state=seed).searcher(
        parse_space({"params.learning_rate": loguniform(0.02, 0.3), "params.max_depth": randint(4, 9)}),
        trials, "min", 1)
    out = []
    while (s := searcher.suggest()) is not None:
        out.append(s[1])
        searcher.observe(s[0], 0.0)
    return out


def trainflow_search(meta: dict, rounds: int, space: list[dict]) -> dict:
    from trainflow.pipeline.load import load
    from trainflow.pipeline.plan import plan
    from trainflow.pipeline.tune import tune
    from trainflow.spec import parse_spec

    grid = {k: [c[k] for c in space] for k in space[0]}
    spec = parse_spec({
        "name": "bench-tune", "data": {"train": {"parquet": meta["train"]}, "eval": {"parquet": meta["holdout"]}},
        "features": meta["feature_names"], "label": meta["label"], "register": {"model_name": "bench-tune"},
        "trainer": {"framework": "xgboost", "n_estimators": rounds},
        # the drawn configurations, as a grid of paired values: one index axis would need a custom param
        "tune": {"search_space": {"params.cfg": list(range(len(space)))}, "search_alg": "grid"},
    })
    data = load(spec)
    decided = plan(spec, data)
    from trainflow.frameworks.boosting import BoostingFramework

    original = BoostingFramework.trial_fit

    def paired(self, spec, data, placement, overrides, metric, rounds_done=None):
        i = overrides.pop("params.cfg")
        return original(self, spec, data, placement, {**overrides, **{k: grid[k][i] for k in grid}}, metric,
                        rounds_done)

    BoostingFramework.trial_fit = paired
    try:
        start = time.perf_counter()
        tuned = tune(spec, data, decided)
        wall = time.perf_counter() - start
    finally:
        BoostingFramework.trial_fit = original
        data.release()
    boosting = sum(t.profile.get("train_s", 0.0) for t in tuned.trials)
    ingest = sum(t.profile.get("ingest_s", 0.0) for t in tuned.trials)
    return {"wall_s": wall, "boosting_s": boosting, "ingest_s": ingest, "reads": tuned.reads,
            "best_rmse": tuned.best_trial.metrics["rmse"], "trials": len(tuned.trials)}


def ray_tune_search(meta: dict, rounds: int, space: list[dict], cpus: int) -> dict:
    from ray import tune

    def trial(config):
        import numpy as np
        import pyarrow.dataset as ds
        import xgboost as xgb

        t0 = time.perf_counter()

        def matrix(path, ref=None):
            table = ds.dataset(path).to_table()
            x = np.column_stack([table[c].to_numpy().astype(np.float32) for c in config["features"]])
            return xgb.QuantileDMatrix(x, table[config["label"]].to_numpy(), ref=ref, nthread=config["cpus"])

        dtrain = matrix(config["train"])
        deval = matrix(config["eval"], dtrain)
        t1 = time.perf_counter()
        history: dict = {}
        params = {"learning_rate": config["params.learning_rate"], "max_depth": config["params.max_depth"],
                  "nthread": config["cpus"], "eval_metric": "rmse"}
        xgb.train(params, dtrain, config["rounds"], evals=[(deval, "eval")], evals_result=history, verbose_eval=False)
        tune.report({"rmse": history["eval"]["rmse"][-1], "ingest_s": t1 - t0, "train_s": time.perf_counter() - t1})

    fixed = {"features": meta["feature_names"], "label": meta["label"], "train": meta["train"],
             "eval": meta["holdout"], "rounds": rounds, "cpus": cpus}
    grid = {k: [c[k] for c in space] for k in space[0]}
    param_space = {**fixed, "i": tune.grid_search(list(range(len(space))))}

    def indexed(config):
        trial({**config, **{k: grid[k][config["i"]] for k in grid}})

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as storage:
        results = tune.Tuner(
            tune.with_resources(indexed, {"cpu": cpus}), param_space=param_space,
            tune_config=tune.TuneConfig(max_concurrent_trials=1),
            run_config=tune.RunConfig(storage_path=storage, name="bench", verbose=0),
        ).fit()
        wall = time.perf_counter() - start
    frame = results.get_dataframe()
    return {"wall_s": wall, "boosting_s": float(frame["train_s"].sum()), "ingest_s": float(frame["ingest_s"].sum()),
            "reads": len(frame), "best_rmse": float(frame["rmse"].min()), "trials": len(frame)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-ray-tune", action="store_true")
    ap.add_argument("--data-dir", default="/tmp/trainflow-bench")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)

    from trainflow.cluster import ensure_cluster

    meta = ensure_dataset(args.data_dir, args.rows, args.features)
    ensure_cluster()
    import ray

    cpus = int(ray.cluster_resources()["CPU"])
    space = configs(args.trials, args.seed)
    rows = {"t1 trainflow search": trainflow_search(meta, args.rounds, space)}
    if not args.skip_ray_tune:
        rows["t2 Ray Tune, 1 process per trial"] = ray_tune_search(meta, args.rounds, space, cpus)
    header = ["case", "wall s", "boosting s", "ingest s", "reads", "wall/boosting", "overhead/trial s", "best rmse"]
    table = []
    for name, r in rows.items():
        r["wall_over_boosting"] = r["wall_s"] / r["boosting_s"]
        r["overhead_per_trial_s"] = (r["wall_s"] - r["ingest_s"] - r["boosting_s"]) / r["trials"]
        table.append([name, f"{r['wall_s']:.1f}", f"{r['boosting_s']:.1f}", f"{r['ingest_s']:.1f}", str(r["reads"]),
                      f"{r['wall_over_boosting']:.2f}", f"{r['overhead_per_trial_s']:.2f}", f"{r['best_rmse']:.5f}"])
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    if len(rows) == 2:
        t1, t2 = rows.values()
        print(f"Ray Tune wall / trainflow wall: {t2['wall_s'] / t1['wall_s']:.2f}x")
    os.makedirs(args.results_dir, exist_ok=True)
    out = {"args": vars(args), "cpus": cpus, "rows": rows,
           "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    path = os.path.join(args.results_dir, f"tune-{_dt.datetime.now():%Y%m%d-%H%M%S}.json")
    with open(path, "w") as fh:
        json.dump(out, fh, indent=2)
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
