"""The router app in process, in front of an in-process V2 test double: input validation, the
admin API's auth and state machine, routing, fallbacks and logging. (Real processes and real
HTTP: tests/integration/test_router_process.py.)"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from mlsd.settings import RouterSettings, Settings
from serving.admin import admin_token
from serving.router import create_app
from serving.traffic import assign_arm
from serving.upstream import V2Client
from tests.support.router_v2_double import DoubleState, answer, recs_outputs

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TX = {
    "card_id": "card_000001",
    "merchant_id": "m_0001",
    "amount": 42.5,
    "country": "US",
    "device_id": "dev_1",
    "timestamp": "2026-02-01T12:00:00Z",
}


class InProcess:
    """A V2Transport that calls the double's answer function directly (no sockets)."""

    def __init__(self, respond: Callable[[str, str, bytes], Awaitable[tuple[int, Any]]]) -> None:
        self.respond = respond

    async def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        status, payload = await self.respond(method, path, body or b"")
        return status, json.dumps(payload).encode()

    async def close(self) -> None:
        pass


def double_client(state: DoubleState, base_url: str = "http://double") -> V2Client:
    async def respond(method: str, path: str, body: bytes) -> tuple[int, Any]:
        return await answer(state, method, path, body)

    return V2Client(base_url, transport=InProcess(respond))


def router_settings(tmp_path: Path, **changes: Any) -> Settings:
    router = RouterSettings(
        admin_token=SecretStr(TOKEN),
        registry_uri="",
        fallback_online_features=False,
        log_flush_ms=5,
        **changes,
    )
    return Settings(data_dir=tmp_path, router=router)


