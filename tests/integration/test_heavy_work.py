"""Heavy steps take turns on a real Prefect server's global concurrency limit: with one slot
two of them never overlap; with two they do (the limit, not luck, kept them apart)."""

from __future__ import annotations

import threading
import time

import pytest

from mlsd.settings import Settings
from pipeline.heavy_work import HEAVY_WORK_LIMIT, heavy_work

pytestmark = pytest.mark.integration

HOLD_SECONDS = 1.5


def spans_of_two_contenders(settings: Settings) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    ready = threading.Barrier(2)

    def step() -> None:
        ready.wait()
        with heavy_work(settings):
            start = time.monotonic()
            time.sleep(HOLD_SECONDS)
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=step) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(spans) == 2, "a contender never got its slot"
    return sorted(spans)


def slots(settings: Settings, n: int) -> Settings:
    return settings.model_copy(
        update={"prefect": settings.prefect.model_copy(update={"heavy_work_slots": n})}
    )


def test_one_slot_serialises_heavy_steps_and_two_let_them_overlap(prefect_api: str) -> None:
    from prefect.client.orchestration import get_client

    settings = Settings()
    (_, first_end), (second_start, _) = spans_of_two_contenders(slots(settings, 1))
    assert second_start >= first_end
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(HEAVY_WORK_LIMIT)
    assert limit.limit == 1 and limit.active_slots == 0  # made by the step, and released

    (_, first_end), (second_start, _) = spans_of_two_contenders(slots(settings, 2))
    assert second_start < first_end
