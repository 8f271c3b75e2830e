"""Pure traffic policies of the router: sticky arm assignment, and one arm's window of the
prediction log with the figures read from it (the canary verdict judges two of them:
`serving.canary`)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from serving.stats import percentile

Arm = Literal["champion", "challenger"]
ARMS: tuple[Arm, ...] = ("champion", "challenger")
# Decisions that count as a positive prediction in precision / recall. A recommendation is
# always "positive": its label says whether the listener engaged with one of its items, so
# its precision is the hit rate.
POSITIVE_DECISIONS: frozenset[str] = frozenset({"block", "recommend"})
_BUCKETS = 2**64


# --- assignment ------------------------------------------------------------------------------


def traffic_bucket(entity_key: str, salt: str) -> float:
    """Where an entity falls in [0, 1) for one experiment: uniform, stable across processes and
    restarts (a keyed BLAKE2b, not Python's per-process salted `hash`)."""
    # Length-prefixed, so ("ab", "c") and ("a", "bc") are different inputs.
    salted = f"{len(salt)}:{salt}:{entity_key}".encode()
    digest = hashlib.blake2b(salted, digest_size=8, person=b"mlsd-arm").digest()
    return int.from_bytes(digest, "big") / _BUCKETS


def assign_arm(entity_key: str, salt: str, challenger_percent: float) -> Arm:
    """The arm an entity sees: the challenger when its bucket is below the challenger's share.

    Sticky (a pure function of key and salt), independent across salts (a different experiment
    reshuffles who is in it), and monotone in the percent: raising a canary from 5 to 25 % keeps
    every entity that already saw the challenger on it.
    """
    if challenger_percent <= 0:
        return "champion"
    if challenger_percent >= 100:
        return "challenger"
    return (
        "challenger" if traffic_bucket(entity_key, salt) < challenger_percent / 100 else "champion"
    )


# --- one arm's window ------------------------------------------------------------------------


class WindowRow(Protocol):
    """What the verdict needs of one logged prediction (`serving.prediction_log` rows have it)."""

    @property
    def latency_ms(self) -> float: ...
    @property
    def error(self) -> str | None: ...
    @property
    def score(self) -> float | None: ...
    @property
    def decision(self) -> str | None: ...
    @property
    def label(self) -> int | None: ...


@dataclass(frozen=True)
class ArmWindow:
    """One arm's requests in a window: counts, latencies, scores, and the labelled confusion."""

    requests: int = 0
    errors: int = 0  # the arm's own model did not answer (timed out, failed, circuit open)
    latencies_ms: tuple[float, ...] = ()
    scores: tuple[float, ...] = ()  # of answers the arm's own model gave
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    true_negatives: int = 0
    # Of the answers the arm's own model gave, how many were a positive decision (a block).
    flags: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def answered(self) -> int:
        return self.requests - self.errors

    @property
    def alert_rate(self) -> float | None:
        return self.flags / self.answered if self.answered else None

    @property
    def p99_latency_ms(self) -> float | None:
        return percentile(self.latencies_ms, 99.0)

    @property
    def labelled(self) -> int:
        return (
            self.true_positives + self.false_positives + self.false_negatives + self.true_negatives
        )

    @property
    def precision(self) -> float | None:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else None

    @property
    def recall(self) -> float | None:
        positives = self.true_positives + self.false_negatives
        return self.true_positives / positives if positives else None

    def summary(self) -> dict[str, float | int | None]:
        """The figures a person (or the rollout controller) reads, without the raw samples."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p50_latency_ms": percentile(self.latencies_ms, 50.0),
            "p99_latency_ms": self.p99_latency_ms,
            "mean_score": float(np.mean(self.scores)) if self.scores else None,
            "alert_rate": self.alert_rate,
            "labelled": self.labelled,
            "precision": self.precision,
            "recall": self.recall,
            "flag_rate": (
                (self.true_positives + self.false_positives) / self.labelled
                if self.labelled
                else None
            ),
        }


# What a shadow copy's error starts with (`serving.router.servers.arm_error`: "<kind>: ...",
# the kinds of `serving.fallback.chain.HopFailure`) when the shadow server, not the model,
# failed it: no answer in time, none at all, or its breaker open after such failures. The
# server runs at the lowest CPU priority and drops to best effort when the cores are full.
SHADOW_SERVER_MISSES = ("timeout", "unavailable", "circuit_open")


def window_stats(rows: Iterable[WindowRow], *, shadow_copies: bool = False) -> ArmWindow:
    """An arm's window from its prediction-log rows (one arm, one window: the caller selects).

    `shadow_copies`: the rows are a shadow's copies, and a copy the shadow server did not answer
    in time, or at all, is no evidence on the model (neither a request nor an error): judged
    as errors, a starved shadow server would roll back a sound challenger. A shadow server
    that answers nothing leaves the shadow without evidence, which never promotes."""
    requests = errors = tp = fp = fn = tn = flags = 0
    latencies: list[float] = []
    scores: list[float] = []
    for row in rows:
        if shadow_copies and row.error is not None and row.error.startswith(SHADOW_SERVER_MISSES):
            continue
        requests += 1
        latencies.append(float(row.latency_ms))
        if row.error is not None:
            # A fallback's answer says nothing about this arm's model: count the error only.
            errors += 1
            continue
        if row.score is not None and math.isfinite(row.score):
            scores.append(float(row.score))
        flagged = row.decision in POSITIVE_DECISIONS
        flags += flagged
        if row.label is None:
            continue
        if flagged and row.label:
            tp += 1
        elif flagged:
            fp += 1
        elif row.label:
            fn += 1
        else:
            tn += 1
    return ArmWindow(requests, errors, tuple(latencies), tuple(scores), tp, fp, fn, tn, flags)


ExperimentMetric = Literal[
    "precision", "recall", "flag_rate", "error_rate", "p99_latency_ms", "mean_score"
]


def experiment_metric(window: ArmWindow, metric: ExperimentMetric) -> float | None:
    """An A/B experiment's named metric for one arm (None while it cannot be computed)."""
    value = window.summary()[metric]
    return None if value is None else float(value)
