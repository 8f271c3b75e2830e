"""The A/B readout's statistics against a hand calculation and scipy / statsmodels, on a fixed
window: champion 120 of 1000, challenger 150 of 1000."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from mlsd.experiment import arm_counts
from mlsd.experiment_stats import (
    ArmCounts,
    difference_interval,
    readout,
    sample_per_arm,
    two_proportion_z_test,
    wilson_interval,
)

CHAMPION = ArmCounts(120, 1000)
CHALLENGER = ArmCounts(150, 1000)


def test_z_test_matches_a_hand_calculation_and_statsmodels():
    # By hand: pooled 270/2000 = 0.135; se = sqrt(0.135 * 0.865 * (1/1000 + 1/1000)) = 0.0152824;
    # z = (0.15 - 0.12) / se = 1.96304; p = 2 (1 - Phi(1.96304)) = 0.04964.
    z, p = two_proportion_z_test(CHAMPION, CHALLENGER)  # type: ignore[misc]
    assert z == pytest.approx(1.96304, abs=1e-4)
    assert p == pytest.approx(0.04964, abs=1e-4)
    assert p == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    from statsmodels.stats.proportion import proportions_ztest

    sm_z, sm_p = proportions_ztest([150, 120], [1000, 1000])
    assert z == pytest.approx(sm_z, rel=1e-9)
    assert p == pytest.approx(sm_p, rel=1e-9)


def test_wilson_interval_matches_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    for arm in (CHAMPION, CHALLENGER, ArmCounts(0, 50), ArmCounts(3, 3)):
        low, high = wilson_interval(arm)  # type: ignore[misc]
        sm_low, sm_high = proportion_confint(arm.successes, arm.trials, method="wilson")
        assert (low, high) == pytest.approx((sm_low, sm_high), abs=1e-9)
    assert wilson_interval(ArmCounts(0, 0)) is None


def test_difference_interval_by_hand():
    # se = sqrt(0.12 * 0.88 / 1000 + 0.15 * 0.85 / 1000) = 0.0152676; half = 1.959964 * se.
    low, high = difference_interval(CHAMPION, CHALLENGER)  # type: ignore[misc]
    half = stats.norm.ppf(0.975) * math.sqrt(0.12 * 0.88 / 1000 + 0.15 * 0.85 / 1000)
    assert (low, high) == pytest.approx((0.03 - half, 0.03 + half), abs=1e-12)
    assert low == pytest.approx(0.0000752, abs=1e-6)  # the interval only just excludes 0


def test_sample_per_arm_by_hand():
    # baseline 0.12, effect 0.012: mean 0.126; (1.959964 sqrt(2 .126 .874) + 0.841621
    # sqrt(.12 .88 + .132 .868))^2 / .012^2 = (0.919823 + 0.394915)^2 / 0.000144 = 12003.7
    assert sample_per_arm(0.12, 0.012) == 12004
    # Halving the effect about quadruples the sample.
    assert 3.9 < sample_per_arm(0.12, 0.006) / 12004 < 4.1
    with pytest.raises(ValueError, match="baseline"):
        sample_per_arm(0.0, 0.01)


def test_verdicts():
    early = readout(CHAMPION, CHALLENGER, relative_effect=0.1, higher_is_better=True)
    assert early.verdict == "keep running"  # p < 0.05 already, but 1,000 of 12,004
    assert early.sample_needed == 12004 and early.sample_so_far == 1000
    big_a, big_b = ArmCounts(1800, 15000), ArmCounts(2250, 15000)
    assert readout(big_a, big_b, relative_effect=0.1, higher_is_better=True).verdict == (
        "challenger wins"
    )
    assert readout(big_a, big_b, relative_effect=0.1, higher_is_better=False).verdict == (
        "champion wins"
    )
    same = readout(big_a, ArmCounts(1810, 15000), relative_effect=0.1, higher_is_better=True)
    assert same.verdict == "no difference"
    empty = readout(ArmCounts(0, 0), ArmCounts(0, 0), relative_effect=0.1, higher_is_better=True)
    assert empty.verdict == "keep running" and empty.p_value is None


class Row:
    def __init__(self, decision: str, label: int | None, error: str | None = None) -> None:
        self.decision, self.label, self.error, self.experiment = decision, label, error, "x"


def test_arm_counts_per_metric():
    rows = [
        Row("block", 1),
        Row("block", 0),
        Row("allow", 1),
        Row("allow", 0),
        Row("allow", None),
        Row("block", None, error="timeout"),
    ]
    assert arm_counts(rows, "recall") == ArmCounts(1, 2)
    assert arm_counts(rows, "precision") == ArmCounts(1, 2)
    assert arm_counts(rows, "flag_rate") == ArmCounts(2, 4)
    assert arm_counts(rows, "error_rate") == ArmCounts(1, 6)
    assert arm_counts(rows, "engagement") == ArmCounts(2, 5)
    with pytest.raises(ValueError, match="metric"):
        arm_counts(rows, "auc")


def test_experiment_rows_come_from_the_real_prediction_log(tmp_path, monkeypatch):
    """Rows written to the lab's SQLite prediction log, labels joined, read back per arm and
    split (another experiment's rows are left out)."""
    import asyncio

    from mlsd.experiment import experiment_rows
    from mlsd.settings import Settings
    from serving.prediction_log import Feedback, PredictionRecord, open_prediction_log

    monkeypatch.setenv("MLSD_DATA_DIR", str(tmp_path))
    settings = Settings()

    def record(i: int, arm: str, experiment: str, decision: str) -> PredictionRecord:
        return PredictionRecord(
            request_id=f"r{i}",
            role="served",
            at=1000.0 + i,
            product="fraud",
            entity=f"card{i}",
            arm=arm,
            experiment=experiment,
            model_version="fraud/1",
            answered_by="fraud/1",
            inputs={},
            features=None,
            output={},
            score=0.5,
            decision=decision,
            latency_ms=3.0,
            degraded=False,
            degraded_reason=None,
            error=None,
        )

    async def fill() -> dict:
        log = await open_prediction_log(settings)
        await log.write_many(
            [
                record(1, "champion", "ab1", "block"),
                record(2, "champion", "ab1", "allow"),
                record(3, "challenger", "ab1", "block"),
                record(4, "challenger", "ab0", "block"),  # an older experiment
            ]
        )
        for request_id in ("r1", "r2", "r3", "r4"):
            await log.join_label(Feedback(request_id, "fraud", 2000.0, label=1))
        await log.close()
        return await experiment_rows(
            settings, "fraud", {"name": "ab1", "started_at": 1000.0}, 3000.0
        )

    rows = asyncio.run(fill())
    assert arm_counts(rows["champion"], "recall") == ArmCounts(1, 2)
    assert arm_counts(rows["challenger"], "recall") == ArmCounts(1, 1)
