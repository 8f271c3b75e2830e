"""The prediction log writer's journal: a row queued but never written (the router was killed)
is replayed at the next start; a committed row's segment is deleted, so the journal stays small."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np

from serving.prediction_log import PredictionLogWriter
from serving.prediction_log.journal import Journal
from tests.unit.test_prediction_log import MemoryLog, record


def test_rows_queued_when_the_writer_dies_are_replayed_at_the_next_start(tmp_path: Path):
    async def killed_run() -> None:
        # A flush interval and batch the test never reaches: every row stays in memory, as in
        # a router killed between two batches. The writer is abandoned, never closed.
        writer = PredictionLogWriter(
            MemoryLog(),
            batch_size=10_000,
            flush_interval_s=3600,
            max_pending=10_000,
            journal=Journal(tmp_path),
        )
        writer.start()
        features = {"amount_z": np.float32(1.5), "missing": math.nan}
        for i in range(250):
            assert writer.submit(record(f"r{i}", features=features))

    async def next_start() -> None:
        log = MemoryLog()
        writer = PredictionLogWriter(
            log,
            batch_size=100,
            flush_interval_s=0.01,
            max_pending=10_000,
            journal=Journal(tmp_path),
        )
        assert await writer.recover() == 250
        assert [r.request_id for r in log.rows] == [f"r{i}" for i in range(250)]
        assert log.rows[0] == record("r0", features={"amount_z": 1.5, "missing": None})
        assert writer.stats.recovered == 250
        writer.start()
        await writer.close()
        # Replayed once: the segments it came from are gone, a third start finds nothing.
        assert Journal(tmp_path).recover() == []

    asyncio.run(killed_run())
    asyncio.run(next_start())


def test_a_line_cut_short_by_the_kill_is_skipped(tmp_path: Path):
    journal = Journal(tmp_path)
    journal.open()
    journal.append(record("whole"))
    journal.close()
    with (tmp_path / "1.jsonl").open("ab") as f:
        f.write(b'{"request_id": "cut')
    assert [r.request_id for r in Journal(tmp_path).recover()] == ["whole"]


def test_committed_segments_are_deleted_as_the_writer_goes(tmp_path: Path):
    async def scenario() -> None:
        log = MemoryLog()
        journal = Journal(tmp_path)
        writer = PredictionLogWriter(
            log, batch_size=50, flush_interval_s=0.01, max_pending=10_000, journal=journal
        )
        writer.start()
        for round_ in range(5):
            for i in range(120):
                writer.submit(record(f"r{round_}_{i}"))
            await writer.flush()
            await asyncio.sleep(0.05)  # the writer deletes the sealed segment after its batch
            # Only the open segment is left, and it holds no row the log lacks.
            assert len(journal.segments()) == 1
            assert journal.recover() == []
        assert len(log.rows) == 600
        await writer.close()
        assert journal.segments() == []

    asyncio.run(scenario())


def test_a_refused_batch_stays_in_the_journal_for_the_next_start(tmp_path: Path):
    async def scenario() -> None:
        log = MemoryLog(failures=100)
        writer = PredictionLogWriter(
            log,
            batch_size=50,
            flush_interval_s=0.01,
            max_pending=10_000,
            journal=Journal(tmp_path),
            retries=1,
        )
        writer.start()
        writer.submit(record("refused"))
        await writer.flush()
        assert writer.stats.failed == 1
        await writer.close()
        assert [r.request_id for r in Journal(tmp_path).recover()] == ["refused"]

    asyncio.run(scenario())
