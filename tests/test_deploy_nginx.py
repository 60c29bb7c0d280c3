"""The shipped nginx file (deploy/nginx/acvg-bridge.conf), run by a real nginx in front of three
test upstreams: stickiness per conversation id, consistent hashing, retries, headers, sockets."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.sim.nginx_server import Nginx, check_conf, render_conf, running_nginx

ROUTE = "/ac/r"


@dataclass
class Upstream:
    """One stand-in bridge instance: every request answered with who served it and what came."""

    instance: int
    hang_up: bool = False  # read the request, then drop the connection without an answer
    refuse: bool = False  # answer 503, as a draining bridge does for a call it handed off
    seen: list[str] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(f"{request.method} {request.path}")
        body = await request.text()
        transport = request.transport
        assert transport is not None
        self.peers.add(transport.get_extra_info("peername"))
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
        about |= {
            "body": body,
            "forwarded_for": request.headers.get("X-Forwarded-For"),
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


@dataclass
class Fleet:
    upstreams: list[Upstream]
    nginx: Nginx
    http: aiohttp.ClientSession

    def conversation(self, conv: str, op: str) -> str:
        return f"{self.nginx.url}{ROUTE}/conversation/{conv}/{op}"

    async def post(self, url: str, **kwargs: Any) -> dict[str, Any]:
        async with self.http.post(url, **kwargs) as resp:
            assert resp.status == 200, (resp.status, await resp.text(), self.nginx.error_log())
            answer: dict[str, Any] = await resp.json()
            return answer

    async def get(self, url: str) -> dict[str, Any]:
        async with self.http.get(url) as resp:
            assert resp.status == 200, (resp.status, await resp.text(), self.nginx.error_log())
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


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    upstreams = [Upstream(i) for i in range(3)]
    for upstream in upstreams:
        await upstream.start()
    try:
        with running_nginx(tmp_path, [u.address for u in upstreams]) as nginx:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                yield Fleet(upstreams, nginx, http)
    finally:
        for upstream in upstreams:
            await upstream.stop()


def test_rendered_conf_passes_nginx_t() -> None:
    rendered = render_conf(["127.0.0.1:18081", "127.0.0.1:18082"], "127.0.0.1:18080")
    directives = "".join(line.split("#")[0] for line in rendered.splitlines())
    assert "@" not in directives.replace("@acvg_socket", "")
    assert "listen 127.0.0.1:18080;" in rendered
    assert "server 127.0.0.1:18082 max_fails=1 fail_timeout=1s;" in rendered
    check_conf(rendered)
    with pytest.raises(RuntimeError, match="no servers are inside upstream"):
        check_conf(rendered.replace("server 127.0.0.1:", "# server 127.0.0.1:"))


def test_render_refuses_a_template_without_placeholders() -> None:
    shipped = render_conf(["127.0.0.1:1"], "@listen@")
    with pytest.raises(ValueError, match="@upstreams@"):
        render_conf(["127.0.0.1:1"], "127.0.0.1:2", template=shipped)
    template = render_conf(["127.0.0.1:1"], "127.0.0.1:2").replace(
        "        server 127.0.0.1:1 max_fails=1 fail_timeout=1s;\n", "    # @upstreams@\n"
    )
    with pytest.raises(ValueError, match="@listen@"):
        render_conf(["127.0.0.1:1"], "127.0.0.1:2", template=template)


async def test_a_conversation_sticks_to_one_instance_and_ids_spread(fleet: Fleet) -> None:
    convs = random_ids(50)

    async def instances_of(conv: str) -> set[int]:
        ops = ("activities", "refresh", "disconnect")
        answers = [await fleet.post(fleet.conversation(conv, op)) for op in ops]
        socket = await fleet.socket_instance(fleet.conversation(conv, "websocket"))
        return {a["instance"] for a in answers} | {socket}

    seen = await asyncio.gather(*(instances_of(c) for c in convs))
    for conv, instances in zip(convs, seen, strict=True):
        assert len(instances) == 1, (conv, instances)
    spread = Counter(next(iter(s)) for s in seen)
    assert set(spread) == {0, 1, 2}, spread


async def test_losing_an_instance_moves_only_its_conversations(fleet: Fleet) -> None:
    convs = random_ids(60)
    before = await fleet.placement(convs)
    lost = Counter(before.values()).most_common()[-1][0]
    await fleet.upstreams[lost].stop()

    after = await fleet.placement(convs)
    again = await fleet.placement(convs)
    assert after == again
    for conv in convs:
        if before[conv] == lost:
            assert after[conv] != lost
        else:
            assert after[conv] == before[conv], conv
    moved_to = {after[c] for c in convs if before[c] == lost}
    assert moved_to, "no conversation was on the stopped instance"


@pytest.mark.parametrize("failure", ["stopped", "hangs_up_after_reading"])
async def test_a_post_to_a_failed_instance_is_retried_on_another(
    fleet: Fleet, failure: str
) -> None:
    convs = random_ids(30)
    before = await fleet.placement(convs)
    victim = before[convs[0]]
    if failure == "stopped":
        await fleet.upstreams[victim].stop()
    else:
        # The request reaches the instance before it fails: only `non_idempotent` lets nginx
        # send a POST on then (without it nginx answers 502).
        fleet.upstreams[victim].hang_up = True
    url = fleet.conversation(convs[0], "activities")
    answer = await fleet.post(url, data=b'{"activities": [{"id": "a1"}]}')
    assert answer["instance"] != victim
    assert answer["body"] == '{"activities": [{"id": "a1"}]}'
    if failure == "stopped":
        assert "connect() failed" in fleet.nginx.error_log()
    else:
        tried = f"POST {ROUTE}/conversation/{convs[0]}/activities"
        assert fleet.upstreams[victim].seen.count(tried) == 1
        assert "prematurely closed" in fleet.nginx.error_log()


async def test_a_503_is_answered_not_retried(fleet: Fleet) -> None:
    # a 503 would count against the instance (max_fails): nginx passes it on to VAIC instead
    convs = random_ids(30)
    victim = (await fleet.placement(convs))[convs[0]]
    fleet.upstreams[victim].refuse = True
    async with fleet.http.post(fleet.conversation(convs[0], "activities"), data=b"{}") as resp:
        assert resp.status == 503
    others = [u for u in fleet.upstreams if u.instance != victim]
    tried = f"POST {ROUTE}/conversation/{convs[0]}/activities"
    assert all(tried not in u.seen for u in others)


async def test_authorization_body_and_forwarding_headers_reach_the_upstream(
    fleet: Fleet,
) -> None:
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
    assert answer["host"] == "127.0.0.1"

    plain = await fleet.post(fleet.conversation("c1", "refresh"))
    assert plain["forwarded_for"] == "127.0.0.1"


async def test_plain_requests_reuse_upstream_connections(fleet: Fleet) -> None:
    for _ in range(20):
        answer = await fleet.post(fleet.conversation("c-keepalive", "refresh"))
    upstream = fleet.upstreams[answer["instance"]]
    # One cached connection per nginx worker at most; without keepalive, one per request.
    assert len(upstream.seen) == 20
    assert len(upstream.peers) <= 4, upstream.peers


async def test_websocket_mode_upgrade_echoes_both_ways(fleet: Fleet) -> None:
    headers = {"Authorization": "Bearer route-token-123"}
    async with fleet.http.ws_connect(f"{fleet.nginx.url}{ROUTE}", headers=headers) as ws:
        hello = await ws.receive_json(timeout=5)
        assert hello["instance"] in {0, 1, 2}
        assert hello["path"] == ROUTE
        assert hello["auth"] == "Bearer route-token-123"
        for text in ('{"type": "message", "text": "hi"}', "second"):
            await ws.send_str(text)
            assert await ws.receive_str(timeout=5) == text
        await ws.send_bytes(b"\x00\x01")
        assert await ws.receive_bytes(timeout=5) == b"\x00\x01"


async def test_requests_without_a_conversation_id_spread(fleet: Fleet) -> None:
    probes = [await fleet.get(f"{fleet.nginx.url}{ROUTE}") for _ in range(30)]
    creates = [await fleet.post(f"{fleet.nginx.url}{ROUTE}") for _ in range(30)]
    assert len({p["instance"] for p in probes}) > 1
    assert len({c["instance"] for c in creates}) > 1
    assert {p["method"] for p in probes} == {"GET"}


async def test_health_location_answers_without_an_upstream(fleet: Fleet) -> None:
    for upstream in fleet.upstreams:
        await upstream.stop()
    async with fleet.http.get(f"{fleet.nginx.url}/nginx-health") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
