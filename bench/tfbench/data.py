"""Deterministic synthetic regression data in Parquet: several files, several row groups each."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

LABEL = "y"
FILES = 4
ROW_GROUPS_PER_FILE = 4
HOLDOUT_ROWS = 200_000


def feature_names(features: int) -> list[str]:
    return [f"f{i:02d}" for i in range(features)]


def _block(rows: int, features: int, seed: int, index: int) -> pa.Table:
    """One row group's rows; block `index` of stream `seed` is the same whatever the file layout."""
    rng = np.random.default_rng([seed, index])
    x = rng.standard_normal((rows, features), dtype=np.float32)
    k = min(features, 8)
    w = np.linspace(1.0, 0.2, k, dtype=np.float32)
    y = x[:, :k] @ w
    if features >= 4:
        y += np.sin(2.0 * x[:, 0] * x[:, 1]) + 0.5 * x[:, 2] ** 2 - np.abs(x[:, 3])
    y += 0.1 * rng.standard_normal(rows, dtype=np.float32)
    cols = {name: x[:, i] for i, name in enumerate(feature_names(features))}
    cols[LABEL] = y.astype(np.float32)
    return pa.table(cols)


def _write(path: str, rows: int, features: int, seed: int, first_block: int, groups: int) -> None:
    schema = _block(1, features, seed, 0).schema
    # plain encoding: dictionary pages of random floats make the file 1.5x the raw size
    with pq.ParquetWriter(path, schema, use_dictionary=False, compression="snappy") as writer:
        for g in range(groups):
            lo, hi = rows * g // groups, rows * (g + 1) // groups
            writer.write_table(_block(hi - lo, features, seed, first_block + g), row_group_size=hi - lo)


def ensure_dataset(data_dir: str, rows: int, features: int, seed: int = 7) -> dict:
    """Create (once) and describe `<data_dir>/r<rows>_f<features>_s<seed>/{train/, holdout.parquet}`."""
    root = os.path.join(data_dir, f"r{rows}_f{features}_s{seed}")
    meta_path = os.path.join(root, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as fh:
            return json.load(fh)
    shutil.rmtree(root, ignore_errors=True)
    train_dir = os.path.join(root, "train")
    os.makedirs(train_dir)
    groups = FILES * ROW_GROUPS_PER_FILE
    for f in range(FILES):
        lo, hi = rows * f // FILES, rows * (f + 1) // FILES
        _write(os.path.join(train_dir, f"part-{f}.parquet"), hi - lo, features, seed, f * ROW_GROUPS_PER_FILE,
               ROW_GROUPS_PER_FILE)
    _write(os.path.join(root, "holdout.parquet"), HOLDOUT_ROWS, features, seed + 1_000_003, 0, 1)
    meta = {"root": root, "train": train_dir, "holdout": os.path.join(root, "holdout.parquet"),
            "rows": rows, "features": features, "seed": seed, "files": FILES, "row_groups": groups,
            "feature_names": feature_names(features), "label": LABEL,
            "raw_bytes": rows * (features + 1) * 4}
    with open(meta_path, "w") as fh:
        json.dump(meta, fh)
    return meta


def load_holdout(meta: dict) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(meta["holdout"])
    x = np.column_stack([table.column(c).to_numpy() for c in meta["feature_names"]]).astype(np.float32)
    return x, table.column(meta["label"]).to_numpy().astype(np.float32)
