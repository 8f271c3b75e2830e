"""Model quality as pure functions: fraud metrics under a stated cost model, and ranking metrics.

Nothing here reads a file or a server; training flows call these and log what they return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CostModel:
    """What a decision costs. A missed fraud costs its amount (the chargeback); blocking a good
    customer costs a fixed friction cost (support call, abandoned basket, churn risk)."""

    false_alarm_cost: float = 5.0

    def expected_cost(self, y: np.ndarray, flagged: np.ndarray, amount: np.ndarray) -> float:
        missed = (y == 1) & ~flagged
        false_alarms = (y == 0) & flagged
        return float(amount[missed].sum() + self.false_alarm_cost * false_alarms.sum())


def choose_threshold(
    y: np.ndarray, score: np.ndarray, amount: np.ndarray, cost: CostModel
) -> float:
    """The score threshold with the least expected cost (flag when score >= threshold).

    Exact over every distinct score: sorting once gives the cost of every cut in O(n log n).
    """
    y, score, amount = (
        np.asarray(y),
        np.asarray(score, dtype=float),
        np.asarray(amount, dtype=float),
    )
    order = np.argsort(-score, kind="stable")
    s, yy, aa = score[order], y[order], amount[order]
    # Flagging the top i rows: missed = fraud amount below; false alarms = legit rows above.
    fraud_amount_total = aa[yy == 1].sum()
    caught_amount = np.concatenate([[0.0], np.cumsum(np.where(yy == 1, aa, 0.0))])
    false_alarms = np.concatenate([[0], np.cumsum(yy == 0)])
    costs = (fraud_amount_total - caught_amount) + cost.false_alarm_cost * false_alarms
    # Only cut between distinct scores, so ties are flagged together.
    valid = np.concatenate([[True], s[:-1] != s[1:], [True]])
    best = int(np.argmin(np.where(valid, costs, np.inf)))
    if best == 0:
        return float(np.nextafter(s[0], np.inf)) if s.size else 1.0  # flag nothing
    return float(s[best - 1])


def recall_at_precision(y: np.ndarray, score: np.ndarray, min_precision: float) -> float:
    """The best recall reachable while precision stays at or above `min_precision`."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, score)
    ok = precision >= min_precision
    return float(recall[ok].max()) if ok.any() else 0.0


def precision_at_k(y: np.ndarray, score: np.ndarray, k: int) -> float:
    """Share of fraud among the k highest scores (what an analyst queue of size k would see)."""
    top = np.argsort(-np.asarray(score), kind="stable")[:k]
    return float(np.asarray(y)[top].mean()) if top.size else 0.0


def fraud_metrics(
    y: np.ndarray,
    score: np.ndarray,
    amount: np.ndarray,
    threshold: float,
    cost: CostModel,
    k: int = 100,
) -> dict[str, float]:
    """Every fraud metric the registry records, on one window."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    amount = np.asarray(amount, dtype=float)
    both_classes = 0 < y.sum() < y.size
    flagged = score >= threshold
    cost_no_model = cost.expected_cost(y, np.zeros_like(flagged), amount)
    model_cost = cost.expected_cost(y, flagged, amount)
    return {
        "pr_auc": float(average_precision_score(y, score)) if both_classes else float("nan"),
        "roc_auc": float(roc_auc_score(y, score)) if both_classes else float("nan"),
        "positive_rate": float(y.mean()) if y.size else float("nan"),
        "recall_at_precision_50": recall_at_precision(y, score, 0.5) if both_classes else 0.0,
        "recall_at_precision_80": recall_at_precision(y, score, 0.8) if both_classes else 0.0,
        f"precision_at_{k}": precision_at_k(y, score, k),
        "threshold": float(threshold),
        "flag_rate": float(flagged.mean()) if y.size else 0.0,
        "expected_cost": model_cost,
        "expected_cost_no_model": cost_no_model,
        "cost_saved_share": (1.0 - model_cost / cost_no_model) if cost_no_model > 0 else 0.0,
    }


def recall_at_k(
    recommended: Sequence[Sequence[str]], relevant: Sequence[set[str]], k: int
) -> float:
    """Mean over users of |top-k ∩ relevant| / |relevant| (users with nothing relevant are skipped)."""
    scores = [
        len(set(rec[:k]) & rel) / len(rel)
        for rec, rel in zip(recommended, relevant, strict=True)
        if rel
    ]
    return float(np.mean(scores)) if scores else 0.0


def ndcg_at_k(
    recommended: Sequence[Sequence[str]], relevant: Sequence[set[str]], k: int = 10
) -> float:
    """Mean NDCG@k with binary relevance: discounted hits over the best possible ordering."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for rec, rel in zip(recommended, relevant, strict=True):
        if not rel:
            continue
        gains = np.array([1.0 if item in rel else 0.0 for item in rec[:k]])
        dcg = float((gains * discounts[: gains.size]).sum())
        ideal = float(discounts[: min(len(rel), k)].sum())
        scores.append(dcg / ideal)
    return float(np.mean(scores)) if scores else 0.0


