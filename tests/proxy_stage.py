"""The stage for the shipped proxy files (tests/test_deploy_nginx.py, tests/test_deploy_haproxy.py):
stand-in bridge instances on 127.0.0.1 that answer with who served a request and what came, and
a fleet of them behind one proxy with the requests the tests send through it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import aiohttp
from aiohttp import web

from bridge.sim.proxy_process import LoopbackProxy

ROUTE = "/ac/r"


@dataclass
class Upstream:
    """One stand-in bridge instance: every request answered with who served it and what came;
    /readyz answered apart (HAProxy's health checks), 503 while `ready` is off."""

    instance: int
    hang_up: bool = False  # read the request, then drop the connection without an answer
    refuse: bool = False  # answer 503, as a draining bridge does for a call it handed off
    delay_s: float = 0.0  # wait this long before answering: a hung instance
    ready: bool = True
    # HAProxy adds its own X-Forwarded-For header line (RFC 9110 §5.3: the same as one joined
    # line); nginx sends one ($proxy_add_x_forwarded_for), so there the first line is reported.
    join_forwarded_for: bool = False
    seen: list[str] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    checks: int = 0
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/readyz", self._readyz)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _readyz(self, request: web.Request) -> web.Response:
        self.checks += 1
        if not self.ready:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ready"})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(f"{request.method} {request.path}")
        body = await request.text()
        transport = request.transport
        assert transport is not None
        self.peers.add(transport.get_extra_info("peername"))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.hang_up:
            transport.abort()
            return web.Response()
        if self.refuse:
            return web.json_response({"error": "draining"}, status=503)
        about: dict[str, Any] = {
            "instance": self.instance,
            "path": request.path,
            "method": request.method,
            "auth": request.headers.get("Authorization"),
        }
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._echo(request, about)
        forwarded_for = (
            ", ".join(request.headers.getall("X-Forwarded-For", []))
            if self.join_forwarded_for
            else request.headers.get("X-Forwarded-For")
        )
        about |= {
            "body": body,
            "forwarded_for": forwarded_for,
            "forwarded_proto": request.headers.get("X-Forwarded-Proto"),
            "host": request.headers.get("Host"),
        }
        return web.json_response(about)

    async def _echo(self, request: web.Request, about: dict[str, Any]) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json(about)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws


@asynccontextmanager
async def running_upstreams(upstreams: Iterable[Upstream]) -> AsyncIterator[list[Upstream]]:
    """`upstreams` started, each stopped afterwards (a test may have stopped some already)."""
    started = list(upstreams)
    try:
        for upstream in started:
            await upstream.start()
        yield started
    finally:
        for upstream in started:
            await upstream.stop()


def client_session(**kwargs: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), **kwargs)


Proxy = TypeVar("Proxy", bound=LoopbackProxy)


@dataclass
class Fleet(Generic[Proxy]):
    """Stand-in instances behind `proxy`, and the requests the tests send through it."""

    upstreams: list[Upstream]
    proxy: Proxy
    http: aiohttp.ClientSession

    def conversation(self, conv: str, op: str) -> str:
        return f"{self.proxy.url}{ROUTE}/conversation/{quote(conv, safe='')}/{op}"

    async def post(self, url: str, **kwargs: Any) -> dict[str, Any]:
        async with self.http.post(url, **kwargs) as resp:
            assert resp.status == 200, (resp.status, await resp.text(), self.proxy.error_log())
            answer: dict[str, Any] = await resp.json()
            return answer

    async def get(self, url: str) -> dict[str, Any]:
        async with self.http.get(url) as resp:
            assert resp.status == 200, (resp.status, await resp.text(), self.proxy.error_log())
            answer: dict[str, Any] = await resp.json()
            return answer

    async def socket_instance(self, url: str) -> int:
        async with self.http.ws_connect(url) as ws:
            hello = await ws.receive_json(timeout=5)
            instance: int = hello["instance"]
            return instance

    async def placement(self, convs: list[str]) -> dict[str, int]:
        answers = await asyncio.gather(*(self.post(self.conversation(c, "refresh")) for c in convs))
        return {c: a["instance"] for c, a in zip(convs, answers, strict=True)}


def random_ids(n: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(n)]


def assert_only_the_lost_moved(before: dict[str, int], after: dict[str, int], lost: int) -> None:
    """Conversations on instance `lost` went elsewhere; every other stayed where it was."""
    for conv in before:
        if before[conv] == lost:
            assert after[conv] != lost
        else:
            assert after[conv] == before[conv], conv
    moved_to = {after[c] for c in before if before[c] == lost}
    assert moved_to, "no conversation was on the stopped instance"


async def check_a_503_is_answered_not_retried(fleet: Fleet[Any]) -> None:
    convs = random_ids(30)
    victim = (await fleet.placement(convs))[convs[0]]
    fleet.upstreams[victim].refuse = True
    async with fleet.http.post(fleet.conversation(convs[0], "activities"), data=b"{}") as resp:
        assert resp.status == 503
    others = [u for u in fleet.upstreams if u.instance != victim]
    tried = f"POST {ROUTE}/conversation/{convs[0]}/activities"
    assert all(tried not in u.seen for u in others)


async def check_headers_reach_the_upstream(fleet: Fleet[Any]) -> dict[str, Any]:
    """Authorization, body and forwarding headers as the upstream got them; its answer (for the
    Host header, which the proxies set differently)."""
    body = '{"conversation": "c1", "activities": [{"id": "ä", "text": "x y"}]}'
    headers = {"Authorization": "Bearer route-token-123", "X-Forwarded-For": "10.1.2.3"}
    answer = await fleet.post(
        fleet.conversation("c1", "activities"), data=body.encode(), headers=headers
    )
    assert answer["method"] == "POST"
    assert answer["path"] == f"{ROUTE}/conversation/c1/activities"
    assert answer["auth"] == "Bearer route-token-123"
    assert answer["body"] == body
    assert answer["forwarded_for"] == "10.1.2.3, 127.0.0.1"
    assert answer["forwarded_proto"] == "http"

    plain = await fleet.post(fleet.conversation("c1", "refresh"))
    assert plain["forwarded_for"] == "127.0.0.1"
    return answer


async def check_requests_reuse_connections(fleet: Fleet[Any], most: int) -> None:
    """20 requests to one instance come over `most` connections at the most."""
    for _ in range(20):
        answer = await fleet.post(fleet.conversation("c-keepalive", "refresh"))
    upstream = fleet.upstreams[answer["instance"]]
    assert len(upstream.seen) == 20
    assert len(upstream.peers) <= most, upstream.peers


async def check_websocket_echoes_both_ways(fleet: Fleet[Any]) -> None:
    headers = {"Authorization": "Bearer route-token-123"}
    async with fleet.http.ws_connect(f"{fleet.proxy.url}{ROUTE}", headers=headers) as ws:
        hello = await ws.receive_json(timeout=5)
        assert hello["instance"] in {0, 1, 2}
        assert hello["path"] == ROUTE
        assert hello["auth"] == "Bearer route-token-123"
        for text in ('{"type": "message", "text": "hi"}', "second"):
            await ws.send_str(text)
            assert await ws.receive_str(timeout=5) == text
        await ws.send_bytes(b"\x00\x01")
        assert await ws.receive_bytes(timeout=5) == b"\x00\x01"
