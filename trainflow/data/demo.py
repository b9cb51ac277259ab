"""Deterministic demo credit data: `python -m trainflow.data.demo [path]` writes the warehouse.

Columns age, income, credit_score → default_risk (a probability-like score in [0, 1]), in tables
TRAINING_DATA and EVAL_DATA of a DuckDB file (default `data/warehouse.duckdb`).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from trainflow.data.warehouse import DEFAULT_DATABASE


def credit_frame(rows: int, seed: int) -> pd.DataFrame:
    """`rows` synthetic applicants; the same seed always gives the same frame."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, rows)
    income = np.round(rng.lognormal(mean=10.8, sigma=0.5, size=rows), 2)
    credit_score = np.clip(rng.normal(660, 80, rows).round(), 300, 850).astype(np.int64)
    logit = (
        -0.012 * (credit_score - 660)
        - 0.6 * np.log(income / 50_000)
        + 0.015 * np.abs(age - 45)
        - 0.2
        + rng.normal(0, 0.35, rows)
    )
    default_risk = np.round(1.0 / (1.0 + np.exp(-logit)), 6)
    return pd.DataFrame(
        {
            "age": age.astype(np.int64),
            "income": income.astype(np.float64),
            "credit_score": credit_score,
            "default_risk": default_risk.astype(np.float64),
        }
    )


def build_warehouse(path: str | os.PathLike = DEFAULT_DATABASE, train_rows: int = 20_000,
                    eval_rows: int = 5_000, seed: int = 7) -> Path:
    """Write TRAINING_DATA, EVAL_DATA and NEW_APPLICANTS (rows to score, with an id and no label) to a
    DuckDB file, replacing it atomically."""
    import duckdb

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    train = credit_frame(train_rows, seed)  # noqa: F841 - read by DuckDB by name
    evaluation = credit_frame(eval_rows, seed + 1)  # noqa: F841
    applicants = credit_frame(eval_rows, seed + 2).drop(columns="default_risk")  # to score: no label yet
    applicants.insert(0, "applicant_id", np.arange(1, eval_rows + 1, dtype=np.int64))
    with duckdb.connect(str(tmp)) as conn:
        conn.execute("CREATE TABLE TRAINING_DATA AS SELECT * FROM train")
        conn.execute("CREATE TABLE EVAL_DATA AS SELECT * FROM evaluation")
        conn.execute("CREATE TABLE NEW_APPLICANTS AS SELECT * FROM applicants")
    os.replace(tmp, path)
    return path


def _complete(path: Path) -> bool:
    """The file exists with every demo table (one built by an older trainflow lacks NEW_APPLICANTS)."""
    import duckdb

    if not path.exists():
        return False
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            names = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    except duckdb.Error:
        return False
    return {"TRAINING_DATA", "EVAL_DATA", "NEW_APPLICANTS"} <= names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?", default=DEFAULT_DATABASE)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--eval-rows", type=int, default=5_000)
    parser.add_argument("--if-missing", action="store_true", help="do nothing when the file has the demo tables")
    args = parser.parse_args(argv)
    if args.if_missing and _complete(Path(args.path)):
        return
    out = build_warehouse(args.path, args.train_rows, args.eval_rows)
    print(f"wrote {out} (TRAINING_DATA {args.train_rows} rows, EVAL_DATA {args.eval_rows} rows)")


if __name__ == "__main__":
    main()
