"""Metrics and the cost-model threshold, checked against answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.evaluation import (
    CostModel,
    catalogue_coverage,
    choose_threshold,
    fraud_metrics,
    ndcg_at_k,
    paired_delta_interval,
    precision_at_k,
    recall_at_k,
    recall_at_precision,
)


def brute_force_best_cost(y, score, amount, cost):
    candidates = np.concatenate([np.unique(score), [np.inf]])
    return min(cost.expected_cost(y, score >= t, amount) for t in candidates)


def test_threshold_by_hand():
    y = np.array([1, 0, 1, 0, 0])
    score = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    amount = np.array([100.0, 10.0, 3.0, 10.0, 10.0])
    # Flag >= 0.9: cost = 3 (missed) ; >= 0.7: 5 (one false alarm) ; nothing: 103.
    assert choose_threshold(y, score, amount, CostModel(false_alarm_cost=5.0)) == 0.9
    # When false alarms are cheap, catching the 3-dollar fraud is worth one.
    assert choose_threshold(y, score, amount, CostModel(false_alarm_cost=1.0)) == 0.7


def test_flag_nothing_when_every_alarm_costs_more_than_the_frauds():
    y, score, amount = np.array([1, 0]), np.array([0.4, 0.9]), np.array([1.0, 1.0])
    t = choose_threshold(y, score, amount, CostModel(false_alarm_cost=100.0))
    assert not (score >= t).any()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 20), st.floats(0.01, 500)), min_size=1, max_size=40
    ),
    st.floats(0.1, 50),
)
def test_threshold_is_optimal_against_brute_force(rows, friction):
    y = np.array([int(r[0]) for r in rows])
    score = np.array([r[1] / 20 for r in rows])  # ties on purpose
    amount = np.array([r[2] for r in rows])
    cost = CostModel(false_alarm_cost=friction)
    t = choose_threshold(y, score, amount, cost)
    assert cost.expected_cost(y, score >= t, amount) == pytest.approx(
        brute_force_best_cost(y, score, amount, cost)
    )


def test_precision_and_recall_helpers():
    y = np.array([1, 1, 0, 1, 0, 0])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    assert precision_at_k(y, score, 2) == 1.0
    assert precision_at_k(y, score, 4) == 0.75
    assert recall_at_precision(y, score, 1.0) == pytest.approx(2 / 3)
    assert recall_at_precision(y, score, 0.75) == 1.0


def test_fraud_metrics_of_a_random_model_sit_at_the_base_rate():
    rng = np.random.default_rng(0)
    y = (rng.random(50_000) < 0.01).astype(int)
    m = fraud_metrics(y, rng.random(y.size), np.full(y.size, 50.0), 0.5, CostModel())
    assert m["roc_auc"] == pytest.approx(0.5, abs=0.03)
    assert m["pr_auc"] == pytest.approx(y.mean(), abs=0.005)
    assert m["expected_cost_no_model"] == pytest.approx(50.0 * y.sum())


def test_ranking_metrics_by_hand():
    recommended = [["a", "b", "c"], ["x", "y", "z"]]
    relevant = [{"b"}, {"q"}]
    assert recall_at_k(recommended, relevant, 3) == 0.5
    assert recall_at_k(recommended, relevant, 1) == 0.0
    # One hit at rank 2: DCG = 1/log2(3); ideal = 1.
    assert ndcg_at_k(recommended, relevant, 10) == pytest.approx((1 / np.log2(3)) / 2)
    assert ndcg_at_k([["b", "a"]], [{"b"}], 10) == 1.0
    assert catalogue_coverage(recommended, 10, 2) == 0.4
    assert recall_at_k([["a"]], [set()], 1) == 0.0  # users with nothing relevant are skipped


def test_paired_interval_of_a_model_against_itself_is_zero():
    rng = np.random.default_rng(0)
    y = (rng.random(2_000) < 0.02).astype(int)
    s = rng.random(2_000) + y
    assert paired_delta_interval(y, s, s, n_resamples=100) == (0.0, 0.0)


def test_paired_interval_separates_a_real_gain_and_spans_noise():
    rng = np.random.default_rng(1)
    n = 10_000
    y = (rng.random(n) < 0.003).astype(int)  # about 30 frauds, as on a retrain's young window
    champion = rng.random(n) + 0.8 * y
    # A clearly better model: the whole interval lies above zero.
    better = rng.random(n) + 3.0 * y
    low, high = paired_delta_interval(y, better, champion, n_resamples=200)
    assert 0 < low < high
    # An equally good model (the same signal, noise of its own): on 30 frauds the interval
    # straddles zero, whichever way this sample's point estimate happens to fall.
    twin = rng.random(n) + 0.8 * y
    low, high = paired_delta_interval(y, twin, champion, n_resamples=200)
    assert low < 0 < high and high - low > 0.05


def test_weighted_average_precision_is_scikit_learns():
    from sklearn.metrics import average_precision_score

    from pipeline.evaluation import WeightedAveragePrecision

    rng = np.random.default_rng(2)
    for n, decimals in ((500, 2), (5_000, 6)):
        y = (rng.random(n) < 0.05).astype(int)
        # Rounded scores tie, as an isotonic calibration's steps do.
        score = np.round(rng.random(n) * 0.5 + 0.4 * y, decimals)
        ap = WeightedAveragePrecision(y, score)
        assert ap(np.ones(n)) == pytest.approx(average_precision_score(y, score), abs=1e-12)
        for _ in range(5):
            weights = np.bincount(rng.integers(0, n, n), minlength=n)  # a bootstrap resample
            assert ap(weights) == pytest.approx(
                average_precision_score(y, score, sample_weight=weights), abs=1e-12
            )


def test_paired_interval_agrees_with_scipys_bootstrap():
    from scipy.stats import bootstrap
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(3)
    n = 4_000
    y = (rng.random(n) < 0.01).astype(int)
    champion = rng.random(n) + 0.8 * y
    candidate = rng.random(n) + 1.2 * y
    low, high = paired_delta_interval(y, candidate, champion, n_resamples=1_000)
    reference = bootstrap(
        (y, candidate, champion),
        lambda yy, a, b: average_precision_score(yy, a) - average_precision_score(yy, b),
        paired=True,
        vectorized=False,
        n_resamples=1_000,
        confidence_level=0.9,
        method="percentile",
        rng=np.random.default_rng(4),
    ).confidence_interval
    # Two bootstraps of the same statistic, each with its own draws: the same interval up to
    # the resampling noise of 1,000 draws.
    assert low == pytest.approx(reference.low, abs=0.03)
    assert high == pytest.approx(reference.high, abs=0.03)


def test_paired_interval_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        paired_delta_interval(np.zeros(10), np.ones(10), np.ones(10))
