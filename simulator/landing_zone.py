"""What the running world writes to the landing zone: each closed day's batches (and the
simulator's hidden truth beside them), a day a fixed upstream re-sends, and which day the world
is at after a restart. Each landing is announced with `mlsd.batch.landed`."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd

import mlsd.events as events
from mlsd.settings import Settings
from simulator.clock import DayPlan
from simulator.days import plan_day, served_interactions
from simulator.landing import land_batch

log = logging.getLogger("mlsd.world")
Emit = Callable[..., Any]


def first_open_day(settings: Settings) -> dt.date:
    """The day after the latest day any world has landed (raw, archived or quarantined), or
    the day after the configured simulation when nothing has landed."""
    latest: dt.date | None = None
    for root in (settings.raw_dir, settings.archive_dir, settings.quarantine_dir):
        if not root.exists():
            continue
        for path in root.glob("*/*/*.parquet"):
            try:
                day = dt.date.fromisoformat(path.stem)
            except ValueError:
                continue
            latest = day if latest is None or day > latest else latest
    if latest is None:
        return settings.simulator.start_date + dt.timedelta(days=settings.simulator.days)
    return latest + dt.timedelta(days=1)


def _prefect_api_configured() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def emit_quietly(emit: Emit, name: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
    """Emit an event of the world; a failure costs the timeline a line, never the world."""
    if emit is events.emit and not _prefect_api_configured():
        return  # no lab server to tell: Prefect would start a temporary one (15 s, blocking)
    try:
        emit(name, resource, payload)
    except Exception as err:
        log.warning("could not emit %s: %s", name, err)


def land_closed_day(
    settings: Settings, product: str, plan: DayPlan, served: list[dict[str, Any]], emit: Emit
) -> None:
    """A closed day's batches, with the sessions the platform served as they were served."""
    batches = dict(plan.batches)
    if product == "recsys" and served:
        played = batches["interactions"]
        keep = ~played["session_id"].isin([s["session_id"] for s in served])
        batches["interactions"] = pd.concat(
            [played[keep], served_interactions(served, played)], ignore_index=True
        )
    if plan.truth is not None:
        truth = settings.data_dir / "simulator" / "truth" / product / f"{plan.day}.parquet"
        land_batch(plan.truth, truth)
    _land_batches(
        settings,
        product,
        plan.day,
        batches,
        emit,
        scenario=plan.scenario or "none",
        switches=[[at.isoformat(), s or "none"] for at, s in plan.switches],
    )


def land_again(settings: Settings, product: str, day: dt.date, emit: Emit) -> None:
    """A closed day re-sent by a fixed upstream: the day as it happened, without the defect
    (the simulation is deterministic), over what landed broken."""
    plan = plan_day(settings, product, day, None)
    _land_batches(settings, product, day, plan.batches, emit, scenario="none", backfill=True)


def _land_batches(
    settings: Settings,
    product: str,
    day: dt.date,
    batches: dict[str, pd.DataFrame],
    emit: Emit,
    **about: Any,
) -> None:
    for event_type, frame in batches.items():
        if frame.empty:
            continue  # nothing to report that day (a small world's chargebacks): no file
        land_batch(frame, settings.raw_dir / product / event_type / f"{day.isoformat()}.parquet")
    payload = {
        "day": day.isoformat(),
        "rows": {name: len(frame) for name, frame in batches.items()},
        **about,
    }
    emit_quietly(emit, events.BATCH_LANDED, events.world_resource(product), payload)
