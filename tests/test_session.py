"""End to end through real sockets: VAIC (HTTP mode) → bridge → a jambonz-python-sdk VG app.

The app is the real `jambonz-python-sdk==0.4.0` WebSocket endpoint; every message the bridge
sends it is validated against the official jambonz callback schemas bundled with that SDK.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from jambonz_sdk.websocket import create_endpoint

from tests.conftest import BridgeFactory, RunningBridge, route_config
from tests.jambonz_schema import assert_valid_callback

CALLER = "+4921154591991"
CALLEE = "+18005550100"


@dataclass
class PythonPeer:
    """A Cognigy-like VG app on jambonz-python-sdk, recording what the bridge sent it."""

    url: str
    service: Any = None
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Until the SDK has seen the socket end (it drops the session when its loop ends)."""
        async with asyncio.timeout(timeout):
            while not self.received or self.service._sessions:
                await asyncio.sleep(0.01)


@pytest.fixture
async def python_peer() -> AsyncIterator[PythonPeer]:
    make_service, runner = await create_endpoint(host="127.0.0.1", port=0, compress=False)
    port = runner.addresses[0][1]
    peer = PythonPeer(url=f"ws://127.0.0.1:{port}/bot")
    svc = make_service(path="/bot")
    peer.service = svc

    async def on_session(session: Any) -> None:
        peer.received.append(("session:new", session.data))

        async def on_voice(data: dict[str, Any]) -> None:
            peer.received.append(("voice", data))
            reason = data.get("reason")
            if reason == "speechDetected":
                said = data["speech"]["alternatives"][0]["transcript"]
                session.say(text=f"You said {said}").gather(
                    input=["speech", "digits"], actionHook="voice", timeout=8
                )
            elif reason == "dtmfDetected" and data.get("digits") == "1":
                session.play(url="https://media.example/hold.wav").sip_request(
                    method="INFO",
                    body='{"account": "A-1"}',
                    headers={"Content-Type": "application/json"},
                ).gather(input=["digits"], actionHook="voice", timeout=5, numDigits=1)
            elif reason == "dtmfDetected" and data.get("digits") == "2":
                session.dial(
                    target=[{"type": "phone", "number": "+4930123456"}],
                    headers={"X-Queue": "billing"},
                    actionHook="dial",
                )
            elif reason == "timeout":
                session.say(text="Sorry, I did not hear you.").gather(
                    input=["speech"], actionHook="voice", timeout=8
                )
            await session.reply()

        async def on_dial(data: dict[str, Any]) -> None:
            peer.received.append(("dial", data))
            session.say(text="The line is busy.").hangup(headers={"X-Reason": "agent busy"})
            await session.reply()

        async def on_status(data: dict[str, Any]) -> None:
            peer.received.append(("call:status", data))

        session.on("voice", on_voice)
        session.on("dial", on_dial)
        session.on("call:status", on_status)
        session.config(synthesizer={"vendor": "default", "language": "en-US"}).say(
            text="Welcome to Example Energy."
        ).gather(
            input=["speech", "digits"],
            actionHook="voice",
            timeout=10,
            say={"text": "How can I help?"},
        )
        await session.send()

    svc.on("session:new", on_session)
    yield peer
    await runner.cleanup()


class Vaic:
    """The VAIC side of one conversation, written from audiocodes-bot-api.md §1."""

    def __init__(self, bridge: RunningBridge, token: str = "tok") -> None:
        self.bridge = bridge
        self.headers = {"Authorization": f"Bearer {token}"}
        self.urls: dict[str, Any] = {}

    async def post(self, url: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.bridge.http.post(
            self.bridge.url + url, json=body, headers=self.headers
        ) as resp:
            return resp.status, await resp.json()

    async def create(self) -> str:
        conversation = str(uuid.uuid4())
        status, body = await self.post("/ac/r", {"conversation": conversation})
        assert status == 200, body
        self.urls = body
        return conversation

    async def send(self, *activities: dict[str, Any]) -> list[dict[str, Any]]:
        stamped = [
            {"id": str(uuid.uuid4()), "timestamp": "2026-11-25T10:00:00.000Z", **a}
            for a in activities
        ]
        status, body = await self.post(self.urls["activitiesURL"], {"activities": stamped})
        assert status == 200, body
        result: list[dict[str, Any]] = body["activities"]
        for activity in result:
            assert isinstance(activity["id"], str) and activity["id"]
            assert activity["timestamp"].endswith("Z")
        return result


def start_event() -> dict[str, Any]:
    return {
        "type": "event",
        "name": "start",
        "parameters": {
            "caller": CALLER,
            "callee": CALLEE,
            "callerDisplayName": "Erika",
            "callIdentification": "abc-123",
        },
    }


def strip(activities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in a.items() if k not in ("id", "timestamp")} for a in activities]


