"""The retrain trigger policy: M of N, cooldown, one retrain at a time, minimum window size, and
quality alerts or estimates that never retrain."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from mlsd.settings import MonitoringSettings
from monitoring.trigger import RetrainState, TriggerPolicy, decide_retrain, window_signals
from monitoring.verdict import WindowVerdict

POLICY = TriggerPolicy(m=2, n=3, min_rows=500, cooldown_seconds=300)


def window(i: int, drift: bool = False, **kw) -> WindowVerdict:
    base = dict(
        window_id=f"w{i}",
        product="fraud",
        model_version="3",
        start=100.0 * i,
        end=100.0 * (i + 1),
        rows=1000,
        status="judged",
        drifted_share=0.8 if drift else 0.0,
        score_psi=0.01,
    )
    base.update(kw)
    return WindowVerdict(**base)


def test_m_of_n_consecutive_windows_retrain():
    history = [window(0), window(1, drift=True), window(2, drift=True)]
    decision = decide_retrain(history, RetrainState(), now=1000.0, policy=POLICY)
    assert decision.action == "retrain"
    assert decision.window_ids == ("w1", "w2")
    assert "input_drift" in decision.reason


def test_one_drifted_window_is_not_enough():
    history = [window(0), window(1), window(2, drift=True)]
    assert decide_retrain(history, RetrainState(), 1000.0, POLICY).action == "none"


def test_latest_window_without_signal_decides_nothing():
    history = [window(0, drift=True), window(1, drift=True), window(2)]
    assert decide_retrain(history, RetrainState(), 1000.0, POLICY).action == "none"


def test_too_few_rows_says_not_enough_data():
    history = [window(0, drift=True), window(1, drift=True), window(2, drift=True, rows=10)]
    decision = decide_retrain(history, RetrainState(), 1000.0, POLICY)
    assert decision.action == "none"
    assert decision.reason.startswith("not enough data")


def test_quality_alert_never_retrains_and_says_why():
    history = [
        window(0, drift=True),
        window(1, drift=True),
        window(2, drift=True, quality_alert=True, failed_expectations=("amount not null",)),
    ]
    decision = decide_retrain(history, RetrainState(), 1000.0, POLICY)
    assert decision.action == "none"
    assert "quality alert" in decision.reason and "amount not null" in decision.reason


def test_cooldown_suppresses_with_its_reason():
    history = [window(0, drift=True), window(1, drift=True), window(2, drift=True)]
    state = RetrainState(last_requested_at=250.0)
    decision = decide_retrain(history, state, now=300.0, policy=POLICY)
    assert decision.action == "suppress"
    assert "cooldown" in decision.reason


def test_after_cooldown_only_fresh_windows_count():
    history = [window(0, drift=True), window(1, drift=True), window(2, drift=True)]
    # The request was made at 250 (after w0, w1 ended); cooldown over at 1000: only w2 counts.
    state = RetrainState(last_requested_at=250.0)
    assert decide_retrain(history, state, now=1000.0, policy=POLICY).action == "none"
    history.append(window(3, drift=True))
    assert decide_retrain(history, state, now=1000.0, policy=POLICY).action == "retrain"


def test_a_running_retrain_suppresses():
    history = [window(0, drift=True), window(1, drift=True)]
    state = RetrainState(running=True, running_what="flow run clever-fox")
    decision = decide_retrain(history, state, 1000.0, POLICY)
    assert decision.action == "suppress"
    assert "already running" in decision.reason and "clever-fox" in decision.reason


def test_windows_of_an_older_champion_do_not_count():
    history = [window(0, drift=True, model_version="2"), window(1, drift=True)]
    assert decide_retrain(history, RetrainState(), 1000.0, POLICY).action == "none"


def test_labelled_pr_auc_drop_is_a_signal_alone():
    labelled = dict(labelled_rows=400, labelled_positives=20, reference_pr_auc=0.6)
    dropped = window(0, pr_auc=0.3, **labelled)
    held = window(0, pr_auc=0.55, **labelled)
    assert window_signals(dropped, POLICY) == ("performance_drop",)
    assert window_signals(held, POLICY) == ()
    # Too few labelled rows: the PR-AUC is not judged.
    assert window_signals(dataclasses.replace(dropped, labelled_rows=10), POLICY) == ()


def test_policy_reads_its_thresholds_from_settings():
    policy = TriggerPolicy.from_settings(MonitoringSettings())
    assert (policy.m, policy.n) == (MonitoringSettings().trigger.m, MonitoringSettings().trigger.n)
    assert policy.min_rows == MonitoringSettings().min_rows
    # Each product's windows are counted against its own minimum (slates, not payments).
    cfg = MonitoringSettings(min_rows=500, recsys_min_rows=150)
    assert TriggerPolicy.from_settings(cfg, "recsys").min_rows == 150
    assert TriggerPolicy.from_settings(cfg, "fraud").min_rows == 500


# --- exhaustively, over random histories -------------------------------------------------------

verdicts = st.builds(
    lambda i, drift, psi, rows, quality, est: window(
        i,
        drift=drift,
        score_psi=psi,
        rows=rows,
        quality_alert=quality,
        estimated_precision=est,
    ),
    i=st.just(0),
    drift=st.booleans(),
    psi=st.sampled_from([0.0, 0.05, 0.5]),
    rows=st.sampled_from([0, 100, 499, 500, 5000]),
    quality=st.booleans(),
    est=st.none() | st.floats(0, 1),
)


def numbered(ws: list[WindowVerdict]) -> list[WindowVerdict]:
    return [
        dataclasses.replace(w, window_id=f"w{i}", start=100.0 * i, end=100.0 * (i + 1))
        for i, w in enumerate(ws)
    ]


policies = st.builds(
    lambda m, extra, cooldown: TriggerPolicy(m=m, n=m + extra, cooldown_seconds=cooldown),
    m=st.integers(1, 4),
    extra=st.integers(0, 3),
    cooldown=st.sampled_from([0.0, 150.0, 10_000.0]),
)
states = st.builds(
    RetrainState,
    last_requested_at=st.none() | st.sampled_from([0.0, 350.0, 900.0]),
    running=st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(verdicts, min_size=1, max_size=8).map(numbered), states, policies)
def test_retrain_only_on_m_of_n_signals_out_of_cooldown_and_not_running(history, state, policy):
    now = 1000.0
    decision = decide_retrain(history, state, now, policy)
    latest = history[-1]
    if decision.action == "retrain":
        assert not state.running
        assert state.last_requested_at is None or now - state.last_requested_at >= (
            policy.cooldown_seconds
        )
        assert not latest.quality_alert and latest.rows >= policy.min_rows
        assert window_signals(latest, policy)
        # M of the last N counted windows carry a signal, each fresh since the last request.
        assert len(decision.window_ids) >= policy.m
        by_id = {w.window_id: w for w in history}
        for wid in decision.window_ids:
            w = by_id[wid]
            assert window_signals(w, policy) and not w.quality_alert and w.rows >= policy.min_rows
            assert state.last_requested_at is None or w.end > state.last_requested_at
    if latest.quality_alert or latest.rows < policy.min_rows:
        assert decision.action == "none"


@settings(max_examples=200, deadline=None)
@given(st.lists(verdicts, min_size=1, max_size=8).map(numbered), states, policies)
def test_an_estimate_never_changes_the_decision(history, state, policy):
    stripped = [
        dataclasses.replace(w, estimated_precision=None, estimated_alert_rate=None) for w in history
    ]
    inflated = [
        dataclasses.replace(w, estimated_precision=0.0, estimated_alert_rate=1.0) for w in history
    ]
    a = decide_retrain(stripped, state, 1000.0, policy)
    b = decide_retrain(inflated, state, 1000.0, policy)
    assert (a.action, a.reason) == (b.action, b.reason)


@settings(max_examples=200, deadline=None)
@given(st.lists(verdicts, min_size=1, max_size=8).map(numbered), policies)
def test_quality_alerts_alone_never_retrain(history, policy):
    # Every window flagged by GX: however much it drifted, nothing retrains.
    flagged = [dataclasses.replace(w, quality_alert=True) for w in history]
    assert decide_retrain(flagged, RetrainState(), 1000.0, policy).action == "none"


def test_m_of_n_needs_m_within_the_last_n_exactly():
    policy = TriggerPolicy(m=2, n=3, cooldown_seconds=0)
    # Signals in w0 and w3: w0 falls out of the last three, so only one counts.
    history = [window(0, drift=True), window(1), window(2), window(3, drift=True)]
    assert decide_retrain(history, RetrainState(), 1000.0, policy).action == "none"
    history = [window(0), window(1, drift=True), window(2), window(3, drift=True)]
    assert decide_retrain(history, RetrainState(), 1000.0, policy).action == "retrain"
