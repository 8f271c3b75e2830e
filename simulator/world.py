"""The world on a clock (stack component `world`): simulated days pass faster than real time;
while they pass the world sends a sample of each day's transactions and sessions to the router
at their simulated time, posts late labels to `/v1/feedback` when they come due, and lands
each closed day as raw batches (then emits `mlsd.batch.landed`).

What lands is what was served: the transactions sent live are rows of the day's batch, and a
session the platform recommended for lands as the slate it served and what the listener did.
The whole day lands (a sample of it is sent live), so the offline store keeps the world's full
volume while the two cores serve a rate a person chooses (`mlsd traffic start --rps N`).

The world talks to the platform only over HTTP and the files it lands (it imports no platform
package); it emits its events through `mlsd.events`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import heapq
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pandas as pd

import mlsd.events as events
from mlsd.settings import WORLDS, Settings
from simulator.clock import DayPlan, SimClock, day_start, sample_mask
from simulator.days import Listeners, fraud_body, plan_day, sessions_of
from simulator.landing_zone import emit_quietly, first_open_day, land_again, land_closed_day
from simulator.router_client import CALL_FAILURES, RouterClient, RouterTransport
from simulator.scenarios import SCENARIOS, get_scenario

__all__ = ["World", "first_open_day"]
_SERVED_ID_BASE = 5_000_000  # served sessions' interaction ids, above any simulated ones


# The same mask for every tick of a day at one rate (drawing it cost 0.3 ms a tick).
_sample_mask = functools.lru_cache(maxsize=8)(sample_mask)


@dataclass
class Traffic:
    on: bool = False
    fraud_rps: float = 0.0
    recs_rps: float = 0.0


@dataclass
class Live:
    """One world's day in play: its plan, what was sent of it, and the sample to send."""

    plan: DayPlan
    units: pd.DataFrame  # transactions (fraud) or sessions (recsys), in time order
    cursor: int = 0
    served: list[dict[str, Any]] = field(default_factory=list)
    listeners: Listeners | None = None
    reported: dict[int, pd.Timestamp] = field(default_factory=dict)  # fraud: tx id -> chargeback


@dataclass
class Counters:
    sent: Counter[str] = field(default_factory=Counter)
    ok: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    shed: Counter[str] = field(default_factory=Counter)
    arms: Counter[str] = field(default_factory=Counter)  # "<product>/<arm>" -> answers
    labels_posted: int = 0
    feedback_errors: int = 0
    days_landed: int = 0
    last_landed: dict[str, str] = field(default_factory=dict)


