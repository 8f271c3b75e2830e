"""The world on a clock: simulated time, live requests drawn from the day that lands, late
labels when due, scenarios switched mid-day, and the control API's clear 4xx.

The router is stood in for by a transport that answers in process here (these tests are about
the world, not the router); the loop's end-to-end test drives the real one."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from mlsd import events
from mlsd.cli import app as cli
from mlsd.netutil import free_port
from mlsd.settings import Settings
from simulator.clock import SimClock, day_start, sample_mask
from simulator.control import create_app
from simulator.days import plan_day
from simulator.world import World, first_open_day


def lab(tmp_path, **world: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "lab",
        world={"seconds_per_day": 2.0, "fraud_rps": 50.0, "recs_rps": 5.0, **world},
        simulator={"fraud": {"n_cards": 2000}, "recsys": {"n_users": 400, "n_items": 300}},
    )


class FakeRouter:
    """Answers like the router's public API (as the world's transport) and remembers every
    body it was sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def request(self, method: str, path: str, content: bytes | None) -> tuple[int, bytes]:
        assert method == "POST" and content is not None
        status, answer = self.answer(path, json.loads(content))
        return status, json.dumps(answer).encode()

    async def close(self) -> None:
        pass

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls.append((path, body))
        rid = f"{len(self.calls):032x}"
        if path == "/v1/fraud/score":
            if "amount" not in body:
                return 422, {"detail": "amount: field required"}
            return 200, {"request_id": rid, "score": 0.1}
        if path == "/v1/recs":
            return 200, {"request_id": rid, "items": [{"item_id": "i_000001"}]}
        return 200, {"request_id": body["request_id"], "joined": True}

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [b for p, b in self.calls if p == path]


def run_world(settings: Settings, seconds: float, actions: dict[int, Any] | None = None):
    router, emitted, wall = FakeRouter(), [], [0.0]

    async def go() -> World:
        world = World(
            settings,
            wall=lambda: wall[0],
            transport=router,
            emit=lambda *a: emitted.append(a),
        )
        await world.start_day()
        world.set_traffic(True, None, None)
        for step in range(int(seconds / 0.02)):
            wall[0] += 0.02
            if actions and step in actions:
                await actions[step](world)
            await world.tick()
            await asyncio.sleep(0)
        await asyncio.gather(*world.tasks)
        return world

    return asyncio.run(go()), router, emitted


def test_the_clock_runs_a_day_in_the_configured_seconds():
    clock = SimClock(day_start(dt.date(2026, 3, 1)), 100.0, 20.0)
    assert clock.sim_at(110.0) == dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    assert clock.wall_at(dt.datetime(2026, 3, 3, tzinfo=dt.UTC)) == pytest.approx(140.0)
    with pytest.raises(ValueError):
        SimClock(dt.datetime(2026, 3, 1), 0.0, 20.0)  # naive time


def test_a_higher_rate_keeps_the_events_already_chosen():
    low = sample_mask(10_000, 10, 20, 7, dt.date(2026, 3, 1))
    high = sample_mask(10_000, 40, 20, 7, dt.date(2026, 3, 1))
    assert (high | low).sum() == high.sum()  # every low pick is a high pick
    assert 150 < low.sum() < 250 and 700 < high.sum() < 900


def test_the_world_starts_the_day_after_what_has_landed(tmp_path):
    s = lab(tmp_path)
    assert first_open_day(s) == s.simulator.start_date + dt.timedelta(days=s.simulator.days)
    landed = s.archive_dir / "fraud" / "transactions" / "2026-03-04.parquet"
    landed.parent.mkdir(parents=True)
    landed.write_bytes(b"")
    assert first_open_day(s) == dt.date(2026, 3, 5)


