"""What every boosting estimator promises, run for each one (tests/boosting_cases.py holds what differs).
Framework facts (LightGBM's global metrics and categoricals, XGBoost's GPU plan, ...) stay in
test_xgboost.py / test_lightgbm.py; what only one framework's restarts do (a stateful xgboost callback,
LightGBM's early stopping) in test_reliability.py."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from tests.boosting_cases import CASES, ROUNDS, Case
from tests.conftest import early_stopping_frame, fit_within
from trainflow.data import DataConnector, connect
from trainflow.distributors import scoring
from trainflow.errors import ConfigError, NotFittedError, TrainingError


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


@pytest.fixture(params=list(CASES))
def case(request) -> Case:
    return CASES[request.param]()


@pytest.fixture
def fitted(case, two_worker_fits):
    return two_worker_fits(case)


def test_two_workers_match_single_process_quality(fitted):
    case, est = fitted.case, fitted.estimator
    assert (est.placement_.num_workers, est.placement_.cpus_per_worker) == (2, 1)
    assert isinstance(fitted.booster, case.booster_type) and case.rounds(fitted.booster) == ROUNDS
    holdout = fitted.holdout
    plain_rmse = _rmse(case.native_predict(case.plain(fitted.train, case.params, ROUNDS), holdout, case.features),
                       holdout["y"])
    dist_rmse = _rmse(est.predict(holdout), holdout["y"])
    assert dist_rmse <= plain_rmse * case.quality_tolerance, (dist_rmse, plain_rmse)
    # the check has teeth: what rank 0 alone would learn (its half of the sorted rows) is far worse
    half = case.plain(fitted.train.iloc[: len(fitted.train) // 2], case.params, ROUNDS)
    assert _rmse(case.native_predict(half, holdout, case.features), holdout["y"]) > plain_rmse * 2


def test_eval_history_and_progress(fitted):
    results = fitted.estimator.get_eval_results()
    assert set(results) == {"train", "eval"}
    (metric,) = set(results["eval"])
    assert len(results["eval"][metric]) == ROUNDS and len(results["train"][metric]) == ROUNDS
    assert results["eval"][metric][-1] < results["eval"][metric][0]
    assert [int(line.split("]")[0].lstrip("[")) for line in fitted.lines] == [1, 10, 20, 30, 40]
    assert f"train-{metric}" in fitted.lines[-1] and f"eval-{metric}: {results['eval'][metric][-1]:.6g}" in fitted.lines[-1]


def test_predict_keeps_row_order_across_shards(fitted, monkeypatch):
    monkeypatch.setattr(scoring, "PREDICT_ROWS_PER_TASK", 300)  # several tasks even on small data
    shuffled = fitted.holdout.sample(frac=1.0, random_state=5).reset_index(drop=True)
    got = fitted.estimator.predict(DataConnector.from_dataframe(shuffled))
    assert got.shape == (len(shuffled),)
    np.testing.assert_allclose(got, fitted.case.native_predict(fitted.booster, shuffled, fitted.case.features),
                               rtol=fitted.case.predict_rtol, atol=1e-6)


def test_default_scaling_is_one_worker_with_every_cpu(case, ray_cluster, warehouse):
    session = connect(str(warehouse))
    est = case.estimator(n_estimators=5)
    booster = est.fit(DataConnector.from_dataframe(session.table("TRAINING_DATA")),
                      ["age", "income", "credit_score"], "default_risk")
    assert (est.placement_.num_workers, est.placement_.cpus_per_worker, est.placement_.use_gpu) == (1, 2, False)
    assert case.rounds(booster) == 5
    results = est.get_eval_results()
    assert list(results) == ["train"] and list(results["train"]) == ["rmse"] and len(results["train"]["rmse"]) == 5


def test_fitted_state_before_fit(case):
    est = case.estimator()
    for call in (est.get_booster, est.get_eval_results, lambda: est.predict(pd.DataFrame({"a": [1]}))):
        with pytest.raises(NotFittedError, match="call fit"):
            call()


def test_early_stopping_without_an_eval_set_is_refused(case, ray_cluster):
    name = case.early_stopping_param
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"params\['{name}'\]=3 turns on early stopping.*no eval_set.*"
                                          rf"data\.eval_fraction.*remove '{name}'"):
        case.estimator(n_estimators=5, params={name: 3}).fit(case.holdout(), case.features, "y")
    assert time.perf_counter() - start < 10  # refused before any worker starts


def _user_early_stopping_fit(case: Case, workers: int, train, holdout):
    est = case.estimator(n_estimators=300, params=case.early_stopping_params, callbacks=[case.user_early_stopping(5)], scaling_config=case.scaling(num_workers=workers))
    # A hang detector, not a speed check: with both cores busy one such fit took about 3 minutes here.
    return est, fit_within(540, est.fit, train, ["f0", "f1", "f2", "f3"], "y", eval_set=holdout)


@pytest.mark.timeout(1200)  # two fits, each bounded by fit_within
def test_a_user_early_stopping_callback_stops_every_worker_at_the_same_round(case, ray_cluster):
    """The callback runs on rank 0 only; its decision reaches every rank each round (the other ranks
    used to wait for rank 0 in the next round's exchange forever), so 2 workers stop where 1 does."""
    train, holdout = early_stopping_frame(3000, seed=21), early_stopping_frame(1000, seed=22)
    one, one_booster = _user_early_stopping_fit(case, 1, train, holdout)
    two, two_booster = _user_early_stopping_fit(case, 2, train, holdout)
    (metric,) = set(one.get_eval_results()["eval"])
    rounds = len(one.get_eval_results()["eval"][metric])
    assert 6 < rounds < 300  # it did stop early
    assert len(two.get_eval_results()["eval"][metric]) == rounds
    assert two.best_iteration_ == one.best_iteration_ == case.best_of(rounds)
    assert case.rounds(two_booster) == case.rounds(one_booster) == case.kept_of(rounds)


def test_a_killed_worker_resumes_from_its_checkpoint_and_matches_an_uninterrupted_fit(fitted, tmp_path):
    """Rank 0 SIGKILLed at round 28 (the group resumes from round 20), then at round 35 of the resumed
    run (resumes from 30): every round once, and the model and eval history of the uninterrupted fit."""
    case = fitted.case
    first, second = tmp_path / "killed-28", tmp_path / "killed-35"
    est = case.estimator(n_estimators=ROUNDS, params=case.params, scaling_config=case.scaling(num_workers=2),
                         callbacks=[case.kill_at(28, str(first)), case.kill_at(35, str(second))], checkpoint_every=10)
    booster = fit_within(300, est.fit, DataConnector.from_dataframe(fitted.train), case.features, "y",
                         eval_set=DataConnector.from_dataframe(fitted.holdout))
    assert len(first.read_text().split()) == 1 and len(second.read_text().split()) == 1  # killed twice
    assert case.rounds(booster) == ROUNDS
    history, whole = est.get_eval_results(), fitted.estimator.get_eval_results()
    (metric,) = set(history["eval"])
    assert len(history["train"][metric]) == ROUNDS and len(history["eval"][metric]) == ROUNDS
    np.testing.assert_allclose(history["eval"][metric], whole["eval"][metric], rtol=1e-4)
    np.testing.assert_allclose(case.native_predict(booster, fitted.holdout, case.features),
                               case.native_predict(fitted.booster, fitted.holdout, case.features), rtol=1e-4, atol=1e-4)


def test_restarts_are_bounded_then_a_clear_error(case, ray_cluster, tmp_path):
    marker = tmp_path / "killed"
    est = case.estimator(n_estimators=30, params=case.params, scaling_config=case.scaling(num_workers=2),
                         checkpoint_every=10, callbacks=[case.kill_at(15, str(marker), once=False)], max_restarts=1)
    with pytest.raises(TrainingError, match=r"worker rank 0.*gave up after 1 restart"):
        fit_within(300, est.fit, case.holdout(), case.features, "y")
    assert len(marker.read_text().split()) == 2  # the first attempt and one restart