def catalogue_coverage(recommended: Sequence[Sequence[str]], catalogue_size: int, k: int) -> float:
    """Share of the catalogue that appears in anyone's top-k (a popularity model scores low)."""
    shown = {item for rec in recommended for item in rec[:k]}
    return len(shown) / catalogue_size if catalogue_size else 0.0


def paired_delta_interval(
    y: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    confidence: float = 0.9,
    n_resamples: int = 400,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of PR-AUC(candidate) - PR-AUC(champion), both models'
    scores on the same rows resampled together (paired): how far the difference the gate sees
    could move on another sample of the same window.

    A resample drawn with replacement is the rows counted by how often each was drawn, so each
    resample here is a weight vector (`np.bincount` of the draws), and each model's PR-AUC on it
    is `average_precision_score` with those weights, computed on the model's order sorted once
    (`WeightedAveragePrecision`; tested equal to scikit-learn's). Why not `scipy.stats.bootstrap`,
    which did this before: it materialises every resample and re-sorts both models' scores in
    each. Measured back to back on the size of a demo's drift retrain window (50,006 rows, 23
    frauds; 2 cores, busy with a test suite): 400 resamples took 8.9 s and 310 MB of peak memory
    that way, inside the training flow run that meets a day's landing at the lab's memory peak;
    1.4 s and 5 MB this way."""
    y = np.asarray(y).astype(int)
    if not 0 < y.sum() < y.size:
        raise ValueError("a PR-AUC interval needs both classes among the rows")
    candidate_ap = WeightedAveragePrecision(y, np.asarray(candidate, dtype=float))
    champion_ap = WeightedAveragePrecision(y, np.asarray(champion, dtype=float))
    rng = np.random.default_rng(seed)
    positive = y == 1
    deltas = np.empty(n_resamples)
    for i in range(n_resamples):
        weights = np.bincount(rng.integers(0, y.size, y.size), minlength=y.size)
        if not 0 < weights[positive].sum() < y.size:  # the weights of a resample sum to its size
            deltas[i] = 0.0  # a resample without a fraud tells neither model apart
            continue
        deltas[i] = candidate_ap(weights) - champion_ap(weights)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(deltas, [tail, 100 - tail])
    return float(low), float(high)


class WeightedAveragePrecision:
    """One model's average precision (scikit-learn's `average_precision_score`, step-wise
    interpolation) under any row weights, its scores sorted once: precision and recall at each
    distinct score, highest first, from cumulative weighted positives and rows."""

    def __init__(self, y: np.ndarray, score: np.ndarray) -> None:
        self._order = np.argsort(score, kind="mergesort")[::-1]
        ranked = score[self._order]
        # The last row of each run of equal scores: a threshold admits a tie whole.
        self._ends = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
        self._positive = y[self._order] == 1

    def __call__(self, weights: np.ndarray) -> float:
        w = np.asarray(weights, dtype=float)[self._order]
        true_positives = np.cumsum(np.where(self._positive, w, 0.0))[self._ends]
        predicted = np.cumsum(w)[self._ends]
        if true_positives[-1] <= 0:
            return 0.0
        precision = np.divide(
            true_positives, predicted, out=np.zeros_like(predicted), where=predicted > 0
        )
        recall_steps = np.diff(true_positives, prepend=0.0) / true_positives[-1]
        return float(np.sum(recall_steps * precision))
