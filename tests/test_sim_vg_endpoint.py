"""The simulated VG endpoint over real sockets, with this test playing the feature-server role."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.sim.flow import load_flows
from bridge.sim.vg_endpoint import SUBPROTOCOL, VGEndpointSim

FLOWS = load_flows()


def session_new(call_sid: str, to: str = "+4930111000") -> dict[str, Any]:
    return {
        "type": "session:new",
        "msgid": uuid.uuid4().hex,
        "call_sid": call_sid,
        "data": {
            "call_sid": call_sid,
            "direction": "inbound",
            "from": "+4915112345678",
            "to": to,
            "call_id": "abc@host",
            "call_status": "trying",
            "sip": {"headers": {}},
        },
    }


def verb_hook(call_sid: str, hook: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "verb:hook",
        "msgid": uuid.uuid4().hex,
        "call_sid": call_sid,
        "hook": hook,
        "data": {"call_sid": call_sid, **data},
    }


def speech(text: str) -> dict[str, Any]:
    return {
        "reason": "speechDetected",
        "speech": {"is_final": True, "alternatives": [{"transcript": text, "confidence": 1}]},
    }


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def start(**options: Any) -> VGEndpointSim:
    sim = VGEndpointSim(FLOWS, command_delay=0.01, **options)
    port = await sim.start()
    assert port > 0 and sim.port == port
    return sim


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    frame: dict[str, Any] = json.loads(msg.data)
    return frame


async def test_acks_session_new_and_hooks_with_the_next_batch(http: aiohttp.ClientSession) -> None:
    sim = await start()
    try:
        async with http.ws_connect(sim.url("support"), protocols=(SUBPROTOCOL,)) as ws:
            assert ws.protocol == SUBPROTOCOL
            new = session_new("c1")
            await ws.send_json(new)
            ack = await receive(ws)
            assert ack["type"] == "ack" and ack["msgid"] == new["msgid"]
            assert [v["verb"] for v in ack["data"]] == ["say", "gather"]
            assert ack["data"][1]["actionHook"] == "voice"

            await ws.send_json(
                {
                    "type": "call:status",
                    "msgid": "s1",
                    "call_sid": "c1",
                    "data": {"call_status": "in-progress"},
                }
            )
            hook = verb_hook("c1", "voice", speech("I want to pay"))
            await ws.send_json(hook)
            ack = await receive(ws)  # call:status got no ack: the next frame answers the hook
            assert ack["msgid"] == hook["msgid"]
            assert ack["data"][0] == {"verb": "say", "text": "Sure. Let's pay your bill."}

            unknown = verb_hook("c1", "elsewhere", {"reason": "x"})
            await ws.send_json(unknown)
            assert await receive(ws) == {"type": "ack", "msgid": unknown["msgid"]}
            await ws.send_str("not json")
            await ws.send_json(
                {
                    "type": "call:status",
                    "msgid": "s2",
                    "call_sid": "c1",
                    "data": {"call_status": "completed"},
                }
            )
            await ws.close()
        call = sim.calls["c1"]
        await call.closed.wait()
        assert call.flow == "support" and call.subprotocol == SUBPROTOCOL
        assert call.close_code == 1000
        assert call.received_types() == [
            "session:new",
            "call:status",
            "verb:hook",
            "verb:hook",
            "None",
            "call:status",
        ]
        assert call.messages("call:status")[-1]["data"]["call_status"] == "completed"
        assert call.received[4] == {"_invalid": "not json"}
        assert len(call.sent) == 3
    finally:
        await sim.stop()


async def test_root_path_selects_the_flow_by_callee(http: aiohttp.ClientSession) -> None:
    sim = await start()
    try:
        async with http.ws_connect(sim.url(), protocols=(SUBPROTOCOL,)) as ws:
            await ws.send_json(session_new("c2", to="4930111001"))
            ack = await receive(ws)
            assert ack["data"][0]["say"]["text"] == "For billing press 1. For sales press 2."
        assert sim.calls["c2"].flow == "menu"
    finally:
        await sim.stop()


async def test_unknown_flow_path_is_404(http: aiohttp.ClientSession) -> None:
    sim = await start()
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await http.ws_connect(sim.url("nope"), protocols=(SUBPROTOCOL,))
        assert caught.value.status == 404
    finally:
        await sim.stop()


async def test_command_mode_answers_by_redirect(http: aiohttp.ClientSession) -> None:
    sim = await start(reply="command")
    try:
        async with http.ws_connect(sim.url("support"), protocols=(SUBPROTOCOL,)) as ws:
            new = session_new("c3")
            await ws.send_json(new)
            ack = await receive(ws)
            assert ack == {
                "type": "ack",
                "msgid": new["msgid"],
                "data": [{"verb": "config", "notifyEvents": True}],
            }
            command = await receive(ws)
            assert command["type"] == "command" and command["command"] == "redirect"
            assert command["queueCommand"] is True
            assert [v["verb"] for v in command["data"]] == ["say", "gather"]

            hook = verb_hook("c3", "voice", {"reason": "timeout"})
            await ws.send_json(hook)
            assert await receive(ws) == {"type": "ack", "msgid": hook["msgid"]}
            command = await receive(ws)
            assert command["data"][0]["text"] == "Sorry, I did not hear you."
    finally:
        await sim.stop()


async def test_command_mode_without_hook_acks(http: aiohttp.ClientSession) -> None:
    sim = await start(reply="command", ack_hooks=False)
    try:
        async with http.ws_connect(sim.url("support"), protocols=(SUBPROTOCOL,)) as ws:
            await ws.send_json(session_new("c4"))
            await receive(ws)
            await receive(ws)
            await ws.send_json(verb_hook("c4", "voice", {"reason": "timeout"}))
            command = await receive(ws)
            assert command["type"] == "command"
    finally:
        await sim.stop()


async def test_keyed_form_and_floats_from_the_flow_file(http: aiohttp.ClientSession) -> None:
    sim = await start()
    try:
        async with http.ws_connect(sim.url("support_commands"), protocols=(SUBPROTOCOL,)) as ws:
            await ws.send_json(session_new("c5"))
            ack = await receive(ws)
            assert ack["data"] == [{"config": {"notifyEvents": True}}]
            command = await receive(ws)
            say, gather = command["data"]
            assert say == {"say": {"text": "Welcome to ACME support."}}
            assert gather["gather"]["timeout"] == 5.0
            assert isinstance(gather["gather"]["timeout"], float)
    finally:
        await sim.stop()


async def test_server_options_override_flows(http: aiohttp.ClientSession) -> None:
    sim = await start(verb_form="keyed", floats=True)
    try:
        async with http.ws_connect(sim.url("menu"), protocols=(SUBPROTOCOL,)) as ws:
            await ws.send_json(session_new("c6"))
            ack = await receive(ws)
            (gather,) = ack["data"]
            assert set(gather) == {"gather"}
            assert gather["gather"]["numDigits"] == 1.0
            assert isinstance(gather["gather"]["numDigits"], float)
    finally:
        await sim.stop()


async def test_other_acked_messages_get_empty_acks(http: aiohttp.ClientSession) -> None:
    sim = await start()
    try:
        async with http.ws_connect(sim.url("support"), protocols=(SUBPROTOCOL,)) as ws:
            await ws.send_json(session_new("c7"))
            await receive(ws)
            await ws.send_json(
                {"type": "dial:confirm", "msgid": "m9", "call_sid": "c7", "data": {}}
            )
            assert await receive(ws) == {"type": "ack", "msgid": "m9"}
    finally:
        await sim.stop()


async def test_stop_closes_open_sockets(http: aiohttp.ClientSession) -> None:
    sim = await start()
    async with http.ws_connect(sim.url("support"), protocols=(SUBPROTOCOL,)) as ws:
        await ws.send_json(session_new("c8"))
        await receive(ws)
        await sim.stop()
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await sim.calls["c8"].closed.wait()
    assert sim.calls["c8"].close_code is not None


async def test_without_recording_a_call_is_forgotten_when_its_socket_closes(
    http: aiohttp.ClientSession,
) -> None:
    sim = await start(record=False)
    try:
        async with http.ws_connect(sim.url("support"), protocols=(SUBPROTOCOL,)) as ws:
            await ws.send_json(session_new("c1"))
            assert (await receive(ws))["type"] == "ack"
            assert sim.calls["c1"].received == [] and sim.calls["c1"].sent == []
        async with asyncio.timeout(5):
            while sim.calls:
                await asyncio.sleep(0.01)
    finally:
        await sim.stop()
