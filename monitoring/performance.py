"""Labelled performance once labels land, and estimated performance before they do (pure).

The fraud model's scores are isotonic-calibrated, so a score is a probability of fraud: over a
window, the expected precision of the blocked transactions is the mean score among them, and
the alert rate is the share at or above the threshold. Shown beside the realised figures once
labels land; an estimate never retrains (monitoring.trigger does not read it).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class FraudPerformance:
    labelled_rows: int
    labelled_positives: int
    pr_auc: float | None
    precision: float | None
    recall: float | None
    alert_rate: float | None  # realised: share of the window's rows at or above the threshold
    estimated_precision: float | None
    estimated_alert_rate: float | None


def fraud_performance(window: pd.DataFrame, threshold: float | None) -> FraudPerformance:
    """From a window's `score` and `label` (NaN where no label has landed yet)."""
    from sklearn.metrics import average_precision_score

    scores = window["score"].to_numpy(dtype=float)
    alert_rate = est_precision = est_alert_rate = None
    if threshold is not None and len(scores):
        flagged = scores >= threshold
        alert_rate = float(flagged.mean())
        # Calibrated: the expected share of frauds among the blocked is their mean score.
        est_precision = float(scores[flagged].mean()) if flagged.any() else None
        est_alert_rate = alert_rate
    labelled = window[window["label"].notna()]
    y = labelled["label"].to_numpy(dtype=int)
    s = labelled["score"].to_numpy(dtype=float)
    positives = int(y.sum())
    pr_auc = precision = recall = None
    if positives and positives < len(y):
        pr_auc = float(average_precision_score(y, s))
    if threshold is not None and len(y):
        hit = s >= threshold
        precision = float(y[hit].mean()) if hit.any() else None
        recall = float(hit[y == 1].mean()) if positives else None
    return FraudPerformance(
        labelled_rows=len(y),
        labelled_positives=positives,
        pr_auc=pr_auc,
        precision=precision,
        recall=recall,
        alert_rate=alert_rate,
        estimated_precision=est_precision,
        estimated_alert_rate=est_alert_rate,
    )


def click_through_by_arm(window: pd.DataFrame) -> dict[str, float]:
    """Recommender: click-through per item shown, per arm: the recommended items the listener
    played or clicked over the items shown.

    Per item and over every slate served, not per labelled slate: plays are posted the moment
    they happen and a skip posts nothing, so a slate without feedback was not engaged with, and
    nearly every 10-item slate has a play (measured on a demo's log: 1,386 of 1,489 slates;
    "slates with a play among labelled slates" read 1.0 in every window)."""
    if window.empty:
        return {}
    sums = window.groupby("arm")[["hits", "shown"]].sum()
    return {str(arm): float(row.hits / row.shown) for arm, row in sums.iterrows() if row.shown > 0}
