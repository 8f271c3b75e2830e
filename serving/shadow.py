"""Shadow traffic: copies of answered requests for the challenger, through a bounded queue,
sent in small batches by a few background calls, so a shadow never changes a response or its
latency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
J = TypeVar("J")


@dataclass
class ShadowStats:
    offered: int = 0
    # The queue was full, or the router stopped (queued copies, and a batch still in flight
    # after the grace): counted, never waited for. offered = dropped + done + failed + pending
    # + the copies being collected or sent.
    dropped: int = 0
    done: int = 0
    failed: int = 0  # the batch call raised (its model's failures are logged as rows instead)
    skipped: int = 0  # not offered: the served answer was degraded (see Router._maybe_shadow)
    batches: int = 0  # calls made; done / batches is the mean batch size

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ShadowDispatcher(Generic[J]):
    """`offer` is synchronous and O(1): it enqueues or drops, it never awaits.

    One collector takes copies off the queue in batches (up to `max_batch`, waiting at most
    `linger_s` after the first for more) and hands each batch to `run_batch`, at most `workers`
    batches at a time. Why batches: a copy is one more model call on cores the answers need;
    one call for many copies costs the router one request instead of many, and the model
    server one vectorised inference. While every worker is busy the collector waits, so the
    queue fills and the next batch is larger: the shadow's load on the machine grows slower
    than its traffic. On close, queued copies are dropped (a shadow is best effort) and
    batches in flight are given `grace_s` to finish, so their rows reach the log."""

    def __init__(
        self,
        run_batch: Callable[[list[J]], Awaitable[Any]],
        queue_size: int,
        workers: int,
        max_batch: int = 1,
        linger_s: float = 0.0,
        grace_s: float = 2.0,
    ) -> None:
        self.run_batch = run_batch
        self.workers = workers
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.grace_s = grace_s
        self.stats = ShadowStats()
        self._queue: asyncio.Queue[J] = asyncio.Queue(maxsize=queue_size)
        self._slots = asyncio.Semaphore(workers)
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def pending(self) -> int:
        """Copies waiting in the queue (not those being collected or sent)."""
        return self._queue.qsize()

    def start(self) -> None:
        self._collector = asyncio.get_running_loop().create_task(
            self._collect(), name="shadow-collector"
        )

    def offer(self, job: J) -> bool:
        self.stats.offered += 1
        if self._closing:
            self.stats.dropped += 1
            return False
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            return False
        return True

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            batch: list[J] = []
            try:
                batch.append(await self._queue.get())
                deadline = loop.time() + self.linger_s
                while len(batch) < self.max_batch and not self._closing:
                    try:
                        batch.append(self._queue.get_nowait())
                        continue
                    except asyncio.QueueEmpty:
                        pass
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            batch.append(await self._queue.get())
                    except TimeoutError:
                        break
            except asyncio.CancelledError:
                # Closing: a batch still being collected is dropped like the queued copies.
                self._settle(batch)
                self.stats.dropped += len(batch)
                self._slots.release()
                raise
            task = loop.create_task(self._send(batch), name="shadow-batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _send(self, batch: list[J]) -> None:
        try:
            self.stats.batches += 1
            await self.run_batch(batch)
        except asyncio.CancelledError:
            # Cut off by close after its grace: its copies are dropped, like the queued ones.
            self.stats.dropped += len(batch)
            raise
        except Exception:
            self.stats.failed += len(batch)
            log.exception("shadow batch of %d failed", len(batch))
        else:
            self.stats.done += len(batch)
        finally:
            self._settle(batch)
            self._slots.release()

    def _settle(self, batch: list[J]) -> None:
        for _ in batch:
            self._queue.task_done()

    async def join(self) -> None:
        """Wait until every copy queued so far has been handled."""
        await self._queue.join()

    async def close(self) -> None:
        self._closing = True
        while True:
            try:
                self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self._queue.task_done()
            self.stats.dropped += 1
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        if self._running:
            # Batches in flight may finish; after the grace, cancel what is left.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.grace_s):
                    await self._queue.join()
            for task in list(self._running):
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)