async def test_probe_create_and_full_call(
    python_peer: PythonPeer, bridge_factory: BridgeFactory
) -> None:
    config = route_config(
        python_peer.url,
        default_region="DE",
        sip_headers={"callIdentification": "X-Conversation-ID"},
    )
    bridge = await bridge_factory(config)
    vaic = Vaic(bridge)
    async with bridge.http.get(bridge.url + "/ac/r", headers=vaic.headers) as resp:
        assert resp.status == 200
        assert await resp.json() == {"type": "ac-bot-api", "success": True}
    conversation = await vaic.create()
    assert vaic.urls["activitiesURL"] == f"/ac/r/conversation/{conversation}/activities"
    assert vaic.urls["expiresSeconds"] == 120

    # start → session:new; the greeting turn ends at the gather.
    outputs = strip(await vaic.send(start_event()))
    assert outputs[0]["name"] == "config"
    assert outputs[0]["sessionParams"]["language"] == "en-US"
    assert outputs[1] == {"type": "message", "text": "Welcome to Example Energy."}
    assert outputs[2]["text"] == "How can I help?"
    assert outputs[2]["activityParams"]["userNoInputTimeoutMS"] == 10000
    kind, session_new = python_peer.received[0]
    assert kind == "session:new"
    assert_valid_callback("session-new", session_new)
    assert session_new["from"] == CALLER
    assert session_new["direction"] == "inbound"
    assert session_new["sip"]["headers"]["X-Conversation-ID"] == "abc-123"
    metadata = session_new["customerData"]["numberMetaData"]
    assert metadata["country"] == "DE" and metadata["countryCallingCode"] == "49"
    assert metadata["number"] == CALLER and metadata["uri"] == f"tel:{CALLER}"

    # speech → verb:hook speechDetected on `voice`.
    outputs = strip(
        await vaic.send(
            {"type": "message", "text": "pay my bill", "parameters": {"confidence": 0.9}}
        )
    )
    assert outputs == [
        {"type": "message", "text": "You said pay my bill"},
        {"type": "event", "name": "config", "sessionParams": {"userNoInputTimeoutMS": 8000}},
    ] or outputs[0] == {"type": "message", "text": "You said pay my bill"}
    kind, hook = python_peer.received[-1]
    assert kind == "voice"
    assert_valid_callback("gather", hook)
    assert hook["speech"]["alternatives"][0] == {"transcript": "pay my bill", "confidence": 0.9}

    # DTMF 1 → play + sip:request INFO (metadata) + gather.
    outputs = strip(await vaic.send({"type": "event", "name": "DTMF", "value": "1"}))
    assert outputs[0] == {
        "type": "event",
        "name": "playUrl",
        "activityParams": {"playUrlUrl": "https://media.example/hold.wav"},
    }
    assert outputs[1] == {"type": "event", "name": "sendMetaData", "value": {"account": "A-1"}}
    kind, hook = python_peer.received[-1]
    assert hook["reason"] == "dtmfDetected" and hook["digits"] == "1"
    assert_valid_callback("gather", hook)

    # no input → timeout → re-prompt.
    outputs = strip(await vaic.send({"type": "event", "name": "noUserInput", "value": 1}))
    assert outputs[0] == {"type": "message", "text": "Sorry, I did not hear you."} or (
        outputs[0]["text"] == "Sorry, I did not hear you."
    )
    assert python_peer.received[-1][1]["reason"] == "timeout"

    # DTMF 2 → dial → transfer activity.
    outputs = strip(await vaic.send({"type": "event", "name": "DTMF", "value": "2"}))
    assert outputs == [
        {
            "type": "event",
            "name": "transfer",
            "activityParams": {
                "transferTarget": "tel:+4930123456",
                "transferSipHeaders": [{"name": "X-Queue", "value": "billing"}],
            },
        }
    ]

    # transfer failed → dial actionHook → say + hangup.
    outputs = strip(
        await vaic.send(
            {
                "type": "event",
                "name": "transferStatus",
                "value": {"status": "failed", "reasonCode": "busy"},
            }
        )
    )
    dial = next(data for kind, data in python_peer.received if kind == "dial")
    assert_valid_callback("dial", dial)
    assert dial["dial_call_status"] == "busy"
    assert outputs == [
        {"type": "message", "text": "The line is busy."},
        {"type": "event", "name": "hangup", "activityParams": {"hangupReason": "agent busy"}},
    ]

    # VAIC disconnects after the hangup; the VG side already ended with call:status completed.
    status, body = await vaic.post(
        vaic.urls["disconnectURL"], {"conversation": conversation, "reasonCode": "bot-disconnected"}
    )
    assert (status, body) == (200, {})
    await python_peer.wait_closed()
    statuses = [data for kind, data in python_peer.received if kind == "call:status"]
    assert [s["call_status"] for s in statuses] == ["in-progress", "completed"]
    for data in statuses:
        assert_valid_callback("call-status", data)
    assert (
        bridge.metric(
            "acvg_translations_total", direction="to_audiocodes", node="transfer_dial", result="ok"
        )
        == 1
    )
    assert bridge.metric("acvg_number_metadata_total", route="r", result="preserved") == 1
    # every ack is timed: session:new's and each hook's
    hooks = [kind for kind, _ in python_peer.received if kind not in ("session:new", "call:status")]
    assert len(hooks) >= 4
    assert bridge.metric("acvg_vg_ack_seconds_count", route="r") >= 1 + len(hooks)
    # After disconnect the conversation is gone.
    status, body = await vaic.post(vaic.urls["activitiesURL"], {"activities": []})
    assert status == 404 and body["error"] == "not_found"


