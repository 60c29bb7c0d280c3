"""Every verb array the simulated VG endpoint can emit passes @jambonz/verb-specifications; the
Node peer app (vg_app.js) answers like a real jambonz app and is strict."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bridge.sim.flow import FlowOptions, VerbForm, format_verbs, load_flows, reachable_batches
from bridge.sim.vg_endpoint import SUBPROTOCOL
from tests.nodepeer import running_vg_app, validate_verbs

OPTION_SETS = [
    FlowOptions(),
    FlowOptions(verb_form=VerbForm.KEYED),
    FlowOptions(floats=True),
    FlowOptions(verb_form=VerbForm.KEYED, floats=True),
]


def test_every_emittable_verb_array_passes_the_real_validator() -> None:
    arrays: list[list[dict[str, Any]]] = []
    labels: list[str] = []
    for flow in load_flows().values():
        for index, batch in enumerate(reachable_batches(flow)):
            for options in OPTION_SETS:
                arrays.append(format_verbs(batch, options))
                labels.append(f"{flow.name}#{index} {options.verb_form} floats={options.floats}")
        # command mode's first ack
        for options in OPTION_SETS:
            arrays.append(format_verbs([{"verb": "config", "notifyEvents": True}], options))
            labels.append(f"{flow.name} command-mode ack")
    results = validate_verbs(arrays)
    failures = [
        (label, r["error"]) for label, r in zip(labels, results, strict=True) if not r["ok"]
    ]
    assert failures == []
    assert len(results) > 100


def test_broken_arrays_are_rejected() -> None:
    results = validate_verbs(
        [
            [{"verb": "play"}],
            [{"say": {"text": "hi", "voice": "x"}}],
            [{"verb": "transfer", "to": "x"}],
            [{"verb": "say", "text": "fine"}],
        ]
    )
    assert [r["ok"] for r in results] == [False, False, False, True]
    assert results[0]["error"] == "play: missing value for url"
    assert "unknown property voice" in results[1]["error"]
    assert "invalid instruction: transfer" in results[2]["error"]


def _envelope(
    message_type: str, call_sid: str, data: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "type": message_type,
        "msgid": uuid.uuid4().hex,
        "call_sid": call_sid,
        "data": data,
        **extra,
    }


async def _receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=10)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    frame: dict[str, Any] = json.loads(msg.data)
    return frame


async def test_node_vg_app_runs_its_flow_and_logs_what_it_received(tmp_path: Path) -> None:
    with running_vg_app(tmp_path / "vg.jsonl") as app:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(app.url("/"), protocols=(SUBPROTOCOL,)) as ws,
        ):
            assert ws.protocol == SUBPROTOCOL
            base = {
                "call_sid": "n1",
                "from": "+4915112345678",
                "to": "+4930111000",
                "direction": "inbound",
                "call_status": "trying",
            }
            new = _envelope("session:new", "n1", base)
            await ws.send_json(new)
            ack = await _receive(ws)
            assert ack["type"] == "ack" and ack["msgid"] == new["msgid"]
            assert [v["verb"] for v in ack["data"]] == ["config", "say", "gather"]
            gather = ack["data"][2]
            assert gather["actionHook"] == "voice" and gather["timeout"] == 10
            assert gather["input"] == ["speech", "digits"]

            batches = [ack["data"]]
            for digits, verbs in [
                ("1", ["play", "sip:request", "gather"]),
                ("2", ["dial"]),
                ("9", ["say", "hangup"]),
            ]:
                hook = _envelope(
                    "verb:hook",
                    "n1",
                    {**base, "reason": "dtmfDetected", "digits": digits},
                    hook="voice",
                )
                await ws.send_json(hook)
                reply = await _receive(ws)
                assert reply["msgid"] == hook["msgid"]
                assert [v["verb"] for v in reply["data"]] == verbs
                batches.append(reply["data"])
            assert json.loads(batches[1][1]["body"]) == {"menu": "one", "source": "node-app"}
            assert batches[3][1]["headers"] == {"X-Reason": "caller pressed nine"}

            await ws.send_json(_envelope("call:status", "n1", {**base, "call_status": "completed"}))
            await ws.close()
        for _ in range(100):
            if any(e.get("dir") == "close" for e in app.log()):
                break
            await asyncio.sleep(0.05)
        statuses = app.received("call:status")
        assert statuses and statuses[-1]["data"]["call_status"] == "completed"
        assert [f["type"] for f in app.received()] == [
            "session:new",
            "verb:hook",
            "verb:hook",
            "verb:hook",
            "call:status",
        ]
        assert len(app.sent()) == 4
        assert app.alive
    assert all(r["ok"] for r in validate_verbs(batches))


async def test_node_vg_app_crashes_on_a_frame_without_msgid(tmp_path: Path) -> None:
    with running_vg_app(tmp_path / "vg.jsonl") as app:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(app.url("/"), protocols=(SUBPROTOCOL,)) as ws,
        ):
            await ws.send_json({"type": "session:new", "call_sid": "n2", "data": {}})
            msg = await ws.receive(timeout=10)
            assert msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            )
        assert app.process.wait(timeout=10) != 0
        assert app.received()[0]["call_sid"] == "n2"
