"""An MLP on the demo credit data, written as a PyTorchDistributor `train_func`.

Features (default `age, income, credit_score`) are standardised with the mean/std of the whole
training set (summed across ranks), then a small MLP is trained with DDP on each rank's shard of
`get_context().get_dataset_map()['train']`. Rank 0 saves to `get_model_dir()`:

* `model.pt`   — the `CreditMLP` state_dict (normalisation included as buffers);
* `model.json` — how to rebuild it: `{"module": "trainflow.examples.credit_mlp:CreditMLP",
  "kwargs": {...}, "input_cols": [...], "label_col": ..., "task": ..., "normalisation": {...}}`.

`CreditMLP(raw_features)` returns predictions (regression: the value; binary: P(class 1);
multiclass: class probabilities), so the saved model is usable without trainflow.

Hyper-parameters (all strings, all optional): `input_cols` (JSON list or comma-separated),
`label_col`, `task` (regression | binary | multiclass), `epochs` (20), `batch_size` (256),
`lr` (0.01), `hidden` ("32,16"), `seed` (0), `weight_decay` (0).
Metrics reported per epoch: `train-loss`, `samples_per_s`; at the end, `eval-loss` when the
dataset map has an `eval` entry.
"""
from __future__ import annotations

import json
import os
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

DEFAULT_FEATURES = ["age", "income", "credit_score"]
DEFAULT_LABEL = "default_risk"
MODULE_REF = "trainflow.examples.credit_mlp:CreditMLP"


class CreditMLP(nn.Module):
    """Standardise → Linear/ReLU stack → output head; `forward(x)` gives predictions."""

    def __init__(self, n_features: int, hidden: list[int] | tuple[int, ...] = (32, 16), n_outputs: int = 1,
                 task: str = "regression"):
        super().__init__()
        self.task = task
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, raw: bool = False) -> torch.Tensor:
        out = self.net((x - self.mean) / self.std)
        if raw or self.task == "regression":
            return out
        if self.task == "binary":
            return torch.sigmoid(out)
        return torch.softmax(out, dim=-1)


def _parse_cols(value: str | None, default: list[str]) -> list[str]:
    if not value:
        return list(default)
    value = value.strip()
    if value.startswith("["):
        return [str(c) for c in json.loads(value)]
    return [c.strip() for c in value.split(",") if c.strip()]


def _features_label(batch: dict, input_cols: list[str], label_col: str) -> tuple[torch.Tensor, torch.Tensor]:
    # NumPy arrays when the dataset is iterated directly, tensors through a DataLoader
    x = torch.cat([torch.as_tensor(batch[c]) for c in input_cols], dim=1).float()  # (B, 1) each → (B, n)
    y = torch.as_tensor(batch[label_col]).reshape(-1)
    return x, y


