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
