"""Sync batching and Async Mode end to end, against a @jambonz/node-client-ws app that answers
every hook with an empty ack and sends each output later in its own `command redirect`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import BridgeFactory, RunningBridge, route_config
from tests.jambonz_schema import assert_valid_callback
from tests.nodepeer import PEERS_DIR, NodeApp, running_vg_app

DELAYED_APP = PEERS_DIR / "delayed_app.js"
AUTH = {"Authorization": "Bearer tok"}
START = {
    "type": "event",
    "name": "start",
    "parameters": {"caller": "+4921154591991", "callee": "+18005550100"},
}


@pytest.fixture
def delayed_app(tmp_path: Path) -> Iterator[NodeApp]:
    with running_vg_app(tmp_path / "delayed.jsonl", script=DELAYED_APP) as app:
        yield app


class Caller:
    def __init__(self, bridge: RunningBridge) -> None:
        self.bridge = bridge
        self.urls: dict[str, Any] = {}

    async def create(self) -> None:
        async with self.bridge.http.post(
            self.bridge.url + "/ac/r", json={"conversation": str(uuid.uuid4())}, headers=AUTH
        ) as resp:
            assert resp.status == 200
            self.urls = await resp.json()

    async def send(self, activity: dict[str, Any]) -> dict[str, Any]:
        body = {"activities": [{"id": str(uuid.uuid4()), **activity}]}
        async with self.bridge.http.post(
            self.bridge.url + self.urls["activitiesURL"], json=body, headers=AUTH
        ) as resp:
            assert resp.status == 200
            result: dict[str, Any] = await resp.json()
            return result

    async def disconnect(self) -> None:
        async with self.bridge.http.post(
            self.bridge.url + self.urls["disconnectURL"], json={}, headers=AUTH
        ) as resp:
            assert resp.status == 200


def texts(activities: list[dict[str, Any]]) -> list[str]:
    return [a.get("text") or a["name"] for a in activities]


@pytest.fixture
async def push_socket() -> AsyncIterator[Any]:
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def connect(caller: Caller, headers: dict[str, str] = AUTH) -> Any:
        url = caller.bridge.url.replace("http", "ws", 1) + caller.urls["websocketURL"]
        ws = await caller.bridge.http.ws_connect(url, headers=headers)
        sockets.append(ws)
        return ws

    yield connect
    for ws in sockets:
        await ws.close()


async def next_push(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    frame: dict[str, Any] = json.loads(msg.data)
    return frame


async def test_sync_batches_delayed_redirects_into_one_response(
    delayed_app: NodeApp, bridge_factory: BridgeFactory
) -> None:
    bridge = await bridge_factory(route_config(delayed_app.url("/")))
    caller = Caller(bridge)
    await caller.create()
    assert "websocketURL" not in caller.urls
    greeting = await caller.send(START)
    assert texts(greeting["activities"])[0] == "Welcome."
    turn = await caller.send({"type": "message", "text": "hello"})
    # Three redirect commands 40 ms apart: one response holds them all, in order.
    assert texts(turn["activities"])[:3] == ["Step 1.", "Step 2.", "Step 3."]
    await caller.disconnect()
    hooks = [
        m["msg"] for m in delayed_app.log() if m["dir"] == "in" and m["msg"]["type"] == "verb:hook"
    ]
    assert len(hooks) == 1
    assert_valid_callback("gather", hooks[0]["data"])


async def test_sync_output_between_inputs_waits_for_next_response(
    delayed_app: NodeApp, bridge_factory: BridgeFactory
) -> None:
    bridge = await bridge_factory(route_config(delayed_app.url("/"), turn_settle_ms=30))
    caller = Caller(bridge)
    await caller.create()
    await caller.send(START)
    quiet = await caller.send({"type": "event", "name": "DTMF", "value": "5"})
    assert quiet["activities"] == []
    await asyncio.sleep(0.4)  # the app's unsolicited "Notice." arrives meanwhile
    last = await caller.send({"type": "event", "name": "DTMF", "value": "7"})
    got = texts(last["activities"])
    assert got[0] == "Notice."
    if len(got) < 3:  # with a 30 ms settle the app's 30 ms-late "Bye." may miss this response
        await asyncio.sleep(0.3)
        got += texts((await caller.send({"type": "event", "name": "noUserInput"}))["activities"])
    assert got == ["Notice.", "Bye.", "hangup"]


async def test_async_answers_at_once_and_pushes_each_output_in_order(
    delayed_app: NodeApp, bridge_factory: BridgeFactory, push_socket: Any
) -> None:
    bridge = await bridge_factory(route_config(delayed_app.url("/"), async_mode=True))
    caller = Caller(bridge)
    await caller.create()
    assert caller.urls["websocketURL"].endswith("/websocket")
    ws = await push_socket(caller)
    assert await caller.send(START) == {
        "conversation": caller.urls["activitiesURL"].split("/")[4],
        "activities": [],
    }
    first = await next_push(ws)
    assert texts(first["activities"]) == ["Welcome."]
    while True:  # the greeting's gather may add its own activity
        try:
            await next_push(ws, timeout=0.3)
        except TimeoutError:
            break
    answer = await caller.send({"type": "message", "text": "hello"})
    assert answer["activities"] == []
    pushed = [await next_push(ws) for _ in range(3)]
    for frame in pushed:
        assert len(frame["activities"]) == 1
        assert frame["conversation"] == first["conversation"]
    assert [texts(f["activities"])[0] for f in pushed] == ["Step 1.", "Step 2.", "Step 3."]
    await caller.disconnect()


async def test_async_without_push_socket_outputs_wait_for_next_response(
    delayed_app: NodeApp, bridge_factory: BridgeFactory, push_socket: Any
) -> None:
    bridge = await bridge_factory(route_config(delayed_app.url("/"), async_mode=True))
    caller = Caller(bridge)
    await caller.create()
    got = texts((await caller.send(START))["activities"])
    await asyncio.sleep(0.2)
    got += texts((await caller.send({"type": "message", "text": "hello"}))["activities"])
    await asyncio.sleep(0.4)
    got += texts((await caller.send({"type": "event", "name": "DTMF", "value": "5"}))["activities"])
    assert got.count("Welcome.") == got.count("Step 2.") == 1
    assert (
        got.index("Welcome.") < got.index("Step 1.") < got.index("Step 2.") < got.index("Step 3.")
    )
    # Connecting the push socket flushes what waits before anything new.
    await asyncio.sleep(0.3)
    ws = await push_socket(caller)
    frame = await next_push(ws)
    assert texts(frame["activities"]) == ["Notice."]


async def test_push_socket_requires_token(
    delayed_app: NodeApp, bridge_factory: BridgeFactory, push_socket: Any
) -> None:
    bridge = await bridge_factory(route_config(delayed_app.url("/"), async_mode=True))
    caller = Caller(bridge)
    await caller.create()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await push_socket(caller, headers={"Authorization": "Bearer nope"})
    assert info.value.status == 401
