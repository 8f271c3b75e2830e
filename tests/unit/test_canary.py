"""The canary verdict: each guardrail, its evidence bar, and its properties."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mlsd.settings import CanaryGuardrailSettings
from serving.canary import canary_verdict
from serving.traffic import (
    ArmWindow,
)

GUARDRAILS = CanaryGuardrailSettings()


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
    few = GUARDRAILS.min_requests - 1
    verdict = canary_verdict(arm(seed=1), arm(n=few, seed=2), GUARDRAILS)
    assert verdict.decision == "hold"
    assert any(f"challenger has {few} requests" in r for r in verdict.reasons)


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


def test_p99_breaches_only_when_the_challenger_is_slow_beyond_chance():
    # 200 challenger requests (5 % of a busy window): 3 stalled by a pause of the machine put
    # the sample p99 past the bar, yet say little of the server; one request in ten slow does.
    rng = np.random.default_rng(4)
    champion = arm(n=4_000, latency=20.0, seed=1)
    quick = 20.0 * rng.uniform(0.5, 1.0, 200)
    paused = replace(arm(n=200, seed=2), latencies_ms=(*quick[:197], 110.0, 112.0, 115.0))
    check = checks_of(canary_verdict(champion, paused, GUARDRAILS))["p99_latency"]
    assert check.statistic is not None and check.threshold is not None
    assert check.statistic > check.threshold  # the plain sample rule would roll it back
    assert check.status == "pass" and check.p_value is not None and check.p_value > 0.01
    slow = replace(arm(n=200, seed=2), latencies_ms=(*quick[:180], *[110.0] * 20))
    check = checks_of(canary_verdict(champion, slow, GUARDRAILS))["p99_latency"]
    assert check.status == "breach" and check.p_value is not None and check.p_value < 0.01
    assert "challenger 20/200, champion 0/4000" in check.detail


def test_p99_is_not_judged_on_a_few_samples():
    verdict = canary_verdict(arm(seed=1), arm(n=50, latency=900.0, seed=2), GUARDRAILS)
    assert checks_of(verdict)["p99_latency"].status == "skipped"


def test_a_shifted_score_distribution_rolls_back():
    rng = np.random.default_rng(3)
    verdict = canary_verdict(arm(seed=1), arm(scores=rng.beta(5, 5, 1_000)), GUARDRAILS)
    check = checks_of(verdict)["score_distribution"]
    assert check.status == "breach" and check.statistic is not None and check.statistic > 0.25
    assert verdict.decision == "rollback"


@pytest.mark.parametrize(
    ("own_training", "status", "decision"),
    [
        # A retrain for a world that moved: its live scores differ from the stale champion's
        # and match the scores it gave its own data's latest days (its monitoring reference).
        ((5, 5), "pass", "promote"),
        # Training-serving skew: trained (and its reference scored) on rows serving never
        # sends, so its live scores match neither.
        ((1, 20), "breach", "rollback"),
    ],
    ids=["a retrain that scores as it was trained", "a skew that matches neither"],
)
def test_a_challenger_that_differs_from_the_champion_is_held_to_its_own_training_scores(
    own_training, status, decision
):
    rng = np.random.default_rng(5)
    challenger = arm(scores=rng.beta(5, 5, 1_000))
    reference = rng.beta(*own_training, 5_000)
    verdict = canary_verdict(arm(seed=1), challenger, GUARDRAILS, challenger_reference=reference)
    check = checks_of(verdict)["score_distribution"]
    assert check.status == status and verdict.decision == decision, check.detail
    assert "against its own training scores" in check.detail
    # The check carries the figures of the comparison that decided: its own scores'.
    assert (check.statistic >= GUARDRAILS.psi_threshold) == (status == "breach")


def test_a_challenger_like_the_champion_passes_whatever_its_reference():
    rng = np.random.default_rng(7)
    verdict = canary_verdict(
        arm(seed=1), arm(seed=2), GUARDRAILS, challenger_reference=rng.beta(5, 5, 5_000)
    )
    check = checks_of(verdict)["score_distribution"]
    assert check.status == "pass" and "own training" not in check.detail


def test_a_reference_too_small_to_judge_leaves_the_champion_rule():
    rng = np.random.default_rng(8)
    shifted = arm(scores=rng.beta(5, 5, 1_000))
    tiny = rng.beta(5, 5, GUARDRAILS.min_scores - 1)
    verdict = canary_verdict(arm(seed=1), shifted, GUARDRAILS, challenger_reference=tiny)
    assert checks_of(verdict)["score_distribution"].status == "breach"


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
