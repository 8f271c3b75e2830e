"""The statistics of an A/B readout on a proportion metric, as pure functions: each arm's rate
with a Wilson interval, the difference with a Wald interval, a two-sided two-proportion z-test
(pooled variance) for its p-value, the sample per arm a fixed-horizon test needs to detect a
stated effect at a stated power, and the verdict that follows.

Written out rather than taken from statsmodels (installed, through evidently): the formulas are
a dozen lines, a test checks them against scipy and a hand calculation, and the CLI need not
import statsmodels' 2 s of modules to print a table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

Verdict = Literal["keep running", "challenger wins", "champion wins", "no difference"]
_NORMAL = NormalDist()


@dataclass(frozen=True)
class ArmCounts:
    """One arm's outcome: `successes` of `trials` (a click, a caught fraud, an error...)."""

    successes: int
    trials: int

    def __post_init__(self) -> None:
        if self.trials < 0 or not 0 <= self.successes <= max(self.trials, 0):
            raise ValueError(f"need 0 <= successes <= trials, got {self.successes}/{self.trials}")

    @property
    def rate(self) -> float | None:
        return self.successes / self.trials if self.trials else None


def z_quantile(p: float) -> float:
    return _NORMAL.inv_cdf(p)


def wilson_interval(arm: ArmCounts, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of one arm's rate (sound near 0 and 1, unlike the Wald one)."""
    n = arm.trials
    if n == 0:
        return None
    z = z_quantile(0.5 + confidence / 2)
    p = arm.successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(
    champion: ArmCounts, challenger: ArmCounts, confidence: float = 0.95
) -> tuple[float, float] | None:
    """Wald interval of challenger rate - champion rate (unpooled variance)."""
    if not champion.trials or not challenger.trials:
        return None
    pa, pb = champion.successes / champion.trials, challenger.successes / challenger.trials
    se = math.sqrt(pa * (1 - pa) / champion.trials + pb * (1 - pb) / challenger.trials)
    z = z_quantile(0.5 + confidence / 2)
    diff = pb - pa
    return diff - z * se, diff + z * se


def two_proportion_z_test(champion: ArmCounts, challenger: ArmCounts) -> tuple[float, float] | None:
    """Two-sided z-test of H0 'both arms have the same rate' with the pooled variance:
    (z, p-value). None while an arm has no trials or the pooled rate is 0 or 1 (no variance)."""
    if not champion.trials or not challenger.trials:
        return None
    pooled = (champion.successes + challenger.successes) / (champion.trials + challenger.trials)
    if pooled in (0.0, 1.0):
        return None
    se = math.sqrt(pooled * (1 - pooled) * (1 / champion.trials + 1 / challenger.trials))
    pa, pb = champion.successes / champion.trials, challenger.successes / challenger.trials
    z = (pb - pa) / se
    return z, 2 * (1 - _NORMAL.cdf(abs(z)))


def sample_per_arm(baseline: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Trials per arm for a two-sided two-proportion z-test at level `alpha` to detect an
    absolute change `effect` from `baseline` with probability `power` (equal arms):
    n = (z_{1-a/2} sqrt(2 p q) + z_{power} sqrt(p1 q1 + p2 q2))^2 / effect^2, p the mean rate."""
    if not 0 < baseline < 1:
        raise ValueError(f"baseline rate must be in (0, 1), got {baseline}")
    if effect == 0 or not 0 < baseline + effect < 1:
        raise ValueError(f"baseline + effect must stay in (0, 1) and effect != 0, got {effect}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError("alpha and power must be in (0, 1)")
    p1, p2 = baseline, baseline + effect
    mean = (p1 + p2) / 2
    numerator = z_quantile(1 - alpha / 2) * math.sqrt(2 * mean * (1 - mean)) + z_quantile(
        power
    ) * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(numerator**2 / effect**2)


@dataclass(frozen=True)
class Readout:
    champion: ArmCounts
    challenger: ArmCounts
    champion_interval: tuple[float, float] | None
    challenger_interval: tuple[float, float] | None
    difference: float | None  # challenger - champion
    difference_interval: tuple[float, float] | None
    z: float | None
    p_value: float | None
    baseline: float  # the rate the sample size was computed from
    effect: float  # the absolute effect to detect
    sample_needed: int  # per arm
    alpha: float
    power: float
    higher_is_better: bool
    verdict: Verdict
    why: str

    @property
    def sample_so_far(self) -> int:
        """The smaller arm's trials: the test is as strong as its smaller arm."""
        return min(self.champion.trials, self.challenger.trials)


def readout(
    champion: ArmCounts,
    challenger: ArmCounts,
    *,
    relative_effect: float,
    higher_is_better: bool,
    alpha: float = 0.05,
    power: float = 0.8,
    prior_baseline: float | None = None,
) -> Readout:
    """The readout of a fixed-horizon A/B test on a proportion. The effect to detect is
    `relative_effect` of the champion's rate (or of `prior_baseline` while the champion has
    no successes yet). Before both arms reach the planned sample the verdict is 'keep running'
    whatever the p-value: acting on an early p-value (peeking) inflates false positives."""
    if relative_effect <= 0:
        raise ValueError("relative_effect must be > 0 (e.g. 0.1 for a 10 % change)")
    observed = champion.rate
    baseline = observed if observed is not None and 0 < observed < 1 else prior_baseline
    if baseline is None or not 0 < baseline < 1:
        baseline = 0.5  # the most demanding rate: a sample that suffices there suffices anywhere
    effect = baseline * relative_effect
    if baseline + effect >= 1:
        effect = -effect
    needed = sample_per_arm(baseline, effect, alpha, power)
    test = two_proportion_z_test(champion, challenger)
    z, p_value = test if test is not None else (None, None)
    diff = (
        None
        if champion.rate is None or challenger.rate is None
        else challenger.rate - champion.rate
    )
    so_far = min(champion.trials, challenger.trials)
    verdict: Verdict
    if so_far < needed:
        verdict = "keep running"
        why = (
            f"{so_far:,} of {needed:,} trials per arm: the test is planned for that sample "
            "(a decision on an earlier p-value would be peeking)"
        )
    elif p_value is None or diff is None or p_value >= alpha:
        verdict = "no difference"
        shown = "n/a" if p_value is None else f"{p_value:.3g}"
        why = (
            f"p = {shown} >= {alpha:g} with the planned sample: no change of "
            f"{relative_effect:.0%} or more is likely (power {power:.0%})"
        )
    else:
        better = diff > 0 if higher_is_better else diff < 0
        verdict = "challenger wins" if better else "champion wins"
        why = f"p = {p_value:.3g} < {alpha:g} with the planned sample"
    return Readout(
        champion=champion,
        challenger=challenger,
        champion_interval=wilson_interval(champion),
        challenger_interval=wilson_interval(challenger),
        difference=diff,
        difference_interval=difference_interval(champion, challenger),
        z=z,
        p_value=p_value,
        baseline=baseline,
        effect=abs(effect),
        sample_needed=needed,
        alpha=alpha,
        power=power,
        higher_is_better=higher_is_better,
        verdict=verdict,
        why=why,
    )
