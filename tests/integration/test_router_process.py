"""The router as a real process on a free port, in front of real HTTP upstreams.

The upstreams here are the V2 TEST DOUBLE (tests/support/router_v2_double.py): these tests
are about the router's own behaviour (split over real HTTP, shadow isolation, a dying upstream,
a SIGTERM mid-traffic), which must not depend on what a model predicts. Tests of the router in
front of the real model servers: tests/integration/test_router_lab.py.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from mlsd.netutil import free_port, http_ok
from mlsd.telemetry import QUIET_LIBRARIES
from serving.traffic import assign_arm

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOUBLE = Path(__file__).parents[1] / "support" / "router_v2_double.py"
TOKEN = "integration-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def tx(card: str, amount: float = 25.0) -> dict[str, Any]:
    return {
        "card_id": card,
        "merchant_id": "m_0007",
        "amount": amount,
        "country": "GB",
        "device_id": "dev_9",
        "timestamp": "2026-03-01T08:30:00Z",
    }


@dataclass
class Proc:
    """A server process this test started (and will stop)."""

    popen: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return int(self.popen.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _spawn(argv: list[str], env: dict[str, str], log_path: Path, health: str) -> Proc:
    log_file = log_path.open("wb")
    popen = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO)
    log_file.close()
    proc = Proc(popen, "", log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{argv} exited {popen.returncode}:\n{proc.log()}")
        if http_ok(health, timeout=1.0):
            return proc
        time.sleep(0.1)
    proc.stop(signal.SIGKILL)
    raise RuntimeError(f"{argv} not healthy in 60 s:\n{proc.log()}")


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSD_", "MLFLOW_"))}
    return {**env, **QUIET_LIBRARIES}


def start_double(tmp: Path, product: str, models: str) -> Proc:
    port = free_port()
    proc = _spawn(
        [
            sys.executable,
            str(DOUBLE),
            "--product",
            product,
            "--models",
            models,
            "--port",
            str(port),
        ],
        base_env(),
        tmp / f"double-{product}-{port}.log",
        f"http://127.0.0.1:{port}/v2/health/ready",
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc


def start_router(
    data_dir: Path,
    fraud: str,
    recsys: str,
    port: int | None = None,
    router_env: dict[str, str] | None = None,
) -> Proc:
    port = port or free_port()
    env = {
        **base_env(),
        "MLSD_DATA_DIR": str(data_dir),
        "MLSD_ROUTER__PORT": str(port),
        "MLSD_ROUTER__FRAUD_UPSTREAM": fraud,
        "MLSD_ROUTER__RECSYS_UPSTREAM": recsys,
        "MLSD_ROUTER__ADMIN_TOKEN": TOKEN,
        "MLSD_ROUTER__REGISTRY_URI": "",
        "MLSD_ROUTER__FALLBACK_ONLINE_FEATURES": "false",
        # Behaviour, not speed: a budget the double always meets on a busy machine (the tests
        # that want timeouts set their own).
        "MLSD_ROUTER__MODEL_TIMEOUT_MS": "2000",
        **{f"MLSD_ROUTER__{k.upper()}": v for k, v in (router_env or {}).items()},
    }
    proc = _spawn(
        [sys.executable, "-m", "serving.router"],
        env,
        data_dir / f"router-{port}.log",
        f"http://127.0.0.1:{port}/healthz",
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc


@dataclass
class World:
    tmp: Path
    fraud: Proc
    recsys: Proc
    routers: list[Proc] = field(default_factory=list)

    def router(self, data_dir: Path | None = None, **router_env: str) -> Proc:
        data_dir = data_dir or self.tmp / f"lab-{len(self.routers)}"
        data_dir.mkdir(exist_ok=True)
        proc = start_router(data_dir, self.fraud.url, self.recsys.url, router_env=router_env)
        self.routers.append(proc)
        return proc

    def configure_fraud(self, **config: Any) -> None:
        httpx.post(f"{self.fraud.url}/_double/config", json=config).raise_for_status()

    def fraud_stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.fraud.url}/_double/stats").json()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(
        tmp_path,
        start_double(tmp_path, "fraud", "fraud-v1"),
        start_double(tmp_path, "recsys", "recsys-v1"),
    )
    try:
        yield w
    finally:
        for proc in [*w.routers, w.fraud, w.recsys]:
            proc.stop()


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: Any
    elapsed: float  # seconds

    def json(self) -> Any:
        return self.body


async def fire(
    url: str,
    bodies: list[dict[str, Any]],
    path: str = "/v1/fraud/score",
    concurrency: int = 32,
    hang_s: float | None = None,
) -> list[Answer | Exception]:
    """POST every body, `concurrency` at a time; exceptions are returned, not raised. (aiohttp:
    the load generator shares the machine's 2 cores with what it measures.) `hang_s`: raise
    TimeoutError if the whole batch is not answered by then (it catches a hang, it measures
    nothing)."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector) as session:
        gate = asyncio.Semaphore(concurrency)

        async def one(body: dict[str, Any]) -> Answer | Exception:
            async with gate:
                started = time.perf_counter()
                try:
                    async with session.post(path, json=body) as response:
                        payload = await response.json(content_type=None)
                        return Answer(response.status, payload, time.perf_counter() - started)
                except Exception as err:
                    return err

        async with asyncio.timeout(hang_s):
            return await asyncio.gather(*(one(b) for b in bodies))


def admin(router: Proc, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
    response = httpx.request(method, f"{router.url}{path}", headers=AUTH, json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def log_rows(data_dir: Path, where: str = "1 = 1") -> list[tuple]:
    with sqlite3.connect(data_dir / "router" / "predictions.db") as conn:
        return conn.execute(
            f"SELECT request_id, role, arm, answered_by, degraded FROM predictions WHERE {where}"
        ).fetchall()


# --- tests -----------------------------------------------------------------------------------


def test_admin_api_needs_the_token_over_http(world: World):
    router = world.router()
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = httpx.post(
            f"{router.url}/admin/fraud/canary/start",
            json={"percent": 5, "version": 2},
            headers=headers,
        )
        assert response.status_code == 401
    assert httpx.get(f"{router.url}/admin/status").status_code == 401
    assert TOKEN not in router.log()  # never logged


def test_split_is_proportional_and_sticky_over_http(world: World):
    router = world.router()
    started = admin(router, "POST", "/admin/fraud/canary/start", {"version": 2, "percent": 30})
    assert started["routing"]["challenger"] == 2
    assert world.fraud_stats()["loads"] == ["fraud-v2"]  # the V2 repository load happened
    cards = [f"card_{i:06d}" for i in range(1_500)]
    first = asyncio.run(fire(router.url, [tx(c) for c in cards]))
    assert all(isinstance(r, Answer) and r.status_code == 200 for r in first)
    arms = {c: r.json()["arm"] for c, r in zip(cards, first, strict=True)}  # type: ignore[union-attr]
    share = sum(a == "challenger" for a in arms.values()) / len(cards)
    assert abs(share - 0.30) <= 5 * math.sqrt(0.3 * 0.7 / len(cards))
    assert all(arms[c] == assign_arm(c, "canary-fraud-v2", 30) for c in cards)
    again = asyncio.run(fire(router.url, [tx(c, amount=99.0) for c in cards[:300]]))
    assert all(r.json()["arm"] == arms[c] for c, r in zip(cards[:300], again, strict=True))  # type: ignore[union-attr]
    # Ramp up: everyone already on the challenger stays there.
    admin(router, "PUT", "/admin/fraud/canary", {"percent": 60})
    ramped = asyncio.run(fire(router.url, [tx(c) for c in cards]))
    moved_back = [
        c
        for c, r in zip(cards, ramped, strict=True)
        if arms[c] == "challenger" and r.json()["arm"] == "champion"  # type: ignore[union-attr]
    ]
    assert moved_back == []


def test_shadow_never_changes_the_response_nor_waits_for_the_challenger(world: World):
    # The double holds every call to the challenger until released, and a shadow call may take
    # 10 min: until the release, no shadow call can end (neither answered nor timed out).
    router = world.router(shadow_workers="2", shadow_queue_size="50", shadow_timeout_ms="600000")
    cards = [f"card_{i:06d}" for i in range(200)]
    plain = asyncio.run(fire(router.url, [tx(c) for c in cards], concurrency=8))
    admin(router, "POST", "/admin/fraud/shadow/start", {"version": 2})
    world.configure_fraud(hold=["fraud-v2"])
    try:
        # Were an answer to wait for its shadow, it would wait for the release: a hang.
        shadowed = asyncio.run(fire(router.url, [tx(c) for c in cards], concurrency=8, hang_s=120))
        # Every answer is back and the challenger has answered no shadow call yet.
        assert world.fraud_stats()["infers"].get("fraud-v2", 0) == 0
        strip = ("request_id",)
        for a, b in zip(plain, shadowed, strict=True):
            assert isinstance(a, Answer) and isinstance(b, Answer)
            assert {k: v for k, v in a.json().items() if k not in strip} == {
                k: v for k, v in b.json().items() if k not in strip
            }
        # Each of the 2 workers took a batch (1 to shadow_batch_max=64 copies) and waits at
        # the double; the queue holds 50 more; the rest were dropped and counted (offer never
        # waits for room).
        status = admin(router, "GET", "/admin/status")["shadow"]
        in_flight = 200 - status["pending"] - status["dropped"]
        assert (status["offered"], status["pending"], status["batches"]) == (200, 50, 2)
        assert (status["done"], status["failed"], status["skipped"]) == (0, 0, 0)
        assert 2 <= in_flight <= 2 * 64
    finally:
        world.configure_fraud(release=True)
    # Released: the batches in hand and the 50 queued are answered and logged.
    kept = 200 - status["dropped"]
    deadline = time.monotonic() + 60  # catches a hang only
    while (status := admin(router, "GET", "/admin/status")["shadow"])["done"] < kept:
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert (status["done"], status["failed"], status["pending"]) == (kept, 0, 0)
    assert status["offered"] == 200 and status["dropped"] == 200 - kept
    # One row per copy, in fewer calls than copies: the queued 50 went in one batch.
    stats = world.fraud_stats()
    assert stats["rows"]["fraud-v2"] == kept
    assert stats["infers"]["fraud-v2"] == status["batches"] == 3
    data_dir = Path(router.log_path).parent
    deadline = time.monotonic() + 60  # the log writer flushes every 200 ms
    while len(shadows := log_rows(data_dir, "role = 'shadow'")) < kept:
        assert time.monotonic() < deadline, len(shadows)
        time.sleep(0.2)
    assert len(shadows) == kept
    served_ids = {r[0] for r in log_rows(data_dir, "role = 'served'")}
    assert {r[0] for r in shadows} <= served_ids  # one request id, both rows
    assert len({r[0] for r in shadows}) == kept  # each copy its own
    assert {(r[2], r[3]) for r in shadows} == {("challenger", "fraud/2")}


def test_killing_the_upstream_mid_traffic_gives_degraded_answers_not_errors(world: World):
    router = world.router(model_timeout_ms="200", breaker_cooldown_seconds="60")
    # The router learnt the recommender's popularity list at start.
    deadline = time.monotonic() + 10
    while admin(router, "GET", "/admin/status")["popularity"]["items"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)

    async def traffic() -> tuple[list[Any], list[Any]]:
        fraud_answers: list[Any] = []
        recs_answers: list[Any] = []
        for i in range(30):
            if i == 10:
                world.fraud.stop(signal.SIGKILL)
                world.recsys.stop(signal.SIGKILL)
            fraud_answers += await fire(router.url, [tx(f"c{i}_{j}", 5_000.0) for j in range(10)])
            recs_answers += await fire(
                router.url, [{"user_id": f"u{i}_{j}", "k": 5} for j in range(5)], path="/v1/recs"
            )
        return fraud_answers, recs_answers

    fraud_answers, recs_answers = asyncio.run(traffic())
    assert all(isinstance(r, Answer) for r in fraud_answers + recs_answers)
    assert {r.status_code for r in fraud_answers + recs_answers} == {200}
    before, after = fraud_answers[:100], fraud_answers[100:]
    assert not any(r.json()["degraded"] for r in before)
    assert all(r.json()["degraded"] for r in after)
    assert {r.json()["model_version"] for r in after} == {"rules:request"}
    assert {r.json()["decision"] for r in after} == {"block"}  # 5000 USD: the amount rule
    recs_after = recs_answers[50:]
    assert all(r.json()["degraded"] and r.json()["path"] == "popularity" for r in recs_after)
    assert all(len(r.json()["items"]) == 5 for r in recs_after)


def traffic_until_signal(router: Proc, sig: int, before_signal: int) -> list[str]:
    """Fraud requests from 16 clients until `before_signal` answers came back, then `sig` to
    the router mid-traffic; the request ids of every answer received (acknowledged)."""
    acknowledged: list[str] = []

    async def traffic() -> None:
        enough = asyncio.Event()
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(
            base_url=router.url, limits=limits, timeout=10, trust_env=False
        ) as client:

            async def worker(w: int) -> None:
                for i in range(100_000):
                    try:
                        response = await client.post("/v1/fraud/score", json=tx(f"c{w}_{i}"))
                    except httpx.HTTPError:
                        return  # the router is gone: what it answered before is what counts
                    if response.status_code == 200:
                        acknowledged.append(response.json()["request_id"])
                        if len(acknowledged) >= before_signal:
                            enough.set()

            async def stopper() -> None:
                # Stop mid-traffic once enough rows are acknowledged (the timeout catches a hang).
                async with asyncio.timeout(120):
                    await enough.wait()
                router.popen.send_signal(sig)

            await asyncio.gather(*(worker(w) for w in range(16)), stopper())

    asyncio.run(traffic())
    assert len(acknowledged) >= before_signal  # the signal came after these, mid-traffic
    return acknowledged


def test_sigterm_mid_traffic_loses_no_acknowledged_row(world: World):
    # A long flush interval and a big batch: almost every row is still in memory at the stop.
    router = world.router(log_flush_ms="60000", log_batch_size="100000", log_journal="false")
    data_dir = Path(router.log_path).parent
    acknowledged = traffic_until_signal(router, signal.SIGTERM, before_signal=300)
    # uvicorn stops gracefully, then re-raises the signal: the exit status says SIGTERM.
    assert router.popen.wait(30) in (0, -signal.SIGTERM), router.log()
    assert "Application shutdown complete" in router.log()
    logged = {r[0] for r in log_rows(data_dir)}
    missing = set(acknowledged) - logged
    print(f"{len(acknowledged)} acknowledged, {len(logged)} logged at the stop")
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged rows lost"


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "no-journal"])
def test_sigkill_under_load_loses_no_acknowledged_row_with_the_journal(world: World, journal: bool):
    """SIGKILL: no shutdown runs, the writer's queue dies with the process. With the journal the
    next start replays it and no acknowledged row is missing; without it (the control that
    shows this test can see a loss) every row still queued is gone."""
    # The batch never fills and the interval never ends: every row is in memory at the kill.
    env = {"log_flush_ms": "60000", "log_batch_size": "100000", "log_journal": str(journal)}
    router = world.router(**env)
    data_dir = Path(router.log_path).parent
    acknowledged = traffic_until_signal(router, signal.SIGKILL, before_signal=300)
    assert router.popen.wait(30) == -signal.SIGKILL
    again = start_router(data_dir, world.fraud.url, world.recsys.url, router_env=env)
    world.routers.append(again)
    assert again.stop() in (0, -signal.SIGTERM)
    missing = set(acknowledged) - {r[0] for r in log_rows(data_dir)}
    print(f"journal={journal}: {len(missing)} of {len(acknowledged)} acknowledged rows missing")
    if journal:
        assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged rows lost"
        assert "replayed" in again.log()
    else:
        assert missing == set(acknowledged)


def test_routing_state_survives_a_router_restart(world: World):
    data_dir = world.tmp / "restart"
    data_dir.mkdir()
    port = free_port()
    first = start_router(data_dir, world.fraud.url, world.recsys.url, port=port)
    world.routers.append(first)
    admin(first, "POST", "/admin/fraud/canary/start", {"version": 2, "percent": 25})
    assert first.stop() in (0, -signal.SIGTERM)
    second = start_router(data_dir, world.fraud.url, world.recsys.url, port=port)
    world.routers.append(second)
    routing = admin(second, "GET", "/admin/fraud/status")
    assert routing["split"]["kind"] == "canary" and routing["split"]["challenger_percent"] == 25
    assert routing["champion"] == 1 and routing["challenger"] == 2
