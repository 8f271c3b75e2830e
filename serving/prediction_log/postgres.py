"""The PostgreSQL prediction log (profiles scale and k8s), through asyncpg."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from mlsd.settings import PostgresPredictionLogSettings
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

_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT NOT NULL,
    role TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    product TEXT NOT NULL,
    entity TEXT NOT NULL,
    arm TEXT NOT NULL,
    experiment TEXT,
    model_version TEXT NOT NULL,
    answered_by TEXT NOT NULL,
    inputs JSONB NOT NULL,
    features JSONB,
    output JSONB NOT NULL,
    score DOUBLE PRECISION,
    decision TEXT,
    latency_ms DOUBLE PRECISION NOT NULL,
    degraded BOOLEAN NOT NULL,
    degraded_reason TEXT,
    error TEXT,
    PRIMARY KEY (request_id, role)
);
CREATE INDEX IF NOT EXISTS predictions_by_arm_time ON predictions (product, arm, at);
CREATE TABLE IF NOT EXISTS labels (
    request_id TEXT NOT NULL,
    item_id TEXT NOT NULL DEFAULT '',
    label INTEGER,
    event TEXT,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (request_id, item_id)
);
"""


class PostgresPredictionLog(PredictionLog):
    """PostgreSQL through asyncpg (already installed with Prefect's server; no new dependency),
    natively async: a connection pool, no threads."""

    def __init__(self, config: PostgresPredictionLogSettings) -> None:
        self.config = config
        self._pool: Any = None

    async def open(self) -> PostgresPredictionLog:
        import asyncpg  # JSON columns travel as text, as the SQLite log's do

        self._pool = await asyncpg.create_pool(
            self.config.dsn, min_size=1, max_size=self.config.pool_size
        )
        # Concurrent first starts (router and a monitoring job) must not race on the DDL.
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7232001)")
            await conn.execute(_POSTGRES_SCHEMA)
        return self

    async def write_many(self, records: Sequence[PredictionRecord]) -> None:
        if not records:
            return
        marks = ", ".join(f"${i + 1}" for i in range(len(RECORD_FIELDS)))
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in RECORD_FIELDS if c not in ("request_id", "role")
        )
        # Encoded on a thread, as the SQLite log does: a batch's JSON would stall the loop.
        rows = await asyncio.to_thread(lambda: [row_values(r) for r in records])
        async with self._pool.acquire() as conn:
            await conn.executemany(
                f"INSERT INTO predictions ({', '.join(RECORD_FIELDS)}) VALUES ({marks}) "
                f"ON CONFLICT (request_id, role) DO UPDATE SET {updates}",
                rows,
            )

    async def join_label(self, feedback: Feedback) -> JoinResult:
        which_product, upsert = label_statements(lambda n: f"${n}")
        async with self._pool.acquire() as conn, conn.transaction():
            product = await conn.fetchval(which_product, feedback.request_id)
            refused = label_refused(product, feedback)
            if refused is not None:
                return refused
            await conn.execute(upsert, *label_values(feedback))
        return "joined"

    async def window(
        self,
        product: Product,
        arm: str,
        since: float,
        until: float,
        role: Role | None = None,
    ) -> list[LoggedPrediction]:
        query, args = window_query(lambda n: f"${n}", product, arm, since, until, role)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(query, *args)
        # Decoded on a thread, as the SQLite log does: a window's JSON would stall the loop.
        return await asyncio.to_thread(group_window_rows, [tuple(r) for r in rows])

    async def count(self, product: Product | None = None) -> int:
        query, args = count_query(lambda n: f"${n}", product)
        async with self._pool.acquire() as conn:
            return int(await conn.fetchval(query, *args))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
