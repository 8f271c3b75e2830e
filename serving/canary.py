"""The canary verdict: one step of a canary judged from both arms' windows over the same time,
by guardrails that each say pass, breach or skipped (too little evidence). Pure: the router's
admin API serves it, the rollout controller (`serving.rollout`) acts on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from mlsd.settings import CanaryGuardrailSettings
from serving.stats import ks_two_sample, psi, rate_exceeds_by_margin
from serving.traffic import ArmWindow

Decision = Literal["promote", "hold", "rollback"]
P99_TAIL = 0.01  # the share of requests a p99 leaves above it
CheckStatus = Literal["pass", "breach", "skipped"]


@dataclass(frozen=True)
class GuardrailCheck:
    """One guardrail's outcome, with the statistic and the bar it was held to."""

    name: str
    status: CheckStatus
    detail: str
    statistic: float | None = None
    threshold: float | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class Verdict:
    """What to do with a canary step: promote (the step passes: ramp on, or promote at 100 %),
    hold (not enough evidence yet), rollback (a guardrail is breached)."""

    decision: Decision
    reasons: tuple[str, ...]
    checks: tuple[GuardrailCheck, ...] = field(default_factory=tuple)


def canary_verdict(
    champion: ArmWindow,
    challenger: ArmWindow,
    guardrails: CanaryGuardrailSettings,
    challenger_served: bool = True,
    challenger_reference: Sequence[float] | None = None,
) -> Verdict:
    """Judge a canary step from both arms' stats over the same window.

    Guardrails, each a one-sided test at `guardrails.alpha` or a stated bar:
    - error rate: the challenger's exceeds the champion's by more than `error_rate_margin`
      (Agresti-Caffo z-test). Judged at any traffic: the test itself weighs the evidence, so a
      dead challenger rolls back after a handful of requests.
    - p99 latency: above both champion x `p99_ratio` and champion + `p99_slack_ms`, or above
      `p99_ceiling_ms` while the champion is below it, significantly: the challenger's share
      of requests above that bar exceeds the champion's by more than 1 % (Agresti-Caffo
      z-test), not merely its sample p99 (a few slow requests). Judged once both arms have
      `min_latency_samples`, and only when the challenger's rows were served
      (`challenger_served`): a shadow copy's latency is its batch call's on the shadow server,
      which says nothing of what a caller would wait.
    - score distribution: PSI over champion-quantile bins >= `psi_threshold` and the two-sample
      KS test rejects (both: PSI alone is noisy on small samples, KS alone flags any retrain).
      Judged once both arms have `min_scores` scores. A challenger that scores live traffic
      as it scored its own data's latest days (`challenger_reference`, the scores of its
      monitoring reference: by the same PSI and KS) is not breached for differing from the
      champion: a retrain for a world that moved is meant to differ from a champion trained
      before it (measured: sound drift retrains rolled back at champion-PSI 0.46 and 1.16). A
      training-serving skew differs from both.
    - alert rate: the share of the challenger's answers that flag (block) exceeds the
      champion's by more than `alert_rate_margin` (Agresti-Caffo z-test), at any traffic. It
      needs no labels, and it sees what the PSI cannot: fraud scores are mostly exactly 0, so
      the champion's quantile bins collapse into one, and a challenger that blocks one payment
      in ten (a flag read with the opposite convention in training: 10.4 % against 0.7 %,
      measured on the demo's world) scored PSI 0.0.
    - precision and recall (labelled rows): the challenger's trails the champion's by more than
      `quality_margin` (Agresti-Caffo z-test on false-discovery and miss rates). Judged once
      both arms have `min_labelled` in the metric's denominator.
    Any breach: rollback. Else too little traffic (`min_requests`), too few model scores to judge
    their distribution (`min_scores`: a step must not pass on requests its fallbacks answered),
    or no labels while `require_labels`: hold. Else promote.
    """
    g = guardrails
    checks = [
        _rate_check(
            "error_rate",
            (challenger.errors, challenger.requests),
            (champion.errors, champion.requests),
            g.error_rate_margin,
            g.alpha,
        ),
        _latency_check(champion, challenger, g)
        if challenger_served
        else GuardrailCheck(
            "p99_latency",
            "skipped",
            "the challenger's rows are shadow copies, sent in batches: judged in the canary",
        ),
        _score_distribution_check(champion, challenger, g, challenger_reference),
        _rate_check(
            "alert_rate",
            (challenger.flags, challenger.answered),
            (champion.flags, champion.answered),
            g.alert_rate_margin,
            g.alpha,
        ),
        *_quality_checks(champion, challenger, g),
    ]
    breaches = tuple(f"{c.name}: {c.detail}" for c in checks if c.status == "breach")
    if breaches:
        return Verdict("rollback", breaches, tuple(checks))
    waiting = [
        f"{arm} has {w.requests} requests in the window, needs {g.min_requests}"
        for arm, w in (("champion", champion), ("challenger", challenger))
        if w.requests < g.min_requests
    ]
    waiting += [
        f"{c.name}: {c.detail}"
        for c in checks
        if c.name == "score_distribution" and c.status == "skipped"
    ]
    if g.require_labels:
        waiting += [
            f"{c.name}: {c.detail}"
            for c in checks
            if c.name in ("precision", "recall") and c.status == "skipped"
        ]
    if waiting:
        return Verdict("hold", tuple(waiting), tuple(checks))
    return Verdict("promote", ("every guardrail passed",), tuple(checks))


