"""Evaluation metrics from per-shard sufficient statistics, so no shard's rows leave its worker.

Each shard returns small partial sums (`partial_stats`); `merge` adds them; `finalize` turns them into
the spec's metrics. AUC uses a fine histogram of scores per class (exact up to 1e-4 in score).
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from trainflow.errors import ConfigError

Task = Literal["regression", "binary", "multiclass"]
AUC_BINS = 10_000
_EPS = 1e-15
_SUM_TOLERANCE = 1e-3  # float32 class probabilities sum to 1 within this


def apply_link(link: Literal["sigmoid", "softmax"], margin: np.ndarray) -> np.ndarray:
    """A model's raw margin → the task's score: sigmoid → P(class 1), softmax over axis 1 → (n, k)
    class probabilities (see trainflow.frameworks.xgboost.MARGIN_LINK for which objectives need it)."""
    margin = np.asarray(margin, dtype=np.float64)
    if link == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * margin))  # = 1 / (1 + exp(-m)), without overflow
    shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _check_scores(task: Task, pred: np.ndarray) -> None:
    """Binary and multiclass metrics read probabilities: predictions that cannot be probabilities
    (logits, margins) are refused with the fix, not scored as if they were (a negative one used to
    crash the AUC histogram after the whole fit). Multiclass class ids (1-D) are scored by accuracy."""
    if task == "regression" or len(pred) == 0 or (task == "multiclass" and pred.ndim == 1):
        return
    if task == "binary" and pred.ndim != 1:
        problem = f"they have shape {pred.shape}"
    elif np.isnan(pred).any():
        problem = "some are NaN"
    elif pred.min() < 0.0 or pred.max() > 1.0:
        problem = f"they range from {pred.min():.4g} to {pred.max():.4g}"
    elif pred.ndim == 2 and np.any(np.abs(pred.sum(axis=1) - 1.0) > _SUM_TOLERANCE):
        problem = "their rows do not sum to 1"
    else:
        return
    if task == "binary":
        want, fix = "P(class 1), one value in [0, 1] per row", "torch.sigmoid(logits)"
    else:
        want, fix = "class probabilities (rows in [0, 1] that sum to 1)", "torch.softmax(logits, dim=1)"
    raise ConfigError(
        f"The {task} model's predictions must be {want}, but {problem}: they look like logits, not "
        f"probabilities. A PyTorch module must return {fix} from its forward."
    )


def partial_stats(task: Task, y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray | float]:
    """Sums over one shard; `pred` is a value (regression), P(class 1) (binary) or (n, k) probabilities
    (what BoostingAdapter.score gives; anything else for a classification task is a ConfigError)."""
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    _check_scores(task, pred)
    stats: dict[str, np.ndarray | float] = {"n": float(len(y))}
    if task == "regression":
        err = pred - y
        stats.update(sse=float(np.sum(err**2)), sae=float(np.sum(np.abs(err))), sy=float(np.sum(y)),
                     syy=float(np.sum(y**2)))
    elif task == "binary":
        p = np.clip(pred, _EPS, 1 - _EPS)
        hard = (pred >= 0.5).astype(np.float64)
        bins = np.minimum((pred * AUC_BINS).astype(np.int64), AUC_BINS - 1)
        stats.update(
            logloss=float(-np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))),
            correct=float(np.sum(hard == y)),
            tp=float(np.sum((hard == 1) & (y == 1))), fp=float(np.sum((hard == 1) & (y == 0))),
            fn=float(np.sum((hard == 0) & (y == 1))),
            pos_hist=np.bincount(bins[y == 1], minlength=AUC_BINS).astype(np.float64),
            neg_hist=np.bincount(bins[y == 0], minlength=AUC_BINS).astype(np.float64),
        )
    else:
        probs = pred if pred.ndim == 2 else None
        labels = y.astype(np.int64)
        if probs is None:  # class ids (multi:softmax): no probabilities, so no log loss
            stats.update(correct=float(np.sum(pred.astype(np.int64) == labels)), mlogloss=float("nan"))
        else:
            picked = np.clip(probs[np.arange(len(labels)), labels], _EPS, 1.0)
            stats.update(mlogloss=float(-np.sum(np.log(picked))),
                         correct=float(np.sum(np.argmax(probs, axis=1) == labels)))
    return stats


def merge(parts: list[dict]) -> dict:
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            out[key] = value if key not in out else out[key] + value
    return out


def finalize(task: Task, stats: dict, metrics: list[str]) -> dict[str, float]:
    n = stats.get("n", 0.0)
    if not n:
        return {m: float("nan") for m in metrics}
    values: dict[str, float] = {}
    if task == "regression":
        variance = stats["syy"] - stats["sy"] ** 2 / n
        values = {"rmse": (stats["sse"] / n) ** 0.5, "mae": stats["sae"] / n,
                  "r2": 1 - stats["sse"] / variance if variance > 0 else float("nan")}
    elif task == "binary":
        precision_den, recall_den = stats["tp"] + stats["fp"], stats["tp"] + stats["fn"]
        precision = stats["tp"] / precision_den if precision_den else 0.0
        recall = stats["tp"] / recall_den if recall_den else 0.0
        values = {"logloss": stats["logloss"] / n, "accuracy": stats["correct"] / n,
                  "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
                  "auc": _auc(stats["pos_hist"], stats["neg_hist"])}
    else:
        values = {"mlogloss": stats["mlogloss"] / n, "accuracy": stats["correct"] / n}
    return {m: float(values[m]) for m in metrics}


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve from score histograms (ties within a bin count half)."""
    total_pos, total_neg = pos.sum(), neg.sum()
    if not total_pos or not total_neg:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float(np.sum(pos * (neg_below + 0.5 * neg)) / (total_pos * total_neg))
