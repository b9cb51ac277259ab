"""Batch scoring of PyTorch modules by the shared scorer (a Ray task per shard, metric partial sums)."""
from __future__ import annotations

from typing import Any

import numpy as np

from trainflow.distributors.boosting import BoostingAdapter


class TorchModuleAdapter(BoostingAdapter):
    """Lets the boosting scorer (Ray task per shard, metric partial sums) run an nn.Module."""

    name = "pytorch"

    def predict(self, module: Any, features: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = module(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        out = out.detach().cpu().numpy()
        return out.reshape(-1) if out.ndim == 2 and out.shape[1] == 1 else out


class ExportedModule:
    """A `torch.export` archive (how MLflow logs pytorch models) that pickles as its bytes and loads
    on first call in the process that runs it (the loaded module itself does not pickle)."""

    def __init__(self, archive: bytes):
        self.archive = archive
        self._module = None

    def __getstate__(self) -> dict:
        return {"archive": self.archive}

    def __setstate__(self, state: dict) -> None:
        self.archive, self._module = state["archive"], None

    def __call__(self, x: Any) -> Any:
        if self._module is None:
            import io

            import torch

            self._module = torch.export.load(io.BytesIO(self.archive)).module()
        return self._module(x)
