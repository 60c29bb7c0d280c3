"""Faults on the voicegateway path, end to end on 127.0.0.1 (design §3.6, §3.8; ws spec §1.6).

VAIC (HTTP sync) → bridge → small jambonz WS apps that misbehave on purpose: a refused
connection, a handshake that never completes, a `session:new` never acked, a socket dropped
mid-call (reconnect with `session:reconnect`), an app refusing every reconnect, an app closing
with 1000, and a hook never acked. Without a legacy upstream a call that cannot be served ends
with the route's apology and a hangup.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.transport.vg import (
    ReconnectOptions,
    UpstreamConnectError,
    next_backoff,
    reconnect_options,
    should_retry,
)
from bridge.voicegateway.wire import SUBPROTOCOL
from tests.conftest import BridgeFactory, RunningBridge
from tests.test_legacy_path import (
    LEGACY_TOKEN,
    eventually,
    legacy_upstream,
    make_config,
    serve,
    total,
)
from tests.test_session import Vaic, start_event, strip
from tests.test_session_routing import SilentVoiceGateway

APOLOGY = "Sorry, we cannot take your call right now."
WELCOME: list[dict[str, Any]] = [
    {"verb": "say", "text": "Welcome."},
    {"verb": "gather", "input": ["speech"], "actionHook": "voice", "timeout": 10},
]
Frame = dict[str, Any]
Handler = Callable[["Conn"], Awaitable[None]]


class Conn:
    """One socket the app accepted: what it received, and how to answer."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[Frame] = []

    async def next(self, msg_type: str) -> Frame:
        """The next frame of `msg_type` (earlier frames of other types are kept, skipped)."""
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                frame = json.loads(msg.data)
                self.frames.append(frame)
                if frame["type"] == msg_type:
                    return dict(frame)
        raise AssertionError(f"socket closed before {msg_type}")

    async def ack(self, frame: Frame, verbs: list[Frame] | None = None) -> None:
        body: Frame = {"type": "ack", "msgid": frame["msgid"]}
        if verbs is not None:
            body["data"] = verbs
        await self.ws.send_str(json.dumps(body))

    async def drain(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(msg.data))


class ScriptedApp:
    """A jambonz WS app whose n-th connection runs `handlers[n]` (the last one repeats).

    A handler of None answers the upgrade with HTTP 503 instead.
    """

    def __init__(self, handlers: Sequence[Handler | None]) -> None:
        self.handlers = list(handlers)
        self.attempts = 0
        self.conns: list[Conn] = []

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        handler = self.handlers[min(self.attempts, len(self.handlers) - 1)]
        self.attempts += 1
        if handler is None:
            return web.Response(status=503, text="unavailable")
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        conn = Conn(ws)
        self.conns.append(conn)
        await handler(conn)
        if not ws.closed:
            await conn.drain()
        return ws

    def all_frames(self, msg_type: str) -> list[Frame]:
        return [f for conn in self.conns for f in conn.frames if f["type"] == msg_type]


@pytest.fixture
async def app_server() -> AsyncIterator[Callable[[ScriptedApp], Awaitable[str]]]:
    served: list[tuple[web.AppRunner, ScriptedApp]] = []

    async def start(app: ScriptedApp) -> str:
        runner, url = await serve(app.make_app())
        served.append((runner, app))
        return url.replace("http://", "ws://") + "/app"

    yield start
    for runner, app in served:
        for conn in app.conns:  # aiohttp would wait for open sockets at shutdown
            await conn.ws.close()
        await runner.cleanup()


@pytest.fixture
async def legacy_sim() -> AsyncIterator[LegacyEndpointSim]:
    async with LegacyEndpointSim(token=LEGACY_TOKEN) as sim:
        yield sim


def route(vg_url: str, **extra: Any) -> dict[str, Any]:
    return {"voicegateway": {"url": vg_url}, "apology": APOLOGY, **extra}


def texts(outputs: list[Frame]) -> list[str]:
    return [str(o["text"]) for o in outputs if o.get("type") == "message"]


def said(text: str) -> Frame:
    return {"type": "message", "text": text}