def _rate_check(
    name: str, challenger: tuple[int, int], champion: tuple[int, int], margin: float, alpha: float
) -> GuardrailCheck:
    """A bad outcome's rate per arm, (count, out of): breach when the challenger's exceeds the
    champion's by more than `margin`, significantly (one-sided Agresti-Caffo test)."""
    (bad_c, n_c), (bad_b, n_b) = challenger, champion
    if not n_c or not n_b:
        return GuardrailCheck(name, "skipped", "an arm has no requests in the window")
    z, p = rate_exceeds_by_margin(bad_c, n_c, bad_b, n_b, margin)
    detail = (
        f"challenger {bad_c}/{n_c} vs champion {bad_b}/{n_b} (margin {margin:g}, z={z:.2f}, "
        f"p={p:.3g})"
    )
    status: CheckStatus = "breach" if p < alpha else "pass"
    return GuardrailCheck(name, status, detail, z, margin, p)


def _latency_check(
    champion: ArmWindow, challenger: ArmWindow, g: CanaryGuardrailSettings
) -> GuardrailCheck:
    n = min(len(champion.latencies_ms), len(challenger.latencies_ms))
    if n < g.min_latency_samples:
        return GuardrailCheck(
            "p99_latency",
            "skipped",
            f"{n} samples in the smaller arm, needs {g.min_latency_samples}",
        )
    c99, b99 = challenger.p99_latency_ms, champion.p99_latency_ms
    assert c99 is not None and b99 is not None
    bar = max(b99 * g.p99_ratio, b99 + g.p99_slack_ms)
    # The ceiling binds only a challenger slower than the champion: when both are slow, the
    # machine is (and rolling back would not help).
    if b99 < g.p99_ceiling_ms:
        bar = min(bar, g.p99_ceiling_ms)
    # The challenger's p99 must lie above the bar with confidence, not merely in this sample: at
    # 5 % of the traffic it has a few hundred requests, whose sample p99 is their third slowest
    # (measured: a sound drift retrain rolled back at 111.5 ms against 55.7 ms, its server
    # sharing two cores with the retrain that made it). So: its share of requests above the bar
    # exceeds the champion's by more than the 1 % a p99 allows, significantly (at 200 requests
    # against a clean champion: 8 above the bar, not 3).
    above_c = sum(1 for x in challenger.latencies_ms if x > bar)
    above_b = sum(1 for x in champion.latencies_ms if x > bar)
    n_c, n_b = len(challenger.latencies_ms), len(champion.latencies_ms)
    _, p = rate_exceeds_by_margin(above_c, n_c, above_b, n_b, P99_TAIL)
    detail = (
        f"challenger p99 {c99:.1f} ms vs champion {b99:.1f} ms (bar {bar:.1f} ms; above it: "
        f"challenger {above_c}/{n_c}, champion {above_b}/{n_b}, p={p:.3g})"
    )
    status: CheckStatus = "breach" if p < g.alpha else "pass"
    return GuardrailCheck("p99_latency", status, detail, c99, bar, p)


