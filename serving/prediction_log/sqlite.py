"""The SQLite prediction log (profile local): one file in WAL mode."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlsd.settings import Settings, SqlitePredictionLogSettings
from serving.names import Product
from serving.prediction_log.base import PredictionLog
from serving.prediction_log.records import (
    Feedback,
    JoinResult,
    LoggedPrediction,
    PredictionRecord,
    Role,
)
from serving.prediction_log.sql import (
    RECORD_FIELDS,
    count_query,
    group_window_rows,
    label_refused,
    label_statements,
    label_values,
    row_values,
    window_query,
)

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT NOT NULL,
    role TEXT NOT NULL,
    at REAL NOT NULL,
    product TEXT NOT NULL,
    entity TEXT NOT NULL,
    arm TEXT NOT NULL,
    experiment TEXT,
    model_version TEXT NOT NULL,
    answered_by TEXT NOT NULL,
    inputs TEXT NOT NULL,
    features TEXT,
    output TEXT NOT NULL,
    score REAL,
    decision TEXT,
    latency_ms REAL NOT NULL,
    degraded INTEGER NOT NULL,
    degraded_reason TEXT,
    error TEXT,
    PRIMARY KEY (request_id, role)
);
CREATE INDEX IF NOT EXISTS predictions_by_arm_time ON predictions (product, arm, at);
CREATE TABLE IF NOT EXISTS labels (
    request_id TEXT NOT NULL,
    item_id TEXT NOT NULL DEFAULT '',  -- '' for a fraud label; one row per engaged item for recs
    label INTEGER,
    event TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (request_id, item_id)
);
"""


class SqlitePredictionLog(PredictionLog):
    """One SQLite file in WAL mode: the writer never blocks readers (the rollout controller,
    monitoring) and they never block it. Writes run on one thread and reads on another, each
    with its own connection, so the event loop never waits on the disk."""

    def __init__(self, config: SqlitePredictionLogSettings, settings: Settings) -> None:
        self.path = Path(config.path or settings.data_dir / "router" / "predictions.db")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_ms = config.busy_timeout_ms
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="predlog-write")
        self._reader_pool = ThreadPoolExecutor(1, thread_name_prefix="predlog-read")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._writer_pool.submit(self._init_writer).result()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_ms / 1000, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
        return conn

    def _init_writer(self) -> None:
        conn = self._connect()
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a committed batch survives the router's crash or kill (only an OS
        # crash or power loss may lose the last commits), at a fraction of FULL's fsyncs.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SQLITE_SCHEMA)
        self._writer = conn

    async def _run(self, pool: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def write_many(self, records: Sequence[PredictionRecord]) -> None:
        if records:
            await self._run(self._writer_pool, self._write_many, list(records))

    def _write_many(self, records: list[PredictionRecord]) -> None:
        assert self._writer is not None
        marks = ",".join("?" * len(RECORD_FIELDS))
        # Encoded here, on the writer's thread: a batch's JSON would stall the event loop.
        rows = [row_values(r) for r in records]
        with _transaction(self._writer):
            self._writer.executemany(
                f"INSERT OR REPLACE INTO predictions ({','.join(RECORD_FIELDS)}) VALUES ({marks})",
                rows,
            )

    async def join_label(self, feedback: Feedback) -> JoinResult:
        result: JoinResult = await self._run(self._writer_pool, self._join_label, feedback)
        return result

    def _join_label(self, fb: Feedback) -> JoinResult:
        assert self._writer is not None
        which_product, upsert = label_statements(lambda _n: "?")
        with _transaction(self._writer):
            found = self._writer.execute(which_product, (fb.request_id,)).fetchone()
            refused = label_refused(None if found is None else found[0], fb)
            if refused is not None:
                return refused
            self._writer.execute(upsert, label_values(fb))
        return "joined"

    async def window(
        self,
        product: Product,
        arm: str,
        since: float,
        until: float,
        role: Role | None = None,
    ) -> list[LoggedPrediction]:
        rows: list[LoggedPrediction] = await self._run(
            self._reader_pool, self._window, product, arm, since, until, role
        )
        return rows

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = self._connect()
        return self._reader

    def _window(
        self, product: str, arm: str, since: float, until: float, role: str | None
    ) -> list[LoggedPrediction]:
        # Grouped and decoded here, on the reader's thread: a canary window's JSON would stall
        # the event loop that answers requests.
        query, args = window_query(lambda _n: "?", product, arm, since, until, role)
        return group_window_rows(self._read().execute(query, args).fetchall())

    async def count(self, product: Product | None = None) -> int:
        result: int = await self._run(self._reader_pool, self._count, product)
        return result

    def _count(self, product: str | None) -> int:
        query, args = count_query(lambda _n: "?", product)
        return int(self._read().execute(query, args).fetchone()[0])

    async def close(self) -> None:
        def close_conn(which: str) -> None:
            conn = getattr(self, which)
            if conn is not None:
                conn.close()
                setattr(self, which, None)

        await self._run(self._writer_pool, close_conn, "_writer")
        await self._run(self._reader_pool, close_conn, "_reader")
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Any:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
