"""The registration gate: may a newly trained version become @challenger (or the first @champion)?

A pure function of the facts, so every rule can be tested without a registry. The training flow
gathers the facts (data checks, both models' metrics on the same later window, and where it can,
a paired bootstrap interval of their difference) and applies the verdict; a rejected version is
still registered for the record but no alias moves.

Why the interval: a retrain the loop starts is judged on the recent days, whose labels are young.
On the demo's world that window holds about 20,000 payments but only 28 reported frauds, and the
paired bootstrap's 90 % interval of a retrain's PR-AUC delta spans -0.09 to +0.02: a fixed margin
of 0.01 turned the gate into a coin flip (it refused 2 of 3 drift retrains). So a candidate that
trails beyond the margin is refused only when the interval says it does so beyond the noise; one
within the noise goes to the canary, which decides on live traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Decision = Literal["champion", "challenger", "rejected"]


@dataclass(frozen=True)
class GatePolicy:
    """Which metric decides, and how much worse than the champion a candidate may be."""

    metric: str
    higher_is_better: bool = True
    # A candidate within this absolute margin of the champion still passes: retraining on fresh
    # data is worth a tiny loss of offline score, and the canary decides on live traffic.
    margin: float = 0.01
    # Absolute floors any version must clear, e.g. {"pr_auc": 0.05}.
    floors: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DeltaInterval:
    """A confidence interval of (candidate - champion) in the gate's metric, both scored on the
    same rows (pipeline.evaluation.paired_delta_interval)."""

    low: float
    high: float
    confidence: float
    rows: int
    positives: int

    def describe(self) -> str:
        return (
            f"paired bootstrap {self.confidence:.0%} interval of the delta "
            f"[{self.low:+.4f}, {self.high:+.4f}] over {self.rows:,} rows, {self.positives} positive"
        )


@dataclass(frozen=True)
class GateVerdict:
    decision: Decision
    reasons: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.decision != "rejected"


def gate_verdict(
    policy: GatePolicy,
    data_checks_passed: bool,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    delta_interval: DeltaInterval | None = None,
) -> GateVerdict:
    """Decide a candidate's fate. `champion` holds the current champion's metrics on the *same*
    evaluation window as the candidate's (None when there is no champion yet); `delta_interval`,
    when given, is the interval of candidate minus champion on those rows, in the metric's own
    units (read here in the policy's direction), and a candidate is refused for trailing only
    when the whole interval lies beyond the margin. An interval with a NaN bound is no interval."""
    reasons: list[str] = []
    if not data_checks_passed:
        reasons.append("the training set failed its data checks")
    value = candidate.get(policy.metric, math.nan)
    if math.isnan(value):
        reasons.append(f"candidate has no {policy.metric}")
    for metric, floor in policy.floors.items():
        got = candidate.get(metric, math.nan)
        if math.isnan(got) or got < floor:
            reasons.append(f"{metric} {got:.4f} is below the floor {floor:.4f}")
    if reasons:
        return GateVerdict("rejected", tuple(reasons))
    if champion is None:
        return GateVerdict(
            "champion", ("no champion yet: the first version that passes becomes @champion",)
        )
    best = champion.get(policy.metric, math.nan)
    if math.isnan(best):
        return GateVerdict("challenger", (f"champion has no {policy.metric} on this window",))
    delta = (value - best) if policy.higher_is_better else (best - value)
    comparison = f"{policy.metric} {value:.4f} vs champion {best:.4f} (delta {delta:+.4f}, margin {policy.margin})"
    if delta >= -policy.margin:
        return GateVerdict(
            "challenger", (f"not worse than the champion beyond the margin: {comparison}",)
        )
    if delta_interval is None or math.isnan(delta_interval.low + delta_interval.high):
        return GateVerdict(
            "rejected", (f"worse than the champion beyond the margin: {comparison}",)
        )
    sign = 1.0 if policy.higher_is_better else -1.0
    best_case = max(sign * delta_interval.low, sign * delta_interval.high)
    if best_case < -policy.margin:
        return GateVerdict(
            "rejected",
            (
                f"worse than the champion beyond the margin and beyond the noise: {comparison}; "
                f"{delta_interval.describe()}",
            ),
        )
    return GateVerdict(
        "challenger",
        (
            f"trails the champion within the noise of this window, so the canary decides: "
            f"{comparison}; {delta_interval.describe()} reaches the margin",
        ),
    )
