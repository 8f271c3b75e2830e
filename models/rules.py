"""The fraud rules (models.fraud_rules) as a scikit-learn classifier: the baseline a model must
beat in training, evaluated like a model. The router scores with the same table directly."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from models.fraud_rules import FRAUD_RULES, Rules


class RuleScorer(ClassifierMixin, BaseEstimator):
    """The rules as a scikit-learn classifier, so they are evaluated and registered like a model."""

    def __init__(self, rules: Rules = FRAUD_RULES):
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
