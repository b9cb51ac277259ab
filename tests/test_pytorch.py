"""PyTorchDistributor, get_context, ShardedDataConnector and to_torch_dataset on a real local Ray (2 CPUs).

The first block is Snowflake's documented PyTorch example with only the import paths changed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.cloudpickle
import torch
from torch.utils.data import DataLoader

from trainflow.data import DataConnector, ShardedDataConnector
from trainflow.data.demo import credit_frame
from trainflow.distributors.pytorch import (
    PyTorchDistributor,
    PyTorchScalingConfig,
    WorkerResourceConfig,
    get_context,
)
from trainflow.errors import ConfigError, ResourceError, TrainingError

# Train functions defined here travel to the Ray workers by value (the tests dir is not a package).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).resolve().parents[1]

# ===================================================================== Snowflake's example, verbatim
# (only `from snowflake.ml... import` lines changed; `input_cols`/`label_col`/`os` are the notebook's
# globals the example relies on)
input_cols = ["age", "income", "credit_score"]
label_col = "default_risk"

# Import necessary PyTorch libraries
import torch  # noqa: E402,F811
import torch.nn as nn  # noqa: E402
import torch.optim as optim  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402,F811


# Define a simple neural network
class SimpleNet(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super(SimpleNet, self).__init__()
        torch.manual_seed(0)  # (test only) a known start, so the test can tell that training improved it
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        x = self.fc1(x)
        x = self.relu(x)
        x = self.fc2(x)
        return x


# Define the training function
def train_func():
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from trainflow.distributors.pytorch import get_context

    # Use the Snowflake context to get the necessary methods to manage and retrieve information about the distributed training environment
    context = get_context()
    rank = context.get_rank()  # noqa: F841
    dist.init_process_group(backend='gloo')
    device = torch.device(f"cuda:{context.get_local_rank()}"
                          if torch.cuda.is_available() else "cpu")

    # Initialize model, loss function, and optimizer
    model = SimpleNet(input_size=len(input_cols), hidden_size=32, output_size=1).to(device)
    model = DDP(model)
    criterion = nn.MSELoss()
    optimizer = optim.Adam(model.parameters(), lr=0.001)

    # Retrieve training data
    dataset_map = context.get_dataset_map()
    torch_dataset = dataset_map['train'].get_shard().to_torch_dataset(batch_size=1024)
    dataloader = DataLoader(torch_dataset)

    # Training loop
    for epoch in range(10):
        for batch_dict in dataloader:
            features = torch.cat([batch_dict[col].T for col in input_cols], dim=1).float().to(device)
            labels = batch_dict[label_col].T.squeeze(0).float().to(device)
            output = model(features)
            loss = criterion(output, labels.unsqueeze(1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f'Epoch [{epoch+1}/10], Loss: {loss.item():.4f}')

    # Save the model to the model directory provided by the context
    if context.get_rank() == 0:
        torch.save(
            model.module.state_dict(), os.path.join(context.get_model_dir(), "model.pt")
        )


def test_snowflake_example_runs_verbatim(ray_cluster, tmp_path):
    example_snowpark_dataframe = credit_frame(4096, seed=3)  # stands in for session.table(...)

    # Create ShardedDataConnector for data ingestion
    from trainflow.data import ShardedDataConnector

    data_connector = ShardedDataConnector.from_dataframe(example_snowpark_dataframe)

    # Set up PyTorchDistributor for distributed training
    from trainflow.distributors.pytorch import PyTorchDistributor, PyTorchScalingConfig, WorkerResourceConfig

    pytorch_trainer = PyTorchDistributor(
        train_func=train_func,
        # Optional Scaling Configuration (2 CPU workers here instead of the docs' 4 GPUs)
        scaling_config=PyTorchScalingConfig(
            num_nodes=1,
            num_workers_per_node=2,
            resource_requirements_per_worker=WorkerResourceConfig(num_cpus=1, num_gpus=0)
        )
    )

    # Run the training process
    response = pytorch_trainer.run(
        dataset_map={'train': data_connector},
        artifact_stage_location=str(tmp_path / "stage"),
    )
    stage_location = response.get_model_dir()

    assert Path(stage_location).parent == tmp_path / "stage" / "model"
    state = torch.load(Path(stage_location) / "model.pt", weights_only=True)
    trained = SimpleNet(3, 32, 1)
    trained.load_state_dict(state)  # fc1 is (32, 3): the features reached the model as (B, 3)
    assert state["fc1.weight"].shape == (32, 3)

    # The loop changed the weights for the better: lower error than the same net before training
    # (a known start; unseeded starts differ by up to 250x in error on these unscaled features).
    x = torch.tensor(example_snowpark_dataframe[input_cols].to_numpy(), dtype=torch.float32)
    y = torch.tensor(example_snowpark_dataframe[label_col].to_numpy(), dtype=torch.float32).reshape(-1, 1)

    def mse(net):
        with torch.no_grad():
            return float(((net(x) - y) ** 2).mean())

    start = SimpleNet(3, 32, 1)
    assert mse(trained) < 0.9 * mse(start), (mse(trained), mse(start))


# ===================================================================== context, shards, artifacts
def probe_train_func(config):
    """Records what each rank sees; also exercises the user-side init_process_group of the docs and
    Snowflake 2.6's train_func(config) with the rest of its context API."""
    import torch.distributed as dist

    from trainflow.distributors.pytorch import get_context

    ready, backend = dist.is_initialized(), dist.get_backend() if dist.is_initialized() else None
    context = get_context()
    rank = context.get_rank()
    dist.init_process_group(backend="gloo")  # as in Snowflake's docs: must not break
    dist.init_process_group("gloo", rank=rank, world_size=context.get_world_size())
    hp = context.get_hyper_params()
    seen = {}
    for name in ("equal", "unequal"):
        shard = context.get_dataset_map()[name].get_shard()
        seen[name] = [int(v) for b in shard.to_torch_dataset(batch_size=7, drop_last_batch=False)
                      for v in b["id"].reshape(-1)]
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)  # the ready group works
    model_dir = context.get_model_dir()
    with open(os.path.join(model_dir, f"from_rank{rank}.txt"), "w") as fh:
        fh.write(str(rank))
    context.report({"loss": 1.0 + rank, "rank": rank})
    context.report({"loss": torch.tensor(0.5 + rank)})
    context.get_metrics_reporter().log_metrics({"acc": 0.75 + rank}, step=3)
    record = {
        "config": config, "master": [context.get_master_addr(), context.get_master_port()],
        "default_backend": context.get_default_backend(), "supported": context.get_supported_backends(),
        "ready": ready, "backend": backend, "world_size": context.get_world_size(),
        "world_rank": context.get_world_rank(), "rank": rank, "local_rank": context.get_local_rank(),
        "local_world_size": context.get_local_world_size(), "node_rank": context.get_node_rank(),
        "device": str(context.get_default_device()), "hyper_params": hp, "model_dir": model_dir,
        "model_dir_is_dir": os.path.isdir(model_dir), "allreduce": float(total.item()), "seen": seen,
        "dataset_types": sorted(type(v).__name__ for v in context.get_dataset_map().values()),
    }
    with open(os.path.join(hp["out"], f"rank{rank}.json"), "w") as fh:
        json.dump(record, fh)


