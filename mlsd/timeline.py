"""The loop's timeline for people: the lab's events (and Prefect's flow-run events) as a table
with the time since the drift was injected. A pure renderer over a list of events, used by
`mlsd watch` and by the demo; reading the events from Prefect is `read_timeline`'s job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from mlsd import events as ev

# What a person reads for each event name.
LABELS: dict[str, str] = {
    ev.DRIFT_INJECTED: "drift injected",
    ev.DRIFT_CLEARED: "drift cleared",
    ev.BATCH_LANDED: "batch landed",
    ev.WINDOW_JUDGED: "window judged",
    ev.DRIFT_DETECTED: "drift detected",
    ev.PERFORMANCE_DROPPED: "performance dropped",
    ev.QUALITY_ALERT: "quality alert",
    ev.RETRAIN_REQUESTED: "retrain requested",
    ev.RETRAIN_SUPPRESSED: "retrain suppressed",
    ev.GATE_VERDICT: "gate verdict",
    ev.CHALLENGER_REGISTERED: "challenger registered",
    ev.SHADOW_STARTED: "shadow started",
    ev.SHADOW_PASSED: "shadow passed",
    ev.SHADOW_BREACHED: "shadow breached",
    ev.CANARY_STEP_STARTED: "canary step started",
    ev.CANARY_STEP_PASSED: "canary step passed",
    ev.CANARY_STEP_BREACHED: "canary step breached",
    ev.PROMOTED: "promoted",
    ev.ROLLED_BACK: "rolled back",
    ev.ROLLOUT_STOOD_ASIDE: "rollout stood aside",
    ev.ALIAS_MOVED: "alias moved",
}
STYLES: dict[str, str] = {
    ev.DRIFT_INJECTED: "bold magenta",
    ev.DRIFT_DETECTED: "yellow",
    ev.PERFORMANCE_DROPPED: "yellow",
    ev.QUALITY_ALERT: "red",
    ev.RETRAIN_REQUESTED: "bold cyan",
    ev.RETRAIN_SUPPRESSED: "dim",
    ev.SHADOW_BREACHED: "red",
    ev.CANARY_STEP_BREACHED: "red",
    ev.PROMOTED: "bold green",
    ev.ROLLED_BACK: "bold red",
}
FLOW_RUN_PREFIX = "prefect.flow-run."
# A flow run's bookkeeping, not its story: the timeline shows when it was scheduled, ran and ended.
FLOW_RUN_BOOKKEEPING = {"heartbeat", "Pending", "Submitting"}
# Payload keys worth a person's eye, in the order they are shown.
DETAIL_KEYS = (
    "scenario",
    "reason",
    "decision",
    "version",
    "from_version",
    "to_version",
    "alias",
    "step",
    "percent",
    "guardrail",
    "rows",
    "status",
    "drifted_share",
    "score_psi",
    "pr_auc",
    "estimated_precision",
    "precision",
    "click_through",
    "day",
    "batch",
)


@dataclass(frozen=True)
class TimelineEvent:
    """One event as the timeline shows it (a lab event or a Prefect flow-run event)."""

    name: str
    occurred: dt.datetime  # timezone-aware
    resource: str  # e.g. mlsd.model.fraud, prefect.flow-run.<id>
    resource_name: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    flow: str = ""  # a flow-run event: the flow's name (train_fraud, monitor_fraud, ...)

    @classmethod
    def from_prefect(cls, event: Any) -> TimelineEvent:
        """From a `prefect.events.Event` (or anything with its attributes)."""
        resource = event.resource
        flow = next(
            (r.get("prefect.resource.name", "") for r in event.related or () if r.role == "flow"),
            "",
        )
        return cls(
            name=event.event,
            occurred=event.occurred,
            resource=resource.id,
            resource_name=resource.get("prefect.resource.name", "") or "",
            payload=dict(event.payload or {}),
            id=str(event.id),
            flow=flow or "",
        )


def _label(e: TimelineEvent) -> str:
    if e.name.startswith(FLOW_RUN_PREFIX):
        state = e.name[len(FLOW_RUN_PREFIX) :]
        return f"flow run {state.lower()}"
    return LABELS.get(e.name, e.name)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):  # e.g. click-through by arm
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value[:4]) + (" ..." if len(value) > 4 else "")
    return str(value)


def describe(e: TimelineEvent) -> str:
    """A one-line detail of an event from its payload (no raw JSON)."""
    if e.name.startswith(FLOW_RUN_PREFIX):
        return f"{e.flow} ({e.resource_name})" if e.flow else e.resource_name
    shown = {k: e.payload[k] for k in DETAIL_KEYS if e.payload.get(k) not in (None, {}, [])}
    # A window's status is news only when it was not judged.
    if shown.get("status") == "judged":
        del shown["status"]
    elif shown.get("status") == "not_enough_data":
        shown["status"] = "not enough data"
    parts = [f"{k}={_fmt(v)}" for k, v in shown.items()]
    reason = e.payload.get("reason")
    if reason is not None:
        # The reason reads best as a sentence, last.
        parts = [p for p in parts if not p.startswith("reason=")] + [str(reason)]
    return "  ".join(parts)


def _since(delta: dt.timedelta) -> str:
    seconds = delta.total_seconds()
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    minutes, secs = divmod(seconds, 60)
    return f"{sign}{int(minutes)}:{secs:04.1f}" if minutes else f"{sign}{secs:.1f}s"


def origin(events: Sequence[TimelineEvent]) -> dt.datetime | None:
    """Time zero: the latest drift injection, else the first event."""
    injected = [e.occurred for e in events if e.name == ev.DRIFT_INJECTED]
    if injected:
        return max(injected)
    return min((e.occurred for e in events), default=None)


def timeline_table(
    events: Iterable[TimelineEvent],
    title: str = "timeline",
    zero: dt.datetime | None = None,
) -> Table:
    """The events in time order as a table: time since the injection, clock time, what
    happened, to what, and the figures or reason that matter."""
    ordered = sorted(events, key=lambda e: (e.occurred, e.name))
    zero = zero or origin(ordered)
    table = Table(title=title, title_justify="left", expand=False)
    injected = any(e.name == ev.DRIFT_INJECTED for e in ordered)
    table.add_column("since injection" if injected else "since first", justify="right")
    table.add_column("UTC")
    table.add_column("event")
    table.add_column("resource")
    table.add_column("detail", overflow="fold")
    for e in ordered:
        since = _since(e.occurred - zero) if zero is not None else ""
        resource = e.resource_name if e.name.startswith(FLOW_RUN_PREFIX) else e.resource
        table.add_row(
            since,
            e.occurred.astimezone(dt.UTC).strftime("%H:%M:%S"),
            f"[{STYLES[e.name]}]{_label(e)}[/]" if e.name in STYLES else _label(e),
            resource.removeprefix("mlsd."),
            describe(e),
        )
    if not ordered:
        table.add_row("", "", "[dim]no events yet[/dim]", "", "")
    return table


def read_timeline(
    since: dt.datetime,
    api_url: str | None = None,
    flow_runs: bool = True,
    limit: int = 2_000,
) -> list[TimelineEvent]:
    """The lab's events (and Prefect's flow-run events) since `since`, oldest first, read from
    Prefect's event API (`POST /events/filter`) at `api_url` (default: this process's
    PREFECT_API_URL)."""
    from contextlib import nullcontext

    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventOrder,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    prefixes = ["mlsd."] + ([FLOW_RUN_PREFIX] if flow_runs else [])
    query = EventFilter(
        occurred=EventOccurredFilter(since=since),
        # The server leaves a flow run's bookkeeping out: fewer pages of 50 to fetch.
        event=EventNameFilter(
            prefix=prefixes,
            exclude_name=[FLOW_RUN_PREFIX + state for state in FLOW_RUN_BOOKKEEPING],
        ),
        order=EventOrder.ASC,
    )
    scope = temporary_settings(updates={PREFECT_API_URL: api_url}) if api_url else nullcontext()
    out: list[TimelineEvent] = []
    with scope, get_client(sync_client=True) as client:
        page = client.read_events(filter=query, limit=50)  # the API refuses more than 50 a page
        while True:
            out.extend(TimelineEvent.from_prefect(e) for e in page.events)
            if page.next_page is None or len(out) >= limit:
                break
            page = client.read_events_page(str(page.next_page))
    return sorted(out, key=lambda e: (e.occurred, e.name))
