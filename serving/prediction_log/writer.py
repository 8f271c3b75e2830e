"""The batched writer: keeps the prediction log off the request path (`submit` only enqueues),
and orders labels and flushes after every row submitted before them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass
from typing import Any, Literal

from serving.prediction_log.base import PredictionLog
from serving.prediction_log.journal import Journal
from serving.prediction_log.records import Feedback, JoinResult, PredictionRecord

log = logging.getLogger("serving.prediction_log")


@dataclass
class WriterStats:
    """What the writer did so far (shown by /admin/status)."""

    submitted: int = 0
    written: int = 0
    dropped: int = 0  # the queue was full (the log is down or far behind)
    failed: int = 0  # a batch the log refused, after retries
    batches: int = 0
    recovered: int = 0  # rows a killed run had journaled, replayed into the log at start

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Command:
    kind: Literal["label", "flush"]
    future: asyncio.Future[Any]
    feedback: Feedback | None = None


_STOP = object()


class PredictionLogWriter:
    """Batches log rows off the request path: `submit` only enqueues; one task writes a batch
    when `batch_size` rows wait or `flush_interval_s` after the first. Labels and flushes travel
    in the same queue, so a label is joined only after every row submitted before it is written.
    `close` writes everything submitted before it: an acknowledged answer's row is never lost
    to a graceful stop. With a `journal`, nor to a kill: each row is journaled as it is queued,
    and `recover` (before `start`) writes what a killed run left there."""

    def __init__(
        self,
        log: PredictionLog,
        batch_size: int,
        flush_interval_s: float,
        max_pending: int,
        retries: int = 3,
        journal: Journal | None = None,
    ) -> None:
        self.log = log
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retries = retries
        self.stats = WriterStats()
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_pending)
        self._batch_ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.journal = journal

    async def recover(self) -> int:
        """Write the rows a previous (killed) run journaled; how many. Kept on disk for the next
        start if the log refuses them (rewriting a row is harmless: same key, same values)."""
        if self.journal is None:
            return 0
        segments = self.journal.segments()
        records = await asyncio.to_thread(self.journal.recover)
        try:
            for start in range(0, len(records), self.batch_size):
                await self.log.write_many(records[start : start + self.batch_size])
        except Exception:
            log.exception("journaled rows not replayed (kept for the next start)")
            return 0
        self.journal.discard(segments)
        self.stats.recovered += len(records)
        if records:
            log.warning("replayed %d journaled prediction rows a stopped run left", len(records))
        return len(records)

    def start(self) -> None:
        if self.journal is not None:
            self.journal.open()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="prediction-log")

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, record: PredictionRecord) -> bool:
        """Queue one row; False (and counted) when the queue is full or the writer closed."""
        if self._closed:
            self.stats.dropped += 1
            return False
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            return False
        if self.journal is not None:
            self.journal.append(record)
        self.stats.submitted += 1
        if self._queue.qsize() >= self.batch_size:
            self._batch_ready.set()
        return True

    async def join_label(self, feedback: Feedback) -> JoinResult:
        result: JoinResult = await self._command("label", feedback)
        return result

    async def flush(self) -> None:
        """Return once every row submitted before the call is written."""
        await self._command("flush")

    async def _command(
        self, kind: Literal["label", "flush"], feedback: Feedback | None = None
    ) -> Any:
        if self._closed:
            raise RuntimeError("the prediction log writer is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Command(kind, future, feedback))
        self._batch_ready.set()
        return await future

    async def close(self) -> None:
        """Write everything queued, stop the task, close the log."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await self._queue.put(_STOP)
            self._batch_ready.set()
            await self._task
        if self.journal is not None:
            self.journal.close()
            if self.stats.failed == 0:  # every row submitted is written
                self.journal.discard(self.journal.segments())
        await self.log.close()

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if isinstance(first, PredictionRecord) and self._queue.qsize() < self.batch_size:
                # Give the batch time to fill; a full batch, a label or a stop cuts it short.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_ready.wait(), self.flush_interval_s)
            self._batch_ready.clear()
            items = [first]
            while len(items) < 10 * self.batch_size:
                try:
                    items.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            # Every row queued so far is in `items` (no await since the queue emptied): the
            # journal's current segment holds nothing else still to write.
            journal = self.journal
            sealed = journal.seal() if journal is not None and self._queue.empty() else None
            failed = self.stats.failed
            if not await self._process(items):
                return
            if journal is not None and sealed is not None and self.stats.failed == failed:
                journal.discard([sealed])

    async def _process(self, items: list[Any]) -> bool:
        """Write rows in order, running commands where they stand; False after the stop marker."""
        rows: list[PredictionRecord] = []
        for item in items:
            if isinstance(item, PredictionRecord):
                rows.append(item)
                if len(rows) >= self.batch_size:
                    await self._write(rows)
                    rows = []
                continue
            await self._write(rows)
            rows = []
            if item is _STOP:
                return False
            await self._run_command(item)
        await self._write(rows)
        return True

    async def _write(self, rows: list[PredictionRecord]) -> None:
        if not rows:
            return
        for attempt in range(self.retries + 1):
            try:
                await self.log.write_many(rows)
            except Exception:
                if attempt == self.retries:
                    log.exception("prediction log refused a batch of %d rows", len(rows))
                    self.stats.failed += len(rows)
                    return
                await asyncio.sleep(0.05 * 2**attempt)
            else:
                self.stats.written += len(rows)
                self.stats.batches += 1
                return

    async def _run_command(self, command: _Command) -> None:
        try:
            if command.kind == "label":
                assert command.feedback is not None
                result = await self.log.join_label(command.feedback)
            else:
                result = None
        except Exception as err:
            if not command.future.done():
                command.future.set_exception(err)
            return
        if not command.future.done():
            command.future.set_result(result)