class Lab:
    """An app with both doubles, started (lifespan) and ready to call."""

    def __init__(
        self,
        tmp_path: Path,
        fraud: set[str] | None = None,
        shadow_server: bool = False,
        **changes: Any,
    ) -> None:
        self.fraud = DoubleState("fraud", fraud if fraud is not None else {"fraud-v1"})
        self.recsys = DoubleState("recsys", {"recsys-v1"})
        # A second fraud server for shadow copies (model_servers.fraud.shadow_http_port).
        self.fraud_shadow = DoubleState("fraud", {"fraud-v1"})
        self.settings = router_settings(tmp_path, **changes)
        self.app = create_app(
            self.settings,
            {"fraud": double_client(self.fraud), "recsys": double_client(self.recsys)},
            {"fraud": double_client(self.fraud_shadow, "http://shadow-double")}
            if shadow_server
            else None,
        )
        self.client = TestClient(self.app)

    @property
    def router(self) -> Any:
        return self.app.state.router

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a function (awaited if a coroutine function) on the app's event loop (the client
        must be started)."""
        assert self.client.portal is not None
        return self.client.portal.call(fn, *args)

    def rows(self, product: str = "fraud") -> list[Any]:
        router = self.router
        self.call(router.log_writer.flush)

        async def read() -> list[Any]:
            rows = []
            for arm in ("champion", "challenger"):
                rows += await router.log_writer.log.window(product, arm, 0, 4e9)
            return rows

        return self.call(read)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    with lab.client:
        yield lab


def field_errors(response: httpx.Response) -> list[str]:
    """The names of the fields a 422 complains about (the last element of each loc)."""
    assert response.status_code == 422, response.text
    return [str(e["loc"][-1]) for e in response.json()["detail"]]


# --- the public API: happy paths -------------------------------------------------------------


def test_a_transaction_is_scored_by_the_champion(lab: Lab):
    response = lab.client.post("/v1/fraud/score", json=TX)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "fraud/1" and body["arm"] == "champion"
    assert body["degraded"] is False and body["degraded_reason"] is None
    assert body["decision"] in ("block", "allow") and 0 <= body["score"] <= 1
    assert response.headers["X-Request-ID"] == body["request_id"]
    (row,) = lab.rows()
    assert row.request_id == body["request_id"] and row.role == "served"
    assert row.inputs["amount"] == 42.5 and row.answered_by == "fraud/1"
    assert row.error is None and row.latency_ms > 0


def test_the_fast_lane_and_the_framework_route_answer_alike(lab: Lab):
    # application/json takes the fast lane (serving.fast_lane); a structured-syntax JSON type
    # (RFC 6839) goes on to FastAPI's own route, which reads it as JSON too. Same router call.
    for body in (TX, {"user_id": "user_1", "k": 3}):
        path = "/v1/fraud/score" if "card_id" in body else "/v1/recs"
        fast = lab.client.post(path, json=body)
        framework = lab.client.post(
            path,
            content=json.dumps(body).encode(),
            headers={"content-type": "application/vnd.mlsd+json"},
        )
        assert fast.status_code == framework.status_code == 200, framework.text
        a, b = fast.json(), framework.json()
        assert a.pop("request_id") != b.pop("request_id")
        assert a == b
        assert fast.headers["content-type"] == framework.headers["content-type"]
    assert len(lab.rows("fraud")) == len(lab.rows("recsys")) == 2


def test_epoch_seconds_and_naive_times_are_accepted_as_utc(lab: Lab):
    for stamp in (1_769_947_200, 1_769_947_200.5, "2026-02-01T12:00:00"):
        response = lab.client.post("/v1/fraud/score", json={**TX, "timestamp": stamp})
        assert response.status_code == 200, response.text
    sent = [r.inputs["timestamp"] for r in lab.rows()]
    assert all(s.startswith("2026-02-01T12:00:00") and s.endswith("Z") for s in sent)


def test_an_unknown_card_takes_the_cold_start_path_not_an_error(lab: Lab):
    response = lab.client.post("/v1/fraud/score", json={**TX, "card_id": "unknown_card_9"})
    assert response.status_code == 200
    assert response.json()["cold_start"] is True and response.json()["degraded"] is False


def test_recommendations_and_the_cold_start_path(lab: Lab):
    known = lab.client.post("/v1/recs", json={"user_id": "user_1", "k": 5})
    assert known.status_code == 200, known.text
    body = known.json()
    assert len(body["items"]) == 5 and body["path"] == "model"
    assert body["model_version"] == "recsys/1" and body["degraded"] is False
    cold = lab.client.post("/v1/recs", json={"user_id": "new_user_77", "genre_hint": "jazz"})
    assert cold.json()["path"] == "popularity" and cold.json()["degraded"] is False
    assert len(cold.json()["items"]) == 10  # k defaults to 10
    # The answer says why the popularity path answered, and what the hint did.
    assert cold.json()["path_reason"].startswith("cold start: the model does not know listener")
    assert "new jazz releases first" in cold.json()["path_reason"]
    assert body["path_reason"] is None


# --- input validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"merchant_id": None}, "merchant_id"),
        ({"amount": "12.5"}, "amount"),  # a string is not a number here
        ({"amount": -0.01}, "amount"),
        ({"amount": 1e12}, "amount"),
        ({"amount": True}, "amount"),
        ({"card_id": 12345}, "card_id"),
        ({"card_id": ""}, "card_id"),
        ({"card_id": "has space"}, "card_id"),
        ({"card_id": "x" * 129}, "card_id"),
        ({"country": "usa"}, "country"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": 1_769_947_200_000_000}, "timestamp"),  # microseconds: out of range
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_transactions_get_a_422_naming_the_field(lab: Lab, change, field):
    body = {**TX, **change}
    if change.get("merchant_id", "") is None:
        del body["merchant_id"]
    assert field_errors(lab.client.post("/v1/fraud/score", json=body)) == [field]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_amounts_are_rejected_naming_amount(lab: Lab, literal):
    raw = json.dumps({**TX, "amount": 0}).replace('"amount": 0', f'"amount": {literal}')
    response = lab.client.post(
        "/v1/fraud/score", content=raw, headers={"Content-Type": "application/json"}
    )
    assert field_errors(response) == ["amount"]
    assert "finite" in response.json()["detail"][0]["msg"]


def test_malformed_json_is_a_4xx_not_a_500(lab: Lab):
    response = lab.client.post(
        "/v1/fraud/score", content=b'{"card_id": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    not_an_object = lab.client.post("/v1/fraud/score", json=[1, 2])
    assert not_an_object.status_code == 422


def test_a_huge_body_is_refused_with_413_before_parsing(lab: Lab):
    huge = {**TX, "merchant_id": "m" * 20_000}
    assert lab.client.post("/v1/fraud/score", json=huge).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"card_id": "'
        for _ in range(40):
            yield b"x" * 1_000
        yield b'"}'

    response = lab.client.post(
        "/v1/recs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u1", "k": 0}, "k"),
        ({"user_id": "u1", "k": 101}, "k"),
        ({"user_id": "u1", "k": True}, "k"),
        ({"user_id": "u1", "k": 2.5}, "k"),
        ({"user_id": "u1", "genre_hint": "polka"}, "genre_hint"),
        ({"k": 3}, "user_id"),
        ({"user_id": "u1", "extra": "x"}, "extra"),
    ],
)
def test_bad_recs_requests_get_a_422_naming_the_field(lab: Lab, body, field):
    assert field_errors(lab.client.post("/v1/recs", json=body)) == [field]


# --- feedback --------------------------------------------------------------------------------


def test_feedback_joins_labels_and_engagements_by_request_id(lab: Lab):
    fraud_id = lab.client.post("/v1/fraud/score", json=TX).json()["request_id"]
    recs = lab.client.post("/v1/recs", json={"user_id": "user_1", "k": 3}).json()
    ack = lab.client.post("/v1/feedback", json={"request_id": fraud_id, "label": 1})
    assert ack.status_code == 200 and ack.json() == {
        "request_id": fraud_id,
        "product": "fraud",
        "joined": True,
    }
    played = recs["items"][1]["item_id"]
    ack = lab.client.post(
        "/v1/feedback", json={"request_id": recs["request_id"], "item_id": played, "event": "click"}
    )
    assert ack.status_code == 200
    assert [r.label for r in lab.rows("fraud")] == [1]
    assert [r.label for r in lab.rows("recsys")] == [1]


def test_feedback_errors_name_what_is_wrong(lab: Lab):
    fraud_id = lab.client.post("/v1/fraud/score", json=TX).json()["request_id"]
    unknown = lab.client.post("/v1/feedback", json={"request_id": "0" * 32, "label": 0})
    assert unknown.status_code == 404 and "0" * 32 in unknown.json()["detail"]
    wrong_kind = lab.client.post("/v1/feedback", json={"request_id": fraud_id, "item_id": "i1"})
    assert wrong_kind.status_code == 422 and "is a fraud prediction" in wrong_kind.json()["detail"]
    assert field_errors(
        lab.client.post("/v1/feedback", json={"request_id": fraud_id, "label": 2})
    ) == ["label"]
    both = lab.client.post(
        "/v1/feedback", json={"request_id": fraud_id, "label": 1, "item_id": "i1"}
    )
    assert both.status_code == 422 and "not both" in both.text
    assert field_errors(lab.client.post("/v1/feedback", json={"request_id": "r1", "label": 1})) == [
        "request_id"
    ]


# --- admin: auth -----------------------------------------------------------------------------


def admin_routes(app: Any) -> list[tuple[str, str]]:
    return [
        (method.upper(), path.replace("{product}", "fraud"))
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/admin")
        for method in operations
    ]


def test_every_admin_route_wants_the_token(lab: Lab):
    routes = admin_routes(lab.app)
    assert len(routes) >= 12
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            response = lab.client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer"
    assert lab.client.get("/admin/status", headers=AUTH).status_code == 200


def test_a_generated_token_is_kept_private_under_the_data_dir(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    token = admin_token(settings)
    path = tmp_path / "router" / "admin-token"
    assert len(token) >= 40 and path.read_text().strip() == token
    assert path.stat().st_mode & 0o777 == 0o600
    assert admin_token(settings) == token  # stable across starts


def test_the_openapi_schema_documents_both_apis(lab: Lab):
    schema = lab.client.get("/openapi.json").json()
    assert {"/v1/fraud/score", "/v1/recs", "/v1/feedback", "/admin/{product}/canary/start"} <= set(
        schema["paths"]
    )
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    amount = schema["components"]["schemas"]["Transaction"]["properties"]["amount"]
    assert amount["minimum"] == 0


# --- admin: the rollout state machine --------------------------------------------------------


def admin(lab: Lab, method: str, path: str, body: dict | None = None, status: int = 200) -> dict:
    response = lab.client.request(method, path, headers=AUTH, json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_canary_ramp_promote_and_rollback(lab: Lab):
    assert lab.router.store["fraud"].champion == 1  # discovered on the double
    started = admin(lab, "POST", "/admin/fraud/canary/start", {"version": 2, "percent": 5})
    assert lab.fraud.loads == ["fraud-v2"]  # loaded through the V2 repository API
    assert started["routing"]["split"]["challenger_percent"] == 5
    assert started["routing"]["challenger"] == 2
    admin(lab, "PUT", "/admin/fraud/canary", {"percent": 50})
    cards = [f"card_{i:06d}" for i in range(200)]
    arms = {c: lab.client.post("/v1/fraud/score", json={**TX, "card_id": c}).json() for c in cards}
    salt = "canary-fraud-v2"
    for card, body in arms.items():
        assert body["arm"] == assign_arm(card, salt, 50) and body["experiment"] == salt
        assert body["model_version"] == ("fraud/2" if body["arm"] == "challenger" else "fraud/1")
    promoted = admin(lab, "POST", "/admin/fraud/promote", {"reason": "guardrails passed"})
    assert promoted["routing"]["champion"] == 2 and promoted["routing"]["previous"] == 1
    assert promoted["routing"]["split"] is None
    assert lab.client.post("/v1/fraud/score", json=TX).json()["model_version"] == "fraud/2"
    rolled = admin(lab, "POST", "/admin/fraud/rollback", {"reason": "late labels"})
    assert rolled["action"] == "champion_restored" and rolled["routing"]["champion"] == 1
    assert lab.client.post("/v1/fraud/score", json=TX).json()["model_version"] == "fraud/1"
    actions = [e["action"] for e in admin(lab, "GET", "/admin/fraud/status")["history"]]
    assert actions == [
        "discovered",
        "canary_started",
        "canary_percent",
        "promoted",
        "champion_restored",
    ]


def test_rollback_during_a_canary_withdraws_the_challenger(lab: Lab):
    admin(lab, "POST", "/admin/fraud/canary/start", {"version": 2, "percent": 100})
    assert lab.client.post("/v1/fraud/score", json=TX).json()["arm"] == "challenger"
    rolled = admin(lab, "POST", "/admin/fraud/rollback", {"reason": "error rate"})
    assert rolled["action"] == "challenger_withdrawn"
    assert rolled["routing"]["champion"] == 1 and rolled["routing"]["challenger"] is None
    assert lab.client.post("/v1/fraud/score", json=TX).json()["arm"] == "champion"


def test_a_rollback_naming_a_challenger_never_restores_an_older_champion(lab: Lab):
    admin(lab, "POST", "/admin/fraud/canary/start", {"version": 2, "percent": 50})
    admin(lab, "POST", "/admin/fraud/promote", {"reason": "passed"})  # v2 champion, v1 previous
    refused = admin(lab, "POST", "/admin/fraud/rollback", {"challenger": 2}, 409)
    assert "v2 is not taking fraud traffic" in refused["detail"]
    routing = admin(lab, "GET", "/admin/fraud/status")
    assert (routing["champion"], routing["previous"]) == (2, 1)
    assert routing["history"][-1]["action"] == "promoted"


def test_admin_conflicts_are_409_with_a_reason(lab: Lab):
    assert "no canary" in admin(lab, "PUT", "/admin/fraud/canary", {"percent": 20}, 409)["detail"]
    assert "no challenger" in admin(lab, "POST", "/admin/fraud/promote", {}, 409)["detail"]
    assert (
        "already the fraud champion"
        in admin(lab, "POST", "/admin/fraud/canary/start", {"version": 1, "percent": 5}, 409)[
            "detail"
        ]
    )
    assert (
        'name one with "version" in the body'
        in admin(lab, "POST", "/admin/fraud/canary/start", {"percent": 5}, 409)["detail"]
    )
    assert "no split" in admin(lab, "DELETE", "/admin/fraud/split", None, 409)["detail"]
    bad = lab.client.put("/admin/fraud/canary", headers=AUTH, json={"percent": 0})
    assert field_errors(bad) == ["percent"]
    assert lab.client.get("/admin/nope/status", headers=AUTH).status_code == 422


def test_a_version_the_server_cannot_load_is_a_502_and_changes_nothing(tmp_path: Path):
    lab = Lab(tmp_path)
    with lab.client:
        # The double loads anything: a client of nothing makes the repository call fail.
        lab.router.servers.clients["fraud"] = V2Client("http://127.0.0.1:9")
        lab.router.servers.loaded["fraud"] = {1}
        body = admin(lab, "POST", "/admin/fraud/canary/start", {"version": 3, "percent": 5}, 502)
        assert "could not load fraud-v3" in body["detail"]
        assert lab.router.store["fraud"].split is None


def test_an_ab_experiment_logs_arms_and_reports_its_metric(lab: Lab):
    admin(
        lab,
        "PUT",
        "/admin/fraud/split",
        {"experiment": "ab-1", "metric": "flag_rate", "challenger_percent": 50, "version": 2},
    )
    ids = {}
    for i in range(60):
        body = lab.client.post("/v1/fraud/score", json={**TX, "card_id": f"c{i}"}).json()
        ids[body["request_id"]] = body["arm"]
        lab.client.post("/v1/feedback", json={"request_id": body["request_id"], "label": i % 2})
    rows = lab.rows()
    assert {r.request_id: r.arm for r in rows} == ids
    assert {r.experiment for r in rows} == {"ab-1"}
    report = admin(lab, "GET", "/admin/fraud/experiment")
    assert report["metric"] == "flag_rate"
    assert sum(a["requests"] for a in report["arms"].values()) == 60
    assert all(a["labelled"] > 0 for a in report["arms"].values())
    admin(lab, "DELETE", "/admin/fraud/split")
    assert lab.client.post("/v1/fraud/score", json=TX).json()["experiment"] is None


def test_routing_state_survives_a_restart(tmp_path: Path):
    first = Lab(tmp_path)
    with first.client:
        admin(first, "POST", "/admin/fraud/canary/start", {"version": 2, "percent": 25})
    second = Lab(tmp_path, fraud={"fraud-v1", "fraud-v2"})
    with second.client:
        routing = admin(second, "GET", "/admin/fraud/status")
        assert routing["champion"] == 1 and routing["challenger"] == 2
        assert routing["split"]["kind"] == "canary" and routing["split"]["challenger_percent"] == 25


def test_canary_verdict_endpoint_judges_both_arms(lab: Lab):
    admin(lab, "POST", "/admin/fraud/canary/start", {"version": 2, "percent": 50})
    for i in range(40):
        lab.client.post("/v1/fraud/score", json={**TX, "card_id": f"c{i}"})
    verdict = admin(lab, "GET", "/admin/fraud/canary/verdict?window_seconds=600")
    assert verdict["decision"] == "hold"  # 40 requests: below min_requests
    assert verdict["champion"]["requests"] + verdict["challenger"]["requests"] == 40
    assert {c["name"] for c in verdict["checks"]} == {
        "error_rate",
        "p99_latency",
        "score_distribution",
        "alert_rate",
        "precision",
        "recall",
    }
    lab.fraud.fail_status = {"fraud-v2": 503}
    for i in range(40):
        lab.client.post("/v1/fraud/score", json={**TX, "card_id": f"c{i}"})
    verdict = admin(lab, "GET", "/admin/fraud/canary/verdict?window_seconds=600")
    assert verdict["decision"] == "rollback"
    assert verdict["reasons"][0].startswith("error_rate:")


# --- degradation -----------------------------------------------------------------------------


def test_a_failing_canary_falls_back_to_the_champion_and_counts_against_its_arm(lab: Lab):
    admin(lab, "POST", "/admin/fraud/canary/start", {"version": 2, "percent": 100})
    lab.fraud.fail_status = {"fraud-v2": 500}
    body = lab.client.post("/v1/fraud/score", json=TX).json()
    assert body["arm"] == "challenger" and body["degraded"] is True
    assert body["model_version"] == "fraud/1"
    assert body["degraded_reason"] == "fraud-v2: bad_status; answered by fraud/1"
    (row,) = lab.rows()
    assert row.arm == "challenger" and row.error.startswith("bad_status: HTTP 500")
    assert row.degraded and row.answered_by == "fraud/1"


def test_a_slow_champion_falls_back_to_the_previous_version_within_budget(tmp_path: Path):
    lab = Lab(tmp_path, model_timeout_ms=50)
    with lab.client:
        admin(lab, "POST", "/admin/fraud/canary/start", {"version": 2, "percent": 5})
        admin(lab, "POST", "/admin/fraud/promote", {})
        # The double counts a call after its delay: a router that waited for fraud-v2's answer
        # (rather than cutting it at its budget) would find it counted.
        lab.fraud.delay_ms = {"fraud-v2": 400}
        response = lab.client.post("/v1/fraud/score", json=TX)
        assert lab.fraud.infers == {"fraud-v1": 1}  # fraud-v2 never answered
        body = response.json()
        assert body["model_version"] == "fraud/1" and body["degraded"] is True
        assert body["degraded_reason"].startswith("fraud-v2: timeout")
        (row,) = lab.rows()
        assert row.error.startswith("timeout: ") and row.answered_by == "fraud/1"


def test_no_model_at_all_answers_from_the_request_alone(tmp_path: Path):
    lab = Lab(tmp_path, fraud=set())  # nothing loaded: no champion known
    with lab.client:
        small = lab.client.post("/v1/fraud/score", json=TX).json()
        assert small["model_version"] == "rules:request" and small["degraded"] is True
        assert small["decision"] == "allow" and small["reasons"] == []
        large = lab.client.post("/v1/fraud/score", json={**TX, "amount": 5_000.0}).json()
        assert large["decision"] == "block" and large["reasons"] == ["large_amount"]
        (row, _) = lab.rows()
        assert row.error == "no model version is routed for this arm"


def test_a_dead_model_opens_its_circuit_so_later_requests_skip_it(tmp_path: Path):
    # (Opening only after failures went on for a while is tested in test_router_policies.)
    lab = Lab(tmp_path, breaker_min_calls=3, breaker_min_failing_seconds=0)
    with lab.client:
        lab.fraud.fail_status = {"fraud-v1": 503}
        for _ in range(5):
            body = lab.client.post("/v1/fraud/score", json=TX).json()
            assert body["degraded"] is True and body["model_version"] == "rules:request"
        assert body["degraded_reason"].startswith("fraud-v1: circuit_open")
        assert admin(lab, "GET", "/admin/fraud/status")["breakers"] == {"fraud-v1": "open"}


def test_recs_fall_back_to_the_popularity_list_learnt_from_the_model(lab: Lab):
    assert lab.call(lab.router.popularity_refresh.refresh)
    lab.recsys.fail_status = {"recsys-v1": 503}
    body = lab.client.post("/v1/recs", json={"user_id": "user_1", "k": 4}).json()
    assert body["degraded"] is True and body["path"] == "popularity"
    assert [i["item_id"] for i in body["items"]] == [f"pop_{i}" for i in range(4)]
    saved = json.loads((lab.settings.data_dir / "router" / "popularity.json").read_text())
    assert saved["overall"][0][0] == "pop_0"


def test_recs_with_no_popularity_list_yet_answer_empty_not_500(tmp_path: Path):
    lab = Lab(tmp_path)
    lab.recsys.fail_status = {"recsys-v1": 503}  # from the start: nothing to learn from
    with lab.client:
        response = lab.client.post("/v1/recs", json={"user_id": "user_1"})
        assert response.status_code == 200
        assert (
            response.json()["items"] == []
            and "no popularity list" in response.json()["degraded_reason"]
        )


def test_malformed_model_answers_degrade_instead_of_500(lab: Lab):
    async def broken(method: str, path: str, body: bytes) -> tuple[int, Any]:
        return 200, {"outputs": [{"name": "score", "data": ["abc"]}]}

    lab.router.servers.clients["fraud"] = V2Client("http://x", transport=InProcess(broken))
    body = lab.client.post("/v1/fraud/score", json=TX).json()
    assert body["degraded"] is True and "bad_response" in body["degraded_reason"]


# --- shadow ----------------------------------------------------------------------------------


def test_shadow_copies_are_logged_under_the_same_request_id_and_change_nothing(lab: Lab):
    before = lab.client.post("/v1/fraud/score", json=TX).json()
    admin(lab, "POST", "/admin/fraud/shadow/start", {"version": 2})
    after = lab.client.post("/v1/fraud/score", json=TX).json()
    assert {k: v for k, v in after.items() if k != "request_id"} == {
        k: v for k, v in before.items() if k != "request_id"
    }
    lab.call(lab.router.shadow.join)
    rows = [r for r in lab.rows() if r.request_id == after["request_id"]]
    assert sorted((r.role, r.arm, r.answered_by) for r in rows) == [
        ("served", "champion", "fraud/1"),
        ("shadow", "challenger", "fraud/2"),
    ]
    verdict = admin(lab, "GET", "/admin/fraud/canary/verdict")
    assert verdict["challenger_role"] == "shadow" and verdict["challenger"]["requests"] == 1
    admin(lab, "POST", "/admin/fraud/shadow/stop")
    lab.client.post("/v1/fraud/score", json=TX)
    assert lab.client.get("/admin/status", headers=AUTH).json()["shadow"]["offered"] == 1


def test_with_a_shadow_server_the_copies_go_there_and_nowhere_else(tmp_path: Path):
    lab = Lab(tmp_path, shadow_server=True)
    with lab.client:
        admin(lab, "POST", "/admin/fraud/shadow/start", {"version": 2})
        # The shadowed version is loaded on the shadow server, and in the background on the
        # serving one, for the canary that follows a shadow (it then waits for no load).
        assert lab.fraud_shadow.loads == ["fraud-v2"]
        lab.call(lab.router.servers.join_prefetches)
        assert lab.fraud.loads == ["fraud-v2"]
        cards = [f"card_{i:06d}" for i in range(20)]
        answers = [lab.client.post("/v1/fraud/score", json={**TX, "card_id": c}) for c in cards]
        assert {a.json()["model_version"] for a in answers} == {"fraud/1"}
        lab.call(lab.router.shadow.join)
        assert lab.fraud.rows == Counter({"fraud-v1": 20})  # the serving server: no copies
        assert lab.fraud_shadow.rows == Counter({"fraud-v2": 20})
        shadow_rows = [r for r in lab.rows() if r.role == "shadow"]
        assert len(shadow_rows) == 20 and {r.answered_by for r in shadow_rows} == {"fraud/2"}
        status = admin(lab, "GET", "/admin/fraud/status")
        assert status["shadow_server"] == "http://shadow-double"
        # A canary is served traffic: it goes to the serving server, never the shadow one.
        admin(lab, "POST", "/admin/fraud/shadow/stop")
        admin(lab, "POST", "/admin/fraud/canary/start", {"version": 2, "percent": 100})
        assert lab.fraud.loads == ["fraud-v2"]
        body = lab.client.post("/v1/fraud/score", json=TX).json()
        assert (body["arm"], body["model_version"]) == ("challenger", "fraud/2")
        assert lab.fraud_shadow.rows == Counter({"fraud-v2": 20})


def test_shadow_copies_go_in_batches_one_call_per_set_of_inputs_and_a_row_each(
    tmp_path: Path,
):
    lab = Lab(tmp_path, shadow_workers=1, shadow_batch_max=50, shadow_linger_ms=0)
    with lab.client:
        admin(lab, "POST", "/admin/recsys/shadow/start", {"version": 2})
        lab.call(lambda: lab.recsys.hold({"recsys-v2"}))
        try:
            first = lab.client.post("/v1/recs", json={"user_id": "user_0", "k": 2}).json()
            # The first copy's call is held; these six wait for the one worker, then go as
            # one batch, in two calls: a genre hint is an input only some requests have.
            bodies = [
                {"user_id": f"user_{i}", "k": 3, **({"genre_hint": "jazz"} if i % 2 else {})}
                for i in range(1, 7)
            ]
            answers = [lab.client.post("/v1/recs", json=b).json() for b in bodies]
            assert {a["model_version"] for a in [first, *answers]} == {"recsys/1"}
        finally:
            lab.call(lab.recsys.release)
        lab.call(lab.router.shadow.join)
        assert lab.recsys.rows["recsys-v2"] == 7
        assert lab.recsys.infers["recsys-v2"] == 3  # the held one, then one per input set
        stats = admin(lab, "GET", "/admin/status")["shadow"]
        assert (stats["done"], stats["batches"], stats["failed"]) == (7, 2, 0)
        shadows = {r.request_id: r for r in lab.rows("recsys") if r.role == "shadow"}
        assert set(shadows) == {a["request_id"] for a in [first, *answers]}
        for answer, body in zip(answers, bodies, strict=True):
            row = shadows[answer["request_id"]]
            assert row.entity == body["user_id"] and row.answered_by == "recsys/2"
            # Each copy's own answer: its own user's items, as many as it asked for.
            own = recs_outputs("recsys-v2", {"user_id": [body["user_id"]], "k": [3]})
            assert [i["item_id"] for i in row.output["items"]] == own[0]["data"][0].split(",")
            assert row.error is None
        assert len(shadows[first["request_id"]].output["items"]) == 2


def test_a_restarted_shadow_server_gets_the_shadowed_version_loaded_again(tmp_path: Path):
    lab = Lab(tmp_path, shadow_server=True)
    with lab.client:
        admin(lab, "POST", "/admin/fraud/shadow/start", {"version": 2})
        admin(lab, "POST", "/admin/fraud/shadow/stop")
        lab.fraud_shadow.models = {"fraud-v1"}  # restarted: only the champion it starts with
        lab.call(lab.router.discover_models)
        admin(lab, "POST", "/admin/fraud/shadow/start", {"version": 2})
        lab.call(lab.router.servers.join_prefetches)
        assert lab.fraud_shadow.loads == ["fraud-v2", "fraud-v2"]
        assert lab.fraud.loads == ["fraud-v2"]  # the serving server kept its prefetched copy


def test_a_shadow_sample_copies_a_sticky_share_of_entities(lab: Lab):
    admin(lab, "POST", "/admin/fraud/shadow/start", {"version": 2, "percent": 30})
    cards = [f"c{i}" for i in range(300)]
    for card in cards:
        lab.client.post("/v1/fraud/score", json={**TX, "card_id": card})
    expected = sum(assign_arm(c, "shadow-fraud-v2", 30) == "challenger" for c in cards)
    stats = lab.client.get("/admin/status", headers=AUTH).json()["shadow"]
    assert stats["offered"] == expected and 60 <= expected <= 120


def test_no_shadow_copy_of_a_degraded_answer(lab: Lab):
    admin(lab, "POST", "/admin/fraud/shadow/start", {"version": 2})
    lab.fraud.fail_status = {"fraud-v1": 503}
    assert lab.client.post("/v1/fraud/score", json=TX).json()["degraded"] is True
    stats = lab.client.get("/admin/status", headers=AUTH).json()["shadow"]
    assert (stats["offered"], stats["skipped"]) == (0, 1)


def test_a_full_shadow_queue_drops_and_counts(tmp_path: Path):
    # The double holds fraud-v2 until released, and a shadow call may take 10 min: until the
    # release no shadow call ends, so the one worker stays busy with the first copy.
    lab = Lab(
        tmp_path,
        shadow_queue_size=2,
        shadow_workers=1,
        shadow_batch_max=1,
        shadow_timeout_ms=600_000,
    )
    with lab.client:
        admin(lab, "POST", "/admin/fraud/shadow/start", {"version": 2})
        lab.call(lambda: lab.fraud.hold({"fraud-v2"}))

        async def score_ten() -> list[dict[str, Any]]:
            # On the app's loop, so a hang (an answer waiting for its shadow, or for room in the
            # queue) fails the test instead of blocking it.
            transport = httpx.ASGITransport(app=lab.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
                bodies = []
                async with asyncio.timeout(60):
                    for _ in range(10):
                        bodies.append((await client.post("/v1/fraud/score", json=TX)).json())
                        await asyncio.sleep(0)  # the worker takes a copy, as between requests
                return bodies

        try:
            assert [b["degraded"] for b in lab.call(score_ten)] == [False] * 10
            stats = lab.client.get("/admin/status", headers=AUTH).json()["shadow"]
            # 1 copy in the worker's hands, 2 in the queue, 7 dropped: none waited for room.
            assert stats == {
                "offered": 10,
                "dropped": 7,
                "done": 0,
                "failed": 0,
                "skipped": 0,
                "batches": 1,
                "pending": 2,
            }
            assert "fraud-v2" not in lab.fraud.infers
        finally:
            lab.call(lab.fraud.release)
        # Released: the copy in hand and the 2 queued run (the deadline catches a hang only).
        deadline = time.monotonic() + 60
        while (stats := lab.client.get("/admin/status", headers=AUTH).json()["shadow"])["done"] < 3:
            assert time.monotonic() < deadline, stats
            lab.call(asyncio.sleep, 0.01)
        assert (stats["done"], stats["failed"], stats["pending"], stats["dropped"]) == (3, 0, 0, 7)
        assert lab.fraud.infers["fraud-v2"] == 3


def test_the_verdict_holds_a_differing_challenger_to_its_own_training_scores(lab: Lab):
    """The route reads the challenger's reference scores (here: what the registry would give)
    only once its scores differ from the champion's, and lets through one that scores as its
    reference says; without a reference the same traffic is a breach."""
    admin(lab, "POST", "/admin/fraud/canary/start", {"version": 2, "percent": 50})
    split = lab.router.store["fraud"].split
    challenger_scores: list[float] = []
    for i in range(400):
        card = f"c{i}"
        on_challenger = assign_arm(card, split.name, split.challenger_percent) == "challenger"
        # The double adds amount / 20,000 to a score in [0, 0.5): the challenger's arm scores high.
        body = {**TX, "card_id": card, "amount": 8_000.0 if on_challenger else 42.5}
        answer = lab.client.post("/v1/fraud/score", json=body).json()
        if on_challenger:
            challenger_scores.append(answer["score"])
    asked: list[int] = []

    async def none(product: str, version: int):
        asked.append(version)
        return None

    lab.router.control.reference_scores = none
    check = {c["name"]: c for c in admin(lab, "GET", "/admin/fraud/canary/verdict")["checks"]}
    assert check["score_distribution"]["status"] == "breach" and asked == [2]

    async def its_own(product: str, version: int):
        return tuple(challenger_scores)

    lab.router.control.reference_scores = its_own
    verdict = admin(lab, "GET", "/admin/fraud/canary/verdict")
    check = {c["name"]: c for c in verdict["checks"]}["score_distribution"]
    assert check["status"] == "pass", check["detail"]
    assert "against its own training scores" in check["detail"]
