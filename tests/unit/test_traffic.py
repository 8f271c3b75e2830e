"""The router's pure traffic policies: sticky assignment and one arm's window of the log."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from serving.traffic import (
    ArmWindow,
    assign_arm,
    experiment_metric,
    traffic_bucket,
    window_stats,
)

KEYS = [f"card_{i:06d}" for i in range(4_000)]
salts = st.text(min_size=1, max_size=40)
percents = st.floats(min_value=1.0, max_value=99.0)


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


def test_a_shadow_copy_the_shadow_server_missed_is_no_evidence_but_a_model_fault_is():
    from serving.fallback.chain import ChainResult, Hop, HopFailure
    from serving.router.servers import arm_error

    hop = Hop("fraud-v4", "fraud/4", 1.0)

    def failed(kind: str, detail: str) -> Row:  # the error the router logs for such a copy
        result = ChainResult(None, None, (HopFailure(hop.model, kind, detail),))
        return Row(error=arm_error([hop], result), decision=None, score=None)

    rows = [
        Row(score=0.1, decision="allow"),
        failed("timeout", "no answer within 1000 ms"),
        failed("unavailable", "ConnectError: refused"),
        failed("circuit_open", "skipped: failing recently"),
        failed("bad_response", "KeyError: 'score'"),
        failed("bad_status", "500: model raised"),
    ]
    served = window_stats(rows)
    copies = window_stats(rows, shadow_copies=True)
    assert (served.requests, served.errors) == (6, 5)
    # The starved shadow server's misses drop out; the model's own faults still count.
    assert (copies.requests, copies.errors, copies.answered) == (3, 2, 1)
