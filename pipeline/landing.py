"""The `land_day` Prefect flow: a day the world landed goes through the quality gate (Great
Expectations), then the world's feature tables (extended by the new days from a look-back
slice, not rebuilt: `features.tables.build(incremental=True)`) and their materialisation, so
the online store follows the world. Served as a deployment that runs on `mlsd.batch.landed` (one run at a time).

A quarantined batch raises a quality alert (`mlsd.quality.alert`): broken data is not drift and
never starts a retrain; the batches that passed still reach the offline store and the features.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

import mlsd.events as events
from mlsd.events import LAB_TAG
from mlsd.settings import Settings


@flow(name="land_day", log_prints=True)
def land_day(world: str, day: str | None = None) -> dict[str, Any]:
    """Gate every batch waiting in the landing zone (`world`'s landed day, and whatever else
    landed while the previous run worked), then refresh the features and online store of each
    world that gained data."""
    from features import store, tables
    from features.catalog import views_of_world
    from pipeline.ingest import ingest

    settings = Settings()
    logger = get_run_logger()
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    report = ingest(settings)
    seconds["gate"] = time.perf_counter() - started
    quarantined = report.quarantined
    for batch in quarantined:
        reason = "; ".join(f.describe() for f in batch.failures) or batch.status
        logger.warning("quarantined %s: %s", batch.batch_id, reason)
        events.emit(
            events.QUALITY_ALERT,
            events.model_resource(batch.world),
            {
                "source": "ingest",
                "batch": batch.batch_id,
                "reason": reason[:300],
                "rows": batch.rows,
                "day": batch.day.isoformat() if batch.day else None,
            },
        )
    grown = sorted({b.world for b in report.accepted})
    rows = 0
    built: list[tables.WorldBuild] = []
    if grown:
        started = time.perf_counter()
        # Extended, not rebuilt: a landed day costs its own rows, not the world's history.
        built = tables.build(settings, grown, incremental=True)
        rows = sum(sum(b.rows.values()) for b in built)
        seconds["features"] = time.perf_counter() - started
        started = time.perf_counter()
        views = [v.name for w in grown for v in views_of_world(w)]
        store.materialize(settings, views=views)
        seconds["materialize"] = time.perf_counter() - started
    outcome = {
        "world": world,
        "day": day,
        "accepted": [b.batch_id for b in report.accepted],
        "quarantined": [b.batch_id for b in quarantined],
        "feature_rows": rows,
        "extended": sorted(v for b in built for v in b.extended),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    logger.info(
        "%s %s: %d accepted, %d quarantined; %s",
        world,
        day,
        len(report.accepted),
        len(quarantined),
        outcome["seconds"],
    )
    return outcome


def deployments() -> list[Any]:
    """`land_day` on every `mlsd.batch.landed` of either world, one run at a time."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.events import DeploymentEventTrigger

    return [
        land_day.to_deployment(
            name="land_day",
            description="Gate a landed day (GX), refresh the world's features and online store.",
            triggers=[
                DeploymentEventTrigger(
                    name="land a day when the world lands it",
                    expect={events.BATCH_LANDED},
                    match={"prefect.resource.id": "mlsd.world.*"},
                    parameters={
                        "world": "{{ event.resource.name }}",
                        "day": "{{ event.payload.day }}",
                    },
                )
            ],
            # One run at a time, and an event that comes while one runs is dropped, not queued:
            # each run gates every batch waiting in the landing zone, so the next event's run
            # picks up what landed meanwhile. Queued, the runs fell ever further behind a world
            # that lands two batches every simulated day.
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
            ),
            tags=[LAB_TAG, "landing"],
        )
    ]
