"""The monitor flow as one Prefect deployment per product, on an interval (served by the
stack's `flows` process, mlsd/flows.py) and runnable on demand (`mlsd monitor fraud|recsys`)."""

from __future__ import annotations

from typing import Any

from mlsd.events import LAB_TAG
from mlsd.settings import Settings

DEPLOYMENT_NAMES = {"fraud": "monitor/monitor-fraud", "recsys": "monitor/monitor-recsys"}


def deployments(settings: Settings | None = None) -> list[Any]:
    from monitoring.flow import monitor

    settings = settings or Settings()
    return [
        monitor.to_deployment(
            name=f"monitor-{product}",
            description=f"Judge the latest window of the {product} prediction log (drift, "
            "quality, performance) and let the trigger policy decide on a retrain.",
            parameters={"product": product},
            interval=settings.monitoring.interval_seconds,
            concurrency_limit=1,
            tags=[LAB_TAG, product, "monitoring"],
        )
        for product in ("fraud", "recsys")
    ]
