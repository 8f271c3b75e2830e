"""The prediction log: one contract every backend passes (SQLite here, PostgreSQL in
tests/integration/test_router_prediction_log_postgres.py), and the batched writer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mlsd.settings import Settings, SqlitePredictionLogSettings
from serving.prediction_log import (
    Feedback,
    JoinResult,
    LoggedPrediction,
    PredictionLog,
    PredictionLogWriter,
    PredictionRecord,
    SqlitePredictionLog,
)

OpenLog = Callable[[], Awaitable[PredictionLog]]
T0 = 1_760_000_000.0


def record(request_id: str = "r1", **changes: Any) -> PredictionRecord:
    base = PredictionRecord(
        request_id=request_id,
        role="served",
        at=T0,
        product="fraud",
        entity="card_000001",
        arm="champion",
        experiment=None,
        model_version="fraud/3",
        answered_by="fraud/3",
        inputs={"card_id": "card_000001", "amount": 12.5},
        features=None,
        output={"score": 0.1, "decision": "allow", "reasons": []},
        score=0.1,
        decision="allow",
        latency_ms=4.2,
        degraded=False,
        degraded_reason=None,
        error=None,
    )
    return replace(base, **changes)


def recs_record(request_id: str, items: Sequence[str], **changes: Any) -> PredictionRecord:
    return record(
        request_id,
        product="recsys",
        entity="user_1",
        model_version="recsys/1",
        answered_by="recsys/1",
        output={"items": [{"item_id": i, "score": 0.5} for i in items], "path": "model"},
        score=0.5,
        decision="recommend",
        **changes,
    )


def fraud_label(request_id: str, label: int) -> Feedback:
    return Feedback(request_id=request_id, product="fraud", at=T0 + 5, label=label)


class PredictionLogContract:
    """What every PredictionLog implementation must do. Subclasses provide `open_log`: a
    coroutine function that opens a fresh, empty log (and reopens the same one when called
    again in the same test)."""

    @pytest.fixture
    def open_log(self) -> OpenLog:
        raise NotImplementedError

    def run(self, open_log: OpenLog, scenario: Callable[[PredictionLog], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            log = await open_log()
            try:
                return await scenario(log)
            finally:
                await log.close()

        return asyncio.run(main())

    def test_window_selects_product_arm_time_and_role(self, open_log):
        async def scenario(log: PredictionLog) -> None:
            await log.write_many(
                [
                    record("a", at=T0),
                    record("b", at=T0 + 10),
                    record("b", at=T0 + 10, role="shadow", arm="challenger"),
                    record("c", at=T0 + 20, arm="challenger", model_version="fraud/4"),
                    record("d", at=T0 + 30),  # at == until: outside
                    record("e", at=T0 - 1),  # before since: outside
                    recs_record("f", ["i1"], at=T0 + 5),
                ]
            )
            champion = await log.window("fraud", "champion", T0, T0 + 30)
            assert [r.request_id for r in champion] == ["a", "b"]
            challenger = await log.window("fraud", "challenger", T0, T0 + 30)
            assert [(r.request_id, r.role) for r in challenger] == [
                ("b", "shadow"),
                ("c", "served"),
            ]
            served = await log.window("fraud", "challenger", T0, T0 + 30, role="served")
            assert [r.request_id for r in served] == ["c"]
            assert [r.request_id for r in await log.window("recsys", "champion", T0, T0 + 30)] == [
                "f"
            ]
            assert await log.count() == 7
            assert await log.count("recsys") == 1

        self.run(open_log, scenario)

    def test_rows_round_trip(self, open_log):
        original = record(
            "rt",
            features={"is_new_device": 1, "amount_over_card_mean": 4.5},
            degraded=True,
            degraded_reason="model_timeout",
            error="fraud-v3: timed out after 300 ms",
            answered_by="rules",
            experiment="canary-fraud-v4",
            inputs={"card_id": "c", "amount": 1e6, "note": "ünïcode"},
        )

        async def scenario(log: PredictionLog) -> list[LoggedPrediction]:
            await log.write_many([original])
            return await log.window("fraud", "champion", T0, T0 + 1)

        (row,) = self.run(open_log, scenario)
        assert row == LoggedPrediction(**vars(original), label=None)
        assert row.degraded is True

    def test_writing_a_row_again_replaces_it(self, open_log):
        async def scenario(log: PredictionLog) -> None:
            await log.write_many([record("x", score=0.1)])
            await log.write_many([record("x", score=0.9)])
            (row,) = await log.window("fraud", "champion", T0, T0 + 1)
            assert row.score == 0.9
            assert await log.count() == 1

        self.run(open_log, scenario)

    def test_fraud_labels_join_both_roles_by_request_id(self, open_log):
        async def scenario(log: PredictionLog) -> None:
            await log.write_many(
                [
                    record("p", decision="block"),
                    record("p", role="shadow", arm="challenger", decision="allow"),
                    record("q"),
                ]
            )
            results: list[JoinResult] = [
                await log.join_label(fraud_label("p", 0)),
                await log.join_label(fraud_label("p", 1)),  # a later label replaces the first
                await log.join_label(fraud_label("nope", 1)),
                await log.join_label(Feedback("q", "recsys", T0, item_id="i1", event="play")),
            ]
            assert results == ["joined", "joined", "unknown_request", "wrong_product"]
            champion = {
                r.request_id: r.label for r in await log.window("fraud", "champion", T0, T0 + 1)
            }
            assert champion == {"p": 1, "q": None}
            (shadow,) = await log.window("fraud", "challenger", T0, T0 + 1)
            assert shadow.label == 1

        self.run(open_log, scenario)

    def test_recs_feedback_is_a_hit_for_the_rows_that_showed_the_item(self, open_log):
        async def scenario(log: PredictionLog) -> None:
            await log.write_many(
                [
                    recs_record("r", ["i1", "i2", "i5"]),
                    recs_record("r", ["i3", "i4"], role="shadow", arm="challenger"),
                    recs_record("s", ["i1"]),
                ]
            )
            for item, event in (("i2", "click"), ("i9", "play"), ("i5", "play")):
                assert (
                    await log.join_label(Feedback("r", "recsys", T0, item_id=item, event=event))
                    == "joined"
                )
            assert (
                await log.join_label(Feedback("s", "recsys", T0, item_id="i7", event="play"))
                == "joined"
            )
            champion = {
                r.request_id: (r.label, r.hits)
                for r in await log.window("recsys", "champion", T0, T0 + 1)
            }
            # Two of r's three items engaged with (i9 was not among them), none of s's.
            assert champion == {"r": (1, 2), "s": (0, 0)}
            (shadow,) = await log.window("recsys", "challenger", T0, T0 + 1)
            assert (shadow.label, shadow.hits) == (0, 0)

        self.run(open_log, scenario)

    def test_rows_survive_a_reopen(self, open_log):
        async def write(log: PredictionLog) -> None:
            await log.write_many([record(f"k{i}", at=T0 + i) for i in range(50)])

        async def read(log: PredictionLog) -> int:
            return await log.count()

        self.run(open_log, write)
        assert self.run(open_log, read) == 50


class TestSqlitePredictionLog(PredictionLogContract):
    @pytest.fixture
    def open_log(self, tmp_path: Path) -> OpenLog:
        settings = Settings(data_dir=tmp_path)

        async def opener() -> PredictionLog:
            return SqlitePredictionLog(SqlitePredictionLogSettings(), settings)

        return opener

    def test_the_file_is_in_wal_mode_under_the_data_dir(self, tmp_path: Path):
        import sqlite3

        async def scenario() -> None:
            log = SqlitePredictionLog(SqlitePredictionLogSettings(), Settings(data_dir=tmp_path))
            await log.close()

        asyncio.run(scenario())
        path = tmp_path / "router" / "predictions.db"
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- the batched writer ----------------------------------------------------------------------


class MemoryLog(PredictionLog):
    """An in-memory log that records how it was called (and can be made slow or failing)."""

    def __init__(
        self, delay: float = 0.0, failures: int = 0, gate: asyncio.Event | None = None
    ) -> None:
        self.rows: list[PredictionRecord] = []
        self.batches: list[int] = []
        self.labels: list[tuple[Feedback, int]] = []  # (feedback, rows written before it)
        self.delay = delay
        self.failures = failures
        # A closed gate holds every write until it opens; `writing` is set once one is held.
        self.gate = gate
        self.writing = asyncio.Event()
        self.closed = False

    async def write_many(self, records: Sequence[PredictionRecord]) -> None:
        if self.gate is not None:
            self.writing.set()
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        self.rows.extend(records)
        self.batches.append(len(records))

    async def join_label(self, feedback: Feedback) -> JoinResult:
        self.labels.append((feedback, len(self.rows)))
        known = any(r.request_id == feedback.request_id for r in self.rows)
        return "joined" if known else "unknown_request"

    async def window(self, product, arm, since, until, role=None) -> list[LoggedPrediction]:
        raise NotImplementedError

    async def count(self, product=None) -> int:
        return len(self.rows)

    async def close(self) -> None:
        self.closed = True


def writer_for(log: PredictionLog, **kw: Any) -> PredictionLogWriter:
    options = {"batch_size": 100, "flush_interval_s": 0.05, "max_pending": 10_000} | kw
    writer = PredictionLogWriter(log, **options)
    writer.start()
    return writer


def test_submit_returns_at_once_and_the_flush_interval_sends_the_rows():
    async def scenario() -> None:
        gate = asyncio.Event()
        log = MemoryLog(gate=gate)
        writer = writer_for(log)
        # The log cannot write while the gate is closed: every submit returns all the same,
        # with its row queued, not written (the log is not on this path).
        assert all(writer.submit(record(f"r{i}")) for i in range(10))
        assert writer.pending == 10 and log.rows == []
        await asyncio.sleep(0)
        assert not log.writing.is_set()  # no write asked for yet: not a batch, not a flush
        # Neither a full batch nor a flush asked for it: the flush interval sends the 10 rows,
        # as one batch, to the (still closed) log.
        await asyncio.wait_for(log.writing.wait(), timeout=30)
        assert writer.pending == 0
        gate.set()
        await writer.flush()
        assert [r.request_id for r in log.rows] == [f"r{i}" for i in range(10)]
        assert log.batches == [10]
        await writer.close()

    asyncio.run(scenario())


def test_rows_are_written_in_batches_of_at_most_batch_size():
    async def scenario() -> None:
        log = MemoryLog()
        writer = writer_for(log, batch_size=64, flush_interval_s=10.0)
        for i in range(1_000):
            writer.submit(record(f"r{i}"))
        await writer.flush()
        assert len(log.rows) == 1_000
        # Rows queued together go out in full batches; only the remainder is short.
        assert log.batches == [64] * (1_000 // 64) + [1_000 % 64]
        assert [r.request_id for r in log.rows] == [f"r{i}" for i in range(1_000)]
        await writer.close()

    asyncio.run(scenario())


def test_a_full_batch_does_not_wait_for_the_interval():
    async def scenario() -> None:
        log = MemoryLog()
        writer = writer_for(log, batch_size=10, flush_interval_s=30.0)
        for i in range(10):
            writer.submit(record(f"r{i}"))
        await asyncio.sleep(0.1)
        assert len(log.rows) == 10
        await writer.close()

    asyncio.run(scenario())


def test_a_label_is_joined_after_every_row_submitted_before_it():
    async def scenario() -> None:
        log = MemoryLog(delay=0.02)
        writer = writer_for(log, flush_interval_s=10.0)
        for i in range(250):
            writer.submit(record(f"r{i}"))
        assert await writer.join_label(fraud_label("r249", 1)) == "joined"
        assert log.labels[0][1] == 250
        await writer.close()

    asyncio.run(scenario())


def test_close_writes_everything_queued_and_closes_the_log():
    async def scenario() -> None:
        log = MemoryLog(delay=0.01)
        writer = writer_for(log, batch_size=7, flush_interval_s=10.0)
        for i in range(500):
            writer.submit(record(f"r{i}"))
        await writer.close()
        assert len(log.rows) == 500 and log.closed
        assert writer.submit(record("late")) is False
        assert writer.stats.dropped == 1 and writer.stats.written == 500

    asyncio.run(scenario())


def test_a_full_queue_drops_and_counts_instead_of_blocking():
    async def scenario() -> None:
        log = MemoryLog(delay=1.0)
        writer = writer_for(log, max_pending=20, batch_size=5)
        accepted = sum(writer.submit(record(f"r{i}")) for i in range(100))
        assert accepted == 20 and writer.stats.dropped == 80
        await writer.close()
        assert len(log.rows) == 20

    asyncio.run(scenario())


def test_a_failing_log_is_retried_and_then_counted():
    async def scenario() -> None:
        log = MemoryLog(failures=2)
        writer = writer_for(log, flush_interval_s=0.01)
        writer.submit(record("a"))
        await writer.flush()
        assert [r.request_id for r in log.rows] == ["a"]  # two failures, then the retry lands
        log.failures = 100
        writer.submit(record("b"))
        await writer.flush()
        assert writer.stats.failed == 1
        log.failures = 0
        writer.submit(record("c"))  # the writer is still alive
        await writer.flush()
        assert [r.request_id for r in log.rows] == ["a", "c"]
        await writer.close()

    asyncio.run(scenario())


def test_writer_against_sqlite_end_to_end(tmp_path: Path):
    async def scenario() -> None:
        log = SqlitePredictionLog(SqlitePredictionLogSettings(), Settings(data_dir=tmp_path))
        writer = writer_for(log, batch_size=50, flush_interval_s=0.02)
        for i in range(300):
            writer.submit(record(f"r{i}", at=T0 + i))
        assert await writer.join_label(fraud_label("r299", 1)) == "joined"
        await writer.close()
        reopened = SqlitePredictionLog(SqlitePredictionLogSettings(), Settings(data_dir=tmp_path))
        rows = await reopened.window("fraud", "champion", T0, T0 + 1_000)
        assert len(rows) == 300 and rows[-1].label == 1
        await reopened.close()

    asyncio.run(scenario())
