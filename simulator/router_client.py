"""How the world reaches the router: JSON over the lab's own HTTP/1.1 client (mlsd.http1; the
measured reason it is not httpx is there), each call within the world's time budget."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import orjson

from mlsd.http1 import Http1Transport, ResponseTooLarge
from mlsd.settings import WorldSettings

# What a call can end in short of an answer: refused, reset or closed (OSError), no answer in
# time, an answer past the cap.
CALL_FAILURES = (OSError, TimeoutError, ResponseTooLarge)
# A JSON answer of the router's public API is a few hundred bytes; a slate of 100 items, 10 kB.
_MAX_ANSWER_BYTES = 1024 * 1024


class RouterTransport(Protocol):
    """HTTP/1.1 to the router, or a double in the world's own tests."""

    async def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class RouterClient:
    def __init__(
        self, url: str, cfg: WorldSettings, transport: RouterTransport | None = None
    ) -> None:
        self.timeout_seconds = cfg.request_timeout_seconds
        # Requests and labels share the pool: max_in_flight requests, and labels beside them.
        self.transport: RouterTransport = transport or Http1Transport(
            url, max_connections=2 * cfg.max_in_flight, max_response_bytes=_MAX_ANSWER_BYTES
        )

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        """POST `body` as JSON; (status, content). Raises one of CALL_FAILURES."""
        async with asyncio.timeout(self.timeout_seconds):
            payload = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
            return await self.transport.request("POST", path, payload)

    async def close(self) -> None:
        await self.transport.close()
