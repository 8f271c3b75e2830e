"""The HTTP/1.1 client (the router's of the model servers, the world's of the router), against
a real socket server whose answers each test scripts: keep-alive reuse, chunked bodies, a
connection the server closed while idle, an exchange cut by a timeout (its late answer must
never reach the next request), a server that dies mid-answer, `Connection: close`, and an
answer larger than the cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from mlsd.http1 import Http1Transport
from serving.runtime import event_loop_factory
from serving.upstream import UpstreamError, V2Client


class ScriptedServer:
    """Answers POST bodies {"id": ..., "delay": s, "mode": ...} with {"id": ...}; counts
    connections and requests."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.huge_bytes = 64 * 1024 * 1024  # what mode "huge" tries to send
        self.huge_sent = 0  # how much of it the client let through before closing

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self.server is not None
        for writer in self.writers:
            writer.close()
        self.server.close()

    def close_idle_connections(self) -> None:
        for writer in self.writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = dict(
                    line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
                )
                body = await reader.readexactly(int(headers.get("Content-Length", "0")))
                self.requests += 1
                order = json.loads(body) if body else {}
                if "inputs" in order:  # a V2 request: its first value of each input
                    order = {i["name"]: i["data"][0] for i in order["inputs"]}
                await asyncio.sleep(order.get("delay", 0))
                answer = json.dumps({"id": order.get("id")}).encode()
                mode = order.get("mode")
                if mode in ("huge", "huge_chunked"):
                    await self._send_huge(writer, chunked=mode == "huge_chunked")
                    return
                if mode == "die_mid_answer":
                    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"id"')
                    await writer.drain()
                    writer.close()
                    return
                if mode == "chunked":
                    half = len(answer) // 2
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + f"{half:x}\r\n".encode()
                        + answer[:half]
                        + f"\r\n{len(answer) - half:x}\r\n".encode()
                        + answer[half:]
                        + b"\r\n0\r\n\r\n"
                    )
                else:
                    close = b"Connection: close\r\n" if mode == "close" else b""
                    writer.write(
                        b"HTTP/1.1 200 OK\r\n"
                        + close
                        + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                        + answer
                    )
                await writer.drain()
                if mode == "close":
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def _send_huge(self, writer: asyncio.StreamWriter, chunked: bool) -> None:
        """A 64 MiB answer, 64 KiB at a time, or until the client hangs up."""
        block = b"x" * 65_536
        if chunked:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            block = f"{len(block):x}\r\n".encode() + block + b"\r\n"
        else:
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {self.huge_bytes}\r\n\r\n".encode())
        try:
            while self.huge_sent < self.huge_bytes:
                writer.write(block)
                await writer.drain()
                self.huge_sent += len(block)
        finally:
            writer.close()


def served(scenario: Callable[[ScriptedServer, Http1Transport], Awaitable[None]]) -> None:
    """Run `scenario` against a fresh server and client, on asyncio's own event loop and on
    uvloop (the servers' loop: its transports are not asyncio's classes)."""

    async def main() -> None:
        server = ScriptedServer()
        transport = Http1Transport(await server.start())
        try:
            await scenario(server, transport)
        finally:
            await transport.close()
            await server.stop()

    for loop_factory in (None, event_loop_factory()):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())


async def ask(transport: Http1Transport, **order: object) -> dict:
    status, body = await transport.request("POST", "/infer", json.dumps(order).encode())
    assert status == 200
    return json.loads(body)


def test_keep_alive_reuses_one_connection_and_reads_chunked_bodies():
    async def scenario(server: ScriptedServer, transport: Http1Transport) -> None:
        assert await ask(transport, id=1) == {"id": 1}
        assert await ask(transport, id=2, mode="chunked") == {"id": 2}
        assert await ask(transport, id=3) == {"id": 3}
        assert (server.connections, server.requests) == (1, 3)

    served(scenario)


