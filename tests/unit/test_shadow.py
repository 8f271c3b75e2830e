"""The shadow dispatcher: bounded queue, batches, a cap on calls in flight, and closing."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from serving.shadow import ShadowDispatcher


class Recorder:
    """A batch runner that records each batch and, while `gate` is clear, waits on it."""

    def __init__(self, fail_when: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_when = fail_when

    async def __call__(self, batch: list[int]) -> None:
        self.batches.append(list(batch))
        await self.gate.wait()
        if self.fail_when is not None and self.fail_when in batch:
            raise RuntimeError("the model call failed")


def on_a_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on a fresh event loop (the dispatcher needs a running one)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@on_a_loop
async def test_copies_arriving_within_the_linger_go_in_one_batch_up_to_its_size():
    run = Recorder()
    shadow = ShadowDispatcher(run, queue_size=100, workers=1, max_batch=4, linger_s=60.0)
    shadow.start()
    for i in range(6):
        assert shadow.offer(i)
    # Four fill a batch at once, without waiting out the minute-long linger.
    await settle()
    assert run.batches == [[0, 1, 2, 3]]
    await shadow.close()
    # The two left were being collected into the next batch: dropped and counted on close.
    assert shadow.stats.as_dict() == {
        "offered": 6,
        "dropped": 2,
        "done": 4,
        "failed": 0,
        "skipped": 0,
        "batches": 1,
    }


@on_a_loop
async def test_a_batch_waits_at_most_the_linger_for_more():
    run = Recorder()
    shadow = ShadowDispatcher(run, queue_size=100, workers=1, max_batch=64, linger_s=0.05)
    shadow.start()
    shadow.offer(1)
    shadow.offer(2)
    async with asyncio.timeout(10):  # the linger is 50 ms; this catches a hang only
        await shadow.join()
    assert run.batches == [[1, 2]]
    await shadow.close()


@on_a_loop
async def test_while_every_worker_is_busy_copies_queue_up_and_go_in_one_larger_batch():
    run = Recorder()
    shadow = ShadowDispatcher(run, queue_size=100, workers=2, max_batch=50, linger_s=0.0)
    shadow.start()
    run.gate.clear()  # the model is slow: calls in flight do not end yet
    shadow.offer(0)
    await settle()
    shadow.offer(1)
    await settle()
    for i in range(2, 30):
        shadow.offer(i)
    await settle()
    # Two calls in flight (the workers' limit); 28 copies wait for a free one.
    assert run.batches == [[0], [1]] and shadow.pending == 28
    run.gate.set()
    async with asyncio.timeout(10):
        await shadow.join()
    assert run.batches[2] == list(range(2, 30)) and len(run.batches) == 3
    assert (shadow.stats.done, shadow.stats.batches, shadow.stats.dropped) == (30, 3, 0)
    await shadow.close()


@on_a_loop
async def test_a_full_queue_drops_and_counts_without_waiting():
    run = Recorder()
    run.gate.clear()
    shadow = ShadowDispatcher(run, queue_size=3, workers=1, max_batch=1)
    shadow.start()
    shadow.offer(0)
    await settle()  # 0 is in flight
    accepted = [shadow.offer(i) for i in range(1, 10)]
    assert accepted == [True] * 3 + [False] * 6
    assert (shadow.stats.dropped, shadow.pending) == (6, 3)
    run.gate.set()
    await shadow.join()
    assert shadow.stats.done == 4
    await shadow.close()


@on_a_loop
async def test_a_failing_batch_is_counted_and_the_next_one_still_runs():
    run = Recorder(fail_when=1)
    shadow = ShadowDispatcher(run, queue_size=100, workers=1, max_batch=2, linger_s=0.0)
    shadow.start()
    for i in range(4):
        shadow.offer(i)
    async with asyncio.timeout(10):
        await shadow.join()
    assert run.batches == [[0, 1], [2, 3]]
    assert (shadow.stats.failed, shadow.stats.done) == (2, 2)
    await shadow.close()


@on_a_loop
async def test_close_drops_the_queue_and_gives_calls_in_flight_their_grace():
    run = Recorder()
    run.gate.clear()
    shadow = ShadowDispatcher(run, queue_size=100, workers=1, max_batch=2, grace_s=0.05)
    shadow.start()
    for i in range(5):
        shadow.offer(i)
    await settle()
    assert run.batches == [[0, 1]]
    # The call in flight never ends: closing waits out the grace, then cancels it.
    async with asyncio.timeout(10):
        await shadow.close()
    # 3 queued and the 2 cut off in flight: every copy offered is accounted for.
    assert (shadow.stats.dropped, shadow.stats.done, shadow.pending) == (5, 0, 0)
    assert not shadow.offer(9) and shadow.stats.dropped == 6
