"""The world's init container (bootstrap.py wait-router): it holds the world's clock until the
router answers with a champion for every product, asking over HTTP only (the world's one path)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from mlsd.settings import Settings
from tests.support.k8s_bootstrap import bootstrap_module


def test_the_router_is_ready_for_the_world_once_both_products_have_a_champion() -> None:
    ready = bootstrap_module().router_not_ready
    assert ready(503, {"detail": "starting"}) == ["the router (HTTP 503)"]
    assert ready(200, {"status": "ok", "champions": {"fraud": None, "recsys": None}}) == [
        "a fraud champion",
        "a recsys champion",
    ]
    assert ready(200, {"status": "ok", "champions": {"fraud": 2, "recsys": None}}) == [
        "a recsys champion"
    ]
    assert ready(200, {"status": "ok", "champions": {"fraud": 2, "recsys": 1}}) == []


def test_wait_router_asks_the_configured_router_until_it_routes_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = [
        httpx.ConnectError("refused"),
        httpx.Response(200, json={"status": "ok", "champions": {"fraud": 1, "recsys": None}}),
        httpx.Response(200, json={"status": "ok", "champions": {"fraud": 1, "recsys": 1}}),
    ]
    asked: list[str] = []

    def router(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    settings = Settings(
        data_dir=tmp_path, world={"router_url": "http://router.mlsd.svc.cluster.local:8080"}
    )
    client = httpx.Client(transport=httpx.MockTransport(router))
    bootstrap_module().wait_router(settings, poll_seconds=0.0, client=client)
    assert asked == ["http://router.mlsd.svc.cluster.local:8080/readyz"] * 3
    out = capsys.readouterr().out
    assert "waiting for the router (ConnectError)" in out
    assert "waiting for a recsys champion" in out
    assert "routes fraud, recsys" in out
