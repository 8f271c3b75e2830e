"""The registration gate's rules, one by one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.registration_gate import DeltaInterval, GatePolicy, gate_verdict

POLICY = GatePolicy(metric="pr_auc", margin=0.01, floors={"pr_auc": 0.05})


def test_first_version_that_passes_becomes_champion():
    v = gate_verdict(POLICY, True, {"pr_auc": 0.4}, None)
    assert v.decision == "champion" and v.passed


def test_failed_data_checks_reject_even_a_great_model():
    v = gate_verdict(POLICY, False, {"pr_auc": 0.99}, None)
    assert v.decision == "rejected"
    assert "data checks" in v.reasons[0]


def test_floor_rejects_a_useless_first_model():
    v = gate_verdict(POLICY, True, {"pr_auc": 0.01}, None)
    assert v.decision == "rejected" and "below the floor" in v.reasons[0]


def test_worse_beyond_margin_is_rejected_within_margin_is_challenger():
    assert gate_verdict(POLICY, True, {"pr_auc": 0.38}, {"pr_auc": 0.40}).decision == "rejected"
    assert gate_verdict(POLICY, True, {"pr_auc": 0.395}, {"pr_auc": 0.40}).decision == "challenger"
    assert gate_verdict(POLICY, True, {"pr_auc": 0.45}, {"pr_auc": 0.40}).decision == "challenger"


def test_lower_is_better_metrics():
    cost = GatePolicy(metric="expected_cost", higher_is_better=False, margin=10.0)
    assert (
        gate_verdict(cost, True, {"expected_cost": 100.0}, {"expected_cost": 95.0}).decision
        == "challenger"
    )
    assert (
        gate_verdict(cost, True, {"expected_cost": 120.0}, {"expected_cost": 95.0}).decision
        == "rejected"
    )


def interval(low: float, high: float) -> DeltaInterval:
    return DeltaInterval(low, high, confidence=0.9, rows=20_000, positives=28)


def test_trailing_within_the_noise_goes_to_the_canary_beyond_it_is_refused():
    # 0.29 vs 0.32: beyond the margin of 0.01, as a retrain on young labels often is.
    noisy = gate_verdict(POLICY, True, {"pr_auc": 0.29}, {"pr_auc": 0.32}, interval(-0.09, 0.02))
    assert noisy.decision == "challenger"
    assert "canary decides" in noisy.reasons[0] and "[-0.0900, +0.0200]" in noisy.reasons[0]
    # The interval's best case still trails by more than the margin: a real loss, refused.
    real = gate_verdict(POLICY, True, {"pr_auc": 0.20}, {"pr_auc": 0.32}, interval(-0.2, -0.02))
    assert real.decision == "rejected" and "beyond the noise" in real.reasons[0]
    # An interval exactly at the margin is not beyond it.
    edge = gate_verdict(POLICY, True, {"pr_auc": 0.30}, {"pr_auc": 0.32}, interval(-0.05, -0.01))
    assert edge.decision == "challenger"


def test_an_interval_with_a_nan_bound_is_no_interval():
    nan = interval(float("nan"), 0.5)
    assert gate_verdict(POLICY, True, {"pr_auc": 0.20}, {"pr_auc": 0.32}, nan).decision == (
        "rejected"
    )


def test_the_interval_rescues_neither_a_floor_nor_failed_checks():
    wide = interval(-0.5, 0.5)
    assert gate_verdict(POLICY, True, {"pr_auc": 0.01}, {"pr_auc": 0.3}, wide).decision == (
        "rejected"
    )
    assert gate_verdict(POLICY, False, {"pr_auc": 0.3}, {"pr_auc": 0.3}, wide).decision == (
        "rejected"
    )


def test_the_interval_reads_in_the_metric_direction():
    cost = GatePolicy(metric="expected_cost", higher_is_better=False, margin=10.0)
    # candidate - champion in dollars: +25 (worse); the interval reaches -5 (could be better).
    within = gate_verdict(
        cost, True, {"expected_cost": 120.0}, {"expected_cost": 95.0}, interval(-5.0, 60.0)
    )
    beyond = gate_verdict(
        cost, True, {"expected_cost": 120.0}, {"expected_cost": 95.0}, interval(12.0, 60.0)
    )
    assert within.decision == "challenger" and beyond.decision == "rejected"


def test_missing_metric_is_rejected_not_crashed():
    assert gate_verdict(POLICY, True, {}, {"pr_auc": 0.4}).decision == "rejected"


# Scores as the evaluation gives them: finite, of any scale (a PR-AUC, a cost in dollars).
scores = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def policies(draw: st.DrawFn) -> GatePolicy:
    """Any policy: either direction, any margin, floors on the deciding metric and others.

    A floor is a lower bound, so the deciding metric gets one only when higher is better (a
    floor under a cost would reject a cheaper model: a policy the gate does not support)."""
    higher = draw(st.booleans())
    floors = {"recall": draw(scores)} if draw(st.booleans()) else {}
    if higher and draw(st.booleans()):
        floors["score"] = draw(scores)
    return GatePolicy(
        metric="score",
        higher_is_better=higher,
        margin=draw(st.floats(0, 1e3, allow_nan=False)),
        floors=floors,
    )


def better(policy: GatePolicy, a: float, b: float) -> tuple[float, float]:
    """(worse, better) of two scores under the policy's direction."""
    low, high = sorted((a, b))
    return (low, high) if policy.higher_is_better else (high, low)


