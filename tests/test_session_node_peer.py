"""End to end through real sockets: VAIC (HTTP mode) → bridge → the strict Node VG app.

The app is `tests/peers/vg_app.js` on the official `@jambonz/node-client-ws@0.2.13`: a message
without `msgid` or `data` crashes it, and it logs every frame it receives and sends. After each
call the log is checked: every message the bridge sent validates against the official jambonz
callback schemas, `call:status` completed is the last one, and the socket closed with 1000.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.sim.vaic import VaicClient
from tests.conftest import BridgeFactory, RunningBridge, route_config
from tests.nodepeer import NodeApp, message_problems, running_vg_app

CALLER_NATIONAL = "0211 54591991"
CALLER_E164 = "+4921154591991"
CALLEE = "+18005550100"
PLAY_URL = "https://media.example.com/prompts/node-app.wav"
PROMPT = "Say something or press a key."
# The callback schema of each hook vg_app.js (or a Cognigy flow) uses.
HOOK_SCHEMAS = {"voice": "gather", "dial": "dial", "refer": "sip-refer", "play": "play"}


@pytest.fixture
def node_app(tmp_path: Path) -> Iterator[NodeApp]:
    with running_vg_app(tmp_path / "vg_app.jsonl") as app:
        yield app


async def _open_call(node_app: NodeApp, bridge_factory: BridgeFactory) -> VaicClient:
    config = route_config(
        node_app.url("/cognigy"),
        default_region="DE",
        sip_headers={"callIdentification": "X-Conversation-ID"},
    )
    bridge: RunningBridge = await bridge_factory(config)
    vaic = VaicClient(f"{bridge.url}/ac/r", "tok", session=bridge.http)
    created = await vaic.create()
    assert created.status == 200, created.text
    return vaic


async def _turn(vaic: VaicClient, activity: dict[str, Any]) -> list[dict[str, Any]]:
    reply = await vaic.send([activity])
    assert reply.status == 200, reply.text
    for output in reply.activities:
        assert isinstance(output.get("id"), str) and output["id"]
        assert str(output.get("timestamp", "")).endswith("Z")
    return [{k: v for k, v in a.items() if k not in ("id", "timestamp")} for a in reply.activities]


def _start(conversation_id: str) -> dict[str, Any]:
    return {
        "type": "event",
        "name": "start",
        "parameters": {
            "vaigConversationId": conversation_id,
            "caller": CALLER_NATIONAL,
            "callee": CALLEE,
            "callerDisplayName": "Erika",
            "callIdentification": "conv-node-1",
        },
    }


async def _wait_closed(app: NodeApp, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            closes = [e for e in app.log() if e.get("dir") == "close"]
            if closes:
                return closes[0]
            await asyncio.sleep(0.02)


def _check_peer_log(app: NodeApp) -> list[dict[str, Any]]:
    """Everything the bridge sent: strict envelope, valid against the callback schemas,
    `call:status` completed last, socket closed with 1000. Returns the messages."""
    assert app.alive, "vg_app.js exited: the bridge sent a frame the strict SDK cannot take"
    messages = app.received()
    assert messages, "the bridge sent nothing"
    problems = message_problems(messages, HOOK_SCHEMAS)
    assert not problems, "\n".join(problems)

    session_new = messages[0]
    assert session_new["type"] == "session:new"
    data = session_new["data"]
    assert data["from"] == CALLER_E164
    assert data["to"] == CALLEE
    assert data["direction"] == "inbound"
    metadata = data["customerData"]["numberMetaData"]
    assert metadata["number"] == CALLER_E164
    assert metadata["country"] == "DE" and metadata["countryCallingCode"] == "49"
    assert data["sip"]["headers"]["X-Conversation-ID"] == "conv-node-1"
    call_sids = {m["call_sid"] for m in messages}
    assert call_sids == {session_new["call_sid"]}

    last = messages[-1]
    assert last["type"] == "call:status", [m["type"] for m in messages]
    assert last["data"]["call_status"] == "completed"
    statuses = [m["data"]["call_status"] for m in messages if m["type"] == "call:status"]
    assert statuses == ["in-progress", "completed"]

    closes = [e for e in app.log() if e.get("dir") == "close"]
    assert [c["code"] for c in closes] == [1000], closes
    return messages


async def test_node_app_whole_flow(node_app: NodeApp, bridge_factory: BridgeFactory) -> None:
    vaic = await _open_call(node_app, bridge_factory)

    # start → session:new; the app's config + say + gather come back as the greeting turn.
    assert await _turn(vaic, _start(vaic.conversation_id or "")) == [
        {"type": "event", "name": "config", "sessionParams": {"language": "en-US"}},
        {"type": "message", "text": "Welcome to the Node test app."},
        {
            "type": "message",
            "text": PROMPT,
            "activityParams": {"userNoInputTimeoutMS": 10000, "sendDTMF": True},
        },
    ]

    # speech → verb:hook speechDetected → say + gather.
    outputs = await _turn(
        vaic, {"type": "message", "text": "pay my bill", "parameters": {"confidence": 0.87}}
    )
    assert [a.get("text") for a in outputs] == ["You said pay my bill.", "Anything else?"]
    assert outputs[1]["activityParams"]["userNoInputTimeoutMS"] == 10000

    # DTMF 1 → play + sip:request INFO + gather.
    outputs = await _turn(vaic, {"type": "event", "name": "DTMF", "value": "1"})
    assert outputs[:2] == [
        {"type": "event", "name": "playUrl", "activityParams": {"playUrlUrl": PLAY_URL}},
        {"type": "event", "name": "sendMetaData", "value": {"menu": "one", "source": "node-app"}},
    ]
    assert outputs[2]["type"] == "message" and outputs[2]["text"] == "What next?"
    assert len(outputs) == 3

    # DTMF 2 → dial → one transfer activity (dial ends the turn).
    assert await _turn(vaic, {"type": "event", "name": "DTMF", "value": "2"}) == [
        {
            "type": "event",
            "name": "transfer",
            "activityParams": {
                "transferTarget": "tel:+4989123456",
                "transferSipHeaders": [{"name": "X-Transfer-Reason", "value": "agent-requested"}],
            },
        }
    ]

    # no input → verb:hook timeout → re-prompt.
    outputs = await _turn(vaic, {"type": "event", "name": "noUserInput", "value": 1})
    assert [a.get("text") for a in outputs] == ["Sorry, I did not hear anything.", PROMPT]

    # DTMF 9 → say + hangup; the VG side ends the call (call:status completed, close 1000).
    assert await _turn(vaic, {"type": "event", "name": "DTMF", "value": "9"}) == [
        {"type": "message", "text": "Goodbye."},
        {
            "type": "event",
            "name": "hangup",
            "activityParams": {"hangupReason": "caller pressed nine"},
        },
    ]
    reply = await vaic.disconnect("bot-disconnected", "hangup")
    assert (reply.status, reply.body) == (200, {})
    close = await _wait_closed(node_app)
    assert close["code"] == 1000

    messages = _check_peer_log(node_app)
    hooks = [(m["hook"], m["data"]["reason"]) for m in messages if m["type"] == "verb:hook"]
    assert hooks == [
        ("voice", "speechDetected"),
        ("voice", "dtmfDetected"),
        ("voice", "dtmfDetected"),
        ("voice", "timeout"),
        ("voice", "dtmfDetected"),
    ]
    digits = [m["data"].get("digits") for m in messages if m["type"] == "verb:hook"]
    assert digits == [None, "1", "2", None, "9"]
    speech = messages[2]["data"]["speech"]
    assert speech["alternatives"] == [{"transcript": "pay my bill", "confidence": 0.87}]
    assert messages[-1]["data"]["call_termination_by"] == "jambonz"


async def test_node_app_dial_action_hook(node_app: NodeApp, bridge_factory: BridgeFactory) -> None:
    vaic = await _open_call(node_app, bridge_factory)
    await _turn(vaic, _start(vaic.conversation_id or ""))
    outputs = await _turn(vaic, {"type": "event", "name": "DTMF", "value": "2"})
    assert [a.get("name") for a in outputs] == ["transfer"]

    # the transfer failed → the dial actionHook → say + hangup.
    status = {"status": "failed", "reasonCode": "busy"}
    assert await _turn(vaic, {"type": "event", "name": "transferStatus", "value": status}) == [
        {"type": "message", "text": "The transfer has ended."},
        {"type": "event", "name": "hangup", "activityParams": {"hangupReason": "transfer ended"}},
    ]
    reply = await vaic.disconnect("bot-disconnected", "hangup")
    assert reply.status == 200
    await _wait_closed(node_app)

    messages = _check_peer_log(node_app)
    dial_hooks = [m for m in messages if m["type"] == "verb:hook" and m["hook"] == "dial"]
    assert len(dial_hooks) == 1
    assert dial_hooks[0]["data"]["dial_call_status"] == "busy"


async def test_node_app_caller_hangs_up(node_app: NodeApp, bridge_factory: BridgeFactory) -> None:
    vaic = await _open_call(node_app, bridge_factory)
    await _turn(vaic, _start(vaic.conversation_id or ""))
    reply = await vaic.disconnect("client-disconnected", "BYE")
    assert (reply.status, reply.body) == (200, {})
    await _wait_closed(node_app)

    messages = _check_peer_log(node_app)
    assert [m["type"] for m in messages] == ["session:new", "call:status", "call:status"]
    assert messages[-1]["data"]["call_termination_by"] == "caller"
    assert isinstance(messages[-1]["data"]["duration"], int)
