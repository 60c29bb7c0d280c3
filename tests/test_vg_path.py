"""VoiceGatewayPath: a bug while handling an app frame ends the call; it never hangs."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bridge.voicegateway.protocol import CallProtocol
from tests.conftest import BridgeFactory, route_config

START = {
    "id": "s-1",
    "type": "event",
    "name": "start",
    "parameters": {"caller": "+4921154591991", "callee": "+18005550100"},
}


@pytest.fixture
async def greeting_app() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=["ws.jambonz.org"])
        await ws.prepare(request)
        async for msg in ws:
            frame = json.loads(msg.data)
            if frame["type"] == "session:new":
                verbs = [{"verb": "say", "text": "Hello."}]
                await ws.send_json({"type": "ack", "msgid": frame["msgid"], "data": verbs})
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"ws://127.0.0.1:{runner.addresses[0][1]}/"
    await runner.cleanup()


async def test_a_failing_frame_handler_ends_the_call_instead_of_hanging(
    greeting_app: str, bridge_factory: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: CallProtocol, text: Any, now: float) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(CallProtocol, "receive_text", broken)
    bridge = await bridge_factory(route_config(greeting_app))
    auth = {"Authorization": "Bearer tok"}
    async with bridge.http.post(
        bridge.url + "/ac/r", json={"conversation": str(uuid.uuid4())}, headers=auth
    ) as resp:
        urls = await resp.json()
    async with bridge.http.post(
        bridge.url + urls["activitiesURL"], json={"activities": [START]}, headers=auth
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["activities"][-1]["name"] == "hangup"
    assert (
        bridge.metric("acvg_upstream_errors_total", route="r", path="voicegateway", kind="internal")
        == 1
    )


# ---- verbs and commands with no AudioCodes counterpart (mappings/README.md, "Verb fates") ----


class ScriptedApp:
    """A jambonz WS app answering `session:new` and each hook from a script; it records every
    frame the bridge sent, and may send `commands` right after its `session:new` ack."""

    def __init__(
        self,
        first: list[dict[str, Any]],
        hooks: dict[str, list[dict[str, Any]]] | None = None,
        commands: list[dict[str, Any]] | None = None,
    ) -> None:
        self.first = first
        self.hooks = hooks or {}
        self.commands = commands or []
        self.received: list[dict[str, Any]] = []

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=["ws.jambonz.org"])
        await ws.prepare(request)
        async for msg in ws:
            frame = json.loads(msg.data)
            self.received.append(frame)
            if frame["type"] == "session:new":
                await ws.send_json({"type": "ack", "msgid": frame["msgid"], "data": self.first})
                for command in self.commands:
                    await ws.send_json(command)
            elif frame["type"] in ("verb:hook", "session:redirect"):
                verbs = self.hooks.get(frame["hook"], [])
                await ws.send_json({"type": "ack", "msgid": frame["msgid"], "data": verbs})
        return ws


@pytest.fixture
async def serve_app() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def serve(script: ScriptedApp) -> str:
        app = web.Application()
        app.router.add_get("/", script.handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"ws://127.0.0.1:{runner.addresses[0][1]}/"

    yield serve
    for runner in runners:
        await runner.cleanup()


async def _first_turn(bridge: Any) -> list[dict[str, Any]]:
    auth = {"Authorization": "Bearer tok"}
    async with bridge.http.post(
        bridge.url + "/ac/r", json={"conversation": str(uuid.uuid4())}, headers=auth
    ) as resp:
        urls = await resp.json()
    async with bridge.http.post(
        bridge.url + urls["activitiesURL"], json={"activities": [START]}, headers=auth
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    return [
        {k: v for k, v in a.items() if k not in ("id", "timestamp")} for a in body["activities"]
    ]


def _unmapped(bridge: Any) -> float:
    return float(
        bridge.metric(
            "acvg_translations_total", direction="to_audiocodes", node="unmapped", result="unmapped"
        )
    )


async def test_an_unserved_enqueue_reports_its_hook_and_the_app_decides(
    serve_app: Any, bridge_factory: BridgeFactory
) -> None:
    """A dropped blocking verb never leaves the call waiting: its actionHook reports the failure
    at once, the app's answer is what the caller hears, in the same turn."""
    script = ScriptedApp(
        [
            {"verb": "say", "text": "Connecting you."},
            {"verb": "enqueue", "name": "support", "actionHook": "/queue"},
        ],
        {"/queue": [{"verb": "say", "text": "All agents are busy."}, {"verb": "hangup"}]},
    )
    bridge = await bridge_factory(route_config(await serve_app(script)))
    activities = await _first_turn(bridge)
    assert activities == [
        {"type": "message", "text": "Connecting you."},
        {"type": "message", "text": "All agents are busy."},
        {"type": "event", "name": "hangup"},
    ]
    [hook] = [f for f in script.received if f["type"] == "verb:hook"]
    assert hook["hook"] == "/queue"
    assert hook["data"]["queue_result"] == "error"
    assert _unmapped(bridge) == 1