def test_live_requests_are_rows_of_the_day_that_lands(tmp_path):
    s = lab(tmp_path)
    world, router, emitted = run_world(s, seconds=2.1)  # one day and a bit
    sent = router.bodies("/v1/fraud/score")
    assert 60 < len(sent) < 140  # 50 req/s for 2 s, Poisson-ish
    day = world.counters.last_landed["fraud"]
    landed = pd.read_parquet(s.raw_dir / "fraud" / "transactions" / f"{day}.parquet")
    keys = set(zip(landed["card_id"], landed["amount"].round(2), strict=True))
    sent = [b for b in sent if b["timestamp"].startswith(day)]
    assert sent and all((b["card_id"], round(b["amount"], 2)) in keys for b in sent)
    stamps = [b["timestamp"] for b in sent]
    assert stamps == sorted(stamps)  # sent at their simulated time
    assert (s.raw_dir / "recsys" / "interactions" / f"{day}.parquet").exists()
    landed_events = [e for e in emitted if e[0] == events.BATCH_LANDED]
    assert {e[1]["prefect.resource.id"] for e in landed_events} == {
        "mlsd.world.fraud",
        "mlsd.world.recsys",
    }
    assert landed_events[0][2]["rows"]["transactions"] == len(landed)


def test_late_labels_are_posted_when_due(tmp_path):
    s = lab(tmp_path, legit_label_after_days=1.0, fraud_rps=200.0)
    s = s.model_copy(
        update={
            "simulator": s.simulator.model_copy(
                update={
                    "fraud": s.simulator.fraud.model_copy(
                        update={
                            "chargeback_delay_days_mean": 1.5,
                            "account_takeovers_per_day": 200.0,
                        }
                    )
                }
            )
        }
    )
    world, router, _ = run_world(s, seconds=6.0)  # three days
    feedback = router.bodies("/v1/feedback")
    labels = [b for b in feedback if "label" in b]
    assert {b["label"] for b in labels} == {0, 1}
    answered = {f"{i + 1:032x}" for i, (p, _) in enumerate(router.calls) if p == "/v1/fraud/score"}
    assert {b["request_id"] for b in labels} <= answered
    # Legit labels come one simulated day after their transaction: those of the last day wait.
    assert world.status()["labels"]["pending"] > 0


