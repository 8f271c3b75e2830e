"""The router's fast lane: it answers only a JSON POST that validates; everything else reaches
the full application with the body intact (which is what formats every 4xx). The application
here is a recorder standing in for FastAPI: these tests are about the hand-over."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from features.catalog import GENRES
from serving.fast_lane import FastRoute, serve_fast
from tests.unit.test_router import Lab

MAX_BYTES = 64


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: str
    amount: float = Field(allow_inf_nan=False, ge=0)


class Answer(BaseModel):
    request_id: str
    item: str


async def handle(order: Order) -> Answer:
    return Answer(request_id="r-1", item=order.item)


ROUTES = {"/v1/order": FastRoute(Order, handle)}


def call(
    body: bytes | list[bytes],
    *,
    path: str = "/v1/order",
    method: str = "POST",
    content_type: bytes | None = b"application/json",
    declared: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(what the lane sent, what the application got: its scope and the body it read)."""
    chunks = body if isinstance(body, list) else [body]
    headers = [] if content_type is None else [(b"content-type", content_type)]
    if declared:
        headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []
    handed: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        handed.update(scope=scope, body=body)

    asyncio.run(serve_fast(ROUTES, MAX_BYTES, scope, receive, send, app))
    return sent, handed or None


def test_a_valid_request_is_answered_on_the_lane():
    sent, handed = call(b'{"item": "a", "amount": 2}')
    assert handed is None
    start, body = sent
    assert start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"x-request-id"] == b"r-1"
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"]) == {"request_id": "r-1", "item": "a"}


def test_a_body_in_several_chunks_and_a_charset_still_take_the_lane():
    sent, handed = call(
        [b'{"item": ', b'"a", "amount": 1.5}'],
        content_type=b"Application/JSON; charset=utf-8",
        declared=False,
    )
    assert handed is None and sent[0]["status"] == 200


def test_invalid_bodies_reach_the_application_byte_for_byte():
    for body in (
        b'{"item": "a"}',  # missing field
        b'{"item": "a", "amount": 1, "extra": 1}',  # extra field
        b'{"item": "a", "amount": NaN}',
        b'{"item": "a", "amount": -1}',
        b"{not json",
        b"",
    ):
        sent, handed = call(body)
        assert sent == [] and handed is not None, body
        assert handed["body"] == body


def test_what_the_lane_does_not_take_goes_on_untouched():
    body = b'{"item": "a", "amount": 2}'
    for kwargs in (
        {"content_type": None},  # FastAPI's call (it refuses an untyped body)
        {"content_type": b"application/vnd.mlsd+json"},  # JSON to FastAPI too: its call
        {"content_type": b"text/plain"},
        {"method": "PUT"},
        {"path": "/v1/other"},
    ):
        sent, handed = call(body, **kwargs)  # type: ignore[arg-type]
        assert sent == [] and handed is not None and handed["body"] == body, kwargs


def test_an_oversized_body_is_handed_on_whole_for_the_413():
    declared = b'{"item": "' + b"x" * MAX_BYTES + b'", "amount": 1}'
    sent, handed = call(declared)
    assert sent == [] and handed is not None and handed["body"] == declared
    # Undeclared (chunked): the lane stops reading past the limit and replays what it read,
    # then the rest of the stream follows.
    parts = [b'{"item": "', b"x" * MAX_BYTES, b'", "amount": 1}']
    sent, handed = call(parts, declared=False)
    assert sent == [] and handed is not None and handed["body"] == b"".join(parts)
    # Undeclared and in one piece: over the limit all the same. Valid JSON padded with
    # whitespace must not be parsed on the lane.
    padded = b'{"item": "a", "amount": 1' + b" " * MAX_BYTES + b"}"
    sent, handed = call(padded, declared=False)
    assert sent == [] and handed is not None and handed["body"] == padded


def test_a_client_gone_before_its_body_arrived_gets_nothing():
    sent, handed = call([], declared=False)
    assert sent == [] and handed is None


# --- the lane against FastAPI, on the real router ----------------------------------------------
# The same body sent twice to the router's app (before a V2 double): as `application/json`, which
# the fast lane takes, and as `application/vnd.mlsd+json` (RFC 6839), which only FastAPI's own
# route reads. Whatever the body, valid or not, both must answer the same status and body.

