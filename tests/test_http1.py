"""bench.http1, the load generator's HTTP/1.1 client, against a real aiohttp server: keep-alive
reuse, chunked bodies, reconnecting after the server closed, timeouts, non-200 answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from bench.http1 import Connection

HEADERS = b"Content-Type: application/json\r\nAuthorization: Bearer t\r\n"


class Server:
    """An aiohttp server on 127.0.0.1 that records each request's client address."""

    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []
        self.seen: list[tuple[str, str, bytes, str | None]] = []
        self.port = 0

    def connections(self) -> int:
        return len(set(self.peers))

    async def _record(self, request: web.Request) -> bytes:
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))
        body = await request.read()
        self.seen.append(
            (request.method, request.path_qs, body, request.headers.get("Authorization"))
        )
        return body

    async def echo(self, request: web.Request) -> web.Response:
        return web.Response(body=await self._record(request))

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"first,", b"second,", b"third"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def close(self, request: web.Request) -> web.Response:
        resp = web.Response(body=await self._record(request))
        resp.force_close()
        return resp

    async def slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        await asyncio.sleep(1.0)
        return web.Response(body=b"late")

    async def missing(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=404, body=b"no such thing")


@asynccontextmanager
async def serving(**runner_options: Any) -> AsyncIterator[Server]:
    server = Server()
    app = web.Application()
    app.router.add_post("/echo", server.echo)
    app.router.add_get("/chunked", server.chunked)
    app.router.add_post("/close", server.close)
    app.router.add_post("/slow", server.slow)
    app.router.add_post("/missing", server.missing)
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with serving() as running:
        yield running


async def test_keep_alive_reuses_one_connection(server: Server) -> None:
    conn = Connection("127.0.0.1", server.port)
    try:
        for i in range(5):
            body = b'{"n": %d}' % i
            assert await conn.request("POST", "/echo?x=1", body, HEADERS) == (200, body)
    finally:
        conn.close()
    assert server.connections() == 1 and len(server.peers) == 5
    assert server.seen[0] == ("POST", "/echo?x=1", b'{"n": 0}', "Bearer t")


async def test_chunked_body(server: Server) -> None:
    conn = Connection("127.0.0.1", server.port)
    try:
        for _ in range(2):
            assert await conn.request("GET", "/chunked") == (200, b"first,second,third")
    finally:
        conn.close()
    assert server.connections() == 1


async def test_connection_close_answer_then_reconnects(server: Server) -> None:
    conn = Connection("127.0.0.1", server.port)
    try:
        assert await conn.request("POST", "/close", b"a") == (200, b"a")
        assert await conn.request("POST", "/echo", b"b") == (200, b"b")
        assert await conn.request("POST", "/echo", b"c") == (200, b"c")
    finally:
        conn.close()
    assert server.connections() == 2


async def test_server_closing_an_idle_connection_then_reconnects() -> None:
    async with serving(keepalive_timeout=0.05) as server:
        conn = Connection("127.0.0.1", server.port)
        try:
            assert await conn.request("POST", "/echo", b"a") == (200, b"a")
            await _until(lambda: conn._protocol is None or conn._protocol.transport is None)
            assert await conn.request("POST", "/echo", b"b") == (200, b"b")
        finally:
            conn.close()
        assert server.connections() == 2


async def test_timeout_raises_and_the_next_request_gets_a_fresh_connection(server: Server) -> None:
    conn = Connection("127.0.0.1", server.port, timeout=0.2)
    try:
        with pytest.raises(TimeoutError):
            await conn.request("POST", "/slow", b"x")
        # the late answer must not be taken for this one's
        assert await conn.request("POST", "/echo", b"y") == (200, b"y")
    finally:
        conn.close()
    assert server.connections() == 2


async def test_non_200_status_is_returned(server: Server) -> None:
    conn = Connection("127.0.0.1", server.port)
    try:
        assert await conn.request("POST", "/missing", b"{}") == (404, b"no such thing")
        assert await conn.request("POST", "/nowhere", b"{}") == (404, b"404: Not Found")
    finally:
        conn.close()
    assert server.connections() == 1


async def test_refused_connection_raises_connection_error() -> None:
    async with serving() as other:
        port = other.port
    conn = Connection("127.0.0.1", port)
    with pytest.raises(ConnectionError):
        await conn.request("POST", "/echo", b"x")


async def test_one_request_at_a_time(server: Server) -> None:
    conn = Connection("127.0.0.1", server.port, timeout=2.0)
    try:
        slow = asyncio.create_task(conn.request("POST", "/slow", b"x"))
        await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError):
            await conn.request("POST", "/echo", b"y")
        assert await slow == (200, b"late")
    finally:
        conn.close()


async def _until(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