def test_the_world_sends_to_the_configured_router(tmp_path):
    """Over real HTTP, to a socket server standing in for the router; on a cluster the router is
    a Service, not client_host (infra/k8s/base/world.yaml)."""
    seen: list[tuple[str, str]] = []

    async def router(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the world closed its connection
            lines = head.decode().split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:] if line)
            body = json.loads(await reader.readexactly(int(headers["Content-Length"])))
            seen.append((lines[0], body.get("request_id", "")))
            answer = json.dumps({"request_id": "r1", "joined": True}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
            await writer.drain()

    async def go() -> None:
        server = await asyncio.start_server(router, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        world = World(lab(tmp_path, router_url=f"http://127.0.0.1:{port}/"), emit=lambda *a: None)
        world.in_flight += 1
        assert await world._post("fraud", "/v1/fraud/score", {"amount": 1.0}) == {
            "request_id": "r1",
            "joined": True,
        }
        await world._feedback({"request_id": "r1", "label": 0})
        await world.router.close()
        server.close()

    asyncio.run(go())
    assert seen == [("POST /v1/fraud/score HTTP/1.1", ""), ("POST /v1/feedback HTTP/1.1", "r1")]
    cluster = World(
        lab(tmp_path, router_url="http://router.mlsd.svc.cluster.local:8080/"), emit=lambda *a: None
    )
    assert (cluster.router.transport.host, cluster.router.transport.port) == (
        "router.mlsd.svc.cluster.local",
        8080,
    )


def test_a_router_that_is_down_is_counted_not_raised(tmp_path):
    async def go() -> World:
        world = World(
            lab(tmp_path, router_url=f"http://127.0.0.1:{free_port()}"), emit=lambda *a: None
        )
        world.in_flight += 1
        assert await world._post("fraud", "/v1/fraud/score", {"amount": 1.0}) is None
        await world._feedback({"request_id": "r1", "label": 0})
        return world

    world = asyncio.run(go())
    assert world.in_flight == 0
    assert world.counters.errors == {"fraud: ConnectionRefusedError": 1}
    assert world.counters.feedback_errors == 1


def test_a_scenario_switched_mid_day_changes_the_rest_of_the_day(tmp_path):
    s = lab(tmp_path)

    async def inject(world: World) -> None:
        await world.inject("fraud", "amount-inflation")

    world, router, emitted = run_world(s, seconds=2.05, actions={50: inject})  # at noon
    day = dt.date.fromisoformat(world.counters.last_landed["fraud"])
    landed = pd.read_parquet(s.raw_dir / "fraud" / "transactions" / f"{day.isoformat()}.parquet")
    normal = plan_day(s, "fraud", day, None).batches["transactions"]
    noon = pd.Timestamp(dt.datetime.combine(day, dt.time(12), dt.UTC))
    assert landed["transaction_id"].is_unique
    before, after = (
        landed[landed["event_timestamp"] < noon],
        landed[landed["event_timestamp"] >= noon],
    )
    assert before["amount"].median() == pytest.approx(
        normal.loc[normal["event_timestamp"] < noon, "amount"].median()
    )
    assert (
        after["amount"].median()
        > 1.5 * normal.loc[normal["event_timestamp"] >= noon, "amount"].median()
    )
    injected = [e for e in emitted if e[0] == events.DRIFT_INJECTED]
    assert injected and injected[0][2]["scenario"] == "amount-inflation"
    assert world.status()["scenarios"]["fraud"] == "amount-inflation"
    sent_after = [b for b in router.bodies("/v1/fraud/score") if b["timestamp"] >= noon.isoformat()]
    assert sent_after  # live traffic follows the scenario too


def test_schema_break_sends_what_the_broken_feed_holds(tmp_path):
    s = lab(tmp_path)

    async def inject(world: World) -> None:
        await world.inject("fraud", "schema-break")

    world, router, _ = run_world(s, seconds=1.0, actions={0: inject})
    sent = router.bodies("/v1/fraud/score")
    assert sent and all("amount_usd" in b and "amount" not in b for b in sent)
    assert world.status()["errors"]["fraud: HTTP 422"] == len(sent)


def test_a_fixed_upstream_re_sends_the_days_it_broke(tmp_path):
    """Cleared, a data defect's days land again, sound: the closed ones re-sent (`backfill`),
    today's whole; what landed broken is replaced (the gate then accepts and un-quarantines)."""
    s = lab(tmp_path)

    async def inject(world: World) -> None:
        await world.inject("fraud", "schema-break")

    async def clear(world: World) -> None:
        await world.inject("fraud", None)

    # Broken from the first day's start to the third day's noon (a day lasts 2 s, 100 steps).
    world, _, emitted = run_world(s, seconds=6.1, actions={0: inject, 250: clear})
    landed = [
        e[2]
        for e in emitted
        if e[0] == events.BATCH_LANDED and e[1]["prefect.resource.name"] == "fraud"
    ]
    first = dt.date.fromisoformat(landed[0]["day"])
    broken_days = [first, first + dt.timedelta(days=1)]
    assert [p["day"] for p in landed if p.get("backfill")] == [d.isoformat() for d in broken_days]
    for day in [*broken_days, first + dt.timedelta(days=2)]:
        tx = pd.read_parquet(s.raw_dir / "fraud" / "transactions" / f"{day.isoformat()}.parquet")
        normal = plan_day(s, "fraud", day, None).batches["transactions"]
        assert "amount_usd" not in tx and tx["card_id"].notna().all()
        assert tx["amount"].median() == pytest.approx(normal["amount"].median())
    # The day cleared at noon landed once, at its close, whole: no backfill of it.
    third = [p for p in landed if p["day"] == (first + dt.timedelta(days=2)).isoformat()]
    assert len(third) == 1 and not third[0].get("backfill")
    assert world.status()["scenarios"]["fraud"] == "none"


def test_a_cleared_drift_is_not_re_sent(tmp_path):
    """Only a broken feed is re-sent: a covariate drift's days happened as they landed."""

    async def inject(world: World) -> None:
        await world.inject("fraud", "amount-inflation")

    async def clear(world: World) -> None:
        await world.inject("fraud", None)

    _, _, emitted = run_world(lab(tmp_path), seconds=3.1, actions={0: inject, 150: clear})
    assert not [e for e in emitted if e[0] == events.BATCH_LANDED and e[2].get("backfill")]


def test_the_control_api_names_the_field_and_what_is_possible(tmp_path):
    world = World(lab(tmp_path), emit=lambda *a: None)
    app = create_app(world)

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://world") as client:
            return [
                await client.put("/drift/fraud", json={"scenario": "alien-invasion"}),
                await client.put("/drift/fraud", json={"scenario": "taste-shift"}),
                await client.put("/drift/weather", json={"scenario": "amount-inflation"}),
                await client.put("/traffic", json={"fraud_rps": -1}),
                await client.put("/traffic", json={"rps": 3}),
                await client.put("/drift/fraud", json={"scenario": "amount-inflation"}),
            ]

    unknown, other_world, bad_product, negative, extra, ok = asyncio.run(calls())
    assert unknown.status_code == 422
    assert "scenario" in unknown.json()["detail"] and "amount-inflation" in unknown.json()["detail"]
    assert other_world.status_code == 422 and "schema-break" in other_world.json()["detail"]
    assert bad_product.status_code == 422
    assert negative.status_code == 422 and negative.json()["detail"][0]["loc"][-1] == "fraud_rps"
    assert extra.status_code == 422 and extra.json()["detail"][0]["loc"][-1] == "rps"
    assert ok.status_code == 200 and world.scenarios["fraud"] == "amount-inflation"


def test_the_cli_says_when_the_world_is_not_running(tmp_path, monkeypatch):
    monkeypatch.setenv("MLSD_WORLD__PORT", str(free_port()))
    monkeypatch.setenv("MLSD_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(cli, ["drift", "inject", "fraud", "--scenario", "amount-inflation"])
    assert result.exit_code == 1
    assert "world is not running" in result.output and "mlsd up" in result.output
    result = runner.invoke(cli, ["drift", "inject", "fraud", "--scenario", "alien-invasion"])
    assert result.exit_code == 2
    assert "amount-inflation" in result.output and "schema-break" in result.output
    assert runner.invoke(cli, ["traffic", "stop"]).exit_code == 1


def test_a_session_served_just_before_midnight_lands_inside_its_day(tmp_path):
    # The gate quarantines a whole day's batch for one row past midnight (seen in the demo).
    from simulator.days import served_interactions

    settings = lab(tmp_path)
    day = dt.date(2026, 3, 12)
    template = plan_day(settings, "recsys", day, None, 0).batches["interactions"]
    late = {
        "at": "2026-03-12T23:59:58+00:00",
        "session_id": 1,
        "user_id": "u1",
        "first_interaction_id": 10,
        "items": [f"i{k}" for k in range(10)],
        "plays": [k % 2 == 0 for k in range(10)],
    }
    early = {**late, "at": "2026-03-12T08:00:00+00:00", "session_id": 2}
    rows = served_interactions([late, early], template)
    assert set(rows["event_timestamp"].dt.date) == {day}
    for _, session in rows.groupby("session_id"):
        gaps = session.sort_values("position")["event_timestamp"].diff().dropna()
        assert (gaps == pd.Timedelta(seconds=3)).all()
    assert rows.loc[rows.session_id == 2, "event_timestamp"].min() == pd.Timestamp(
        "2026-03-12T08:00:00+00:00"
    )