# Each field: values the schema accepts, and values of the right JSON type it refuses.
ids = st.from_regex(r"[A-Za-z0-9_.:@-]{1,20}", fullmatch=True)
bad_ids = st.one_of(st.just(""), st.text(max_size=6).map(lambda s: s + " x"), st.just("é" * 3))
stamps = st.one_of(
    st.datetimes(dt.datetime(2000, 1, 2), dt.datetime(2099, 12, 30)).map(dt.datetime.isoformat),
    st.integers(946_800_000, 4_102_000_000),
    st.floats(946_800_000, 4_102_000_000),
)
bad_stamps = st.one_of(
    st.integers(4_200_000_000_000, 2**63),  # milliseconds read as seconds
    st.sampled_from(["1999-12-31T23:59:59Z", "yesterday", "2026-13-01T00:00:00"]),
)
# Anything JSON can hold, for a field given the wrong type.
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=4,
)
Field_ = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any], bool]  # valid, invalid, required
FIELDS: dict[str, dict[str, Field_]] = {
    "/v1/fraud/score": {
        "card_id": (ids, bad_ids, True),
        "merchant_id": (ids, bad_ids, True),
        "amount": (
            st.floats(0, 1e7) | st.integers(0, 10**7),
            st.floats(max_value=-1e-9) | st.floats(1.0000001e7) | st.just("12.5"),
            True,
        ),
        "country": (st.from_regex(r"[A-Z]{2}", fullmatch=True), st.text(max_size=3), True),
        "device_id": (ids, bad_ids, True),
        "timestamp": (stamps, bad_stamps, True),
    },
    "/v1/recs": {
        "user_id": (ids, bad_ids, True),
        "k": (st.integers(1, 100), st.integers(-5, 0) | st.integers(101) | st.just(5.0), False),
        "timestamp": (stamps, bad_stamps, False),
        "genre_hint": (st.sampled_from(GENRES), st.sampled_from(["", "polka", "JAZZ"]), False),
    },
}
DEFECTS = ("missing", "wrong type", "out of range", "extra field")


@st.composite
def json_bodies(draw: st.DrawFn, path: str) -> bytes:
    """An object of the route's fields with none to three defects (a field missing, of the
    wrong type, out of range, or one too many); serialised as Python's json would (NaN
    included). A third of them are valid."""
    fields = FIELDS[path]
    body: dict[str, Any] = {
        name: draw(valid)
        for name, (valid, _, required) in fields.items()
        if required or draw(st.booleans())
    }
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        defect = draw(st.sampled_from(DEFECTS))
        name = draw(st.sampled_from(sorted(fields)))
        if defect == "missing":
            body.pop(name, None)
        elif defect == "wrong type":
            body[name] = draw(anything)
        elif defect == "out of range":
            body[name] = draw(fields[name][1])
        else:
            body[draw(st.text(min_size=1, max_size=6))] = draw(anything)
    return json.dumps(body).encode()


def bodies(path: str) -> st.SearchStrategy[bytes]:
    objects = json_bodies(path)
    return st.one_of(
        objects,
        objects,
        objects,
        objects.flatmap(lambda b: st.integers(0, len(b) - 1).map(lambda n: b[:n])),  # cut short
        objects.map(lambda b: b.replace(b'"', b'\xff"', 1)),  # not UTF-8
        st.binary(max_size=40),  # mostly not UTF-8
        st.text(max_size=40).map(str.encode),  # mostly not JSON
        anything.map(lambda v: json.dumps(v).encode()),  # JSON, not an object
    )


@pytest.fixture(scope="module")
def router_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("fast-lane"))
    with lab.client:
        yield lab


def both_ways(lab: Lab, path: str, body: bytes) -> tuple[httpx.Response, httpx.Response]:
    return tuple(  # type: ignore[return-value]
        lab.client.post(path, content=body, headers={"content-type": content_type})
        for content_type in ("application/json", "application/vnd.mlsd+json")
    )


def comparable(response: httpx.Response) -> tuple[int, str | None, Any]:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        body.pop("request_id", None)  # one per request, by design
    return response.status_code, response.headers.get("content-type"), body


@pytest.mark.parametrize("path", list(FIELDS))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_lane_and_fastapi_answer_every_body_alike(router_lab: Lab, path: str, data: Any):
    body = data.draw(bodies(path), label="body")
    fast, framework = both_ways(router_lab, path, body)
    event(f"status {fast.status_code}")  # `pytest --hypothesis-show-statistics` shows the mix
    assert comparable(fast) == comparable(framework), body
