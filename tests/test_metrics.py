"""Evaluation scores: what each objective's model predicts is turned into the task's score (or refused)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainflow.data import DataConnector
from trainflow.distributors.scoring import score_connector
from trainflow.errors import ConfigError
from trainflow.metrics import finalize, partial_stats

FEATURES = ["f0", "f1", "f2"]


def _classes(rows: int, seed: int, classes: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    score = x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.7, rows)
    label = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    df = pd.DataFrame(x, columns=FEATURES)
    df["label"] = label.astype(np.float64)
    return df


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def test_binary_logitraw_is_scored_through_the_sigmoid_of_its_margin(ray_cluster):
    """binary:logitraw predicts margins (negative ones crashed the AUC histogram after the fit)."""
    from trainflow.distributors.xgboost import XGBEstimator

    train, holdout = _classes(2000, 1, 2), _classes(800, 2, 2)
    est = XGBEstimator(n_estimators=10, objective="binary:logitraw", params={"max_depth": 3})
    booster = est.fit(train, FEATURES, "label")
    margin = est.predict(holdout)  # predict keeps xgboost's native output: the margin
    assert (margin < 0).any() and (margin > 1).any()
    stats = score_connector(est._adapter, booster, DataConnector.from_dataframe(holdout), FEATURES, "label",
                            "binary")
    got = finalize("binary", stats, ["logloss", "accuracy"])
    y, p = holdout["label"].to_numpy(), 1 / (1 + np.exp(-margin.astype(np.float64)))
    assert got["logloss"] == pytest.approx(_logloss(y, p), rel=1e-5)
    assert got["accuracy"] == pytest.approx(float(np.mean((margin > 0) == (y == 1))))


def test_multi_softmax_is_scored_with_class_probabilities(ray_cluster):
    """multi:softmax predicts class ids: scored through the softmax of its margins, its mlogloss is
    a number (it was NaN) and equals what the same model gives as multi:softprob."""
    from trainflow.distributors.xgboost import XGBEstimator

    train, holdout = _classes(2000, 3, 3), _classes(800, 4, 3)
    conn = DataConnector.from_dataframe(holdout)
    results = {}
    for objective in ("multi:softmax", "multi:softprob"):
        est = XGBEstimator(n_estimators=8, objective=objective, params={"max_depth": 3, "num_class": 3})
        booster = est.fit(train, FEATURES, "label")
        results[objective] = finalize("multiclass", score_connector(est._adapter, booster, conn, FEATURES,
                                                                    "label", "multiclass"), ["mlogloss", "accuracy"])
    assert np.isfinite(results["multi:softmax"]["mlogloss"])
    assert results["multi:softmax"] == pytest.approx(results["multi:softprob"], rel=1e-5)


def test_logits_for_a_classification_task_are_refused_with_the_fix():
    y = np.array([0.0, 1.0, 1.0, 0.0])
    with pytest.raises(ConfigError, match=r"binary model's predictions must be P\(class 1\).*range from -2 to 3"
                                          r".*torch\.sigmoid"):
        partial_stats("binary", y, np.array([-2.0, 3.0, 0.5, 0.1]))
    with pytest.raises(ConfigError, match=r"rows do not sum to 1.*torch\.softmax"):
        partial_stats("multiclass", y, np.array([[0.9, 0.8], [0.1, 0.2], [0.5, 0.5], [0.3, 0.7]]))
    with pytest.raises(ConfigError, match=r"shape \(4, 2\)"):
        partial_stats("binary", y, np.full((4, 2), 0.5))
    assert partial_stats("binary", y, np.array([0.0, 1.0, 0.7, 0.2]))["correct"] == 4
    assert partial_stats("multiclass", y, np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.6, 0.4]]))["n"] == 4


def test_a_pytorch_module_returning_logits_gets_the_clear_error_from_the_scoring_tasks(ray_cluster):
    """Through the real scoring path (Ray tasks per shard), not a crash in np.bincount."""
    import torch

    from trainflow.distributors.torch_scoring import TorchModuleAdapter

    holdout = _classes(500, 5, 2)
    torch.manual_seed(0)
    logits = torch.nn.Linear(3, 1)  # no sigmoid: returns logits
    with torch.no_grad():
        logits.weight.fill_(3.0)
    with pytest.raises(ConfigError, match=r"torch\.sigmoid"):
        score_connector(TorchModuleAdapter(), logits, DataConnector.from_dataframe(holdout), FEATURES, "label",
                        "binary")
