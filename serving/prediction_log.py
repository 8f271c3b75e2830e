"""The prediction log: every answer of the router (served and shadow), labels joined later by
request id, and the batched writer that keeps all of it off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import orjson

from mlsd.settings import (
    PostgresPredictionLogSettings,
    Settings,
    SqlitePredictionLogSettings,
)
from serving.names import Product

log = logging.getLogger(__name__)

Role = Literal["served", "shadow"]
JoinResult = Literal["joined", "unknown_request", "wrong_product"]


@dataclass(frozen=True)
class PredictionRecord:
    """One answer to one request by one arm. A shadowed request has two: role served and shadow."""

    request_id: str
    role: Role
    at: float  # epoch seconds (UTC) when the request arrived
    product: Product
    entity: str  # card_id or user_id: the key the split hashes
    arm: str  # champion | challenger
    experiment: str | None  # the split (A/B experiment or canary) that assigned the arm
    model_version: str  # the version the arm routes to ("fraud/4"), "" when none is known
    answered_by: str  # what gave the answer: "fraud/4", "fraud/3", "rules", "popularity", ...
    inputs: dict[str, Any]  # the request as received
    features: dict[str, Any] | None  # features used, where the router has them
    output: dict[str, Any]  # the answer as returned
    score: float | None  # fraud: the score; recs: the top item's score
    decision: str | None  # fraud: block | allow; recs: recommend
    latency_ms: float
    degraded: bool
    degraded_reason: str | None
    error: str | None  # why the arm's own model did not answer (None: it did)


@dataclass(frozen=True)
class LoggedPrediction(PredictionRecord):
    """A logged prediction with its label, when one has arrived. Fraud: 1 fraud, 0 legitimate.
    Recs: 1 when the listener clicked or played one of the recommended items, else 0."""

    label: int | None = None


@dataclass(frozen=True)
class Feedback:
    """What happened after a prediction: a fraud label, or an item the listener engaged with."""

    request_id: str
    product: Product
    at: float
    label: int | None = None  # fraud
    item_id: str | None = None  # recs
    event: str | None = None  # recs: click | play


_RECORD_FIELDS = [f.name for f in fields(PredictionRecord)]
_JSON_FIELDS = {"inputs", "features", "output"}


def window_query(
    placeholder: Callable[[int], str],
    product: str,
    arm: str,
    since: float,
    until: float,
    role: str | None,
) -> tuple[str, list[Any]]:
    """One arm's predictions in [since, until) with their labels, for either SQL dialect
    (`placeholder(n)` writes the n-th parameter: `?` for SQLite, `$n` for PostgreSQL)."""
    columns = ", ".join(f"p.{c}" for c in _RECORD_FIELDS)
    args: list[Any] = [product, arm, since, until]
    query = (
        f"SELECT {columns}, l.item_id, l.label FROM predictions p "
        "LEFT JOIN labels l ON l.request_id = p.request_id "
        f"WHERE p.product = {placeholder(1)} AND p.arm = {placeholder(2)} "
        f"AND p.at >= {placeholder(3)} AND p.at < {placeholder(4)}"
    )
    if role is not None:
        args.append(role)
        query += f" AND p.role = {placeholder(5)}"
    return query + " ORDER BY p.at, p.request_id, p.role", args


def label_statements(placeholder: Callable[[int], str]) -> tuple[str, str]:
    """(which product logged a request id, upsert of its label), for either SQL dialect."""
    values = ", ".join(placeholder(n) for n in range(1, 6))
    return (
        f"SELECT product FROM predictions WHERE request_id = {placeholder(1)} LIMIT 1",
        f"INSERT INTO labels (request_id, item_id, label, event, at) VALUES ({values}) "
        "ON CONFLICT (request_id, item_id) DO UPDATE SET "
        "label = excluded.label, event = excluded.event, at = excluded.at",
    )


def label_refused(logged_product: str | None, feedback: Feedback) -> JoinResult | None:
    """Why a label cannot join (the request is unknown, or of another product), or None."""
    if logged_product is None:
        return "unknown_request"
    return "wrong_product" if logged_product != feedback.product else None


def label_values(feedback: Feedback) -> tuple[Any, ...]:
    return (
        feedback.request_id,
        feedback.item_id or "",
        feedback.label,
        feedback.event,
        feedback.at,
    )


def count_query(placeholder: Callable[[int], str], product: str | None) -> tuple[str, list[Any]]:
    if product is None:
        return "SELECT count(*) FROM predictions", []
    return f"SELECT count(*) FROM predictions WHERE product = {placeholder(1)}", [product]


# --- the interface ---------------------------------------------------------------------------


class PredictionLog(ABC):
    """Where predictions and labels are kept. Async, because the router calls it from its event
    loop; implementations that block do so on their own threads."""

    @abstractmethod
    async def write_many(self, records: Sequence[PredictionRecord]) -> None:
        """Append records (one transaction; a record already logged is replaced)."""

    @abstractmethod
    async def join_label(self, feedback: Feedback) -> JoinResult:
        """Attach feedback to the predictions of its request id (both roles)."""

    @abstractmethod
    async def window(
        self,
        product: Product,
        arm: str,
        since: float,
        until: float,
        role: Role | None = None,
    ) -> list[LoggedPrediction]:
        """One arm's predictions with since <= at < until (epoch seconds), labels joined."""

    @abstractmethod
    async def count(self, product: Product | None = None) -> int:
        """Rows logged (both roles), for status pages and tests."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; everything written so far stays."""


_ORJSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _row_values(record: PredictionRecord) -> tuple[Any, ...]:
    values = []
    for name in _RECORD_FIELDS:
        value = getattr(record, name)
        if name in _JSON_FIELDS:
            # orjson: the writer thread holds the GIL while it encodes, and the event loop
            # waits for it; json.dumps of a batch's features was most of that time. (NaN is
            # written as null: JSON has no NaN, and PostgreSQL's jsonb refuses one.)
            value = None if value is None else orjson.dumps(value, option=_ORJSON).decode()
        values.append(value)
    return tuple(values)


def _labelled(row: dict[str, Any], labels: list[tuple[str, int | None]]) -> LoggedPrediction:
    """A row with its label: fraud takes the label as given; recs scores a hit when any item the
    listener engaged with was among the row's own items (served and shadow differ)."""
    for name in _JSON_FIELDS:
        if isinstance(row[name], str):
            row[name] = orjson.loads(row[name])
    row["degraded"] = bool(row["degraded"])
    label: int | None = None
    if labels and row["product"] == "fraud":
        label = next((int(v) for item, v in labels if item == "" and v is not None), None)
    elif labels:
        shown = {i.get("item_id") for i in (row["output"] or {}).get("items", [])}
        label = int(any(item in shown for item, _ in labels if item))
    return LoggedPrediction(**row, label=label)


def _group_window_rows(raw: Sequence[Sequence[Any]]) -> list[LoggedPrediction]:
    # The query is a left join on labels: one line per (prediction, label), in prediction order.
    out: list[LoggedPrediction] = []
    current: dict[str, Any] | None = None
    labels: list[tuple[str, int | None]] = []
    n = len(_RECORD_FIELDS)
    for line in raw:
        key = (line[0], line[1])
        if current is None or key != (current["request_id"], current["role"]):
            if current is not None:
                out.append(_labelled(current, labels))
            current, labels = dict(zip(_RECORD_FIELDS, line[:n], strict=True)), []
        if line[n] is not None:
            labels.append((line[n], line[n + 1]))
    if current is not None:
        out.append(_labelled(current, labels))
    return out


# --- SQLite (profile local) ------------------------------------------------------------------

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
        marks = ",".join("?" * len(_RECORD_FIELDS))
        # Encoded here, on the writer's thread: a batch's JSON would stall the event loop.
        rows = [_row_values(r) for r in records]
        with _transaction(self._writer):
            self._writer.executemany(
                f"INSERT OR REPLACE INTO predictions ({','.join(_RECORD_FIELDS)}) VALUES ({marks})",
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
        return _group_window_rows(self._read().execute(query, args).fetchall())

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


# --- PostgreSQL (profiles scale and k8s) -----------------------------------------------------

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
        marks = ", ".join(f"${i + 1}" for i in range(len(_RECORD_FIELDS)))
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in _RECORD_FIELDS if c not in ("request_id", "role")
        )
        # Encoded on a thread, as the SQLite log does: a batch's JSON would stall the loop.
        rows = await asyncio.to_thread(lambda: [_row_values(r) for r in records])
        async with self._pool.acquire() as conn:
            await conn.executemany(
                f"INSERT INTO predictions ({', '.join(_RECORD_FIELDS)}) VALUES ({marks}) "
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
        return await asyncio.to_thread(_group_window_rows, [tuple(r) for r in rows])

    async def count(self, product: Product | None = None) -> int:
        query, args = count_query(lambda n: f"${n}", product)
        async with self._pool.acquire() as conn:
            return int(await conn.fetchval(query, *args))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


async def open_prediction_log(settings: Settings) -> PredictionLog:
    """The prediction log the settings choose (`router.prediction_log.type`)."""
    config = settings.router.prediction_log
    if isinstance(config, SqlitePredictionLogSettings):
        return SqlitePredictionLog(config, settings)
    return await PostgresPredictionLog(config).open()


# --- the batched writer ----------------------------------------------------------------------


@dataclass
class WriterStats:
    """What the writer did so far (shown by /admin/status)."""

    submitted: int = 0
    written: int = 0
    dropped: int = 0  # the queue was full (the log is down or far behind)
    failed: int = 0  # a batch the log refused, after retries
    batches: int = 0

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
    to a graceful stop."""

    def __init__(
        self,
        log: PredictionLog,
        batch_size: int,
        flush_interval_s: float,
        max_pending: int,
        retries: int = 3,
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

    def start(self) -> None:
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
            if not await self._process(items):
                return

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
