"""The router's fast lane: it answers only a JSON POST that validates; everything else reaches
the full application with the body intact (which is what formats every 4xx). The application
here is a recorder standing in for FastAPI: these tests are about the hand-over."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serving.fast_lane import FastRoute, serve_fast

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
