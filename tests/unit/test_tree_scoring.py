"""The compiled fraud scorer gives scikit-learn's probabilities, and refuses what it cannot copy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator

from models.fraud import FraudTrainingConfig, fit_gradient_boosting, fit_logistic_baseline
from models.tree_scoring import compile_calibrated_trees, compile_scorer, probe_rows


def _data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, n),
            "count_1h": rng.poisson(1.5, n).astype(float),
            "new_device": rng.integers(0, 2, n).astype(float),
            "distance": rng.normal(0, 1, n),
        }
    )
    X.loc[rng.random(n) < 0.05, "distance"] = np.nan  # missing values take a learned side
    logit = -4 + 0.8 * np.log(X["amount"]) + 1.5 * X["new_device"] + X["distance"].fillna(2)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


@pytest.fixture(scope="module")
def fitted() -> tuple[CalibratedClassifierCV, pd.DataFrame]:
    X, y = _data(6_000, 0)
    X_cal, y_cal = _data(3_000, 1)
    cfg = FraudTrainingConfig(max_iter=60, negative_sample_rate=0.5)
    return fit_gradient_boosting(X, y, X_cal, y_cal, cfg), X_cal


def test_compiled_scores_equal_scikit_learn_on_held_out_and_probe_rows(fitted) -> None:
    model, X_held_out = fitted
    scorer, why = compile_scorer(model)
    assert scorer is not None, why
    for matrix in (X_held_out.to_numpy(), probe_rows(scorer, 1_000, seed=7)):
        expected = model.predict_proba(matrix)[:, 1]
        got = scorer.scores(matrix)
        assert np.max(np.abs(got - expected)) <= 1e-9
        # The probes reach many leaves, not one corner of the trees.
        assert len(np.unique(np.round(expected, 9))) > 10


def test_missing_values_follow_the_trees_learned_side(fitted) -> None:
    model, X = fitted
    scorer, _ = compile_scorer(model)
    assert scorer is not None
    rows = X.to_numpy()[:200].copy()
    rows[:, 3] = np.nan
    assert np.allclose(scorer.scores(rows), model.predict_proba(rows)[:, 1], atol=1e-9, rtol=0)


def test_sigmoid_calibration_is_copied_too() -> None:
    X, y = _data(4_000, 2)
    booster = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)
    model = CalibratedClassifierCV(FrozenEstimator(booster), method="sigmoid").fit(X, y)
    scorer, why = compile_scorer(model)
    assert scorer is not None, why
    rows = X.to_numpy()[:500]
    assert np.max(np.abs(scorer.scores(rows) - model.predict_proba(rows)[:, 1])) <= 1e-9


def test_models_it_cannot_copy_are_refused_with_a_reason() -> None:
    X, y = _data(2_000, 3)
    X_cal, y_cal = _data(1_000, 4)
    logistic = fit_logistic_baseline(X, y, X_cal, y_cal, FraudTrainingConfig())
    scorer, why = compile_scorer(logistic)
    assert scorer is None and "not a calibrated binary tree ensemble" in why
    raw_booster = HistGradientBoostingClassifier(max_iter=10).fit(X, y)
    assert compile_calibrated_trees(raw_booster) is None
    categorical = HistGradientBoostingClassifier(max_iter=10, categorical_features=[2]).fit(
        X.fillna(0), y
    )
    calibrated = CalibratedClassifierCV(FrozenEstimator(categorical)).fit(X.fillna(0), y)
    assert compile_calibrated_trees(calibrated) is None


def test_a_copy_that_disagrees_is_not_used(fitted, monkeypatch) -> None:
    import models.tree_scoring as tree_scoring

    model, _ = fitted
    corrupted = compile_calibrated_trees(model)
    assert corrupted is not None
    # One leaf of the copy off by 0.5 in log-odds: the check at load must refuse the copy.
    tree = corrupted.members[0].trees[0]
    tree.value[tree.leaf.index(True)] += 0.5
    monkeypatch.setattr(tree_scoring, "compile_calibrated_trees", lambda _: corrupted)
    scorer, why = tree_scoring.compile_scorer(model)
    assert scorer is None and "differs from scikit-learn" in why
