"""The registration gate's rules, one by one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.registration_gate import GatePolicy, gate_verdict

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


def test_missing_metric_is_rejected_not_crashed():
    assert gate_verdict(POLICY, True, {}, {"pr_auc": 0.4}).decision == "rejected"


@given(st.floats(0.06, 1.0), st.floats(0.06, 1.0))
def test_verdict_is_monotone_in_the_candidate_score(candidate, champion):
    v = gate_verdict(POLICY, True, {"pr_auc": candidate}, {"pr_auc": champion})
    assert v.passed == (candidate >= champion - POLICY.margin)
