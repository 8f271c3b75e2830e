"""The `land_day` Prefect flow: a day the world landed goes through the quality gate (Great
Expectations), then the world's feature tables (extended by the new days from a look-back
slice, not rebuilt: `features.tables.build(incremental=True)`) and their materialisation, so
the online store follows the world. Served as a deployment that runs on `mlsd.batch.landed` (one run at a time).

A quarantined batch raises a quality alert (`mlsd.quality.alert`): broken data is not drift and
never starts a retrain; the batches that passed still reach the offline store and the features.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger

import mlsd.events as events
from mlsd.events import LAB_TAG
from mlsd.settings import Settings

# Rounds one run may take: a day that closes while a run works has its event dropped (one run
# at a time, new ones cancelled), so the run lands it before it ends. Measured under the demo's
# acts before this: a run took 35-100 s, the dropped day waited for the next day's event, and
# the online store fell 1-3 simulated days behind the world.
MAX_ROUNDS = 4


@flow(name="land_day", log_prints=True)
def land_day(world: str, day: str | None = None) -> dict[str, Any]:
    """Gate every batch waiting in the landing zone (`world`'s landed day, and whatever else
    landed while the previous run worked), then refresh the features and online store of each
    world that gained data; again while more batches landed meanwhile (at most MAX_ROUNDS)."""
    settings = Settings()
    logger = get_run_logger()
    rounds = land_until_empty(lambda: _land_waiting(settings, logger), MAX_ROUNDS)
    seconds: dict[str, float] = {}
    for r in rounds:
        for k, v in r["seconds"].items():
            seconds[k] = seconds.get(k, 0.0) + v
    outcome = {
        "world": world,
        "day": day,
        "rounds": len(rounds),
        "accepted": [b for r in rounds for b in r["accepted"]],
        "quarantined": [b for r in rounds for b in r["quarantined"]],
        "feature_rows": sum(r["feature_rows"] for r in rounds),
        "extended": sorted({v for r in rounds for v in r["extended"]}),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    logger.info(
        "%s %s: %d accepted, %d quarantined in %d round(s); %s",
        world,
        day,
        len(outcome["accepted"]),
        len(outcome["quarantined"]),
        len(rounds),
        outcome["seconds"],
    )
    return outcome


def land_until_empty(
    land_once: Callable[[], dict[str, Any]], max_rounds: int
) -> list[dict[str, Any]]:
    """Call `land_once` until a round finds no batch waiting, at most `max_rounds` times; the
    rounds that found batches (the first round always counts)."""
    rounds = [land_once()]
    while len(rounds) < max_rounds and (rounds[-1]["accepted"] or rounds[-1]["quarantined"]):
        found = land_once()
        if not (found["accepted"] or found["quarantined"]):
            break
        rounds.append(found)
    return rounds


def _land_waiting(settings: Settings, logger: Any) -> dict[str, Any]:
    """One round: gate what waits in the landing zone, alert on what was quarantined, extend
    the grown worlds' feature tables and materialise them."""
    from features import store, tables
    from features.catalog import views_of_world
    from pipeline.ingest import ingest

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
    return {
        "accepted": [b.batch_id for b in report.accepted],
        "quarantined": [b.batch_id for b in quarantined],
        "feature_rows": rows,
        "extended": [v for b in built for v in b.extended],
        "seconds": seconds,
    }


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
            # each run gates every batch waiting in the landing zone, and goes round again
            # while more landed meanwhile (land_until_empty). Queued, the runs fell ever further behind a world
            # that lands two batches every simulated day.
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
            ),
            tags=[LAB_TAG, "landing"],
        )
    ]
