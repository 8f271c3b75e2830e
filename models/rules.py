"""Rule-based fraud scores over the served features: the baseline a model must beat in training,
and the scorer the router degrades to when no model answers. One definition, used by both."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

# (feature, fires when value > this, weight): what a fraud team writes before it has a model.
FRAUD_RULES: tuple[tuple[str, float, float], ...] = (
    ("is_new_device", 0.5, 0.35),
    ("is_foreign_country", 0.5, 0.25),
    ("amount_over_card_mean", 4.0, 0.30),
    ("card_tx_count_1h", 4.0, 0.30),
    ("merchant_chargeback_rate_90d", 0.02, 0.30),
)


def rule_score(
    features: Mapping[str, float], rules: tuple[tuple[str, float, float], ...] = FRAUD_RULES
) -> float:
    """Score one request's features (missing features never fire)."""
    score = sum(
        weight for name, above, weight in rules if float(features.get(name, 0.0) or 0.0) > above
    )
    return min(score, 1.0)


def rule_reasons(
    features: Mapping[str, float], rules: tuple[tuple[str, float, float], ...] = FRAUD_RULES
) -> list[str]:
    """The rules that fire, as reason codes."""
    return [name for name, above, _ in rules if float(features.get(name, 0.0) or 0.0) > above]


class RuleScorer(ClassifierMixin, BaseEstimator):
    """The rules as a scikit-learn classifier, so they are evaluated and registered like a model."""

    def __init__(self, rules: tuple[tuple[str, float, float], ...] = FRAUD_RULES):
        self.rules = rules

    def fit(self, X: pd.DataFrame, y: np.ndarray | None = None) -> RuleScorer:
        self.classes_ = np.array([0, 1])
        self.feature_names_in_ = np.array(list(X.columns), dtype=object)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        score = np.zeros(len(X))
        for feature, above, weight in self.rules:
            if feature in X:
                score += weight * (X[feature].to_numpy(dtype=float) > above)
        score = np.minimum(score, 1.0)
        return np.column_stack([1.0 - score, score])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
