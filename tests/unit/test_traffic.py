"""The router's pure traffic policies: sticky assignment and the canary verdict."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from mlsd.settings import CanaryGuardrailSettings
from serving.traffic import (
    ArmWindow,
    assign_arm,
    canary_verdict,
    experiment_metric,
    ks_two_sample,
    normal_sf,
    percentile,
    psi,
    rate_exceeds_by_margin,
    traffic_bucket,
    window_stats,
)

KEYS = [f"card_{i:06d}" for i in range(4_000)]
salts = st.text(min_size=1, max_size=40)
percents = st.floats(min_value=1.0, max_value=99.0)
GUARDRAILS = CanaryGuardrailSettings()


def binomial_tolerance(p: float, n: int, sigmas: float = 5.0) -> float:
    return sigmas * math.sqrt(p * (1 - p) / n) + 1 / n


# --- assignment ------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(salt=salts, percent=percents)
def test_challenger_share_is_within_binomial_tolerance(salt, percent):
    p = percent / 100
    share = sum(assign_arm(k, salt, percent) == "challenger" for k in KEYS) / len(KEYS)
    assert abs(share - p) <= binomial_tolerance(p, len(KEYS))


@given(key=st.text(max_size=60), salt=salts, percent=st.floats(0, 100))
def test_assignment_is_sticky(key, salt, percent):
    assert {assign_arm(key, salt, percent) for _ in range(3)} == {assign_arm(key, salt, percent)}


@given(key=st.text(max_size=60), salt=salts, low=st.floats(0, 100), high=st.floats(0, 100))
def test_raising_the_percent_never_moves_anyone_back_to_the_champion(key, salt, low, high):
    low, high = min(low, high), max(low, high)
    if assign_arm(key, salt, low) == "challenger":
        assert assign_arm(key, salt, high) == "challenger"


@given(key=st.text(max_size=60), salt=salts)
def test_zero_and_hundred_percent_are_absolute(key, salt):
    assert assign_arm(key, salt, 0) == "champion"
    assert assign_arm(key, salt, -5) == "champion"
    assert assign_arm(key, salt, 100) == "challenger"


@settings(max_examples=25, deadline=None)
@given(salt_a=salts, salt_b=salts, pa=percents, pb=percents)
def test_assignments_of_two_experiments_are_independent(salt_a, salt_b, pa, pb):
    assume(salt_a != salt_b)
    a = np.array([assign_arm(k, salt_a, pa) == "challenger" for k in KEYS])
    b = np.array([assign_arm(k, salt_b, pb) == "challenger" for k in KEYS])
    # P(in both) = P(a) P(b) if independent; the observed shares stand in for P(a), P(b).
    expected = a.mean() * b.mean()
    assert abs((a & b).mean() - expected) <= binomial_tolerance(expected, len(KEYS))


def test_buckets_are_uniform():
    buckets = [traffic_bucket(k, "exp") for k in KEYS]
    assert stats.kstest(buckets, "uniform").pvalue > 1e-3
    assert all(0 <= b < 1 for b in buckets)


def test_salt_and_key_do_not_run_into_each_other():
    assert traffic_bucket("c", "ab") != traffic_bucket("bc", "a")


def test_buckets_are_stable_across_processes_and_releases():
    # Pinned: a change here reassigns every entity of every running experiment.
    assert traffic_bucket("card_000001", "canary-fraud-v4") == pytest.approx(0.0882079391, abs=1e-9)
    code = "from serving.traffic import traffic_bucket; print(traffic_bucket('u1', 'exp'))"
    values = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            cwd=Path(__file__).resolve().parents[2],
        ).stdout
        for seed in ("1", "2")
    }
    assert values == {f"{traffic_bucket('u1', 'exp')}\n"}


# --- statistics ------------------------------------------------------------------------------


def test_normal_sf():
    assert normal_sf(0) == pytest.approx(0.5)
    assert normal_sf(1.959964) == pytest.approx(0.025, abs=1e-6)
    assert normal_sf(-1.959964) == pytest.approx(0.975, abs=1e-6)


def test_ks_distance_is_the_largest_gap_between_the_empirical_cdfs():
    # CDFs of [1, 2, 3, 4] and [3, 4, 5, 6] part most after 2: 2/4 of one, 0/4 of the other.
    d, p = ks_two_sample([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0])
    assert d == pytest.approx(0.5)
    assert 0.0 < p <= 1.0
    assert ks_two_sample([0.2, 0.4, 0.4], [0.2, 0.4, 0.4]) == (0.0, 1.0)  # ties, identical


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(50, 400),  # the verdict judges distributions from min_scores = 50 on
    m=st.integers(50, 400),
    seed=st.integers(0, 2**31),
)
def test_ks_separates_a_shift_from_a_resample(n, m, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    # A shift of two standard deviations: D near 0.68, far past the 0.01 % tail at 50 each.
    _, p_shift = ks_two_sample(a, rng.normal(2.0, size=m))
    assert p_shift < 1e-4
    d, _ = ks_two_sample(a, rng.normal(size=m))
    # A resample's D shrinks like 1/sqrt(n m / (n + m)); 2.5 of that is the 0.01 % tail.
    assert d < 2.5 / math.sqrt(n * m / (n + m))


def test_ks_needs_a_value_in_each_sample():
    with pytest.raises(ValueError, match="at least one value"):
        ks_two_sample([], [0.5])


def test_psi_is_zero_for_the_same_sample_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    a = rng.beta(1, 20, 5_000)
    assert psi(a, a) == pytest.approx(0.0, abs=1e-12)
    assert psi(a, rng.beta(1, 20, 5_000)) < 0.02
    assert psi(a, rng.beta(5, 5, 5_000)) > 1.0


def test_psi_by_hand():
    # Champion deciles of 0..9 are the values themselves; the challenger puts half its mass
    # in the top bin: PSI = 9 (0.05 - 0.1) ln(0.5) + (0.55 - 0.1) ln(5.5).
    champion = list(range(10))
    challenger = [0, 1, 2, 3, 4, 5, 6, 7, 8] * 1 + [9] * 11  # 9 of 20 spread, 11 at the top
    expected = 9 * (0.05 - 0.1) * math.log(0.05 / 0.1) + (0.55 - 0.1) * math.log(0.55 / 0.1)
    assert psi(champion, challenger) == pytest.approx(expected)


@given(
    a=st.lists(st.floats(0, 1), min_size=1, max_size=50),
    b=st.lists(st.floats(0, 1), min_size=1, max_size=50),
)
def test_psi_is_finite_and_never_negative(a, b):
    value = psi(a, b)
    assert math.isfinite(value) and value >= -1e-12


def test_psi_survives_a_constant_champion():
    assert math.isfinite(psi([0.1] * 100, [0.1] * 50 + [0.9] * 50))


def test_rate_exceeds_by_margin_by_hand():
    z, p = rate_exceeds_by_margin(10, 100, 1, 100, 0.0)
    pc, pb = 11 / 102, 2 / 102
    se = math.sqrt(pc * (1 - pc) / 102 + pb * (1 - pb) / 102)
    assert z == pytest.approx((pc - pb) / se)
    assert p == pytest.approx(normal_sf(z))
    with pytest.raises(ValueError):
        rate_exceeds_by_margin(0, 0, 0, 10, 0.0)


@given(
    n_c=st.integers(1, 500),
    n_b=st.integers(1, 500),
    data=st.data(),
    margin=st.floats(0, 0.2),
)
def test_rate_test_is_monotone_in_the_challengers_failures(n_c, n_b, data, margin):
    bad_b = data.draw(st.integers(0, n_b))
    low = data.draw(st.integers(0, n_c))
    high = data.draw(st.integers(low, n_c))
    p_low = rate_exceeds_by_margin(low, n_c, bad_b, n_b, margin)[1]
    p_high = rate_exceeds_by_margin(high, n_c, bad_b, n_b, margin)[1]
    # Monotone wherever the evidence points at the challenger (z > 0, so every rejection);
    # below that a Wald statistic need not be (its variance shrinks near a rate of 1).
    if p_low < 0.5:
        assert p_high <= p_low + 1e-12


def test_percentile():
    assert percentile([], 99) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)


# --- window stats from log rows --------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    latency_ms: float = 10.0
    error: str | None = None
    score: float | None = 0.1
    decision: str | None = "allow"
    label: int | None = None


def test_window_stats_counts_the_labelled_confusion_and_errors():
    rows = [
        Row(decision="block", label=1),
        Row(decision="block", label=0),
        Row(decision="allow", label=1),
        Row(decision="allow", label=0),
        Row(decision="allow", label=0),
        Row(decision="allow"),  # not labelled yet
        Row(error="timeout", latency_ms=300.0, score=0.9, decision="block", label=1),
        Row(score=float("nan")),
    ]
    w = window_stats(rows)
    assert (w.requests, w.errors) == (8, 1)
    assert (w.true_positives, w.false_positives, w.false_negatives, w.true_negatives) == (
        1,
        1,
        1,
        2,
    )
    assert len(w.latencies_ms) == 8 and max(w.latencies_ms) == 300.0  # errors count in latency
    assert len(w.scores) == 6  # not the error's (a fallback answered), not NaN
    assert w.precision == 0.5 and w.recall == 0.5 and w.error_rate == 1 / 8
    assert experiment_metric(w, "flag_rate") == pytest.approx(2 / 5)
    assert experiment_metric(ArmWindow(), "precision") is None


def test_window_stats_of_recommendations_count_hits_as_precision():
    rows = [Row(decision="recommend", label=1)] * 3 + [Row(decision="recommend", label=0)]
    w = window_stats(rows)
    assert w.precision == 0.75


# --- the canary verdict ----------------------------------------------------------------------


def arm(
    n: int = 1_000,
    errors: int = 0,
    latency: float = 20.0,
    scores: np.ndarray | None = None,
    confusion: tuple[int, int, int, int] = (0, 0, 0, 0),
    seed: int = 0,
    flags: int = 0,
) -> ArmWindow:
    rng = np.random.default_rng(seed)
    if scores is None:
        scores = rng.beta(1, 20, n - errors)
    tp, fp, fn, tn = confusion
    return ArmWindow(
        requests=n,
        errors=errors,
        latencies_ms=tuple(latency * rng.uniform(0.5, 1.0, n)),
        scores=tuple(float(s) for s in scores),
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        true_negatives=tn,
        flags=flags,
    )


def checks_of(verdict):
    return {c.name: c for c in verdict.checks}


def test_healthy_canary_with_enough_traffic_is_promoted():
    verdict = canary_verdict(arm(seed=1), arm(seed=2), GUARDRAILS)
    assert verdict.decision == "promote"
    assert {c.status for c in verdict.checks} == {"pass", "skipped"}  # no labels yet
    assert checks_of(verdict)["precision"].status == "skipped"


def test_too_little_traffic_holds_and_says_which_arm():
    verdict = canary_verdict(arm(seed=1), arm(n=120, seed=2), GUARDRAILS)
    assert verdict.decision == "hold"
    assert any("challenger has 120 requests" in r for r in verdict.reasons)


def test_a_step_answered_mostly_by_fallbacks_holds_until_its_scores_can_be_judged():
    # Enough requests, but the challenger's own model answered too few of them to judge its
    # scores: seen in the demo, where a model that scored every transaction 0 passed a step.
    few = GUARDRAILS.min_scores - 1
    challenger = arm(n=GUARDRAILS.min_requests, scores=np.zeros(few), seed=2)
    verdict = canary_verdict(arm(seed=1), challenger, GUARDRAILS)
    assert verdict.decision == "hold"
    assert any(r.startswith("score_distribution:") for r in verdict.reasons)
    enough = arm(n=GUARDRAILS.min_requests + 200, scores=np.zeros(GUARDRAILS.min_scores + 200))
    assert canary_verdict(arm(seed=1), enough, GUARDRAILS).decision == "rollback"


def test_a_dead_challenger_rolls_back_after_a_handful_of_requests():
    verdict = canary_verdict(arm(seed=1), arm(n=5, errors=5, scores=np.array([])), GUARDRAILS)
    assert verdict.decision == "rollback"
    assert verdict.reasons[0].startswith("error_rate:")


def test_an_error_or_two_more_than_the_champion_is_noise():
    verdict = canary_verdict(arm(errors=1, seed=1), arm(errors=3, seed=2), GUARDRAILS)
    assert checks_of(verdict)["error_rate"].status == "pass"


def test_error_rate_above_the_margin_rolls_back():
    verdict = canary_verdict(arm(errors=5, seed=1), arm(errors=60, seed=2), GUARDRAILS)
    assert verdict.decision == "rollback"
    assert checks_of(verdict)["error_rate"].status == "breach"


def test_p99_within_the_slack_passes_and_beyond_ratio_and_slack_breaches():
    fast, bit_slower = arm(latency=4.0, seed=1), arm(latency=12.0, seed=2)
    assert checks_of(canary_verdict(fast, bit_slower, GUARDRAILS))["p99_latency"].status == "pass"
    slow = arm(latency=40.0, seed=2)
    verdict = canary_verdict(fast, slow, GUARDRAILS)
    assert checks_of(verdict)["p99_latency"].status == "breach"
    assert verdict.decision == "rollback"


def test_p99_above_the_ceiling_breaches_even_against_a_slow_champion():
    g = GUARDRAILS.model_copy(update={"p99_ceiling_ms": 100.0})
    verdict = canary_verdict(arm(latency=90.0, seed=1), arm(latency=130.0, seed=2), g)
    assert checks_of(verdict)["p99_latency"].status == "breach"


def test_p99_of_shadow_copies_is_not_judged_but_the_other_guardrails_are():
    # A shadow's latency is its batch call's on a lower-priority server: 40 ms there is no
    # breach. Its errors still are.
    fast, slow = arm(latency=4.0, seed=1), arm(latency=40.0, seed=2)
    verdict = canary_verdict(fast, slow, GUARDRAILS, challenger_served=False)
    assert checks_of(verdict)["p99_latency"].status == "skipped"
    assert verdict.decision == "promote"
    failing = arm(errors=60, latency=40.0, seed=2)
    shadowed = canary_verdict(fast, failing, GUARDRAILS, challenger_served=False)
    assert shadowed.decision == "rollback"
    assert checks_of(shadowed)["error_rate"].status == "breach"


def test_p99_is_not_judged_on_a_few_samples():
    verdict = canary_verdict(arm(seed=1), arm(n=50, latency=900.0, seed=2), GUARDRAILS)
    assert checks_of(verdict)["p99_latency"].status == "skipped"


def test_a_shifted_score_distribution_rolls_back():
    rng = np.random.default_rng(3)
    verdict = canary_verdict(arm(seed=1), arm(scores=rng.beta(5, 5, 1_000)), GUARDRAILS)
    check = checks_of(verdict)["score_distribution"]
    assert check.status == "breach" and check.statistic is not None and check.statistic > 0.25
    assert verdict.decision == "rollback"


def test_a_psi_over_the_bar_on_few_scores_needs_the_ks_test_too():
    # 60 scores each: PSI is noisy; only a real shift also passes the KS test.
    rng = np.random.default_rng(4)
    champion = arm(n=300, scores=rng.beta(2, 8, 60), seed=1)
    same = arm(n=300, scores=rng.beta(2, 8, 60), seed=2)
    verdict = canary_verdict(champion, same, GUARDRAILS)
    assert checks_of(verdict)["score_distribution"].status == "pass"


def test_score_distribution_is_not_judged_on_a_few_scores():
    verdict = canary_verdict(arm(seed=1), arm(n=30, seed=2), GUARDRAILS)
    assert checks_of(verdict)["score_distribution"].status == "skipped"


def test_lower_labelled_precision_rolls_back():
    champion = arm(confusion=(80, 20, 20, 880), seed=1)  # precision 0.8, recall 0.8
    worse = arm(confusion=(50, 50, 20, 880), seed=2)  # precision 0.5
    verdict = canary_verdict(champion, worse, GUARDRAILS)
    assert checks_of(verdict)["precision"].status == "breach"
    assert checks_of(verdict)["recall"].status == "pass"
    assert verdict.decision == "rollback"


def test_lower_labelled_recall_rolls_back():
    champion = arm(confusion=(80, 20, 20, 880), seed=1)
    worse = arm(confusion=(40, 10, 60, 890), seed=2)  # precision 0.8, recall 0.4
    verdict = canary_verdict(champion, worse, GUARDRAILS)
    assert checks_of(verdict)["recall"].status == "breach"
    assert checks_of(verdict)["precision"].status == "pass"


def test_precision_within_the_margin_passes():
    champion = arm(confusion=(80, 20, 20, 880), seed=1)
    close = arm(confusion=(78, 22, 21, 879), seed=2)
    assert checks_of(canary_verdict(champion, close, GUARDRAILS))["precision"].status == "pass"


def test_missing_labels_hold_only_when_required():
    g = GUARDRAILS.model_copy(update={"require_labels": True})
    verdict = canary_verdict(arm(seed=1), arm(seed=2), g)
    assert verdict.decision == "hold"
    assert any(r.startswith("precision:") for r in verdict.reasons)
    labelled = canary_verdict(
        arm(confusion=(80, 20, 20, 880), seed=1), arm(confusion=(79, 21, 20, 880), seed=2), g
    )
    assert labelled.decision == "promote"


def test_no_traffic_at_all_holds():
    verdict = canary_verdict(ArmWindow(), ArmWindow(), GUARDRAILS)
    assert verdict.decision == "hold"
    assert checks_of(verdict)["error_rate"].status == "skipped"


windows = st.builds(
    lambda n, err, lat, scores, conf: ArmWindow(
        requests=n,
        errors=min(err, n),
        latencies_ms=tuple([lat] * n),
        scores=tuple(scores),
        true_positives=conf[0],
        false_positives=conf[1],
        false_negatives=conf[2],
        true_negatives=conf[3],
    ),
    st.integers(0, 2_000),
    st.integers(0, 2_000),
    st.floats(0.1, 2_000),
    st.lists(st.floats(0, 1), max_size=200),
    st.tuples(*[st.integers(0, 300)] * 4),
)


@settings(max_examples=200, deadline=None)
@given(champion=windows, challenger=windows)
def test_rollback_exactly_when_a_guardrail_is_breached(champion, challenger):
    verdict = canary_verdict(champion, challenger, GUARDRAILS)
    breached = [c for c in verdict.checks if c.status == "breach"]
    assert (verdict.decision == "rollback") == bool(breached)
    assert verdict.reasons
    if verdict.decision == "promote":
        assert min(champion.requests, challenger.requests) >= GUARDRAILS.min_requests


@settings(max_examples=200, deadline=None)
@given(window=windows)
def test_a_challenger_identical_to_the_champion_is_never_rolled_back(window):
    assert canary_verdict(window, window, GUARDRAILS).decision != "rollback"


@settings(max_examples=100, deadline=None)
@given(champion=windows, challenger=windows, extra=st.integers(1, 500))
def test_more_challenger_errors_never_turn_a_rollback_around(champion, challenger, extra):
    assume(challenger.requests > 0)
    before = canary_verdict(champion, challenger, GUARDRAILS)
    worse = replace(challenger, errors=min(challenger.requests, challenger.errors + extra))
    after = canary_verdict(champion, worse, GUARDRAILS)
    before_error = checks_of(before)["error_rate"].status
    after_error = checks_of(after)["error_rate"].status
    if before_error == "breach":
        assert after_error == "breach" and after.decision == "rollback"


# --- the alert-rate guardrail ------------------------------------------------------------------


def test_a_challenger_that_blocks_ten_times_as_often_is_rolled_back_where_the_psi_is_blind():
    # Fraud scores are mostly exactly 0: the champion's quantile bins collapse, PSI sees nothing.
    zeros = np.zeros(1_000)
    champion = arm(scores=zeros, flags=7, seed=1)  # 0.7 % blocked
    challenger = arm(n=150, scores=zeros[:150], flags=16, seed=2)  # 10.7 % blocked
    verdict = canary_verdict(champion, challenger, GUARDRAILS)
    checks = checks_of(verdict)
    assert checks["score_distribution"].status == "pass"
    assert checks["alert_rate"].status == "breach" and verdict.decision == "rollback"
    assert verdict.reasons[0].startswith("alert_rate: challenger 16/150 vs champion 7/1000")


@pytest.mark.parametrize("flags", [0, 3, 7])  # blocks less, the same, a point more
def test_a_challenger_blocking_about_as_often_passes_the_alert_rate(flags):
    champion, challenger = arm(flags=7, seed=1), arm(n=300, flags=flags, seed=2)
    assert checks_of(canary_verdict(champion, challenger, GUARDRAILS))["alert_rate"].status == (
        "pass"
    )


def test_the_window_counts_the_blocks_of_the_arms_own_answers_only():
    rows = [
        Row(score=0.9, decision="block"),
        Row(score=0.1, decision="allow", label=1),
        Row(score=0.9, decision="block", label=0),
        # Answered by a fallback: its block says nothing of this arm's model.
        Row(error="timeout", decision="block"),
    ]
    w = window_stats(rows)
    assert (w.flags, w.answered, w.requests) == (2, 3, 4)
    assert w.summary()["alert_rate"] == pytest.approx(2 / 3)
