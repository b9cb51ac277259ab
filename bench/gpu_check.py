"""GPU check: train XGBoost (cuda), LightGBM (GPU build only) and the PyTorch example (nccl) through
trainflow on synthetic credit data, next to the same jobs on CPU; print one table (and JSON).

Run on a machine with a GPU: `.venv/bin/python bench/gpu_check.py`. Without GPUs the GPU rows are
reported as skipped, so the script itself is checked on any machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainflow.cluster import cluster_nodes, ensure_cluster  # noqa: E402
from trainflow.data.demo import build_warehouse  # noqa: E402
from trainflow.errors import TrainflowError  # noqa: E402
from trainflow.pipeline.plan import plan as plan_fit  # noqa: E402
from trainflow.pipeline.evaluate import evaluate  # noqa: E402
from trainflow.pipeline.fit import fit  # noqa: E402
from trainflow.pipeline.load import load  # noqa: E402
from trainflow.spec import parse_spec  # noqa: E402


def job(framework: str, gpu: bool, database: str, rounds: int) -> dict:
    trainer: dict = {"framework": framework, "verbose_eval": None}
    if framework == "pytorch":
        trainer.update(objective="regression", train_func="trainflow.examples.credit_mlp:train_func",
                       hyper_params={"epochs": "10", "batch_size": "1024", "lr": "0.01", "hidden": "64,32"},
                       scaling={"num_workers_per_node": 1, "num_cpus": 1, "num_gpus": 1 if gpu else 0})
    else:
        trainer.update(n_estimators=rounds, params={"max_depth": 8, "learning_rate": 0.1},
                       scaling={"num_workers": -1, "use_gpu": gpu})
    source = {"database": database}
    return {"name": f"gpu-check-{framework}", "features": ["age", "income", "credit_score"],
            "label": "default_risk", "data": {"train": {"table": "TRAINING_DATA", **source},
                                              "eval": {"table": "EVAL_DATA", **source}},
            "trainer": trainer, "evaluate": {"metrics": ["rmse", "r2"]},
            "register": {"model_name": f"gpu-check-{framework}"}}


def run_one(framework: str, gpu: bool, database: str, rounds: int) -> dict:
    spec = parse_spec(job(framework, gpu, database, rounds))
    data = load(spec)
    plan = plan_fit(spec, data)
    outcome = fit(spec, data, plan)
    metrics = evaluate(spec, outcome, data)
    p = plan.placement
    return {"framework": framework, "device": "gpu" if gpu else "cpu", "workers": p.num_workers,
            "gpus_per_worker": p.gpus_per_worker, "fit_s": round(outcome.seconds, 2),
            "rmse": round(metrics["rmse"], 6), "r2": round(metrics["r2"], 4)}


def _gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    except Exception as exc:  # a CPU-only or broken torch install
        return f"torch: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", default="bench/results/gpu_check.json")
    parser.add_argument("--frameworks", default="xgboost,lightgbm,pytorch")
    args = parser.parse_args(argv)
    ensure_cluster()
    gpus = int(sum(n.gpus for n in cluster_nodes()))
    workdir = Path(tempfile.mkdtemp(prefix="trainflow-gpu-"))
    database = str(build_warehouse(workdir / "warehouse.duckdb", train_rows=args.rows, eval_rows=args.rows // 5))
    os.environ.setdefault("TRAINFLOW_ARTIFACTS", str(workdir / "artifacts"))
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for framework in args.frameworks.split(","):
        for gpu in (False, True):
            if gpu and not gpus:
                rows.append({"framework": framework, "device": "gpu", "skipped": "skipped: no GPU in the Ray cluster"})
                continue
            started = time.perf_counter()
            try:
                rows.append(run_one(framework, gpu, database, args.rounds))
            except Exception as exc:  # e.g. a LightGBM build without GPU support; the other rows go on
                kind = "skipped" if isinstance(exc, TrainflowError) else "failed"
                rows.append({"framework": framework, "device": "gpu" if gpu else "cpu",
                             "skipped": f"{kind}: {type(exc).__name__}: {str(exc)[:300]}",
                             "seconds": round(time.perf_counter() - started, 1)})
            print("row:", json.dumps(rows[-1]), flush=True)  # partial results survive a time limit
            out.write_text(json.dumps({"gpus": gpus, "rows": args.rows, "results": rows}, indent=1))
    cpu_fit = {r["framework"]: r["fit_s"] for r in rows if r["device"] == "cpu" and "fit_s" in r}
    cpu_rmse = {r["framework"]: r["rmse"] for r in rows if r["device"] == "cpu" and "rmse" in r}
    print(f"GPUs in the cluster: {gpus} ({_gpu_name()}); {args.rows} training rows, {args.rounds} rounds")
    print(f"{'framework':<10} {'device':<6} {'workers':>7} {'fit s':>8} {'vs cpu':>7} {'rmse':>10} {'rmse/cpu':>9}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['framework']:<10} {r['device']:<6} {r['skipped']}")
            continue
        speed = cpu_fit.get(r["framework"], float("nan")) / r["fit_s"] if r["fit_s"] else float("nan")
        quality = r["rmse"] / cpu_rmse.get(r["framework"], float("nan"))
        print(f"{r['framework']:<10} {r['device']:<6} {r['workers']:>7} {r['fit_s']:>8.2f} {speed:>6.2f}x "
              f"{r['rmse']:>10.6f} {quality:>9.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