@given(policies(), scores, scores, scores, st.one_of(st.none(), scores), st.booleans())
def test_a_better_candidate_never_fares_worse(policy, a, b, recall, champion, data_ok):
    worse, improved = better(policy, a, b)
    rank = {"rejected": 0, "challenger": 1, "champion": 1}
    champ = None if champion is None else {"score": champion}
    before = gate_verdict(policy, data_ok, {"score": worse, "recall": recall}, champ)
    after = gate_verdict(policy, data_ok, {"score": improved, "recall": recall}, champ)
    assert rank[after.decision] >= rank[before.decision], (before, after)


@given(policies(), scores, scores, scores, scores)
def test_a_weaker_champion_never_turns_a_pass_into_a_rejection(policy, candidate, a, b, recall):
    weaker, stronger = better(policy, a, b)
    metrics = {"score": candidate, "recall": recall}
    against_stronger = gate_verdict(policy, True, metrics, {"score": stronger})
    against_weaker = gate_verdict(policy, True, metrics, {"score": weaker})
    assert against_weaker.passed or not against_stronger.passed


@given(policies(), st.floats(0, 1e3, allow_nan=False), scores, scores, scores)
def test_a_wider_margin_never_rejects_what_a_narrower_one_passed(
    policy, extra, candidate, champion, recall
):
    wider = GatePolicy(
        policy.metric, policy.higher_is_better, policy.margin + extra, dict(policy.floors)
    )
    metrics, champ = {"score": candidate, "recall": recall}, {"score": champion}
    assert gate_verdict(wider, True, metrics, champ).passed or not (
        gate_verdict(policy, True, metrics, champ).passed
    )


@given(policies(), scores, scores, st.one_of(st.none(), scores))
def test_failed_data_checks_reject_whatever_the_scores(policy, candidate, recall, champion):
    champ = None if champion is None else {"score": champion}
    v = gate_verdict(policy, False, {"score": candidate, "recall": recall}, champ)
    assert v.decision == "rejected"


@given(policies(), scores, scores, scores, scores, scores)
def test_an_interval_never_turns_a_pass_into_a_rejection(policy, candidate, champion, recall, a, b):
    metrics, champ = {"score": candidate, "recall": recall}, {"score": champion}
    low, high = sorted((a, b))
    with_interval = gate_verdict(policy, True, metrics, champ, interval(low, high))
    assert with_interval.passed or not gate_verdict(policy, True, metrics, champ).passed
