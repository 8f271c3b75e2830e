"""The timeline renderer: events in time order, time zero at the drift injection, details from
the payload as text (never raw JSON)."""

from __future__ import annotations

import datetime as dt

from rich.console import Console

from mlsd import events as ev
from mlsd.timeline import TimelineEvent, describe, origin, timeline_table

T0 = dt.datetime(2026, 12, 3, 20, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def render(table) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(table)
    return console.export_text()


EVENTS = [
    TimelineEvent(
        ev.RETRAIN_REQUESTED,
        at(42.5),
        "mlsd.model.fraud",
        "fraud",
        {"reason": "input_drift in 2 of the last 3 windows", "window_ids": ["w1", "w2"]},
    ),
    TimelineEvent(
        ev.DRIFT_INJECTED, at(0), "mlsd.world.fraud", "fraud", {"scenario": "amount-inflation"}
    ),
    TimelineEvent(ev.WINDOW_JUDGED, at(-30), "mlsd.model.fraud", "fraud", {"rows": 900}),
    TimelineEvent(
        "prefect.flow-run.Running",
        at(45),
        "prefect.flow-run.abc",
        "clever-fox",
        {},
        flow="train_fraud",
    ),
]


def test_zero_is_the_injection_and_rows_are_in_time_order():
    assert origin(EVENTS) == T0
    text = render(timeline_table(EVENTS))
    lines = [line for line in text.splitlines() if "fraud" in line or "flow run" in line]
    assert [line.split()[1] for line in lines] == ["-30.0s", "+0.0s", "+42.5s", "+45.0s"]
    assert "since injection" in text
    assert "drift injected" in text and "amount-inflation" in text
    assert "train_fraud (clever-fox)" in text


def test_without_an_injection_zero_is_the_first_event():
    later = [e for e in EVENTS if e.name != ev.DRIFT_INJECTED]
    assert origin(later) == at(-30)
    assert "since first" in render(timeline_table(later))


def test_details_are_sentences_not_json():
    detail = describe(EVENTS[0])
    assert detail.endswith("input_drift in 2 of the last 3 windows")
    assert "{" not in detail


def test_an_empty_timeline_says_so():
    assert "no events yet" in render(timeline_table([]))


def test_a_window_not_judged_says_so_and_click_through_reads_by_arm():
    small = TimelineEvent(
        ev.WINDOW_JUDGED,
        at(1),
        "mlsd.model.recsys",
        "recsys",
        {"rows": 40, "status": "not_enough_data"},
    )
    judged = TimelineEvent(
        ev.WINDOW_JUDGED,
        at(2),
        "mlsd.model.recsys",
        "recsys",
        {
            "rows": 190,
            "status": "judged",
            "click_through": {"champion": 0.3125, "challenger": 0.25},
        },
    )
    assert describe(small) == "rows=40  status=not enough data"
    assert describe(judged) == "rows=190  click_through=champion 0.312, challenger 0.25"
