"""End to end through real sockets: VAIC → bridge → an app on the current `@jambonz/sdk@0.10.1`.

The app is `tests/peers/sdk_app.js`. What it sends is the SDK's own framing: `send()` is the
session:new ack and, after that, a `redirect` command; `reply()` is a hook's ack and
`send({execImmediate: false})` a queued `redirect` (`queueCommand: true`); `injectRecord`,
`injectDtmf`, `injectTag` and `injectRedirect` are commands. Each test asserts the AudioCodes
activities VAIC receives, then checks the app's log: every message the bridge sent validates
against both jambonz schema sets, `call:status` completed comes last, the socket closed with 1000.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.sim.scenario import bot_url_for
from bridge.sim.vaic import StreamingVaicClient, VaicClient
from tests.conftest import BridgeFactory, RunningBridge, route_config
from tests.nodepeer import SDK_APP, NodeApp, message_problems, running_vg_app

CALLER_NATIONAL = "0211 54591991"
CALLER_E164 = "+4921154591991"
CALLEE = "+18005550100"
PROMPT = "Say something or press a key."
NEXT = {
    "type": "message",
    "text": "What next?",
    "activityParams": {"userNoInputTimeoutMS": 8000, "sendDTMF": True},
}
HOOK_SCHEMAS = {"voice": "gather"}


@pytest.fixture
def sdk_app(tmp_path: Path) -> Iterator[NodeApp]:
    with running_vg_app(tmp_path / "sdk_app.jsonl", script=SDK_APP) as app:
        yield app


async def _bridge(sdk_app: NodeApp, bridge_factory: BridgeFactory) -> RunningBridge:
    return await bridge_factory(route_config(sdk_app.url("/cognigy"), default_region="DE"))


async def _open_call(sdk_app: NodeApp, bridge_factory: BridgeFactory) -> VaicClient:
    bridge = await _bridge(sdk_app, bridge_factory)
    vaic = VaicClient(f"{bridge.url}/ac/r", "tok", session=bridge.http)
    created = await vaic.create()
    assert created.status == 200, created.text
    return vaic


def _bare(activities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for output in activities:
        assert isinstance(output.get("id"), str) and output["id"]
    return [{k: v for k, v in a.items() if k not in ("id", "timestamp")} for a in activities]


async def _turn(vaic: VaicClient, activity: dict[str, Any]) -> list[dict[str, Any]]:
    reply = await vaic.send([activity])
    assert reply.status == 200, reply.text
    return _bare(reply.activities)


def _dtmf(digit: str) -> dict[str, Any]:
    return {"type": "event", "name": "DTMF", "value": digit}


def _start(conversation_id: str) -> dict[str, Any]:
    parameters = {
        "vaigConversationId": conversation_id,
        "caller": CALLER_NATIONAL,
        "callee": CALLEE,
    }
    return {"type": "event", "name": "start", "parameters": parameters}


def _texts(activities: list[dict[str, Any]]) -> list[str | None]:
    return [a.get("text") if a["type"] == "message" else a.get("name") for a in activities]


async def _wait_closed(app: NodeApp, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not any(e.get("dir") == "close" for e in app.log()):
            await asyncio.sleep(0.02)


def _check_peer_log(app: NodeApp) -> list[dict[str, Any]]:
    """Everything the bridge sent, checked; returns the messages."""
    assert app.alive, "sdk_app.js exited"
    messages = app.received()
    assert messages, "the bridge sent nothing"
    problems = message_problems(messages, HOOK_SCHEMAS)
    assert not problems, "\n".join(problems)
    session_new = messages[0]
    assert session_new["type"] == "session:new"
    assert session_new["data"]["from"] == CALLER_E164
    assert session_new["data"]["customerData"]["numberMetaData"]["country"] == "DE"
    assert {m["call_sid"] for m in messages} == {session_new["call_sid"]}
    statuses = [m["data"]["call_status"] for m in messages if m["type"] == "call:status"]
    assert statuses == ["in-progress", "completed"]
    assert messages[-1]["type"] == "call:status"
    closes = [e for e in app.log() if e.get("dir") == "close"]
    assert [c["code"] for c in closes] == [1000], closes
    return messages


async def test_sdk_app_send_reply_and_inject_commands(
    sdk_app: NodeApp, bridge_factory: BridgeFactory
) -> None:
    vaic = await _open_call(sdk_app, bridge_factory)

    # send() before any ack is the session:new ack: config + say + gather.
    assert await _turn(vaic, _start(vaic.conversation_id or "")) == [
        {"type": "event", "name": "config", "sessionParams": {"language": "en-GB"}},
        {"type": "message", "text": "Welcome to the SDK test app."},
        {
            "type": "message",
            "text": PROMPT,
            "activityParams": {"userNoInputTimeoutMS": 8000, "sendDTMF": True},
        },
    ]
    # reply() acks the gather's hook.
    outputs = await _turn(vaic, {"type": "message", "text": "check my order"})
    assert _texts(outputs) == ["SDK heard check my order.", "Anything else?"]

    # injectRecord runs before the ack's verbs: Call Recording's start event first.
    assert await _turn(vaic, _dtmf("1")) == [
        {
            "type": "event",
            "name": "startCallRecording",
            "activityParams": {
                "callRecordingId": "rec-sdk-1",
                "callRecordingServer": "sip:recorder@rec.example.com",
            },
        },
        {"type": "message", "text": "Recording started."},
        NEXT,
    ]
    # injectDtmf → sendDtmf; injectTag has no activity, it replaces customerData (below).
    assert await _turn(vaic, _dtmf("2")) == [
        {"type": "event", "name": "sendDtmf", "activityParams": {"dtmfDigits": "5"}},
        {"type": "message", "text": "Tagged."},
        NEXT,
    ]
    # reply() with one verb, then send({execImmediate: false}): queued behind it, same turn.
    assert await _turn(vaic, _dtmf("3")) == [
        {"type": "message", "text": "First part."},
        {"type": "message", "text": "Second part."},
        NEXT,
    ]
    outputs = await _turn(vaic, {"type": "event", "name": "noUserInput", "value": 1})
    assert _texts(outputs) == ["Still there?", PROMPT]

    # injectRedirect → session:redirect to hook "menu"; its ack's verbs answer the turn.
    outputs = await _turn(vaic, _dtmf("4"))
    assert _texts(outputs) == ["Main menu.", "Press one to record, two to tag."]

    assert await _turn(vaic, _dtmf("9")) == [
        {"type": "message", "text": "Goodbye, gold caller."},
        {
            "type": "event",
            "name": "hangup",
            "activityParams": {"hangupReason": "caller pressed nine"},
        },
    ]
    reply = await vaic.disconnect("bot-disconnected", "hangup")
    assert (reply.status, reply.body) == (200, {})
    await _wait_closed(sdk_app)

    messages = _check_peer_log(sdk_app)
    assert [m["type"] for m in messages] == [
        "session:new",
        "call:status",
        *["verb:hook"] * 6,
        "session:redirect",
        "verb:hook",
        "call:status",
    ]
    redirect = next(m for m in messages if m["type"] == "session:redirect")
    assert redirect["hook"] == "menu"
    hooks = [m for m in messages if m["type"] == "verb:hook"]
    # the tag (DTMF 2) is customerData from the next hook on
    tags = [m["data"].get("customerData") for m in hooks]
    assert tags[3:] == [{"tier": "gold", "menu": "two"}] * 4
    assert all("tier" not in (t or {}) for t in tags[:3])

    # The SDK's own framing, as sent: ack, commands, queued redirect.
    sent = sdk_app.sent()
    commands = [(m["command"], m.get("queueCommand")) for m in sent if m["type"] == "command"]
    assert commands == [
        ("record", None),
        ("dtmf", None),
        ("tag", None),
        ("redirect", True),
        ("redirect", None),
    ]
    assert sum(m["type"] == "ack" for m in sent) == len(hooks) + 2  # + session:new, redirect


async def test_sdk_app_send_after_ack_replaces_the_stack_in_websocket_mode(
    sdk_app: NodeApp, bridge_factory: BridgeFactory
) -> None:
    bridge = await _bridge(sdk_app, bridge_factory)
    client = StreamingVaicClient(bot_url_for(bridge.url, "r"), "tok", session=bridge.http)
    accepted = await client.initiate(caller=CALLER_NATIONAL)
    assert accepted["type"] == "session.accepted", accepted
    await client.send([_start(client.conversation_id or "")])
    greeting = await client.next_activities(10)
    assert greeting is not None
    assert _texts(_bare(greeting["activities"]))[-1] == PROMPT

    # DTMF 5: reply() acks at once (say + gather); 150 ms later send() is a `redirect` command
    # (queueCommand false) that kills the waiting gather and pushes the answer unprompted.
    await client.send([_dtmf("5")])
    first = await client.next_activities(10)
    assert first is not None
    assert _texts(_bare(first["activities"])) == ["Looking that up.", "One moment."]
    pushed = await client.next_activities(10)
    assert pushed is not None
    assert _bare(pushed["activities"]) == [{"type": "message", "text": "Found it."}, NEXT]

    # the replaced gather's hook never fires; the new one answers the next input
    await client.send([_dtmf("9")])
    goodbye = await client.next_activities(10)
    assert goodbye is not None
    assert _texts(_bare(goodbye["activities"])) == ["Goodbye, none caller.", "hangup"]
    assert await client.end("bot-disconnected", "hangup")
    await _wait_closed(sdk_app)

    messages = _check_peer_log(sdk_app)
    hooks = [m["data"]["digits"] for m in messages if m["type"] == "verb:hook"]
    assert hooks == ["5", "9"]
    redirects = [m for m in sdk_app.sent() if m.get("command") == "redirect"]
    assert [r["queueCommand"] for r in redirects] == [False]