def test_concurrent_calls_each_get_their_own_answer():
    async def scenario(server: ScriptedServer, transport: Http1Transport) -> None:
        calls = (ask(transport, id=i, delay=0.01 * (i % 3)) for i in range(20))
        answers = await asyncio.gather(*calls)
        assert [a["id"] for a in answers] == list(range(20))
        assert server.requests == 20

    served(scenario)


@pytest.mark.parametrize("noticed", [True, False])
def test_a_connection_the_server_closed_while_idle_is_replaced(noticed: bool):
    # noticed=False: the request goes out before the client has read the server's close, so
    # it fails on the old connection with no answer begun, and is sent once more on a new one.
    async def scenario(server: ScriptedServer, transport: Http1Transport) -> None:
        await ask(transport, id=1)
        server.close_idle_connections()
        if noticed:
            await asyncio.sleep(0.05)
        assert await ask(transport, id=2) == {"id": 2}
        assert (server.connections, server.requests) == (2, 2)

    served(scenario)


def test_an_interrupted_exchange_never_lends_its_late_answer_to_the_next():
    async def scenario(server: ScriptedServer, transport: Http1Transport) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await ask(transport, id="late", delay=0.3)
        # The late answer would arrive on the first connection: the next calls must not read it.
        assert await ask(transport, id="next") == {"id": "next"}
        await asyncio.sleep(0.35)
        assert await ask(transport, id="after") == {"id": "after"}
        assert server.connections == 2

    served(scenario)


def test_a_server_dying_mid_answer_is_an_error_and_is_not_retried():
    async def scenario(server: ScriptedServer, transport: Http1Transport) -> None:
        with pytest.raises(ConnectionError):
            await ask(transport, id=1, mode="die_mid_answer")
        assert server.requests == 1  # an answer had begun: sending it again could repeat work

    served(scenario)


def test_connection_close_is_honoured():
    async def scenario(server: ScriptedServer, transport: Http1Transport) -> None:
        await ask(transport, id=1, mode="close")
        await ask(transport, id=2)
        assert server.connections == 2

    served(scenario)


def test_v2_client_names_a_refused_connection_unavailable():
    async def main() -> UpstreamError:
        server = ScriptedServer()
        url = await server.start()
        await server.stop()
        await asyncio.sleep(0.05)
        client = V2Client(url)
        try:
            await client.infer("fraud-v1", {"amount": [1.0]}, timeout_s=1.0)
        except UpstreamError as err:
            return err
        finally:
            await client.close()
        raise AssertionError("a closed port answered")

    assert asyncio.run(main()).kind == "unavailable"


@pytest.mark.parametrize("mode", ["huge", "huge_chunked"])
def test_an_answer_over_the_cap_is_a_failed_hop_and_is_not_read_to_its_end(mode: str):
    cap = 256 * 1024

    async def main() -> tuple[UpstreamError, ScriptedServer, dict]:
        server = ScriptedServer()
        client = V2Client(await server.start(), max_response_bytes=cap)
        try:
            with pytest.raises(UpstreamError) as caught:
                await client.infer("fraud-v1", {"mode": [mode]}, timeout_s=5.0)
            # The connection was closed at the cap; the next call gets a fresh one and works.
            again = await client.transport.request("POST", "/infer", b'{"id": 2}')
            await asyncio.sleep(0.1)  # the server notices the hang-up
        finally:
            await client.close()
            await server.stop()
        return caught.value, server, json.loads(again[1])

    err, server, again = asyncio.run(main())
    assert err.kind == "bad_response"
    assert "exceeds 262,144 bytes" in err.detail and "max_upstream_response_bytes" in err.detail
    assert again == {"id": 2} and server.connections == 2
    # The server could not push its 64 MiB: the client stopped reading at the cap (what got
    # through is the cap plus what the kernel's socket buffers hold).
    assert server.huge_sent < server.huge_bytes / 4


def test_only_plain_http_urls_are_accepted():
    with pytest.raises(ValueError, match="http://host"):
        Http1Transport("https://example.org")
