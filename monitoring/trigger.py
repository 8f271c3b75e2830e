"""The retrain trigger: a pure policy over the history of window verdicts (no I/O).

Which windows show a signal (input drift, score drift, a labelled PR-AUC drop against the
champion's own validation figure), whether M of the last N judged windows do, and whether a
retrain may start now (one at a time per model, a cooldown after each request). A window with a
quality alert never counts as a signal, and one in the latest window stops any retrain: a data
defect is not drift, and drift measured on broken data says nothing. Estimated performance is
never read here: an estimate alone never retrains.

The flow (monitoring.flow) reads the state, calls `decide_retrain` and emits what it decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from mlsd.settings import MonitoringSettings
from monitoring.verdict import WindowVerdict

Signal = Literal["input_drift", "score_drift", "performance_drop"]
Action = Literal["retrain", "suppress", "none"]


@dataclass(frozen=True)
class TriggerPolicy:
    """The thresholds of the trigger (see TriggerSettings for what each means)."""

    drifted_share: float = 0.15
    score_psi: float = 0.2
    pr_auc_drop: float = 0.2
    min_rows: int = 500
    min_labelled_rows: int = 200
    min_labelled_positives: int = 5
    m: int = 2
    n: int = 3
    cooldown_seconds: float = 300.0

    def __post_init__(self) -> None:
        if not 1 <= self.m <= self.n:
            raise ValueError(f"M of N needs 1 <= m <= n, got m={self.m}, n={self.n}")

    @classmethod
    def from_settings(cls, monitoring: MonitoringSettings, product: str = "fraud") -> TriggerPolicy:
        t = monitoring.trigger
        return cls(
            drifted_share=t.drifted_share,
            score_psi=t.score_psi,
            pr_auc_drop=t.pr_auc_drop,
            min_rows=monitoring.min_rows_for(product),
            min_labelled_rows=t.min_labelled_rows,
            min_labelled_positives=t.min_labelled_positives,
            m=t.m,
            n=t.n,
            cooldown_seconds=t.cooldown_seconds,
        )


@dataclass(frozen=True)
class RetrainState:
    """What the flow knows of retrains: when the last was requested, whether one runs now."""

    last_requested_at: float | None = None  # epoch seconds
    running: bool = False
    running_what: str = ""  # e.g. the flow run's name, for the message


@dataclass(frozen=True)
class TriggerDecision:
    action: Action
    reason: str
    window_ids: tuple[str, ...] = ()
    signals: dict[str, tuple[Signal, ...]] = field(default_factory=dict)  # window id -> signals

    @property
    def signalled(self) -> bool:
        """True when M of N windows carried a signal (whether or not a retrain may start)."""
        return self.action != "none"


def window_signals(v: WindowVerdict, policy: TriggerPolicy) -> tuple[Signal, ...]:
    """The signals one window carries; none for a window too small, unjudged or flagged by GX."""
    if v.status != "judged" or v.rows < policy.min_rows or v.quality_alert:
        return ()
    out: list[Signal] = []
    if v.drifted_share is not None and v.drifted_share >= policy.drifted_share:
        out.append("input_drift")
    if v.score_psi is not None and v.score_psi >= policy.score_psi:
        out.append("score_drift")
    if (
        v.pr_auc is not None
        and v.reference_pr_auc is not None
        and v.reference_pr_auc > 0
        and v.labelled_rows >= policy.min_labelled_rows
        and v.labelled_positives >= policy.min_labelled_positives
        and v.pr_auc <= v.reference_pr_auc * (1 - policy.pr_auc_drop)
    ):
        out.append("performance_drop")
    return tuple(out)


def _counted(v: WindowVerdict, policy: TriggerPolicy) -> bool:
    """Whether a window counts among the N: judged with enough rows (quality alerts count, as
    windows without a signal)."""
    return v.status == "judged" and v.rows >= policy.min_rows


def decide_retrain(
    history: Sequence[WindowVerdict],
    state: RetrainState,
    now: float,
    policy: TriggerPolicy,
) -> TriggerDecision:
    """Retrain, suppress (with why) or do nothing, given the verdicts so far (oldest first).

    Only windows of the latest window's model version count (a new champion is judged on its
    own windows), and out of cooldown only those that ended after the last request (its
    evidence is not spent twice).
    """
    if not history:
        return TriggerDecision("none", "no window judged yet")
    latest = history[-1]
    if latest.status != "judged" or latest.rows < policy.min_rows:
        return TriggerDecision(
            "none",
            f"not enough data: window {latest.window_id} has {latest.rows} rows "
            f"(at least {policy.min_rows} are needed, spread over the window); nothing decided",
            (latest.window_id,),
        )
    if latest.quality_alert:
        failed = ", ".join(latest.failed_expectations) or "a data-quality expectation"
        return TriggerDecision(
            "none",
            f"quality alert in window {latest.window_id} ({failed}): a data defect, not drift; "
            "no retrain",
            (latest.window_id,),
        )
    since = state.last_requested_at
    in_cooldown = since is not None and now - since < policy.cooldown_seconds
    # Out of cooldown, only windows that ended after the last request count (its evidence is
    # spent); in cooldown, every window does, so a repeated signal is suppressed out loud.
    eligible = [
        v
        for v in history
        if v.model_version == latest.model_version
        and _counted(v, policy)
        and (in_cooldown or since is None or v.end > since)
    ]
    last_n = eligible[-policy.n :]
    signals = {v.window_id: window_signals(v, policy) for v in last_n}
    with_signal = [wid for wid, s in signals.items() if s]
    if len(with_signal) < policy.m or not signals.get(latest.window_id):
        return TriggerDecision(
            "none",
            f"{len(with_signal)} of the last {len(last_n)} windows show a signal "
            f"({policy.m} of {policy.n} needed, the latest among them)",
            tuple(signals),
            signals,
        )
    kinds = sorted({s for wid in with_signal for s in signals[wid]})
    evidence = f"{', '.join(kinds)} in {len(with_signal)} of the last {len(last_n)} windows"
    if state.running:
        what = f" ({state.running_what})" if state.running_what else ""
        return TriggerDecision(
            "suppress",
            f"{evidence}, but a retrain is already running{what}",
            tuple(with_signal),
            signals,
        )
    if in_cooldown:
        assert since is not None
        left = policy.cooldown_seconds - (now - since)
        return TriggerDecision(
            "suppress",
            f"{evidence}, but in cooldown: the last retrain was requested {now - since:.0f} s ago "
            f"({left:.0f} s of {policy.cooldown_seconds:.0f} s left)",
            tuple(with_signal),
            signals,
        )
    return TriggerDecision("retrain", evidence, tuple(with_signal), signals)