@pytest.fixture(scope="module")
def probe_run(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    frame = pd.DataFrame({"id": np.arange(101), "x": np.linspace(0, 1, 101)})
    hyper = {"out": str(out), "lr": "0.1", "layers": "[32, 16]"}
    result = PyTorchDistributor(probe_train_func, PyTorchScalingConfig(num_workers_per_node=2)).run(
        dataset_map={"equal": ShardedDataConnector.from_dataframe(frame, equal=True),
                     "unequal": ShardedDataConnector.from_dataframe(frame)},
        hyper_params=hyper, artifact_stage_location=str(out / "stage"),
    )
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return result, ranks, hyper, out


def test_process_group_ready_and_user_init_is_harmless(probe_run):
    _, ranks, _, _ = probe_run
    assert all(r["ready"] and r["backend"] == "gloo" for r in ranks)
    assert all(r["allreduce"] == 3.0 for r in ranks)  # 1 + 2 across both ranks
    # the patch is gone after the run: the driver's function is torch's own
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d

    assert dist.init_process_group is c10d.init_process_group
    assert dist.init_process_group.__module__ == "torch.distributed.distributed_c10d"


def test_context_values_per_rank(probe_run):
    _, ranks, hyper, _ = probe_run
    assert [r["rank"] for r in ranks] == [0, 1] and [r["world_rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["local_world_size"] == 2 and r["node_rank"] == 0 for r in ranks)
    assert [r["local_rank"] for r in ranks] == [0, 1]
    assert all(r["device"] == "cpu" for r in ranks)
    assert all(r["hyper_params"] == hyper for r in ranks)  # str → str, as passed
    assert all(r["model_dir_is_dir"] for r in ranks) and ranks[0]["model_dir"] != ranks[1]["model_dir"]
    assert all(r["dataset_types"] == ["ShardedDataConnector", "ShardedDataConnector"] for r in ranks)
    assert not any(os.path.exists(r["model_dir"]) for r in ranks)  # worker temp folders cleaned up


def test_train_func_config_and_the_rest_of_snowflakes_context_api(probe_run):
    result, ranks, hyper, _ = probe_run
    assert all(r["config"] == hyper for r in ranks)  # train_func(config) gets the hyper-parameters
    assert ranks[0]["master"] == ranks[1]["master"] and ranks[0]["master"][1] > 0
    assert all(r["default_backend"] == "gloo" and "gloo" in r["supported"] for r in ranks)
    assert result.get_metrics()["acc"] == 0.75 and result.get_metrics()["step"] == 3  # rank 0's, via log_metrics


def test_shards_seen_from_workers_are_disjoint_and_cover(probe_run):
    _, ranks, _, _ = probe_run
    unequal = [set(r["seen"]["unequal"]) for r in ranks]
    assert not unequal[0] & unequal[1]
    assert unequal[0] | unequal[1] == set(range(101))
    assert sum(len(r["seen"]["unequal"]) for r in ranks) == 101  # no row twice
    equal = [r["seen"]["equal"] for r in ranks]
    assert len(equal[0]) == len(equal[1]) == 50 and not set(equal[0]) & set(equal[1])


def test_model_lands_in_stage_location_with_rank0_files_and_metrics(probe_run):
    result, _, _, out = probe_run
    model_dir = Path(result.get_model_dir())
    assert model_dir == out / "stage" / "model" / result.request_id
    assert sorted(p.name for p in model_dir.iterdir()) == ["from_rank0.txt"]  # only rank 0's folder
    assert result.get_metrics() == {"loss": 0.5, "rank": 0, "acc": 0.75, "step": 3}  # rank 0's latest values
    assert result.get_metrics_history() == [{"loss": 1.0, "rank": 0}, {"loss": 0.5}, {"acc": 0.75, "step": 3}]
    ckpt = Path(result.get_checkpoint_location())
    assert (ckpt / "from_rank0.txt").read_text() == "0"
    assert ckpt.is_relative_to(out / "stage")


def test_get_context_outside_training_raises():
    with pytest.raises(RuntimeError, match="inside a training function"):
        get_context()
    with pytest.raises(RuntimeError, match="inside a distributed training function"):
        ShardedDataConnector.from_dataframe(pd.DataFrame({"a": [1, 2]})).get_shard()


# ===================================================================== the shipped example, URI stage
def test_credit_mlp_example_learns_and_lands_under_file_uri(ray_cluster, tmp_path):
    from trainflow.examples.credit_mlp import train_func as credit_train_func
    from trainflow.distributors.torch_scoring import TorchModuleAdapter
    from trainflow.frameworks.pytorch import load_model

    train, holdout = credit_frame(4000, seed=7), credit_frame(1000, seed=8)
    lines: list[str] = []
    result = PyTorchDistributor(credit_train_func, PyTorchScalingConfig(num_workers_per_node=2)).run(
        dataset_map={"train": ShardedDataConnector.from_dataframe(train),
                     "eval": ShardedDataConnector.from_dataframe(holdout)},
        hyper_params={"epochs": "12", "batch_size": "64"},
        artifact_stage_location=(tmp_path / "stage").as_uri(), progress=lines.append,
    )
    assert result.get_model_dir() == f"{(tmp_path / 'stage').as_uri()}/model/{result.request_id}"
    local = tmp_path / "stage" / "model" / result.request_id
    assert sorted(p.name for p in local.iterdir()) == ["model.json", "model.pt"]
    meta = json.loads((local / "model.json").read_text())
    assert meta["input_cols"] == ["age", "income", "credit_score"] and meta["task"] == "regression"
    metrics = result.get_metrics()
    assert metrics["epoch"] == 12 and metrics["samples_per_s"] > 0 and "eval-loss" in metrics
    history = [m["train-loss"] for m in result.get_metrics_history() if "train-loss" in m]
    assert len(history) == 12 and history[-1] < history[0]
    assert len(lines) == 13 and lines[0].startswith("[1]  epoch: 1")

    module = load_model(result.get_model_dir())  # from the URI
    pred = TorchModuleAdapter().predict(module, holdout[meta["input_cols"]].to_numpy(np.float32))
    y = holdout["default_risk"].to_numpy()
    r2 = 1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2 > 0.5, r2


# ===================================================================== failures
def failing_train_func():
    from trainflow.distributors.pytorch import get_context

    if get_context().get_rank() == 1:
        raise ValueError("learning rate 'abc' is not a number")


def test_user_exception_becomes_training_error_naming_rank(ray_cluster, tmp_path):
    # no restarts: each would fail the same way (test_pytorch_restarts_are_bounded covers restarts)
    with pytest.raises(TrainingError, match=r"rank 1.*learning rate 'abc' is not a number"):
        PyTorchDistributor(failing_train_func, PyTorchScalingConfig(num_workers_per_node=2), max_restarts=0).run(
            artifact_stage_location=str(tmp_path))


def test_metrics_sent_with_ray_train_report_reach_the_result(ray_cluster, tmp_path):
    """A train_func written for Ray Train keeps calling ray.train.report: the metrics are the result's."""
    def ray_style(config):
        import ray.train

        for step in range(3):
            ray.train.report({"loss": 1.0 / (step + 1), "lr": config["lr"]})

    result = PyTorchDistributor(ray_style, PyTorchScalingConfig(num_workers_per_node=2), max_restarts=0).run(
        artifact_stage_location=str(tmp_path), hyper_params={"lr": "0.1"})
    assert result.get_metrics() == {"loss": 1.0 / 3, "lr": "0.1"}
    assert [m["loss"] for m in result.get_metrics_history()] == [1.0, 0.5, 1.0 / 3]


def test_what_train_func_prints_or_warns_reaches_the_progress_lines_rate_limited(ray_cluster, tmp_path):
    """Prefect does not see Ray workers' output (prefect#14494): prints and warnings of train_func go
    to the run's progress lines (the flow-run log in the pipeline), a burst and then a steady rate."""
    def chatty():
        import warnings

        from trainflow.distributors.pytorch import get_context

        print(f"hello from rank {get_context().get_rank()}")
        warnings.warn("learning rate looks high", UserWarning, stacklevel=1)
        for i in range(500):
            print(f"step {i}")

    lines: list[str] = []
    PyTorchDistributor(chatty, PyTorchScalingConfig(num_workers_per_node=1), max_restarts=0).run(
        artifact_stage_location=str(tmp_path), progress=lines.append)
    assert lines[0] == "rank 0: hello from rank 0", lines[:5]
    assert lines[1].startswith("rank 0: UserWarning: learning rate looks high"), lines[:5]
    assert lines[2:4] == ["rank 0: step 0", "rank 0: step 1"]
    assert "not shown here: over the rate limit" in lines[-1]
    assert 50 <= len(lines) < 150, lines[-3:]


@pytest.mark.parametrize(
    "scaling, match",
    [
        (PyTorchScalingConfig(num_workers_per_node=3), "Cannot place 3 worker"),
        (PyTorchScalingConfig(num_nodes=2), "num_nodes=2, but the Ray cluster has 1 node"),
        (PyTorchScalingConfig(resource_requirements_per_worker=WorkerResourceConfig(num_cpus=4)), "needs 4 CPU"),
        (PyTorchScalingConfig(resource_requirements_per_worker=WorkerResourceConfig(num_gpus=1)), "no GPUs"),
    ],
    ids=["workers", "nodes", "cpus", "gpus"],
)
def test_unsatisfiable_resources_fail_within_seconds(ray_cluster, tmp_path, scaling, match):
    start = time.perf_counter()
    with pytest.raises(ResourceError, match=match):
        PyTorchDistributor(probe_train_func, scaling).run(artifact_stage_location=str(tmp_path))
    assert time.perf_counter() - start < 10


def _needs_two_arguments(config, other):  # train_func() and train_func(config) are the accepted shapes
    pass


@pytest.mark.parametrize(
    "kwargs, run_kwargs, match",
    [
        ({"scaling_config": PyTorchScalingConfig(num_workers_per_node=0)}, {}, "num_workers_per_node=0"),
        ({"scaling_config": PyTorchScalingConfig(
            resource_requirements_per_worker=WorkerResourceConfig(num_cpus=-1))}, {}, "num_cpus=-1"),
        ({}, {"hyper_params": {"lr": 0.1}}, "str → str"),
        ({"train_func": _needs_two_arguments}, {}, "no arguments, or with one"),
    ],
    ids=["workers", "cpus", "hyper_params", "train_func"],
)
def test_bad_arguments_are_config_errors(kwargs, run_kwargs, match):
    args = {"train_func": probe_train_func, **kwargs}
    with pytest.raises(ConfigError, match=match):
        PyTorchDistributor(**args).run(**run_kwargs)


# ===================================================================== to_torch_dataset
@pytest.fixture(scope="module")
def frame():
    return pd.DataFrame({"id": np.arange(10, dtype=np.int64), "x": np.arange(10) * 0.5,
                         "flag": np.arange(10) % 2 == 0, "name": [f"r{i}" for i in range(10)]})


def _ids(ds) -> list[int]:
    return [int(v) for b in ds for v in b["id"].reshape(-1)]


def test_torch_dataset_batches_and_shapes(frame):
    conn = DataConnector.from_dataframe(frame)
    batches = list(conn.to_torch_dataset(batch_size=4))
    assert len(batches) == 2  # drop_last_batch=True: the 2 leftover rows are dropped
    b = batches[0]
    # iterated directly: NumPy arrays, as Snowflake's dataset yields (a DataLoader makes tensors)
    assert isinstance(b["id"], np.ndarray) and b["id"].shape == (4, 1) and b["id"].dtype == np.int64
    assert b["x"].shape == (4, 1) and b["x"].dtype == np.float64
    assert b["flag"].shape == (4, 1) and b["flag"].dtype == np.bool_
    assert b["name"] == ["r0", "r1", "r2", "r3"]
    kept = list(conn.to_torch_dataset(batch_size=4, drop_last_batch=False))
    assert [len(k["id"]) for k in kept] == [4, 4, 2]
    # DataLoader(batch_size=None) hands the dataset's batches over unchanged
    loaded = list(DataLoader(conn.to_torch_dataset(batch_size=4), batch_size=None))
    assert all(isinstance(a["id"], torch.Tensor) and a["id"].dtype == torch.int64 for a in loaded)
    assert all(a["id"].tolist() == c["id"].tolist() and a["id"].shape == (4, 1) for a, c in zip(loaded, batches))
    assert loaded[0]["flag"].dtype == torch.bool and loaded[0]["name"] == ["r0", "r1", "r2", "r3"]
    # DataLoader's default batch_size=1 stacks one batch: scalar columns (1, B), as Snowflake's example expects
    default = next(iter(DataLoader(conn.to_torch_dataset(batch_size=4))))
    assert isinstance(default["id"], torch.Tensor)
    assert default["id"].shape == (1, 4) and default["id"].T.shape == (4, 1)
    assert torch.cat([default[c].T for c in ("id", "x")], dim=1).shape == (4, 2)


def test_torch_dataset_single_rows(frame):
    conn = DataConnector.from_dataframe(frame)
    rows = list(conn.to_torch_dataset())
    assert len(rows) == 10
    assert isinstance(rows[3]["id"], np.ndarray)
    assert rows[3]["id"].shape == (1,) and int(rows[3]["id"][0]) == 3 and rows[3]["name"] == "r3"
    stacked = list(DataLoader(conn.to_torch_dataset(), batch_size=4))
    assert stacked[0]["id"].shape == (4, 1) and stacked[0]["x"].shape == (4, 1)
    assert isinstance(stacked[0]["id"], torch.Tensor) and stacked[0]["id"][:, 0].tolist() == [0, 1, 2, 3]
    assert [len(s["id"]) for s in stacked] == [4, 4, 2]


def test_torch_dataset_fixed_size_list_column():
    table = pa.table({"v": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], type=pa.list_(pa.float32(), 2)),
                      "y": [1, 2, 3]})
    batch = next(iter(DataConnector.from_dataframe(table).to_torch_dataset(batch_size=3)))
    assert batch["v"].shape == (3, 2) and batch["v"].dtype == np.float32 and batch["y"].shape == (3, 1)
    loaded = next(iter(DataLoader(DataConnector.from_dataframe(table).to_torch_dataset(batch_size=3))))
    assert loaded["v"].shape == (1, 3, 2) and loaded["v"].dtype == torch.float32  # a loader batch of one


def test_torch_dataset_shuffle_is_seeded_per_epoch(frame):
    conn = DataConnector.from_dataframe(frame)
    ds = conn.to_torch_dataset(batch_size=5, shuffle=True, seed=11)
    first, second = _ids(ds), _ids(ds)
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second  # a new order each epoch
    again = conn.to_torch_dataset(batch_size=5, shuffle=True, seed=11)
    assert _ids(again) == first and _ids(again) == second  # reproducible
    assert _ids(conn.to_torch_dataset(batch_size=5)) == list(range(10))  # no shuffle: storage order


def test_torch_dataset_shuffles_windows_of_files(tmp_path, monkeypatch):
    import trainflow.data.torch as tdata

    monkeypatch.setattr(tdata, "SHUFFLE_WINDOW_ROWS", 50)
    pq.write_table(pa.table({"id": np.arange(400)}), tmp_path / "d.parquet", row_group_size=50)
    conn = DataConnector.from_parquet(str(tmp_path / "d.parquet"))
    ids = _ids(conn.to_torch_dataset(batch_size=8, shuffle=True, seed=3, drop_last_batch=False))
    assert sorted(ids) == list(range(400)) and ids != list(range(400))
    first_window = ids[:50]
    assert max(first_window) - min(first_window) < 50  # window-local...
    assert min(first_window) != 0 or ids[50:100] != sorted(ids[50:100])  # ...but windows visited shuffled


def test_torch_dataset_rejects_bad_batch_size(frame):
    with pytest.raises(ConfigError, match="batch_size=0"):
        DataConnector.from_dataframe(frame).to_torch_dataset(batch_size=0)


# ===================================================================== multi-node (2 raylets)
MULTI_NODE = textwrap.dedent(
    """
    import json, os, sys
    import ray
    from ray.cluster_utils import Cluster

    out = sys.argv[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)

    from trainflow.data import ShardedDataConnector
    from trainflow.distributors.pytorch import PyTorchDistributor, PyTorchScalingConfig, get_context

    def train_func():
        import torch, torch.distributed as dist
        ctx = get_context()
        t = torch.tensor([1.0])
        dist.all_reduce(t)
        rows = ctx.get_dataset_map()["train"].get_shard().count_rows()
        with open(os.path.join(out, f"rank{ctx.get_rank()}.json"), "w") as fh:
            json.dump({"node_rank": ctx.get_node_rank(), "local_rank": ctx.get_local_rank(),
                       "local_world_size": ctx.get_local_world_size(), "world_size": ctx.get_world_size(),
                       "node_id": ray.get_runtime_context().get_node_id(), "sum": t.item(), "rows": rows,
                       "env": [os.environ["NODE_RANK"], os.environ["LOCAL_RANK"]]}, fh)
        if ctx.get_rank() == 0:
            torch.save({"w": torch.ones(2)}, os.path.join(ctx.get_model_dir(), "model.pt"))
        ctx.report({"rank_reporting": ctx.get_rank()})

    import pandas as pd
    result = PyTorchDistributor(train_func, PyTorchScalingConfig(num_nodes=2, num_workers_per_node=1)).run(
        dataset_map={"train": ShardedDataConnector.from_dataframe(pd.DataFrame({"a": range(10)}))},
        artifact_stage_location=os.path.join(out, "stage"))
    with open(os.path.join(out, "result.json"), "w") as fh:
        json.dump({"model_dir": result.get_model_dir(), "metrics": result.get_metrics(),
                   "nodes": len([n for n in ray.nodes() if n["Alive"]])}, fh)
    ray.shutdown()
    cluster.shutdown()
    """
)


@pytest.mark.slow  # two raylets
def test_multi_node_ranks_and_model_location(tmp_path):
    """2 raylets × 1 CPU: one worker per node (node ranks 0 and 1, local rank 0), model in the stage."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    # its own Ray temp dir: a cluster started here must not be found by other Ray processes
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="tfray-")
    subprocess.run([sys.executable, "-c", MULTI_NODE, str(tmp_path)], check=True, env=env, timeout=300,
                   cwd=ROOT)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["node_rank"] for r in ranks) == [0, 1]
    assert all(r["local_rank"] == 0 and r["local_world_size"] == 1 and r["world_size"] == 2 for r in ranks)
    assert ranks[0]["node_id"] != ranks[1]["node_id"]
    assert sorted(r["env"] for r in ranks) == [["0", "0"], ["1", "0"]]  # torchrun-style env agrees
    assert all(r["sum"] == 2.0 for r in ranks) and sum(r["rows"] for r in ranks) == 10
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["nodes"] == 2 and result["metrics"] == {"rank_reporting": 0}
    model_dir = Path(result["model_dir"])
    assert model_dir.parent == tmp_path / "stage" / "model"
    assert torch.load(model_dir / "model.pt", weights_only=True)["w"].tolist() == [1.0, 1.0]


# ===================================================================== GPU placement (logical GPUs)
GPU_PROBE = textwrap.dedent(
    """
    import json, os, sys
    import ray
    from trainflow.cluster import ensure_cluster
    from trainflow.distributors import pytorch as tfpt
    from trainflow.distributors.pytorch import (PyTorchDistributor, PyTorchScalingConfig,
                                                 WorkerResourceConfig, get_context)

    out = sys.argv[1]
    ensure_cluster(num_cpus=4, num_gpus=2)  # logical GPUs: Ray assigns ids, no CUDA runs
    decided = []
    real_backend_for = tfpt.backend_for

    def record_backend(num_gpus):
        decided.append(real_backend_for(num_gpus))
        return "gloo"  # this torch build has no NCCL: the group runs on gloo, the decision is recorded

    tfpt.backend_for = record_backend

    def train_func():
        import torch.distributed as dist
        ctx = get_context()
        with open(os.path.join(out, f"rank{ctx.get_rank()}.json"), "w") as fh:
            json.dump({"gpu_ids": [str(g) for g in ray.get_gpu_ids()], "local_rank": ctx.get_local_rank(),
                       "device": str(ctx.get_default_device()), "group": dist.get_backend(),
                       "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES")}, fh)

    scaling = PyTorchScalingConfig(num_nodes=1, num_workers_per_node=2,
                                   resource_requirements_per_worker=WorkerResourceConfig(num_cpus=1, num_gpus=1))
    PyTorchDistributor(train_func, scaling).run(artifact_stage_location=os.path.join(out, "stage"))
    with open(os.path.join(out, "backend.json"), "w") as fh:
        json.dump(decided, fh)
    """
)


@pytest.mark.slow  # its own Ray with logical GPUs and a Ray Train run
def test_gpu_placement_pytorch_on_logical_gpus(tmp_path):
    """num_gpus=1 × 2 workers on a 2-GPU cluster: distinct GPU ids, cuda:<local_rank>, nccl decided."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="tfray-")  # isolated from the session cluster
    subprocess.run([sys.executable, "-c", GPU_PROBE, str(tmp_path)], check=True, env=env, timeout=300,
                   cwd=ROOT)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(len(r["gpu_ids"]) == 1 for r in ranks)
    assert ranks[0]["gpu_ids"] != ranks[1]["gpu_ids"]
    assert all(r["device"] == f"cuda:{r['local_rank']}" for r in ranks)
    assert sorted(r["local_rank"] for r in ranks) == [0, 1]
    # every GPU of the node is visible to each worker (NCCL peer access); its own is at local_rank
    assert all(r["cuda_visible"].split(",")[r["local_rank"]] == r["gpu_ids"][0] for r in ranks)
    assert json.loads((tmp_path / "backend.json").read_text()) == ["nccl"]


