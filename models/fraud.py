"""The fraud scorer and its baselines, as scikit-learn estimators.

Class imbalance (~0.5 % fraud) is handled deliberately, in three steps:
1. negatives are down-sampled for training (every fraud kept, a share of legitimate rows), which
   makes training fast and gives the rare class enough weight in each boosting step;
2. gradient boosting additionally weights the positive class (``positive_weight``);
3. both distort probabilities, so the scores are re-calibrated (isotonic) on a later window at
   the true class ratio. Calibrated scores are what the cost-model threshold and the router need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

# What skops may rebuild when MLflow loads these models: named, not inferred from the file, so
# a tampered artifact with any other type is refused.
SKOPS_TRUSTED_TYPES = [
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.loss.HalfBinomialLoss",
]


@dataclass(frozen=True)
class FraudTrainingConfig:
    negative_sample_rate: float = 0.25
    positive_weight: float = 5.0
    max_iter: int = 300
    learning_rate: float = 0.08
    max_leaf_nodes: int = 31
    seed: int = 0


def downsample_negatives(y: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Indices to train on: every positive, and each negative with probability `rate`."""
    keep = (y == 1) | (np.random.default_rng(seed).random(y.size) < rate)
    return np.flatnonzero(keep)


def fit_gradient_boosting(
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_cal: pd.DataFrame,
    y_cal: np.ndarray,
    cfg: FraudTrainingConfig,
) -> CalibratedClassifierCV:
    """HistGradientBoosting with class weighting, isotonic-calibrated on a later window."""
    rows = downsample_negatives(y_train, cfg.negative_sample_rate, cfg.seed)
    booster = HistGradientBoostingClassifier(
        max_iter=cfg.max_iter,
        learning_rate=cfg.learning_rate,
        max_leaf_nodes=cfg.max_leaf_nodes,
        class_weight={0: 1.0, 1: cfg.positive_weight},
        early_stopping=True,
        validation_fraction=0.15,
        n_iter_no_change=20,
        random_state=cfg.seed,
    )
    booster.fit(X_train.iloc[rows], y_train[rows])
    return calibrate(booster, X_cal, y_cal)


def fit_logistic_baseline(
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_cal: pd.DataFrame,
    y_cal: np.ndarray,
    cfg: FraudTrainingConfig,
) -> CalibratedClassifierCV:
    """A linear baseline: what a simple, explainable model reaches on the same features."""
    rows = downsample_negatives(y_train, cfg.negative_sample_rate, cfg.seed)
    model = make_pipeline(
        SimpleImputer(strategy="median"),
        StandardScaler(),
        LogisticRegression(class_weight="balanced", max_iter=2000, C=0.5),
    )
    model.fit(X_train.iloc[rows], y_train[rows])
    return calibrate(model, X_cal, y_cal)


def calibrate(
    model: BaseEstimator, X_cal: pd.DataFrame, y_cal: np.ndarray
) -> CalibratedClassifierCV:
    """Map a fitted model's scores to probabilities at the true class ratio of a later window."""
    calibrated = CalibratedClassifierCV(FrozenEstimator(model), method="isotonic")
    calibrated.fit(X_cal, y_cal)
    return calibrated
