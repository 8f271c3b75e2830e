"""The monitor flow as one Prefect deployment per product, on an interval (served by the
stack's `flows` process, mlsd/flows.py) and runnable on demand (`mlsd monitor fraud|recsys`)."""

from __future__ import annotations

from typing import Any

from mlsd.events import LAB_TAG
from mlsd.settings import Settings

DEPLOYMENT_NAMES = {"fraud": "monitor/monitor-fraud", "recsys": "monitor/monitor-recsys"}


def deployments(settings: Settings | None = None) -> list[Any]:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    from monitoring.flow import monitor

    settings = settings or Settings()
    return [
        monitor.to_deployment(
            name=f"monitor-{product}",
            description=f"Judge the latest window of the {product} prediction log (drift, "
            "quality, performance) and let the trigger policy decide on a retrain.",
            parameters={"product": product},
            interval=settings.monitoring.interval_seconds,
            # A run that comes while one runs is cancelled, not queued: the next interval's
            # run judges the newer window anyway. Queued, they piled up whenever a run outlasted
            # the interval, and after a stopped lab (measured: 200 late runs re-offered to Prefect
            # every 2 s, its server at 37 % of a core and the flows process crashing on a 503).
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
            ),
            tags=[LAB_TAG, product, "monitoring"],
        )
        for product in ("fraud", "recsys")
    ]
