"""One memory-heavy step at a time across the lab's flow runs.

Two steps hold most of what a run of the loop ever holds: a landing run's feature build and a
fraud retrain's training set (its point-in-time joins). Each alone fits; together, beside a
monitor run, they made the stack's peak. Measured with `make bench` (2 cores, the demo's acts,
40 fraud req/s): in both runs after the allocator change the flow runs alive at the peak
were a landing run and a retrain (the flows process then held 1.34-1.43 GB of the stack's
3.30-3.39 GB, sum of PSS).

They take turns on a Prefect global concurrency limit (`mlsd-heavy-work`), so Prefect's UI
shows who holds it. The cost is a wait: a landing that comes during a retrain's join waits for
it (about 7 s), and its day reaches the online store that much later; a retrain that comes
during a build waits about 3 s. A holder that dies frees its slot when its lease runs out
(`LEASE_SECONDS`, renewed while it lives).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from mlsd.settings import Settings

HEAVY_WORK_LIMIT = "mlsd-heavy-work"
LEASE_SECONDS = 60.0


@contextmanager
def heavy_work(settings: Settings) -> Iterator[None]:
    """Hold one of the `prefect.heavy_work_slots` slots for the duration of the block (made or
    resized here, so a flow run by hand against a fresh server has it too)."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    # Another run may make it between Prefect's read and create (the upsert is not atomic).
    with get_client(sync_client=True) as client, suppress(ObjectAlreadyExists):
        client.upsert_global_concurrency_limit_by_name(
            HEAVY_WORK_LIMIT, settings.prefect.heavy_work_slots
        )
    with concurrency(
        HEAVY_WORK_LIMIT,
        occupy=1,
        strict=True,
        lease_duration=LEASE_SECONDS,
        timeout_seconds=settings.prefect.heavy_work_wait_seconds,
    ):
        yield
