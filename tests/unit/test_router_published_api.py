"""The router's published API: docs served from the installed package (no CDN), every status a
route gives documented, constraints in the schema, and a 405 that lists every allowed method."""

from __future__ import annotations

import inspect
import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from mlsd.settings import Settings
from serving.router.http_app import create_app
from serving.schemas import ISO_TIME, FeedbackRequest, RecsRequest, Transaction


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    settings = Settings(data_dir=tmp_path_factory.mktemp("lab"))
    return TestClient(create_app(settings))  # no lifespan: the schema and docs need no router


def test_docs_and_redoc_load_their_assets_from_the_router_not_a_cdn(client: TestClient):
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets, html
        for asset in assets:
            assert asset.startswith("/static-offline-docs/"), asset
            served = client.get(asset)
            assert served.status_code == 200 and len(served.content) > 1000, asset
        assert "cdn" not in html.lower() and "fonts.googleapis" not in html


def test_every_body_route_documents_400_413_and_422(client: TestClient):
    paths = client.get("/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                assert {"400", "413", "422"} <= set(operation["responses"]), (method, path)
            if path.startswith("/admin/"):
                assert {"401", "404", "409", "502"} <= set(operation["responses"]), (method, path)


def test_every_route_that_may_load_a_version_says_so_in_the_schema(client: TestClient):
    """A load takes seconds (see serving.router.admin_routes.MAY_LOAD_A_VERSION): the schema marks
    exactly the operations whose handler may load one, so clients and the schema test give those
    the router's load timeout."""
    paths = client.get("/openapi.json").json()["paths"]
    marked, loading = set(), set()
    routes = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        # FastAPI 0.150 keeps an included router (the admin routes) whole, as one entry.
        included = getattr(route, "original_router", None)
        routes.extend(included.routes if included is not None else [route])
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods:
            operation = paths[route.path_format][method.lower()]
            if operation.get("x-mlsd-may-load-version"):
                marked.add((method, route.path_format))
            if "ensure_loaded(" in inspect.getsource(route.endpoint):
                loading.add((method, route.path_format))
    assert ("POST", "/admin/{product}/canary/start") in loading
    assert marked == loading


def test_a_405_lists_every_method_of_the_path(client: TestClient):
    answer = client.options("/admin/fraud/split")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "DELETE, PUT"
    assert client.get("/v1/fraud/score").headers["allow"] == "POST"


def test_the_schema_states_what_the_validators_enforce():
    recs = RecsRequest.model_json_schema()
    genre = recs["$defs"]["Genre"]
    assert "jazz" in genre["enum"] and "" not in genre["enum"]
    assert recs["properties"]["k"] == {
        **recs["properties"]["k"],
        "minimum": 1,
        "maximum": 100,
        "type": "integer",
    }
    amount = Transaction.model_json_schema()["properties"]["amount"]
    assert (amount["minimum"], amount["maximum"]) == (0, 10_000_000)
    assert Transaction.model_json_schema()["properties"]["card_id"]["examples"] == ["card_000123"]
    feedback = FeedbackRequest.model_json_schema()
    shapes = {s["title"]: s for s in feedback["oneOf"]}
    assert shapes["fraud label"]["required"] == ["request_id", "label"]
    assert shapes["recommendation engagement"]["not"] == {"required": ["label"]}
    # What the schema's one-of says, the validator does: a play with a label is refused.
    with pytest.raises(ValueError, match="not both"):
        FeedbackRequest.model_validate(
            {"request_id": "0" * 32, "label": 0, "item_id": "i_1", "event": "play"}
        )


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("2026-01-20T14:03:00Z", True),
        ("2026-01-20T14:03:00.123+02:00", True),
        ("2026-01-20T14:03:00", True),  # naive: UTC
        (1_768_917_780, True),
        ("1999-12-31T23:00:00-05:00", False),  # written in 1999, whatever its UTC instant
        ("2026-02-30T00:00:00Z", False),
        ("2026-01-20", False),
        ("1768917780", False),
        (1_768_917_780_000, False),  # milliseconds
    ],
)
def test_a_time_is_accepted_exactly_when_the_schema_allows_it(value, accepted):
    matches_schema = (
        bool(re.match(ISO_TIME, value))
        if isinstance(value, str)
        else 946_684_800 <= value < 4_102_444_800
    )
    assert matches_schema is accepted
    try:
        RecsRequest(user_id="u_000001", timestamp=value)
    except ValueError:
        assert not accepted
    else:
        assert accepted


def test_integers_are_json_schema_integers():
    assert RecsRequest.model_validate_json('{"user_id": "u_1", "k": 14.0}').k == 14
    for bad in ('"14"', "true", "14.5"):
        with pytest.raises(ValueError):
            RecsRequest.model_validate_json(f'{{"user_id": "u_1", "k": {bad}}}')