def _moments(shard, input_cols: list[str], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(count, sum, sum of squares) of the features over this rank's shard, in float64."""
    n = torch.zeros(1, dtype=torch.float64)
    s = torch.zeros(len(input_cols), dtype=torch.float64)
    ss = torch.zeros(len(input_cols), dtype=torch.float64)
    for batch in shard.to_torch_dataset(batch_size=8192, drop_last_batch=False, columns=input_cols):
        x = torch.cat([torch.as_tensor(batch[c]) for c in input_cols], dim=1).double()
        n += x.shape[0]
        s += x.sum(0)
        ss += (x * x).sum(0)
    return n.to(device), s.to(device), ss.to(device)


def train_func() -> None:
    from trainflow.distributors.pytorch import get_context

    context = get_context()
    hp = context.get_hyper_params()
    input_cols = _parse_cols(hp.get("input_cols"), DEFAULT_FEATURES)
    label_col = hp.get("label_col") or DEFAULT_LABEL
    task = hp.get("task", "regression")
    epochs = int(hp.get("epochs", "20"))
    batch_size = int(hp.get("batch_size", "256"))
    lr = float(hp.get("lr", "0.01"))
    hidden = [int(h) for h in hp.get("hidden", "32,16").split(",") if h.strip()]
    seed = int(hp.get("seed", "0"))
    weight_decay = float(hp.get("weight_decay", "0"))
    if task not in ("regression", "binary", "multiclass"):
        raise ValueError(f"hyper_params task={task!r}: use regression, binary or multiclass")

    device = context.get_default_device()
    rank = context.get_rank()
    torch.manual_seed(seed)  # every rank starts from the same weights (DDP also broadcasts rank 0's)

    data = context.get_dataset_map()
    train = data["train"].get_shard() if hasattr(data["train"], "get_shard") else data["train"]
    evaluation = data.get("eval")
    if evaluation is not None and hasattr(evaluation, "get_shard"):
        evaluation = evaluation.get_shard()

    # Standardisation from the whole training set: per-rank sums, added across ranks.
    n, s, ss = _moments(train, input_cols, device)
    for t in (n, s, ss):
        dist.all_reduce(t)
    mean = s / n
    std = torch.sqrt(torch.clamp(ss / n - mean * mean, min=0.0))
    std = torch.where(std > 0, std, torch.ones_like(std))

    n_outputs = 1
    if task == "multiclass":
        top = torch.tensor([-1.0], dtype=torch.float64, device=device)
        for batch in train.to_torch_dataset(batch_size=8192, drop_last_batch=False, columns=[label_col]):
            top = torch.maximum(top, torch.as_tensor(batch[label_col]).double().max().reshape(1))
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
        n_outputs = int(top.item()) + 1

    model = CreditMLP(len(input_cols), hidden, n_outputs, task).to(device)
    with torch.no_grad():
        model.mean.copy_(mean.float())
        model.std.copy_(std.float())
    ddp = DDP(model)
    loss_fn = {"regression": nn.MSELoss(), "binary": nn.BCEWithLogitsLoss(),
               "multiclass": nn.CrossEntropyLoss()}[task]
    optimizer = torch.optim.Adam(ddp.parameters(), lr=lr, weight_decay=weight_decay)
    first_epoch = 0
    state = context.get_checkpoint()  # set when this run restarts after a lost worker
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch = int(state["epoch"])

    # DDP needs the same number of steps on every rank: train on the smallest shard's batch count.
    local_steps = torch.tensor([train.count_rows() // batch_size], device=device)
    dist.all_reduce(local_steps, op=dist.ReduceOp.MIN)
    steps = int(local_steps.item())
    if steps == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the smallest shard; lower batch_size")
    loader = DataLoader(
        train.to_torch_dataset(batch_size=batch_size, shuffle=True, seed=seed + rank,
                               columns=input_cols + [label_col]),
        batch_size=None,
    )

    def target(y: torch.Tensor) -> torch.Tensor:
        return y.long() if task == "multiclass" else y.float().reshape(-1, 1)

    for epoch in range(first_epoch, epochs):
        ddp.train()
        start = time.perf_counter()
        total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, rows
        for step, batch in enumerate(loader):
            if step == steps:
                break
            x, y = _features_label(batch, input_cols, label_col)
            x, y = x.to(device), target(y).to(device)
            loss = loss_fn(ddp(x, raw=True), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += torch.tensor([loss.item() * len(x), len(x)], dtype=torch.float64, device=device)
        seconds = time.perf_counter() - start
        dist.all_reduce(total)
        context.report({"epoch": epoch + 1, "train-loss": float(total[0] / total[1]),
                        "samples_per_s": float(total[1]) / max(seconds, 1e-9)},
                       checkpoint={"epoch": epoch + 1, "model": model.state_dict(),
                                   "optimizer": optimizer.state_dict()})

    if evaluation is not None:
        model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=device)
        with torch.no_grad():
            for batch in evaluation.to_torch_dataset(batch_size=4096, drop_last_batch=False,
                                                     columns=input_cols + [label_col]):
                x, y = _features_label(batch, input_cols, label_col)
                x, y = x.to(device), target(y).to(device)
                total += torch.tensor([loss_fn(model(x, raw=True), y).item() * len(x), len(x)],
                                      dtype=torch.float64, device=device)
        dist.all_reduce(total)
        if total[1] > 0:
            context.report({"eval-loss": float(total[0] / total[1])})

    if rank == 0:
        out = context.get_model_dir()
        torch.save(model.state_dict(), os.path.join(out, "model.pt"))
        meta = {
            "module": MODULE_REF,
            "kwargs": {"n_features": len(input_cols), "hidden": hidden, "n_outputs": n_outputs, "task": task},
            "input_cols": input_cols, "label_col": label_col, "task": task,
            "normalisation": {"mean": mean.tolist(), "std": std.tolist()},
            "hyper_params": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed},
        }
        with open(os.path.join(out, "model.json"), "w") as fh:
            json.dump(meta, fh, indent=2)