async def test_caller_hangup_sends_call_status_then_close(
    python_peer: PythonPeer, bridge_factory: BridgeFactory
) -> None:
    bridge = await bridge_factory(route_config(python_peer.url))
    vaic = Vaic(bridge)
    conversation = await vaic.create()
    await vaic.send(start_event())
    status, body = await vaic.post(
        vaic.urls["disconnectURL"],
        {"conversation": conversation, "reasonCode": "client-disconnected", "reason": "BYE"},
    )
    assert (status, body) == (200, {})
    await python_peer.wait_closed()
    kind, data = python_peer.received[-1]
    assert kind == "call:status"
    assert data["call_status"] == "completed"
    assert data["call_termination_by"] == "caller"
    assert isinstance(data["duration"], int)
    assert_valid_callback("call-status", data)


async def test_retry_with_same_ids_is_not_forwarded_again(
    python_peer: PythonPeer, bridge_factory: BridgeFactory
) -> None:
    bridge = await bridge_factory(route_config(python_peer.url))
    vaic = Vaic(bridge)
    await vaic.create()
    await vaic.send(start_event())
    turn = {
        "activities": [
            {
                "id": "fixed-1",
                "timestamp": "2026-11-25T10:00:00.000Z",
                "type": "message",
                "text": "hello",
            }
        ]
    }
    first = await vaic.post(vaic.urls["activitiesURL"], turn)
    hooks_after_first = len([k for k, _ in python_peer.received if k == "voice"])
    second = await vaic.post(vaic.urls["activitiesURL"], turn)
    assert first == second
    assert first[1]["activities"]
    assert len([k for k, _ in python_peer.received if k == "voice"]) == hooks_after_first == 1


async def test_unreachable_voice_gateway_ends_call_cleanly(bridge_factory: BridgeFactory) -> None:
    bridge = await bridge_factory(route_config("ws://127.0.0.1:1/nothing"))
    vaic = Vaic(bridge)
    await vaic.create()
    outputs = strip(await vaic.send(start_event()))
    assert outputs[-1]["name"] == "hangup"
    assert (
        bridge.metric("acvg_upstream_errors_total", route="r", path="voicegateway", kind="connect")
        == 1
    )
