"""Live traffic: the simulated world sends requests to the router, as its users would over HTTP.

Requests come from the same world as the landed batches (the day after them, by default), so
the router sees realistic cards, devices and listeners, including cold-start ones.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from mlsd.settings import Settings
from simulator.landing import simulate_frames


@dataclass
class TrafficReport:
    """What was sent and how it went, client side."""

    sent: int = 0
    ok: int = 0
    degraded: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    arms: dict[str, int] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        return {
            "sent": self.sent,
            "ok": self.ok,
            "degraded": self.degraded,
            "errors": self.errors,
            "arms": self.arms,
            "p50_ms": float(np.nanpercentile(lat, 50)),
            "p99_ms": float(np.nanpercentile(lat, 99)),
        }


def fraud_requests(
    settings: Settings, n: int, seed: int, day: dt.date | None = None
) -> list[dict[str, Any]]:
    """`n` transactions of a day the platform has not seen, as `POST /v1/fraud/score` bodies.

    The day is simulated from the landed world's own seed (its cards, merchants and devices);
    `seed` only picks which of the day's transactions are sent."""
    day = day or settings.simulator.start_date + dt.timedelta(days=settings.simulator.days)
    world_seed = settings.simulator.seed
    tx = simulate_frames(settings, "fraud", days=1, seed=world_seed, start=day)["transactions"]
    tx = tx.sample(n=min(n, len(tx)), random_state=seed).sort_values("event_timestamp")
    columns = ["card_id", "merchant_id", "amount", "country", "device_id", "event_timestamp"]
    records: list[dict[Any, Any]] = tx[columns].to_dict("records")
    return [
        {
            "card_id": r["card_id"],
            "merchant_id": r["merchant_id"],
            "amount": float(r["amount"]),
            "country": r["country"],
            "device_id": r["device_id"],
            "timestamp": r["event_timestamp"].isoformat(),
        }
        for r in records
    ]


def recs_requests(settings: Settings, n: int, seed: int, k: int = 10) -> list[dict[str, Any]]:
    """`n` recommendation requests from the world's listeners (a few never seen before)."""
    rng = np.random.default_rng(seed)
    sim = settings.simulator
    # Listeners of day 0 plus each later day's sign-ups; ids past them are cold starts.
    users = sim.recsys.n_users + sim.recsys.new_users_per_day * max(sim.days - 1, 0)
    ids = rng.integers(1, int(users * 1.05) + 1, size=n)
    now = dt.datetime.combine(
        settings.simulator.start_date + dt.timedelta(days=settings.simulator.days),
        dt.time(12),
        dt.UTC,
    )
    return [{"user_id": f"u_{i:06d}", "k": k, "timestamp": now.isoformat()} for i in ids.tolist()]


async def send(
    url: str,
    bodies: list[dict[str, Any]],
    rate_per_s: float,
    concurrency: int = 32,
    timeout_s: float = 5.0,
) -> TrafficReport:
    """POST every body at an open-loop rate (arrivals do not wait for answers), bounded in time."""
    report = TrafficReport()
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:

        async def one(body: dict[str, Any]) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    response = await client.post(url, json=body)
                except httpx.HTTPError as err:
                    key = type(err).__name__
                    report.errors[key] = report.errors.get(key, 0) + 1
                    return
                report.latencies_ms.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    key = str(response.status_code)
                    report.errors[key] = report.errors.get(key, 0) + 1
                    return
                payload = response.json()
                report.ok += 1
                report.degraded += bool(payload.get("degraded"))
                arm = str(payload.get("arm", "?"))
                report.arms[arm] = report.arms.get(arm, 0) + 1
                if "request_id" in payload:
                    report.request_ids.append(payload["request_id"])

        tasks = []
        begun = time.perf_counter()
        for i, body in enumerate(bodies):
            delay = begun + i / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body)))
            report.sent += 1
        await asyncio.gather(*tasks)
    return report