def errors(bridge: RunningBridge, kind: str) -> float:
    return total(bridge, "acvg_upstream_errors_total", route="r", path="voicegateway", kind=kind)


def assert_apology_then_hangup(outputs: list[Frame]) -> None:
    assert [o.get("type") for o in outputs] == ["message", "event"], outputs
    assert outputs[0]["text"] == APOLOGY
    assert outputs[1]["name"] == "hangup"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def hanging_url() -> AsyncIterator[str]:
    """A TCP server that accepts and never answers the HTTP upgrade."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"ws://127.0.0.1:{port}/app"
    for writer in writers:
        writer.close()
    server.close()


# ---------------------------------------------------------------- the call cannot start


@pytest.mark.parametrize("fault", ["refused", "handshake_hangs"])
@pytest.mark.parametrize("with_legacy", [True, False], ids=["fallback", "apology"])
async def test_unreachable_voice_gateway_falls_back_or_ends_with_the_apology(
    bridge_factory: BridgeFactory,
    legacy_sim: LegacyEndpointSim,
    hanging_url: str,
    fault: str,
    with_legacy: bool,
) -> None:
    url = f"ws://127.0.0.1:{closed_port()}/app" if fault == "refused" else hanging_url
    body = route(url, voicegateway={"url": url, "connect_timeout_ms": 300})
    if with_legacy:
        body |= {"legacy": legacy_upstream(legacy_sim), "migration": {"voicegateway_percent": 100}}
    bridge = await bridge_factory(make_config({"r": body}))
    vaic = Vaic(bridge)
    conversation = await vaic.create()
    outputs = strip(await vaic.send(start_event()))
    kind = "connect" if fault == "refused" else "timeout"
    assert errors(bridge, kind) == 1
    if with_legacy:
        assert list(legacy_sim.calls) == [conversation]
        assert total(bridge, "acvg_routing_decisions_total", reason="fallback") == 1
        assert APOLOGY not in texts(outputs)
    else:
        assert_apology_then_hangup(outputs)
        assert not legacy_sim.calls


async def test_session_new_never_acked_ends_the_call_with_the_apology(
    bridge_factory: BridgeFactory,
) -> None:
    silent = SilentVoiceGateway()
    runner, url = await serve(silent.make_app())
    try:
        bridge = await bridge_factory(make_config({"r": route(url.replace("http", "ws"))}))
        vaic = Vaic(bridge)
        await vaic.create()
        outputs = strip(await vaic.send(start_event()))  # answered after the 5 s ack budget
        assert_apology_then_hangup(outputs)
        assert '"session:new"' in silent.received[0]
        assert total(bridge, "acvg_vg_ack_timeouts_total", route="r") == 1
        assert errors(bridge, "ack_timeout") == 1
        await eventually(lambda: silent.closed == 1)
    finally:
        await runner.cleanup()


async def test_socket_dropped_before_the_session_ack_reconnects_and_rekeys(
    bridge_factory: BridgeFactory, app_server: Callable[[ScriptedApp], Awaitable[str]]
) -> None:
    async def drop_at_once(conn: Conn) -> None:
        await conn.next("session:new")
        await conn.ws.close(code=1011)

    async def accept_the_reconnect(conn: Conn) -> None:
        await conn.ack(await conn.next("session:reconnect"), WELCOME)

    app = ScriptedApp([drop_at_once, accept_the_reconnect])
    bridge = await bridge_factory(make_config({"r": route(await app_server(app))}))
    vaic = Vaic(bridge)
    await vaic.create()
    outputs = strip(await vaic.send(start_event()))
    assert texts(outputs) == ["Welcome."]
    [new] = app.all_frames("session:new")
    [reconnect] = app.all_frames("session:reconnect")
    assert reconnect["data"] == new["data"] and reconnect["msgid"] != new["msgid"]
    assert total(bridge, "acvg_calls_started_total", path="voicegateway") == 1


# ---------------------------------------------------------------- mid-call faults


async def serve_welcome_then_drop(conn: Conn) -> None:
    """First socket: take the call, then close with 1011 when the first hook arrives."""
    await conn.ack(await conn.next("session:new"), WELCOME)
    await conn.next("verb:hook")
    await conn.ws.close(code=1011)


async def test_socket_dropped_mid_call_reconnects_and_the_call_goes_on(
    bridge_factory: BridgeFactory, app_server: Callable[[ScriptedApp], Awaitable[str]]
) -> None:
    async def after_reconnect(conn: Conn) -> None:
        reconnect = await conn.next("session:reconnect")
        # an SDK that treats the reconnect as a new session sends its greeting again:
        # Voice Gateway ignores verbs in this ack, so the caller must not hear it twice
        await conn.ack(reconnect, [{"verb": "say", "text": "Welcome again."}])
        hook = await conn.next("verb:hook")
        said_text = hook["data"]["speech"]["alternatives"][0]["transcript"]
        await conn.ack(hook, [{"verb": "say", "text": f"You said {said_text}."}, WELCOME[1]])

    app = ScriptedApp([serve_welcome_then_drop, after_reconnect])
    bridge = await bridge_factory(make_config({"r": route(await app_server(app))}))
    vaic = Vaic(bridge)
    await vaic.create()
    heard = texts(strip(await vaic.send(start_event())))
    heard += texts(strip(await vaic.send(said("hello"))))  # the hook the app dropped on
    # said while the bridge is reconnecting: the hook waits for the session:reconnect ack
    answer = strip(await vaic.send(said("pay my bill")))
    heard += texts(answer)
    assert heard == ["Welcome.", "You said pay my bill."]
    assert all(o.get("name") != "hangup" for o in answer)

    _, second = app.conns
    [new] = app.all_frames("session:new")
    assert [f["type"] for f in second.frames][:2] == ["session:reconnect", "verb:hook"]
    reconnect = second.frames[0]
    assert reconnect["data"] == new["data"]
    assert reconnect["msgid"] != new["msgid"] and reconnect["call_sid"] == new["call_sid"]
    hooks = app.all_frames("verb:hook")
    assert [h["data"]["speech"]["alternatives"][0]["transcript"] for h in hooks] == [
        "hello",
        "pay my bill",
    ]
    assert len({h["msgid"] for h in hooks}) == 2
    assert errors(bridge, "closed") == 1
    assert errors(bridge, "reconnect_failed") == 0


@pytest.mark.parametrize(
    ("fragment", "max_retries", "reconnect_attempts"),
    [("#rc=2&rp=5xx", 5, 2), ("#rc=2", 5, 1), ("#rp=all", 1, 1), ("#rc=3&rp=5xx", 0, 0)],
    ids=["rc-bounds-5xx", "503-not-retried-by-default", "config-bounds", "config-disables"],
)
async def test_app_refusing_every_reconnect_ends_the_call_with_the_apology(
    bridge_factory: BridgeFactory,
    app_server: Callable[[ScriptedApp], Awaitable[str]],
    fragment: str,
    max_retries: int,
    reconnect_attempts: int,
) -> None:
    app = ScriptedApp([serve_welcome_then_drop, None])  # then HTTP 503 on every upgrade
    url = await app_server(app) + fragment
    upstream = {"url": url, "reconnect": {"max_retries": max_retries}}
    body = route(url, voicegateway=upstream, turn_timeout_ms=10_000)
    bridge = await bridge_factory(make_config({"r": body}))
    vaic = Vaic(bridge)
    conversation = await vaic.create()
    await vaic.send(start_event())
    outputs = strip(await vaic.send(said("hello")))
    if not outputs:  # reconnecting: the next input waits for it; when it fails the call ends
        outputs = strip(await vaic.send(said("anyone there?")))
    assert_apology_then_hangup(outputs)
    assert app.attempts == 1 + reconnect_attempts  # bounded by `#rc=` and what `rp` retries
    assert errors(bridge, "closed") == 1
    assert errors(bridge, "reconnect_failed") == 1
    status, body = await vaic.post(
        f"/ac/r/conversation/{conversation}/disconnect",
        {"conversation": conversation, "reasonCode": "client-disconnected"},
    )
    assert status == 200


async def test_app_closing_with_1000_ends_the_call_when_its_verbs_run_out(
    bridge_factory: BridgeFactory, app_server: Callable[[ScriptedApp], Awaitable[str]]
) -> None:
    async def close_normally(conn: Conn) -> None:
        await conn.ack(
            await conn.next("session:new"), [*WELCOME, {"verb": "say", "text": "Goodbye."}]
        )
        await conn.next("verb:hook")
        await conn.ws.close(code=1000)

    app = ScriptedApp([close_normally])
    bridge = await bridge_factory(make_config({"r": route(await app_server(app))}))
    vaic = Vaic(bridge)
    await vaic.create()
    await vaic.send(start_event())
    outputs = strip(await vaic.send(said("hello")))
    assert texts(outputs) == ["Goodbye."]  # the rest of the stack, no apology
    assert outputs[-1]["name"] == "hangup"
    assert app.attempts == 1  # a normal close is not reconnected
    assert errors(bridge, "closed") == 0


async def test_hook_never_acked_the_call_carries_on_after_the_ack_budget(
    bridge_factory: BridgeFactory, app_server: Callable[[ScriptedApp], Awaitable[str]]
) -> None:
    async def ignore_first_hook(conn: Conn) -> None:
        await conn.ack(await conn.next("session:new"), WELCOME)
        await conn.next("verb:hook")  # never acked
        hook = await conn.next("verb:hook")
        await conn.ack(hook, [{"verb": "say", "text": "Back with you."}, WELCOME[1]])

    app = ScriptedApp([ignore_first_hook])
    body = route(await app_server(app), turn_timeout_ms=1000)
    bridge = await bridge_factory(make_config({"r": body}))
    vaic = Vaic(bridge)
    await vaic.create()
    await vaic.send(start_event())
    assert texts(strip(await vaic.send(said("hello")))) == []
    await eventually(lambda: total(bridge, "acvg_vg_ack_timeouts_total", route="r") == 1, 8.0)
    outputs = strip(await vaic.send(said("still there?")))
    assert texts(outputs) == ["Back with you."]
    hooks = app.all_frames("verb:hook")
    assert [h["hook"] for h in hooks] == ["voice", "voice"]
    assert errors(bridge, "closed") == 0


# ---------------------------------------------------------------- reconnect options


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("wss://vg.example/abc", ReconnectOptions(5, frozenset({"ct"}))),
        ("wss://vg.example/abc#rc=2", ReconnectOptions(2, frozenset({"ct"}))),
        ("wss://vg.example/abc#rc=1&rp=ct,5xx", ReconnectOptions(1, frozenset({"ct", "5xx"}))),
        ("wss://vg.example/abc#rp=all&rc=9", ReconnectOptions(5, frozenset({"all"}))),
        ("wss://vg.example/abc#rc=0&rp=bogus", ReconnectOptions(5, frozenset({"ct"}))),
    ],
)
def test_reconnect_options_from_the_url_fragment(url: str, expected: ReconnectOptions) -> None:
    assert reconnect_options(url) == expected


def test_backoff_doubles_to_two_seconds_then_adds_two() -> None:
    delays = [0.5]
    for _ in range(4):
        delays.append(next_backoff(delays[-1]))
    assert delays == [0.5, 1.0, 2.0, 4.0, 6.0]


def test_which_connect_errors_are_retried() -> None:
    default = ReconnectOptions()
    refused = UpstreamConnectError("connect", "refused")
    timeout = UpstreamConnectError("timeout", "handshake timed out")
    bad_url = UpstreamConnectError("bad_url", "invalid WebSocket URL")
    assert should_retry(refused, default) and should_retry(timeout, default)
    assert not should_retry(bad_url, ReconnectOptions(retry_on=frozenset({"all"})))
    assert should_retry(timeout, ReconnectOptions(retry_on=frozenset({"rt"})))
    assert not should_retry(refused, ReconnectOptions(retry_on=frozenset({"5xx"})))
