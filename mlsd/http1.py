"""A keep-alive HTTP/1.1 client on asyncio and httptools: how the router calls its model servers
and how the world calls the router, on every request's path.

Why not aiohttp or httpx, both maintained and both in the lock: measured on the lab's 2 cores,
  - the router's sequential calls to one fraud model server cost 310 us of CPU each through
    aiohttp and 100 us through this;
  - the world's POSTs of fraud scores to the router (400, 8 at a time) cost 1,550-2,000 us of
    CPU each through httpx.AsyncClient and 130-150 us through this. At 60 req/s plus their
    labels, httpx alone took a quarter of the world's core.
All either needs is what the lab's servers speak: HTTP/1.1 with a Content-Length or chunked
body, JSON in and out.
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import urlsplit

import httptools

# A cap on one answer (status line, headers and body) when the caller sets none: the router's
# for its model servers (serving.upstream says why this size).
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class ResponseTooLarge(Exception):
    """An answer longer than the cap: the connection is closed at the cap, unread."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer exceeds {limit:,} bytes")
        self.limit = limit


class _Connection(asyncio.Protocol):
    """One keep-alive connection to the server, one exchange at a time."""

    def __init__(self, max_response_bytes: int) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.max_response_bytes = max_response_bytes
        self.received = 0  # bytes of the current answer so far
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.status = 0
        self.chunks: list[bytes] = []
        self.answered = False  # any byte of an answer arrived (a retry could repeat work)
        self.reusable = False
        self.lost = False
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.answered = True
        # Counted before parsing, headers included: past the cap nothing more is kept or read.
        self.received += len(data)
        if self.received > self.max_response_bytes:
            self._fail(ResponseTooLarge(self.max_response_bytes))
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(ConnectionError(f"malformed HTTP answer: {err}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost, self.reusable = True, False
        self._fail(ConnectionError(f"connection closed by the server ({exc or 'EOF'})"))

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.reusable = self.parser.should_keep_alive()
        waiter, self.waiter = self.waiter, None
        content, self.chunks = b"".join(self.chunks), []
        if waiter is not None and not waiter.done():
            waiter.set_result((self.status, content))

    def _fail(self, err: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(err)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.answered = self.reusable = False
        self.received = 0
        self.transport.write(request)
        return await self.waiter

    def close(self) -> None:
        self.lost, self.reusable = True, False
        if self.transport is not None:
            self.transport.close()


class Http1Transport:
    """A keep-alive HTTP/1.1 client of one server, on asyncio and httptools (the parser uvicorn
    uses), with a pool of at most `max_connections` connections, the warmest first.

    A connection whose exchange is interrupted (a timeout, a cancelled call) is closed, never
    reused: a late answer on it would be read as the next request's. A reused connection that
    the server had closed (idle too long) is retried once on a new one, if no answer had begun.
    An answer longer than `max_response_bytes` raises ResponseTooLarge and closes its
    connection at the cap: the rest is never read or held.
    """

    def __init__(
        self,
        base_url: str,
        max_connections: int = 200,
        idle_seconds: float = 2.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"the server's URL must be http://host[:port], got {base_url!r}")
        self.host, self.port = url.hostname, url.port or 80
        self.prefix = url.path.rstrip("/")
        # Below uvicorn's keep-alive timeout (5 s): the server seldom closes one under us.
        self.idle_seconds = idle_seconds
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._host_header = f"Host: {self.host}:{self.port}\r\n".encode()
        self.max_response_bytes = max_response_bytes

    def _request_bytes(self, method: str, path: str, body: bytes | None) -> bytes:
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode() + self._host_header
        if body is None:
            return head + b"\r\n"
        return (
            head
            + b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )

    def _take_idle(self, now: float) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.lost and now - conn.idle_since < self.idle_seconds:
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: _Connection(self.max_response_bytes), self.host, self.port
        )
        return conn

    async def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        payload = self._request_bytes(method, path, body)
        async with self._slots:
            conn = self._take_idle(asyncio.get_running_loop().time())
            if conn is not None:
                try:
                    return self._finished(conn, await self._exchange(conn, payload))
                except ConnectionError:
                    if conn.answered:
                        raise
                    # The server had closed it before reading a byte: once more, anew.
            conn = await self._connect()
            return self._finished(conn, await self._exchange(conn, payload))

    @staticmethod
    async def _exchange(conn: _Connection, payload: bytes) -> tuple[int, bytes]:
        try:
            return await conn.exchange(payload)
        except BaseException:
            conn.close()  # interrupted mid-exchange: its state is unknown
            raise

    def _finished(self, conn: _Connection, answer: tuple[int, bytes]) -> tuple[int, bytes]:
        if conn.reusable:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
        else:
            conn.close()
        return answer

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