# ===================================================================== pipeline steps (no Prefect)
def test_pipeline_steps_fit_evaluate_register_pytorch(ray_cluster, warehouse, tmp_path, monkeypatch):
    import mlflow
    import yaml

    from trainflow.pipeline import evaluate, fit, load, plan as plan_step, register
    from trainflow.spec import parse_spec

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("TRAINFLOW_ARTIFACTS", str(tmp_path / "artifacts"))
    raw = yaml.safe_load((ROOT / "deployments" / "specs" / "credit_risk_pytorch.yaml").read_text())
    raw["data"]["train"]["database"] = raw["data"]["eval"]["database"] = str(warehouse)
    raw["trainer"]["hyper_params"].update(epochs="8", batch_size="64")
    raw.pop("schedule")
    spec = parse_spec(raw)

    data = load.load(spec)
    plan = plan_step.plan(spec, data)
    assert plan.placement.num_workers == 2 and plan.placement.cpus_per_worker == 1
    assert sum(plan.rows_per_shard) == data.train_rows
    lines: list[str] = []
    outcome = fit.fit(spec, data, plan, progress=lines.append)
    assert outcome.framework.name == "pytorch" and len(lines) == 9  # 8 epochs + eval-loss
    model_dir = Path(outcome.result.get_model_dir())
    assert model_dir.parent == tmp_path / "artifacts" / "model"
    metrics = evaluate.evaluate(spec, outcome, data)
    assert set(metrics) == {"rmse", "mae", "r2"} and metrics["r2"] > 0.5, metrics
    model = register.register(spec, outcome, metrics, data)
    assert model.name == "credit-risk-pytorch" and "champion" in model.aliases

    loaded = mlflow.pyfunc.load_model(model.uri)
    assert loaded.metadata.get_input_schema() is not None  # logged with a signature
    x = data.eval.to_pandas(limit=8)[list(spec.features)].to_numpy(np.float32)
    with torch.no_grad():
        direct = outcome.model(torch.from_numpy(x)).numpy().reshape(-1)
    assert np.allclose(np.asarray(loaded.predict(x)).reshape(-1), direct, atol=1e-5)
    run = mlflow.MlflowClient().get_run(model.run_id)
    assert run.data.params["train_func"] == "trainflow.examples.credit_mlp:train_func"
    assert "train-loss" in run.data.metrics


