"""Ray Train paths that are not trainflow: the docs recipe (c) and the empty-fit floor.

Recipe (Ray Train V2 XGBoost guide): `datasets={"train": ray.data.read_parquet(...)}`, 2 workers × 1 CPU,
each worker `get_dataset_shard("train").materialize().to_pandas()` → QuantileDMatrix → `xgboost.train`.
Two deviations from the guide, both needed here:
- the dataset is read (`.materialize()`) in the driver before the trainer starts: with 2 workers × 1 CPU
  on a 2-CPU cluster, Ray Data's read tasks (1 CPU each) can never be scheduled once the workers hold
  every CPU, and the fit hangs forever (seen here). The read is inside the timed wall.
- the model is reported once at the end from rank 0 instead of through
`RayTrainReportCallback()`, which calls `ray.train.report` every round (a barrier that costs ~2 s per
round on this machine: it would measure reporting, not ingestion or training).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid

from tfbench.probes import proc_status


def _recipe_loop(config: dict) -> None:
    import pandas  # noqa: F401  (the recipe's imports, before the baseline)
    import ray.train
    import xgboost

    marks, mem = {"start": time.time()}, {"start": proc_status()}
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    shard = ray.train.get_dataset_shard("train")
    df = shard.materialize().to_pandas()
    marks["data"] = time.time()
    mem["data"] = proc_status()
    label = df.pop(config["label"])
    rows = len(df)
    dtrain = xgboost.QuantileDMatrix(df, label=label, nthread=config["threads"])
    marks["before"] = time.time()
    mem["before"] = proc_status()

    class First(xgboost.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            if epoch == 0:
                marks["first_round"] = time.time()
            return False

    booster = xgboost.train(config["params"], dtrain, num_boost_round=config["rounds"], callbacks=[First()])
    marks["after"] = time.time()
    mem["after"] = proc_status()
    with open(f"{config['probe']}-rank{rank}.json", "w") as fh:
        json.dump({"pid": os.getpid(), "rank": rank, "rows": rows, "marks": marks, "mem": mem}, fh)
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            booster.save_model(os.path.join(tmp, "model.ubj"))
            ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report({}, checkpoint=None)


def recipe_fit(train_dir: str, label: str, params: dict, rounds: int, workers: int, storage: str,
               probe: str):
    """Returns (booster, t_start, t_read_done, t_fit_done) (wall clock)."""
    import ray.data
    import xgboost
    from ray.train import RunConfig, ScalingConfig
    from ray.train.xgboost import XGBoostTrainer

    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no progress lines in the bench output
    ray.data.DataContext.get_current().enable_progress_bars = False
    name = f"recipe-{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    dataset = ray.data.read_parquet(train_dir).materialize()
    t_read = time.time()
    trainer = XGBoostTrainer(
        _recipe_loop,
        train_loop_config={"label": label, "params": params, "rounds": rounds, "threads": 1, "probe": probe},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=name, storage_path=storage),
        datasets={"train": dataset},
    )
    result = trainer.fit()
    t1 = time.time()
    booster = xgboost.Booster()
    with result.checkpoint.as_directory() as folder:
        booster.load_model(os.path.join(folder, "model.ubj"))
    shutil.rmtree(os.path.join(storage, name), ignore_errors=True)
    del dataset
    return booster, t0, t_read, t1


def _empty_loop(config: dict) -> None:
    import ray.train

    if ray.train.get_context().get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "model.bin"), "wb") as fh:
                fh.write(b"x" * 1024)
            ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report({}, checkpoint=None)


def empty_fit(cpus: int, storage: str) -> tuple[float, float]:
    """Ray Train's own fixed cost: XGBoostTrainer, 1 worker × `cpus`, a loop that only reports a 1 KB
    checkpoint at the end (what trainflow's loop does besides training). Returns (start, end) wall clock."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.xgboost import XGBoostTrainer

    name = f"empty-{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    XGBoostTrainer(_empty_loop, train_loop_config={},
                   scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": cpus}),
                   run_config=RunConfig(name=name, storage_path=storage)).fit()
    t1 = time.time()
    shutil.rmtree(os.path.join(storage, name), ignore_errors=True)
    return t0, t1


def task_floor(cpus: int) -> float:
    """A plain Ray task with the same CPUs returning 1 KB: what running the loop without Ray Train costs."""
    import ray

    t0 = time.time()
    ray.get(ray.remote(num_cpus=cpus)(lambda: b"x" * 1024).remote())
    return time.time() - t0
