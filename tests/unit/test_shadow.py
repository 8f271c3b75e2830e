"""The shadow dispatcher: bounded queue, batches, a cap on calls in flight, and closing."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import aiotools
import pytest

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


def on_a_virtual_clock(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on a loop whose clock moves only when every task waits (aiotools'
    VirtualClock): a wait is measured on the clock the dispatcher reads, whatever the load.
    The loop fires a timer up to its 1 ms resolution early, hence the margins below."""

    async def virtual() -> None:
        with aiotools.VirtualClock().patch_loop():
            await test()

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(virtual())

    return run


class TimedRecorder(Recorder):
    """A Recorder that also notes the loop's clock when each batch reaches the model."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def __call__(self, batch: list[int]) -> None:
        self.times.append(asyncio.get_running_loop().time())
        await super().__call__(batch)


@on_a_virtual_clock
async def test_a_batch_waits_the_linger_from_its_first_copy_then_goes_without_more():
    loop = asyncio.get_running_loop()
    run = TimedRecorder()
    shadow = ShadowDispatcher(run, queue_size=100, workers=1, max_batch=64, linger_s=0.05)
    shadow.start()
    first = loop.time()
    shadow.offer(1)
    await asyncio.sleep(0.03)
    shadow.offer(2)  # within the linger: joins the batch, and does not extend the wait
    await asyncio.sleep(0.015)
    assert run.batches == []  # 45 ms after the first copy: still waiting for more
    await asyncio.sleep(0.01)
    assert run.batches == [[1, 2]]
    assert run.times[0] - first == pytest.approx(0.05, abs=1e-3)
    # The next copy starts a new linger of its own.
    await asyncio.sleep(0.1)
    second = loop.time()
    shadow.offer(3)
    await shadow.join()
    assert run.batches == [[1, 2], [3]]
    assert run.times[1] - second == pytest.approx(0.05, abs=1e-3)
    await shadow.close()


@on_a_virtual_clock
async def test_a_full_batch_goes_at_once_and_no_linger_means_no_wait():
    loop = asyncio.get_running_loop()
    run = TimedRecorder()
    full = ShadowDispatcher(run, queue_size=100, workers=1, max_batch=2, linger_s=60.0)
    full.start()
    started = loop.time()
    full.offer(1)
    full.offer(2)
    await full.join()
    assert run.batches == [[1, 2]] and run.times == [started]
    await full.close()
    eager = ShadowDispatcher(run, queue_size=100, workers=1, max_batch=64, linger_s=0.0)
    eager.start()
    started = loop.time()
    eager.offer(3)
    await eager.join()
    assert run.batches[-1] == [3] and run.times[-1] == started


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