def test_without_a_scaling_config_the_nodes_resources_are_used():
    """Snowflake: "available resources are used automatically" (decided without a cluster)."""
    from trainflow.distributors.placement import NodeResources
    from trainflow.distributors.pytorch import default_scaling

    cpu_only = default_scaling([NodeResources("a", 2.0, 0.0), NodeResources("b", 8.0, 0.0)])
    assert (cpu_only.num_nodes, cpu_only.num_workers, cpu_only.resources.num_cpus, cpu_only.resources.num_gpus) \
        == (1, 1, 8, 0)
    gpus = default_scaling([NodeResources("a", 16.0, 0.0), NodeResources("g", 12.0, 4.0)])
    assert (gpus.num_workers, gpus.resources.num_cpus, gpus.resources.num_gpus) == (4, 3, 1)


def test_a_snowflake_stage_name_maps_under_the_configured_artifact_root(tmp_path, monkeypatch):
    from trainflow.distributors.torch_storage import resolve_location, stage_location

    monkeypatch.setenv("TRAINFLOW_ARTIFACTS", str(tmp_path / "root"))
    assert resolve_location("ML.MODELS.stage").path == str(tmp_path / "root" / "stages" / "ML" / "MODELS" / "STAGE")
    assert stage_location("@db.sch.stg/runs/7") == f"{tmp_path}/root/stages/DB/SCH/STG/runs/7"
    assert stage_location("out/models") is None and stage_location("s3://b/p") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.model.dir").mkdir()
    assert stage_location("my.model.dir") is None  # an existing folder stays a folder


def test_torch_dataset_equal_length_list_columns_are_b_by_k():
    table = pa.table({"v": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], pa.list_(pa.float64())),
                      "ragged": pa.array([[1], [2, 3], []], pa.list_(pa.int64()))})
    [batch] = list(DataConnector.from_dataframe(table).to_torch_dataset(batch_size=3))
    assert tuple(batch["v"].shape) == (3, 2) and batch["v"][2].tolist() == [5.0, 6.0]
    assert batch["ragged"] == [[1], [2, 3], []]  # ragged lists stay lists