class World:
    """The running world. `tick()` does everything due at the current wall time; `run()` ticks
    until stopped. Control calls (`set_traffic`, `inject`, `clear`) take effect at once."""

    def __init__(
        self,
        settings: Settings,
        *,
        wall: Callable[[], float] = time.monotonic,
        transport: RouterTransport | None = None,
        emit: Callable[..., Any] = events.emit,
    ) -> None:
        self.settings = settings
        self.cfg = settings.world
        self.wall = wall
        self.emit = emit
        self.router = RouterClient(settings.world_router_url, self.cfg, transport)
        saved = self._load_state()
        day = dt.date.fromisoformat(saved["day"]) if saved.get("day") else None
        self.day = day or first_open_day(settings)
        self.clock = SimClock(day_start(self.day), wall(), self.cfg.seconds_per_day)
        self.scenarios: dict[str, str | None] = {w: None for w in WORLDS}
        self.scenario_since: dict[str, str] = {}
        for product, name in (saved.get("scenarios") or {}).items():
            if product in self.scenarios and name:
                self.scenarios[product] = name
                self.scenario_since[product] = saved["scenario_since"][product]
        self.traffic = Traffic(
            on=self.cfg.start_traffic, fraud_rps=self.cfg.fraud_rps, recs_rps=self.cfg.recs_rps
        )
        self.counters = Counters()
        self.labels: list[
            tuple[float, str, int]
        ] = []  # (due, simulated epoch s; request_id, label)
        self.live: dict[str, Live] = {}
        self.in_flight = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.lock = asyncio.Lock()
        self.stopping = False

    # --- state -------------------------------------------------------------------------------
    def _state_path(self) -> Any:
        return self.settings.world_dir / "state.json"

    def _load_state(self) -> dict[str, Any]:
        path = self._state_path()
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return {}

    def save_state(self) -> None:
        """The day in play and the scenarios: a restarted world resumes that day (the same day
        again, the simulation being deterministic) under the same scenarios."""
        path = self._state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        state = {
            "day": self.day.isoformat(),
            "scenarios": self.scenarios,
            "scenario_since": self.scenario_since,
        }
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, path)

    # --- the clock ---------------------------------------------------------------------------
    def now(self) -> dt.datetime:
        return self.clock.sim_at(self.wall())

    def _defect_index(self, product: str, day: dt.date) -> int:
        since = self.scenario_since.get(product)
        return (day - dt.date.fromisoformat(since[:10])).days if since else 0

    def _plan(self, product: str, day: dt.date) -> DayPlan:
        return plan_day(
            self.settings, product, day, self.scenarios[product], self._defect_index(product, day)
        )

    def _live(self, product: str, plan: DayPlan) -> Live:
        if product == "fraud":
            units = plan.batches["transactions"].sort_values("event_timestamp", kind="stable")
            chargebacks = plan.batches["chargebacks"]
            reported = dict(
                zip(
                    chargebacks["transaction_id"].astype(int),
                    pd.to_datetime(chargebacks["reported_at"], utc=True),
                    strict=True,
                )
            )
            return Live(plan, units.reset_index(drop=True), reported=reported)
        live = Live(plan, sessions_of(plan.batches["interactions"]))
        live.listeners = Listeners(self.settings, plan.day, plan.scenario)
        return live

    async def start_day(self) -> None:
        plans = await asyncio.gather(*(asyncio.to_thread(self._plan, p, self.day) for p in WORLDS))
        for product, plan in zip(WORLDS, plans, strict=True):
            self.live[product] = await asyncio.to_thread(self._live, product, plan)
        self.save_state()

    # --- control -----------------------------------------------------------------------------
    def set_traffic(self, on: bool, fraud_rps: float | None, recs_rps: float | None) -> None:
        self.traffic.on = on
        if fraud_rps is not None:
            self.traffic.fraud_rps = fraud_rps
        if recs_rps is not None:
            self.traffic.recs_rps = recs_rps

    async def inject(self, product: str, scenario: str | None) -> dict[str, Any]:
        """Switch `product`'s world to `scenario` (None: back to normal) from now on: the rest of
        today's traffic and batch, and every later day.

        A broken feed (a data-defect scenario), once cleared, re-sends what it broke, as an
        upstream team does after its fix: today's batch lands whole and sound, and each closed
        day since the break lands again (`backfill` in its event). Quarantined days would
        otherwise stay holes in the windowed features, and the holes read as drift."""
        chosen = get_scenario(scenario, product)  # ValueError names the known ones
        backfill: list[dt.date] = []
        async with self.lock:
            previous = self.scenarios[product]
            broken_since = self.scenario_since.get(product)
            self.scenarios[product] = None if chosen.name == "none" else chosen.name
            fixed = (
                previous is not None
                and self.scenarios[product] is None
                and get_scenario(previous, product).kind == "data-defect"
            )
            at = self.now()
            if self.scenarios[product]:
                self.scenario_since[product] = at.isoformat()
            else:
                self.scenario_since.pop(product, None)
            live = self.live.get(product)
            if live is not None:
                day = live.plan.day
                plan = await asyncio.to_thread(self._plan, product, day)
                at = max(self.now(), day_start(day))
                # Fixed, the whole day is re-sent: the switch reaches back to its start.
                switch_at = day_start(day) if fixed else at
                live.plan.switch(switch_at, self.scenarios[product], plan.batches, plan.truth)
                fresh = await asyncio.to_thread(self._live, product, live.plan)
                cut = pd.Timestamp(at)
                fresh.cursor = int((fresh.units["event_timestamp"] < cut).sum())
                fresh.served = live.served
                self.live[product] = fresh
                if fixed and broken_since and self.cfg.land_days:
                    first = dt.date.fromisoformat(broken_since[:10])
                    backfill = [first + dt.timedelta(days=i) for i in range((day - first).days)]
            self.save_state()
        for broken_day in backfill:
            await asyncio.to_thread(land_again, self.settings, product, broken_day, self.emit)
        payload = {
            "scenario": chosen.name,
            "previous": previous or "none",
            "kind": chosen.kind,
            "summary": chosen.summary,
            "simulated_at": at.isoformat(),
        }
        name = events.DRIFT_INJECTED if self.scenarios[product] else events.DRIFT_CLEARED
        emit_quietly(self.emit, name, events.world_resource(product), payload)
        return payload

    # --- the loop ----------------------------------------------------------------------------
    async def run(self, tick_seconds: float = 0.02) -> None:
        await self.start_day()
        try:
            while not self.stopping:
                await self.tick()
                await asyncio.sleep(tick_seconds)
        finally:
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.router.close()

    async def tick(self) -> None:
        async with self.lock:
            now = self.now()
            for product in WORLDS:
                self._send_due(product, now)
            self._post_due_labels(now)
            if now >= day_start(self.day + dt.timedelta(days=1)):
                await self._close_day()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _send_due(self, product: str, now: dt.datetime) -> None:
        live = self.live.get(product)
        if live is None or live.units.empty:
            return
        times = live.units["event_timestamp"]
        cut = pd.Timestamp(now)
        end = int(times.searchsorted(cut, side="right"))
        if end <= live.cursor:
            return
        rate = self.traffic.fraud_rps if product == "fraud" else self.traffic.recs_rps
        if self.traffic.on and rate > 0:
            mask = _sample_mask(
                len(live.units),
                rate,
                self.cfg.seconds_per_day,
                self.settings.simulator.seed,
                live.plan.day,
            )
            due = [i for i in range(live.cursor, end) if mask[i]]
            room = max(self.cfg.max_in_flight - self.in_flight, 0)
            self.counters.shed[product] += max(len(due) - room, 0)
            # One frame slice per tick: a row at a time through .iloc cost 50 us each.
            rows = live.units.iloc[due[:room]].to_dict("records") if room else []
            for record in rows:
                row = {str(k): v for k, v in record.items()}
                self.in_flight += 1
                if product == "fraud":
                    self._spawn(self._score(live, row))
                else:
                    self._spawn(self._recommend(live, row))
        live.cursor = end

    async def _post(self, product: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.counters.sent[product] += 1
        try:
            status, content = await self.router.post(path, body)
        except CALL_FAILURES as err:
            self.counters.errors[f"{product}: {type(err).__name__}"] += 1
            return None
        finally:
            self.in_flight -= 1
        if status != 200:
            self.counters.errors[f"{product}: HTTP {status}"] += 1
            return None
        try:
            answer = dict(orjson.loads(content))
        except (orjson.JSONDecodeError, TypeError, ValueError):
            self.counters.errors[f"{product}: not a JSON object"] += 1
            return None
        self.counters.ok[product] += 1
        self.counters.arms[f"{product}/{answer.get('arm', '?')}"] += 1
        return answer

    async def _score(self, live: Live, row: dict[str, Any]) -> None:
        answer = await self._post("fraud", "/v1/fraud/score", fraud_body(row))
        if answer is None:
            return
        reported = live.reported.get(int(row["transaction_id"]))
        if reported is not None:
            due, label = reported, 1
        else:
            due = pd.Timestamp(row["event_timestamp"]) + pd.Timedelta(
                days=self.cfg.legit_label_after_days
            )
            label = 0
        heapq.heappush(self.labels, (due.timestamp(), answer["request_id"], label))

    async def _recommend(self, live: Live, row: dict[str, Any]) -> None:
        k = self.settings.simulator.recsys.slate_size
        at = pd.Timestamp(row["event_timestamp"])
        body = {"user_id": row["user_id"], "k": k, "timestamp": at.isoformat()}
        answer = await self._post("recsys", "/v1/recs", body)
        if answer is None or live.listeners is None:
            return
        items = [i["item_id"] for i in answer.get("items", [])]
        plays = live.listeners.plays(row["user_id"], items)
        live.served.append(
            {
                "session_id": int(row["session_id"]),
                "user_id": row["user_id"],
                "at": at,
                "items": items,
                "plays": plays,
                "first_interaction_id": live.plan.day.toordinal() * 10_000_000
                + _SERVED_ID_BASE
                + 100 * len(live.served),
            }
        )
        for item, played in zip(items, plays, strict=True):
            if played:  # plays and skips are known at once; a skip sends nothing
                self._spawn(self._feedback({"request_id": answer["request_id"], "item_id": item}))

    async def _feedback(self, body: dict[str, Any]) -> None:
        try:
            status, _ = await self.router.post("/v1/feedback", body)
            ok = status == 200
        except CALL_FAILURES:
            ok = False
        if ok:
            self.counters.labels_posted += 1
        else:
            self.counters.feedback_errors += 1

    def _post_due_labels(self, now: dt.datetime) -> None:
        horizon = now.timestamp()
        while self.labels and self.labels[0][0] <= horizon:
            _, request_id, label = heapq.heappop(self.labels)
            self._spawn(self._feedback({"request_id": request_id, "label": label}))

    async def _close_day(self) -> None:
        closed = {p: self.live[p] for p in WORLDS if p in self.live}
        day = self.day
        self.day = day + dt.timedelta(days=1)
        await self.start_day()
        if self.cfg.land_days:
            for product, live in closed.items():
                await asyncio.to_thread(
                    land_closed_day, self.settings, product, live.plan, live.served, self.emit
                )
                self.counters.last_landed[product] = live.plan.day.isoformat()
        self.counters.days_landed += 1

    # --- what `mlsd status` shows ------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self.now()
        c = self.counters
        return {
            "clock": {
                "simulated_now": now.isoformat(timespec="seconds"),
                "day": self.day.isoformat(),
                "seconds_per_day": self.cfg.seconds_per_day,
                "speed": round(self.clock.speed, 1),
            },
            "traffic": {
                "on": self.traffic.on,
                "fraud_rps": self.traffic.fraud_rps,
                "recs_rps": self.traffic.recs_rps,
                "in_flight": self.in_flight,
            },
            "scenarios": {p: self.scenarios[p] or "none" for p in WORLDS},
            "scenario_since": dict(self.scenario_since),
            "sent": dict(c.sent),
            "ok": dict(c.ok),
            "errors": dict(c.errors),
            "shed": dict(c.shed),
            "arms": dict(c.arms),
            "labels": {
                "posted": c.labels_posted,
                "pending": len(self.labels),
                "errors": c.feedback_errors,
            },
            "days_landed": c.days_landed,
            "last_landed": dict(c.last_landed),
            "known_scenarios": {
                p: sorted(s.name for s in SCENARIOS.values() if s.world == p) for p in WORLDS
            },
        }
