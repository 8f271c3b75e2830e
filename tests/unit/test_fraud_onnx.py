"""The fraud model's ONNX graph gives scikit-learn's probabilities, and a graph that does not is
refused at load with a reason (the caller then scores with scikit-learn)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator

from models.fraud import FraudTrainingConfig, fit_gradient_boosting, fit_logistic_baseline
from models.fraud_onnx import (
    LOG_ODDS_TOLERANCE,
    OnnxRefused,
    check_scorer,
    export_fraud_onnx,
    fraud_scorer,
    onnx_session,
    probability_tolerance,
    probe_rows,
)


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


def _fit(seed: int, max_iter: int, n: int = 6_000) -> CalibratedClassifierCV:
    X, y = _data(n, seed)
    X_cal, y_cal = _data(n // 2, seed + 1)
    cfg = FraudTrainingConfig(max_iter=max_iter, negative_sample_rate=0.5, seed=seed)
    return fit_gradient_boosting(X, y, X_cal, y_cal, cfg)


@pytest.fixture(scope="module")
def fitted() -> tuple[CalibratedClassifierCV, bytes]:
    model = _fit(0, 60)
    return model, export_fraud_onnx(model)


def test_onnx_scores_agree_with_scikit_learn_on_held_out_and_probe_rows(fitted) -> None:
    model, graph = fitted
    scorer, why = fraud_scorer(model, graph)
    assert scorer is not None, why
    booster = model.calibrated_classifiers_[0].estimator.estimator
    held_out, _ = _data(4_000, 9)
    for matrix in (held_out.to_numpy(), probe_rows(scorer, 1_000, seed=7)):
        expected = model.predict_proba(matrix)[:, 1]
        got = scorer.scores(matrix)
        # float32 trees against float64 ones: the log-odds agree to LOG_ODDS_TOLERANCE, and the
        # calibration can magnify that by its steepest slope, no more.
        assert np.max(np.abs(got - expected)) <= probability_tolerance(model)
        log_odds = scorer.session.run(["log_odds"], {"features": matrix.astype(np.float32)})[0]
        assert np.max(np.abs(log_odds - booster.decision_function(matrix))) <= LOG_ODDS_TOLERANCE
        # The rows reach many leaves, not one corner of the trees.
        assert len(np.unique(np.round(expected, 9))) > 10
    # One row at a time (what a model server does) gives the same as the matrix.
    rows = held_out.to_numpy()[:50]
    assert [scorer.score_row(r.tolist()) for r in rows] == scorer.scores(rows).tolist()


def test_missing_values_follow_the_trees_learned_side(fitted) -> None:
    model, graph = fitted
    scorer = onnx_session(graph)
    rows, _ = _data(200, 5)
    matrix = rows.to_numpy().copy()
    matrix[:, 3] = np.nan
    expected = model.predict_proba(matrix)[:, 1]
    assert np.max(np.abs(scorer.scores(matrix) - expected)) <= probability_tolerance(model)
    # Not one constant: the other features still split.
    assert len(np.unique(np.round(expected, 9))) > 3


def test_the_graph_of_another_model_is_refused_and_says_why(fitted) -> None:
    model, _ = fitted
    other = export_fraud_onnx(_fit(3, 10, n=2_000))
    scorer, why = fraud_scorer(model, other)
    assert scorer is None
    assert "log-odds" in why and "differ from scikit-learn" in why


def test_a_graph_over_other_features_is_refused(fitted) -> None:
    model, _ = fitted
    X, y = _data(1_000, 11)
    renamed = X.rename(columns={"distance": "km_from_home"})
    booster = HistGradientBoostingClassifier(max_iter=10).fit(renamed, y)
    other = CalibratedClassifierCV(FrozenEstimator(booster), method="isotonic").fit(renamed, y)
    scorer, why = fraud_scorer(model, export_fraud_onnx(other))
    assert scorer is None and "km_from_home" in why
    narrow = HistGradientBoostingClassifier(max_iter=10).fit(X.iloc[:, :3], y)
    other = CalibratedClassifierCV(FrozenEstimator(narrow), method="isotonic").fit(X.iloc[:, :3], y)
    scorer, why = fraud_scorer(model, export_fraud_onnx(other))
    assert scorer is None and "takes 3 features, the model 4" in why


def test_bytes_that_are_no_graph_are_refused(fitted) -> None:
    model, graph = fitted
    scorer, why = fraud_scorer(model, graph[: len(graph) // 2])
    assert scorer is None and "onnxruntime cannot load" in why


def test_a_version_without_a_graph_is_converted_at_load(fitted) -> None:
    model, _ = fitted
    scorer, note = fraud_scorer(model, None)
    assert scorer is not None and "converted at load" in note
    assert check_scorer(model, scorer) == ""


def test_models_onnx_does_not_express_here_are_refused_with_a_reason() -> None:
    X, y = _data(2_000, 3)
    X_cal, y_cal = _data(1_000, 4)
    logistic = fit_logistic_baseline(X, y, X_cal, y_cal, FraudTrainingConfig())
    with pytest.raises(OnnxRefused, match="not gradient-boosted trees"):
        export_fraud_onnx(logistic)
    booster = HistGradientBoostingClassifier(max_iter=10).fit(X, y)
    with pytest.raises(OnnxRefused, match="not a calibrated binary classifier"):
        export_fraud_onnx(booster)
    sigmoid = CalibratedClassifierCV(FrozenEstimator(booster), method="sigmoid").fit(X, y)
    scorer, why = fraud_scorer(sigmoid, None)
    assert scorer is None and "is not isotonic" in why
    categorical = HistGradientBoostingClassifier(max_iter=10, categorical_features=[2]).fit(
        X.fillna(0), y
    )
    calibrated = CalibratedClassifierCV(FrozenEstimator(categorical), method="isotonic")
    scorer, why = fraud_scorer(calibrated.fit(X.fillna(0), y), None)
    assert scorer is None and why
