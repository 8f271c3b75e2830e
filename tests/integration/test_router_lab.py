"""The router in front of the real KServe model servers of a trained lab, with the real MLflow
registry and the lab's Feast online store: champion from the registry, a canary loaded through
the V2 repository API, promote and rollback moving the aliases, and both fallbacks."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pandas as pd
import pytest

from mlsd.netutil import free_port
from mlsd.registry import ModelRegistry
from tests.integration.lab import Lab
from tests.integration.test_router_process import AUTH, TOKEN, Proc, _spawn, admin, fire

pytestmark = pytest.mark.integration


def start_model_server(lab: Lab, product: str, versions: list[str]) -> Proc:
    from serving.launch import model_server_argv

    port = free_port()
    argv = model_server_argv(product, lab.settings, versions)  # type: ignore[arg-type]
    argv[argv.index("--http-port") + 1] = str(port)
    argv[argv.index("--grpc-port") + 1] = str(free_port())
    proc = _spawn(
        argv,
        dict(lab.env),
        lab.settings.data_dir / f"router-test-{product}-server-{port}.log",
        f"http://127.0.0.1:{port}/v2/models/{product}-v{versions[0]}/ready",
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc


def start_lab_router(lab: Lab, fraud: Proc, recsys: Proc, **router_env: str) -> Proc:
    # Each router of this module starts from no routing state: the registry decides.
    (lab.settings.data_dir / "router" / "routing.json").unlink(missing_ok=True)
    port = free_port()
    env = {
        **lab.env,
        "MLSD_ROUTER__PORT": str(port),
        "MLSD_ROUTER__FRAUD_UPSTREAM": fraud.url,
        "MLSD_ROUTER__RECSYS_UPSTREAM": recsys.url,
        "MLSD_ROUTER__ADMIN_TOKEN": TOKEN,
        "MLSD_ROUTER__REGISTRY_URI": lab.tracking_uri,
        # These tests are about routing, not speed, and share 2 cores with the whole lab: a
        # budget the model servers always meet (the 50 ms default is for a quiet machine).
        "MLSD_ROUTER__MODEL_TIMEOUT_MS": "5000",
        **{f"MLSD_ROUTER__{k.upper()}": v for k, v in router_env.items()},
    }
    proc = _spawn(
        [sys.executable, "-m", "serving.router"],
        env,
        lab.settings.data_dir / f"router-{port}.log",
        f"http://127.0.0.1:{port}/healthz",
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc


@dataclass
class Servers:
    fraud: Proc
    recsys: Proc


@pytest.fixture
def servers(trained_lab: Lab) -> Iterator[Servers]:
    fraud = start_model_server(trained_lab, "fraud", [trained_lab.fraud_versions[0]])
    try:
        recsys = start_model_server(trained_lab, "recsys", [trained_lab.recsys_versions[0]])
    except Exception:
        fraud.stop()
        raise
    try:
        yield Servers(fraud, recsys)
    finally:
        fraud.stop()
        recsys.stop()


@pytest.fixture
def aliases_restored(trained_lab: Lab) -> Iterator[ModelRegistry]:
    """The lab is shared by the session: put the fraud aliases back as they were."""
    registry = ModelRegistry(trained_lab.tracking_uri)
    name = trained_lab.fraud_model_name
    before = registry.aliases(name)
    try:
        yield registry
    finally:
        for alias in ("champion", "challenger", "previous"):
            if registry.version_of(name, alias) != before.get(alias):
                registry.move_alias(name, alias, before.get(alias), "test_router_lab: restore")


def latest_transaction(lab: Lab) -> dict[str, Any]:
    tx = pd.read_parquet(lab.settings.offline_dir / "fraud" / "transactions")
    row = tx.sort_values("event_timestamp").iloc[-1]
    return {
        "card_id": str(row["card_id"]),
        "merchant_id": str(row["merchant_id"]),
        "amount": float(row["amount"]),
        "country": str(row["country"]),
        "device_id": str(row["device_id"]),
        "timestamp": row["event_timestamp"].isoformat(),
    }


def wait_for(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def test_router_routes_to_the_registry_champion_and_logs_it(trained_lab: Lab, servers: Servers):
    router = start_lab_router(trained_lab, servers.fraud, servers.recsys)
    try:
        champion = trained_lab.fraud_versions[0]
        tx = latest_transaction(trained_lab)
        body = httpx.post(f"{router.url}/v1/fraud/score", json=tx, timeout=30).json()
        assert body["model_version"] == f"fraud/{champion}" and body["degraded"] is False
        assert body["cold_start"] is False and body["arm"] == "champion"
        stranger = httpx.post(
            f"{router.url}/v1/fraud/score", json={**tx, "card_id": "card_never_seen"}, timeout=30
        ).json()
        assert stranger["cold_start"] is True and stranger["degraded"] is False
        recs = httpx.post(f"{router.url}/v1/recs", json={"user_id": "user_never_seen", "k": 5})
        assert recs.json()["path"] == "popularity" and recs.json()["degraded"] is False
        assert len(recs.json()["items"]) == 5
        ack = httpx.post(
            f"{router.url}/v1/feedback", json={"request_id": body["request_id"], "label": 0}
        )
        assert ack.status_code == 200, ack.text
    finally:
        router.stop()


def test_canary_loads_promotes_and_rolls_back_through_registry_and_server(
    trained_lab: Lab, servers: Servers, aliases_restored: ModelRegistry
):
    registry, name = aliases_restored, trained_lab.fraud_model_name
    first, second = (int(v) for v in trained_lab.fraud_versions)
    # The retrain may have been gated out; a canary needs a challenger either way.
    registry.move_alias(name, "challenger", str(second), "test_router_lab: challenger")
    router = start_lab_router(trained_lab, servers.fraud, servers.recsys)
    try:
        started = admin(router, "POST", "/admin/fraud/canary/start", {"percent": 100})
        assert started["routing"]["challenger"] == second  # from the registry's @challenger
        assert second in started["routing"]["loaded"]  # loaded on the real server
        tx = latest_transaction(trained_lab)
        body = httpx.post(f"{router.url}/v1/fraud/score", json=tx, timeout=30).json()
        assert body["arm"] == "challenger" and body["model_version"] == f"fraud/{second}"
        assert body["degraded"] is False
        promoted = admin(router, "POST", "/admin/fraud/promote", {"reason": "test: promote"})
        assert promoted["routing"]["champion"] == second
        assert registry.version_of(name, "champion") == str(second)
        assert registry.version_of(name, "previous") == str(first)
        rolled = admin(router, "POST", "/admin/fraud/rollback", {"reason": "test: rollback"})
        assert rolled["action"] == "champion_restored"
        assert registry.version_of(name, "champion") == str(first)
        body = httpx.post(f"{router.url}/v1/fraud/score", json=tx, timeout=30).json()
        assert body["model_version"] == f"fraud/{first}"
        history = [e.reason for e in registry.history(name)]
        assert "test: promote" in history and "test: rollback" in history
    finally:
        router.stop()


def test_an_interrupted_rollout_withdraws_its_canary_and_moves_no_alias(
    trained_lab: Lab, servers: Servers, aliases_restored: ModelRegistry
):
    from serving.admin import AdminClient
    from serving.rollout import RampPlan, run_ramp

    registry, name = aliases_restored, trained_lab.fraud_model_name
    first, second = (int(v) for v in trained_lab.fraud_versions)
    registry.move_alias(name, "challenger", str(second), "test_router_lab: challenger")
    champion_before = registry.version_of(name, "champion")
    router = start_lab_router(trained_lab, servers.fraud, servers.recsys)
    polls = 0

    def operator_presses_ctrl_c_on_the_second_poll(_seconds: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 2:
            raise KeyboardInterrupt

    plan = RampPlan((25.0, 100.0), min_step_seconds=60.0, max_step_seconds=120.0, poll_seconds=0)
    try:
        with AdminClient(router.url, TOKEN) as client, pytest.raises(KeyboardInterrupt):
            run_ramp(
                client,
                "fraud",
                plan,
                second,
                sleep=operator_presses_ctrl_c_on_the_second_poll,
                log=lambda _m: None,
            )
        routing = admin(router, "GET", "/admin/fraud/status")
        assert (routing["challenger"], routing["split"]) == (None, None)
        assert routing["champion"] == first
        last = routing["history"][-1]
        assert last["action"] == "challenger_withdrawn"
        assert "rollout controller failed: KeyboardInterrupt" in last["detail"]
        assert registry.version_of(name, "champion") == champion_before
        tx = latest_transaction(trained_lab)
        body = httpx.post(f"{router.url}/v1/fraud/score", json=tx, timeout=30).json()
        assert (body["arm"], body["model_version"]) == ("champion", f"fraud/{first}")
    finally:
        router.stop()


def test_an_experiment_started_by_hand_mid_ramp_makes_the_controller_stand_aside(
    trained_lab: Lab, servers: Servers, aliases_restored: ModelRegistry
):
    """The controller ramps a canary; a person starts an A/B on the same challenger. The
    experiment keeps the traffic: the controller neither withdraws nor promotes, and a second
    controller is refused its canary while the experiment runs."""
    from serving.admin import AdminClient
    from serving.rollout import RampPlan, run_ramp

    registry, name = aliases_restored, trained_lab.fraud_model_name
    first, second = (int(v) for v in trained_lab.fraud_versions)
    registry.move_alias(name, "challenger", str(second), "test_router_lab: challenger")
    router = start_lab_router(trained_lab, servers.fraud, servers.recsys)
    experiment = {"experiment": "by-hand", "challenger_percent": 50, "metric": "error_rate"}
    polls = 0

    def person_starts_an_experiment_on_the_second_poll(_seconds: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 2:
            admin(router, "PUT", "/admin/fraud/split", experiment)

    plan = RampPlan((25.0, 100.0), min_step_seconds=60.0, max_step_seconds=120.0, poll_seconds=0)
    try:
        with AdminClient(router.url, TOKEN) as client:
            result = run_ramp(
                client,
                "fraud",
                plan,
                second,
                sleep=person_starts_an_experiment_on_the_second_poll,
                log=lambda _m: None,
            )
            assert result["result"] == "stood_aside"
            assert "experiment by-hand" in result["reason"]
            routing = admin(router, "GET", "/admin/fraud/status")
            assert routing["split"]["kind"] == "experiment"
            assert (routing["champion"], routing["challenger"]) == (first, second)
            assert routing["history"][-1]["action"] == "experiment_started"
            # A controller that comes later does not take the traffic either.
            again = run_ramp(client, "fraud", plan, second, sleep=lambda _s: None, log=print)
            assert again["result"] == "stood_aside" and again["steps"] == []
        assert admin(router, "GET", "/admin/fraud/status")["split"]["name"] == "by-hand"
        assert registry.version_of(name, "champion") == str(first)
    finally:
        router.stop()


def test_dead_model_servers_degrade_to_rules_on_online_features_and_popularity(
    trained_lab: Lab, servers: Servers
):
    # The Feast lookup of the rule fallback has its own budget (150 ms by default); on 2 busy
    # cores a lookup may miss that, and the answer drops to the request-only rule. This test is
    # about the fallback chain, not its speed: a budget every lookup meets.
    router = start_lab_router(
        trained_lab, servers.fraud, servers.recsys, features_timeout_ms="10000"
    )
    try:
        # The rule fallback's Feast lookup warms in the background; popularity is learnt from
        # the real recommender's cold-start answer.
        wait_for(
            lambda: admin(router, "GET", "/admin/status")["online_features"] == "ready",
            90,
            "the online feature store in the router",
        )
        wait_for(
            lambda: admin(router, "GET", "/admin/status")["popularity"]["items"] > 0,
            30,
            "the popularity list",
        )
        popular = admin(router, "GET", "/admin/status")["popularity"]
        assert "recsys-v" in popular["source"]
        servers.fraud.stop(signal.SIGKILL)
        servers.recsys.stop(signal.SIGKILL)
        tx = latest_transaction(trained_lab)
        answers = asyncio.run(fire(router.url, [{**tx, "amount": 9_000.0}] * 20, concurrency=2))
        assert all(not isinstance(a, Exception) and a.status_code == 200 for a in answers)
        bodies = [a.json() for a in answers]  # type: ignore[union-attr]
        assert all(b["degraded"] for b in bodies)
        # Every answer is the rule over the card's real features (not the request-only rule):
        # 9000 USD against the card's mean.
        assert all(b["model_version"] == "rules" for b in bodies), bodies
        assert all("amount_over_card_mean" in b["reasons"] for b in bodies), bodies
        assert all(b["degraded_reason"].endswith("; answered by rules") for b in bodies), bodies
        recs = httpx.post(f"{router.url}/v1/recs", json={"user_id": "u1", "k": 5}, timeout=30)
        assert recs.status_code == 200
        assert recs.json()["path"] == "popularity" and recs.json()["degraded"] is True
        assert len(recs.json()["items"]) == 5
    finally:
        router.stop()


def test_the_canary_reads_a_challengers_own_training_scores_from_the_registry(
    trained_lab: Lab, tmp_path
):
    """What the score-distribution guardrail holds a challenger to besides the champion: the
    scores in the monitoring reference its training run logged, read from the real MLflow.
    (Only the registry side of the router's control is exercised: no server, no log.)"""
    from serving.router.control import RoutingControl
    from serving.router.discovery import RegistryLink
    from serving.routing_state import RoutingStore

    store = RoutingStore(tmp_path / "routing.json")
    control = RoutingControl(
        store,
        RegistryLink(trained_lab.settings, store),
        servers=None,  # type: ignore[arg-type]
        writer=lambda: None,  # type: ignore[arg-type,return-value]
    )
    registry = ModelRegistry(trained_lab.tracking_uri)
    fraud = trained_lab.fraud_versions[-1]
    logged = registry.reference(trained_lab.fraud_model_name, fraud)
    assert logged is not None and len(logged) >= 100
    scores = asyncio.run(control.reference_scores("fraud", int(fraud)))
    assert scores == tuple(logged["score"].tolist())
    # The recommender logs no reference: its canary keeps the champion's rule alone.
    recsys = int(trained_lab.recsys_versions[-1])
    assert asyncio.run(control.reference_scores("recsys", recsys)) is None


def test_admin_api_of_the_lab_router_needs_the_token(trained_lab: Lab, servers: Servers):
    router = start_lab_router(trained_lab, servers.fraud, servers.recsys)
    try:
        assert httpx.get(f"{router.url}/admin/status").status_code == 401
        assert httpx.get(f"{router.url}/admin/status", headers=AUTH).status_code == 200
    finally:
        router.stop()
