"""On a GPU machine: which processes hold GPU memory after an XGBoost GPU fit and a prediction?

trainflow's prediction tasks must hold none (they reserve no GPU); a plain Ray task doing the same
prediction is shown for comparison. Run `python bench/gpu_context_check.py`: it prints nvidia-smi's
compute processes (pid, memory) after each step.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainflow.cluster import ensure_cluster  # noqa: E402
from trainflow.distributors.xgboost import XGBEstimator, XGBScalingConfig  # noqa: E402


def gpu_processes() -> str:
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    return out.replace("\n", "; ") or "(no process on the GPU)"


def plain_task_predict(booster, x: np.ndarray) -> int:
    booster.set_param({"nthread": 1})
    return len(booster.inplace_predict(x))


def main() -> int:
    ensure_cluster()
    print("driver pid", os.getpid())
    cols = [f"f{i}" for i in range(8)]
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((200_000, 8)), columns=cols)
    frame["y"] = 2 * frame.f0 + rng.random(len(frame))
    est = XGBEstimator(n_estimators=50, scaling_config=XGBScalingConfig(use_gpu=True))
    started = time.perf_counter()
    est.fit(frame, cols, "y")
    print(f"GPU fit {time.perf_counter() - started:.1f}s on {est.placement_}")
    time.sleep(3)
    print("after fit:", gpu_processes())
    est.predict(frame)
    time.sleep(2)
    print("after XGBEstimator.predict (trainflow's CPU tasks):", gpu_processes())
    ray.get(ray.remote(num_cpus=1)(plain_task_predict).remote(est.get_booster(), frame[cols].to_numpy(np.float32)))
    time.sleep(2)
    print("after the same prediction in a plain Ray task:", gpu_processes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
