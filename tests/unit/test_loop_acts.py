"""How an act of the loop reads its ending from the lab's events (pure: events in, outcome out)."""

from __future__ import annotations

import datetime as dt

from mlsd import events as ev
from mlsd.acts import drifted_day_landed, drifted_shares, milestone_seconds, rollout_ending
from mlsd.timeline import TimelineEvent

T0 = dt.datetime(2026, 12, 3, 20, tzinfo=dt.UTC)


def event(name: str, second: int, resource: str = "mlsd.model.fraud", **kw) -> TimelineEvent:
    return TimelineEvent(name, T0 + dt.timedelta(seconds=second), resource, **kw)


def test_a_rollout_ends_promoted_rolled_back_refused_or_standing_aside():
    assert rollout_ending([]) is None
    assert rollout_ending([event(ev.CANARY_STEP_STARTED, 1)]) is None
    assert rollout_ending([event(ev.PROMOTED, 5)]) == "promoted"
    assert rollout_ending([event(ev.ROLLED_BACK, 5)]) == "rolled back"
    refused = event(ev.GATE_VERDICT, 3, payload={"decision": "rejected"})
    assert rollout_ending([refused]) == "refused by the gate"
    aside = event(ev.ROLLOUT_STOOD_ASIDE, 4, payload={"reason": "experiment ab holds the traffic"})
    assert rollout_ending([event(ev.CANARY_STEP_STARTED, 1), aside]) == "the rollout stood aside"
    # Another product's promotion is not this act's ending.
    assert rollout_ending([event(ev.PROMOTED, 5, resource="mlsd.model.recsys")]) is None


def test_a_drifted_day_counts_once_it_passed_the_gate(tmp_path):
    from mlsd.settings import Settings
    from pipeline.offline_store import partition_path

    settings = Settings(data_dir=tmp_path)
    landed = event(
        ev.BATCH_LANDED,
        10,
        resource="mlsd.world.fraud",
        payload={"scenario": "amount-inflation", "day": "2026-02-16"},
    )
    clean = event(
        ev.BATCH_LANDED,
        5,
        resource="mlsd.world.fraud",
        payload={"scenario": "none", "day": "2026-02-15"},
    )
    for day in ("2026-02-15",):
        path = partition_path(
            settings.offline_dir, "fraud", "transactions", dt.date.fromisoformat(day)
        )
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    assert not drifted_day_landed(settings, [clean], "amount-inflation")
    assert not drifted_day_landed(settings, [clean, landed], "amount-inflation")
    path = partition_path(settings.offline_dir, "fraud", "transactions", dt.date(2026, 2, 16))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert drifted_day_landed(settings, [clean, landed], "amount-inflation")


def test_the_act_timeline_leaves_out_routine_runs():
    from mlsd.acts import worth_showing

    assert worth_showing(event(ev.PROMOTED, 1))
    assert worth_showing(event("prefect.flow-run.Running", 1, resource="r", flow="train_fraud"))
    assert not worth_showing(event("prefect.flow-run.Pending", 1, resource="r", flow="train_fraud"))
    assert not worth_showing(event("prefect.flow-run.Completed", 1, resource="r", flow="land_day"))
    assert not worth_showing(
        event(ev.BATCH_LANDED, 1, resource="mlsd.world.recsys", payload={"scenario": "none"})
    )


def test_an_acts_drifted_shares_are_its_fraud_windows_in_order():
    judged = [
        event(ev.WINDOW_JUDGED, 1, payload={"drifted_share": 0.0952381}),
        event(ev.WINDOW_JUDGED, 2, resource="mlsd.model.recsys", payload={"drifted_share": 0.5}),
        event(ev.WINDOW_JUDGED, 3, payload={"status": "not_enough_data", "drifted_share": None}),
        event(ev.DRIFT_DETECTED, 4, payload={"drifted_share": 0.33}),
        event(ev.WINDOW_JUDGED, 5, payload={"drifted_share": 0.2857}),
    ]
    assert drifted_shares(judged) == [0.095, 0.286]


def test_the_drift_acts_time_is_split_at_each_milestone_the_retrain_runs_start_included():
    run = "prefect.flow-run.Running"
    events = [
        event(run, 0, "prefect.flow-run.a", flow="train_fraud"),  # before the injection
        event(ev.DRIFT_INJECTED, 10, "mlsd.world.fraud"),
        event(run, 40, "prefect.flow-run.b", flow="monitor"),  # not the retrain
        event(ev.RETRAIN_REQUESTED, 100),
        event(ev.RETRAIN_REQUESTED, 101, resource="mlsd.model.recsys"),  # another product's
        event(run, 107, "prefect.flow-run.c", flow="train_fraud"),
        event(ev.CHALLENGER_REGISTERED, 135),
        event(ev.PROMOTED, 190),
    ]
    assert milestone_seconds(events) == {
        "injection_to_retrain_requested_s": 90.0,
        "injection_to_retrain_running_s": 97.0,
        "injection_to_challenger_registered_s": 125.0,
        "injection_to_promoted_s": 180.0,
    }
    assert milestone_seconds(events[2:]) == {}  # no injection seen: nothing to time from


def test_an_act_stopped_by_an_error_is_a_failed_act_with_its_reason_and_traceback(tmp_path):
    from mlsd.acts import BAD_MODEL, ActResult, played
    from mlsd.settings import Settings

    settings = Settings(data_dir=tmp_path)

    def stalled() -> ActResult:
        raise RuntimeError("Server error '503 Service Unavailable' for url\nmore detail")

    result = played(settings, BAD_MODEL, stalled)

    assert (result.name, result.expected) == BAD_MODEL
    assert not result.ok
    assert result.outcome.startswith(
        "stopped by RuntimeError: Server error '503 Service Unavailable' for url ("
    )
    log = (tmp_path / "logs" / "demo.log").read_text()
    assert "act 'bad model (training-serving skew)'" in log and "more detail" in log

    ended = ActResult(*BAD_MODEL, "rolled back", 1.0)
    assert played(settings, BAD_MODEL, lambda: ended) is ended
