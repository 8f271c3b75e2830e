"""Shadow traffic: copies of answered requests for the challenger, through a bounded queue and a
few background workers, so a shadow never changes a response or its latency."""

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
    dropped: int = 0  # the queue was full (or the router stopping): counted, never waited for
    done: int = 0
    failed: int = 0  # the shadow call raised (its model's failures are logged as rows instead)
    skipped: int = 0  # not offered: the served answer was degraded (see Router._maybe_shadow)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ShadowDispatcher(Generic[J]):
    """`offer` is synchronous and O(1): it enqueues or drops, it never awaits. Workers run the
    jobs with `run_job`; on close, queued jobs are dropped (a shadow is best effort) and jobs in
    flight are given `grace_s` to finish, so their rows reach the log."""

    def __init__(
        self,
        run_job: Callable[[J], Awaitable[Any]],
        queue_size: int,
        workers: int,
        grace_s: float = 2.0,
    ) -> None:
        self.run_job = run_job
        self.workers = workers
        self.grace_s = grace_s
        self.stats = ShadowStats()
        self._queue: asyncio.Queue[J] = asyncio.Queue(maxsize=queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._work(), name=f"shadow-{i}") for i in range(self.workers)
        ]

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

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self.run_job(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.failed += 1
                log.exception("shadow job failed")
            else:
                self.stats.done += 1
            finally:
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
        if self._tasks:
            # Workers now only finish the job in hand; after the grace, cancel what is left.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.grace_s):
                    await self._queue.join()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