def _score_distribution_check(
    champion: ArmWindow,
    challenger: ArmWindow,
    g: CanaryGuardrailSettings,
    reference: Sequence[float] | None = None,
) -> GuardrailCheck:
    n = min(len(champion.scores), len(challenger.scores))
    if n < g.min_scores:
        return GuardrailCheck(
            "score_distribution", "skipped", f"{n} scores in the smaller arm, needs {g.min_scores}"
        )
    value, p, detail = _scores_differ(champion.scores, challenger.scores, g)
    breached = value >= g.psi_threshold and p < g.alpha
    if breached and reference is not None and len(reference) >= g.min_scores:
        # Its own training scores decide: the check carries that comparison's figures.
        own, own_p, own_detail = _scores_differ(reference, challenger.scores, g)
        breached = own >= g.psi_threshold and own_p < g.alpha
        detail = (
            f"against its own training scores: {own_detail}; against the champion: {detail}"
            + ("" if breached else " (it scores as it was trained to: a retrain, not a skew)")
        )
        value, p = own, own_p
    status: CheckStatus = "breach" if breached else "pass"
    return GuardrailCheck("score_distribution", status, detail, value, g.psi_threshold, p)


def _scores_differ(
    expected: Sequence[float], actual: Sequence[float], g: CanaryGuardrailSettings
) -> tuple[float, float, str]:
    """(PSI over `expected`'s quantile bins, KS p-value, both stated)."""
    value = psi(expected, actual, g.psi_bins)
    d, p = ks_two_sample(expected, actual)
    return value, p, f"PSI {value:.3f} (bar {g.psi_threshold:g}), KS D={d:.3f} p={p:.3g}"


def _quality_checks(
    champion: ArmWindow, challenger: ArmWindow, g: CanaryGuardrailSettings
) -> list[GuardrailCheck]:
    checks = []
    # (metric, its denominator and its "bad" count per arm): precision falls as the share of
    # false alarms among flags rises; recall falls as the share of missed positives rises.
    for name, (bad_c, n_c), (bad_b, n_b) in (
        (
            "precision",
            (challenger.false_positives, challenger.true_positives + challenger.false_positives),
            (champion.false_positives, champion.true_positives + champion.false_positives),
        ),
        (
            "recall",
            (challenger.false_negatives, challenger.true_positives + challenger.false_negatives),
            (champion.false_negatives, champion.true_positives + champion.false_negatives),
        ),
    ):
        if min(n_c, n_b) < g.min_labelled:
            checks.append(
                GuardrailCheck(
                    name,
                    "skipped",
                    f"{min(n_c, n_b)} labelled rows in the smaller arm's denominator, "
                    f"needs {g.min_labelled}",
                )
            )
            continue
        z, p = rate_exceeds_by_margin(bad_c, n_c, bad_b, n_b, g.quality_margin)
        detail = (
            f"challenger {1 - bad_c / n_c:.3f} ({n_c - bad_c}/{n_c}) vs champion "
            f"{1 - bad_b / n_b:.3f} ({n_b - bad_b}/{n_b}) (margin {g.quality_margin:g}, "
            f"z={z:.2f}, p={p:.3g})"
        )
        status: CheckStatus = "breach" if p < g.alpha else "pass"
        checks.append(GuardrailCheck(name, status, detail, z, g.quality_margin, p))
    return checks
