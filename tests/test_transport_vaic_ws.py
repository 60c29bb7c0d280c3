"""AudioCodes Bot API WebSocket (streaming) mode, text only, end to end on real sockets:
VAIC socket → bridge → a @jambonz/node-client-ws app that sends each output late.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import BridgeFactory, RunningBridge, route_config
from tests.nodepeer import PEERS_DIR, NodeApp, running_vg_app

AUTH = {"Authorization": "Bearer tok"}
START = {
    "type": "event",
    "name": "start",
    "parameters": {"caller": "+4921154591991", "callee": "+18005550100"},
}


@pytest.fixture
def delayed_app(tmp_path: Path) -> Iterator[NodeApp]:
    with running_vg_app(tmp_path / "delayed.jsonl", script=PEERS_DIR / "delayed_app.js") as app:
        yield app


class StreamCaller:
    """VAIC in WebSocket mode, from audiocodes-bot-api.md §2."""

    def __init__(self, bridge: RunningBridge) -> None:
        self.bridge = bridge
        self.conversation = str(uuid.uuid4())
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, headers: dict[str, str] = AUTH) -> aiohttp.ClientWebSocketResponse:
        url = self.bridge.url.replace("http", "ws", 1) + "/ac/r"
        self.ws = await self.bridge.http.ws_connect(url, headers=headers)
        return self.ws

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_json({"conversationId": self.conversation, **message})

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        assert self.ws is not None
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        message: dict[str, Any] = json.loads(msg.data)
        return message

    async def initiate(self) -> dict[str, Any]:
        await self.send(
            {
                "type": "session.initiate",
                "expectAudioMessages": False,
                "supportedMediaFormats": ["raw/lpcm16"],
                "caller": "+4921154591991",
            }
        )
        return await self.receive()

    async def activities(self, *activities: dict[str, Any]) -> None:
        stamped = [{"id": str(uuid.uuid4()), **a} for a in activities]
        await self.send({"type": "activities", "activities": stamped})


def texts(message: dict[str, Any]) -> list[str]:
    assert message["type"] == "activities"
    return [a.get("text") or a["name"] for a in message["activities"]]


async def test_validate_and_refusals(bridge_factory: BridgeFactory) -> None:
    bridge = await bridge_factory(route_config("ws://127.0.0.1:1/x"))
    caller = StreamCaller(bridge)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await caller.connect(headers={"Authorization": "Bearer wrong"})
    assert info.value.status == 401
    await caller.connect()
    await caller.send({"type": "connection.validate"})
    assert await caller.receive() == {"type": "connection.validated", "success": True}
    await caller.send({"type": "session.initiate", "expectAudioMessages": True})
    refusal = await caller.receive()
    assert refusal["type"] == "session.error"
    assert "text" in refusal["reason"]
    assert caller.ws is not None
    closing = await caller.ws.receive()
    assert closing.type == aiohttp.WSMsgType.CLOSE
    assert caller.ws.close_code == 1008


async def test_sync_one_activities_message_per_turn(
    delayed_app: NodeApp, bridge_factory: BridgeFactory
) -> None:
    bridge = await bridge_factory(route_config(delayed_app.url("/")))
    caller = StreamCaller(bridge)
    await caller.connect()
    accepted = await caller.initiate()
    assert accepted["type"] == "session.accepted"
    await caller.activities(START)
    assert texts(await caller.receive())[0] == "Welcome."
    await caller.activities({"type": "message", "text": "hello"})
    turn = texts(await caller.receive())
    assert turn[:3] == ["Step 1.", "Step 2.", "Step 3."]
    await caller.send({"type": "session.end", "reasonCode": "client-disconnected"})
    for _ in range(100):
        statuses = [m for m in delayed_app.received("call:status")]
        if any(m["data"]["call_status"] == "completed" for m in statuses):
            break
        await asyncio.sleep(0.05)
    assert statuses[-1]["data"]["call_termination_by"] == "caller"


async def test_async_one_activities_message_per_output(
    delayed_app: NodeApp, bridge_factory: BridgeFactory
) -> None:
    bridge = await bridge_factory(route_config(delayed_app.url("/"), async_mode=True))
    caller = StreamCaller(bridge)
    await caller.connect()
    await caller.initiate()
    await caller.activities(START)
    greeting = await caller.receive()
    assert texts(greeting) == ["Welcome."]
    while True:
        try:
            await caller.receive(timeout=0.3)
        except TimeoutError:
            break
    await caller.activities({"type": "message", "text": "hello"})
    got = [texts(await caller.receive()) for _ in range(3)]
    assert got == [["Step 1."], ["Step 2."], ["Step 3."]]


async def test_resume_on_a_new_socket_gets_what_waited(
    delayed_app: NodeApp, bridge_factory: BridgeFactory
) -> None:
    bridge = await bridge_factory(route_config(delayed_app.url("/"), async_mode=True))
    caller = StreamCaller(bridge)
    first = await caller.connect()
    await caller.initiate()
    await caller.activities(START)
    assert texts(await caller.receive()) == ["Welcome."]
    await asyncio.sleep(0.3)
    await caller.activities({"type": "message", "text": "hello"})
    await first.close()
    await asyncio.sleep(0.4)  # the three steps arrive while VAIC is away
    await caller.connect()
    await caller.send({"type": "session.resume"})
    assert (await caller.receive())["type"] == "session.accepted"
    got: list[str] = []
    while "Step 3." not in got:
        got += texts(await caller.receive())
    assert [t for t in got if t.startswith("Step")] == ["Step 1.", "Step 2.", "Step 3."]


async def test_resume_of_unknown_conversation_is_refused(bridge_factory: BridgeFactory) -> None:
    bridge = await bridge_factory(route_config("ws://127.0.0.1:1/x"))
    caller = StreamCaller(bridge)
    await caller.connect()
    await caller.send({"type": "session.resume"})
    refusal = await caller.receive()
    assert refusal["type"] == "session.error"
    assert refusal["conversationId"] == caller.conversation