async def test_a_pause_is_ssml_silence_between_the_prompts_of_one_turn(
    serve_app: Any, bridge_factory: BridgeFactory
) -> None:
    script = ScriptedApp(
        [
            {"verb": "say", "text": "One moment."},
            {"verb": "pause", "length": 1.5},
            {"verb": "say", "text": "Here it is."},
        ]
    )
    bridge = await bridge_factory(route_config(await serve_app(script)))
    assert await _first_turn(bridge) == [
        {"type": "message", "text": "One moment."},
        {"type": "message", "text": '<speak><break time="1500ms"/></speak>'},
        {"type": "message", "text": "Here it is."},
    ]
    ok = bridge.metric(
        "acvg_translations_total", direction="to_audiocodes", node="pause", result="ok"
    )
    assert ok == 1


async def test_sip_decline_hangs_up_with_the_sip_reason(
    serve_app: Any, bridge_factory: BridgeFactory
) -> None:
    script = ScriptedApp([{"verb": "sip:decline", "status": 486, "reason": "Busy Here"}])
    bridge = await bridge_factory(route_config(await serve_app(script)))
    assert await _first_turn(bridge) == [
        {"type": "event", "name": "hangup", "activityParams": {"hangupReason": "Busy Here"}}
    ]
    statuses = [f["data"]["call_status"] for f in script.received if f["type"] == "call:status"]
    assert statuses[-1] == "completed"


async def test_an_unsupported_command_is_counted_and_logged_once_per_call(
    serve_app: Any, bridge_factory: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    mute = {"type": "command", "command": "mute:status", "data": {"mute_status": "mute"}}
    script = ScriptedApp([{"verb": "say", "text": "Hello."}], commands=[mute, mute])
    bridge = await bridge_factory(route_config(await serve_app(script)))
    with caplog.at_level("WARNING", logger="bridge.vg_path"):
        assert await _first_turn(bridge) == [{"type": "message", "text": "Hello."}]
    assert _unmapped(bridge) == 2
    lines = [r.getMessage() for r in caplog.records if "mute:status" in r.getMessage()]
    assert len(lines) == 1, lines


async def test_with_unmapped_fail_an_unsupported_command_ends_the_call(
    serve_app: Any, bridge_factory: BridgeFactory
) -> None:
    whisper = {"type": "command", "command": "whisper", "data": {"whisper": []}}
    script = ScriptedApp(
        [{"verb": "say", "text": "Hello."}, {"verb": "pause", "length": 0}], commands=[whisper]
    )
    bridge = await bridge_factory(route_config(await serve_app(script), unmapped="fail"))
    activities = await _first_turn(bridge)
    assert activities[0] == {"type": "message", "text": "Hello."}
    assert activities[-1]["name"] == "hangup"
    statuses = [f["data"]["call_status"] for f in script.received if f["type"] == "call:status"]
    assert statuses[-1] == "completed"
