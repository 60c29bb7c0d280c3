"""The simulated legacy Cognigy AudioCodes Endpoint: AudioCodes Node rendering, and the bot
server over real sockets with this test (or the VAIC simulator) playing VAIC."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.errors import ConfigError
from bridge.sim.ac_nodes import render_ac_node
from bridge.sim.flow import (
    FlowRun,
    Node,
    NodeType,
    load_flows,
    override_flow,
    override_flows,
    render_node,
)
from bridge.sim.legacy_endpoint import (
    DIVERGENT_OVERRIDES,
    LegacyCall,
    LegacyEndpointSim,
    RequestKind,
)
from bridge.sim.scenario import Scenario, StepKind, load_scenarios, run_scenario, step_activity
from bridge.sim.vaic import VaicClient

FLOWS = load_flows()
SCENARIOS = load_scenarios()
TOKEN = "legacy-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ---------------------------------------------------------------- AudioCodes Node rendering


def node(node_type: NodeType, **params: Any) -> Node:
    return Node("n", node_type, params)


def test_say_is_a_message_with_tts_activity_params() -> None:
    assert render_ac_node(node(NodeType.SAY, text="Hi")) == [{"type": "message", "text": "Hi"}]
    out = render_ac_node(
        node(
            NodeType.SAY,
            text="Hallo {{input.text}}",
            ssml=True,
            synthesizer={"vendor": "microsoft", "language": "de-DE", "voice": "de-DE-KatjaNeural"},
        ),
        {"input.text": "Erika"},
    )
    assert out == [
        {
            "type": "message",
            "text": "<speak>Hallo Erika</speak>",
            "activityParams": {"voiceName": "de-DE-KatjaNeural", "language": "de-DE"},
        }
    ]


def test_question_prompt_carries_timeout_and_dtmf_params() -> None:
    speech_only = render_ac_node(node(NodeType.QUESTION, prompt="Why?", input=["speech"]))
    assert speech_only == [
        {"type": "message", "text": "Why?", "activityParams": {"userNoInputTimeoutMS": 10000}}
    ]
    digits = render_ac_node(
        node(NodeType.QUESTION, prompt="Press", input=["digits"], timeout=6, num_digits=1)
    )
    assert digits[0]["activityParams"] == {
        "userNoInputTimeoutMS": 6000,
        "sendDTMF": True,
        "dtmfCollect": True,
        "dtmfCollectMaxDigits": 1,
    }
    both = render_ac_node(node(NodeType.QUESTION, prompt="Say or press", timeout=2.5))
    assert both[0]["activityParams"] == {"userNoInputTimeoutMS": 2500, "sendDTMF": True}


def test_play_url_one_event_per_url_with_node_defaults() -> None:
    out = render_ac_node(node(NodeType.PLAY, url=["https://a/1.wav", "https://a/2.wav"]))
    assert [a["activityParams"]["playUrlUrl"] for a in out] == [
        "https://a/1.wav",
        "https://a/2.wav",
    ]
    assert out[0] == {
        "type": "event",
        "name": "playUrl",
        "activityParams": {
            "playUrlUrl": "https://a/1.wav",
            "playUrlMediaFormat": "wav/lpcm16",
            "playUrlCaching": False,
        },
    }


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"mode": "dial", "number": "+4989123456", "headers": {"X-Tier": "gold"}},
            {
                "transferTarget": "tel:+4989123456",
                "transferSipHeaders": [{"name": "X-Tier", "value": "gold"}],
            },
        ),
        ({"mode": "dial", "number": "4989123456"}, {"transferTarget": "tel:+4989123456"}),
        ({"mode": "dial", "sipUri": "sip:a@b.example"}, {"transferTarget": "sip:a@b.example"}),
        (
            {"mode": "refer", "referTo": "sip:agent@pbx", "referredBy": "sip:bot@acme"},
            {"transferTarget": "sip:agent@pbx", "transferReferredByURL": "sip:bot@acme"},
        ),
    ],
)
def test_transfer_event(params: dict[str, Any], expected: dict[str, Any]) -> None:
    assert render_ac_node(node(NodeType.TRANSFER, **params)) == [
        {"type": "event", "name": "transfer", "activityParams": expected}
    ]


def test_hangup_metadata_dtmf_recording_goto() -> None:
    assert render_ac_node(node(NodeType.HANGUP, reason="done")) == [
        {"type": "event", "name": "hangup", "activityParams": {"hangupReason": "done"}}
    ]
    assert render_ac_node(node(NodeType.HANGUP)) == [{"type": "event", "name": "hangup"}]
    meta = render_ac_node(
        node(NodeType.SEND_METADATA, data={"said": "{{input.text}}", "n": 2}), {"input.text": "hi"}
    )
    assert meta == [{"type": "event", "name": "sendMetaData", "value": {"said": "hi", "n": 2}}]
    assert render_ac_node(node(NodeType.DTMF, digits="12#", duration=250)) == [
        {"type": "event", "name": "sendDtmf", "activityParams": {"dtmfDigits": "12#"}}
    ]
    start = render_ac_node(
        node(
            NodeType.CALL_RECORDING,
            action="start",
            recordingID="r1",
            siprecServerURL=["sip:rec@x", "sip:rec2@x"],
        )
    )
    assert start == [
        {
            "type": "event",
            "name": "startCallRecording",
            "activityParams": {"callRecordingId": "r1", "callRecordingServer": "sip:rec@x"},
        }
    ]
    for action in ("stop", "pause", "resume"):
        out = render_ac_node(node(NodeType.CALL_RECORDING, action=action))
        assert out == [{"type": "event", "name": f"{action}CallRecording"}]
    assert render_ac_node(node(NodeType.GOTO, target="x")) == []


def test_set_session_config_becomes_config_session_params() -> None:
    out = render_ac_node(
        node(
            NodeType.SET_SESSION_CONFIG,
            synthesizer={"vendor": "google", "voice": "default", "language": "en-US"},
            recognizer={"language": "de-DE", "hints": ["a", {"phrase": "b"}], "hintsBoost": 5},
            bargeIn={"enable": False, "dtmfBargein": True, "minBargeinWordCount": 2},
        )
    )
    assert out == [
        {
            "type": "event",
            "name": "config",
            "sessionParams": {
                "language": "en-US",
                "sttContextPhrases": ["a", "b"],
                "sttContextBoost": 5,
                "bargeIn": False,
                "bargeInOnDTMF": True,
                "bargeInMinWordCount": 2,
            },
        }
    ]
    # nothing VAIC understands: the node sends nothing
    assert render_ac_node(node(NodeType.SET_SESSION_CONFIG, fillerNoise={"enable": True})) == []


@pytest.mark.parametrize("flow", sorted(FLOWS), ids=str)
def test_every_node_of_every_flow_renders(flow: str) -> None:
    for n in FLOWS[flow].nodes:
        activities = render_ac_node(n, {"input.text": "x"})
        assert all(a["type"] in ("message", "event") for a in activities)
        # one activity per node, except goto (and play lists, not used by shipped flows)
        assert len(activities) == (0 if n.type is NodeType.GOTO else 1), n.id


def test_flowrun_branches_identically_with_either_renderer() -> None:
    """The same engine drives both simulators: same node walk, different dialect."""
    vg, ac = FlowRun(FLOWS["menu"]), FlowRun(FLOWS["menu"], render=render_ac_node)
    assert [v["verb"] for v in vg.start()] == ["gather"]
    assert [a["text"] for a in ac.start()] == ["For billing press 1. For sales press 2."]
    data = {"reason": "dtmfDetected", "digits": "2"}
    assert [v["verb"] for v in vg.receive_hook("voice", data)] == ["say", "hangup"]
    assert [a.get("name", a["type"]) for a in ac.receive_hook("voice", data)] == [
        "message",
        "hangup",
    ]
    assert FlowRun(FLOWS["menu"]).render is render_node


# ---------------------------------------------------------------- overrides


def test_override_flow_changes_only_the_named_params() -> None:
    support = FLOWS["support"]
    variant = override_flow(support, {"welcome": {"text": "Hello."}, "ask": {"timeout": None}})
    assert variant.node("welcome").params["text"] == "Hello."
    assert "timeout" not in variant.node("ask").params
    assert support.node("welcome").params["text"] == "Welcome to ACME support."
    assert [n.id for n in variant.nodes] == [n.id for n in support.nodes]
    assert variant.node("ask").branches == support.node("ask").branches


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"nope": {"text": "x"}}, "overrides.nope"),
        ({"welcome": {"url": "x"}}, "overrides.welcome.url"),
        ({"welcome": {"text": None}}, "overrides.welcome.text"),
        ({"ask": {"timeout": -1}}, "overrides.ask.timeout"),
    ],
)
def test_override_flow_rejects_bad_changes(changes: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        override_flow(FLOWS["support"], changes)
    assert info.value.path == path


def test_override_flows_unknown_flow() -> None:
    with pytest.raises(ConfigError) as info:
        override_flows(FLOWS, {"ghost": {}})
    assert info.value.path == "overrides.ghost"
    both_dial = {"transfer": {"sipUri": "sip:x@y"}}
    with pytest.raises(ConfigError):
        override_flows(FLOWS, {"transfer_dial": both_dial})


# ---------------------------------------------------------------- the server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sim() -> AsyncIterator[LegacyEndpointSim]:
    server = LegacyEndpointSim(FLOWS, token=TOKEN)
    await server.start()
    yield server
    await server.stop()


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with http.post(url, json=body, headers=AUTH if headers is None else headers) as r:
        text = await r.text()
        return r.status, json.loads(text) if text else None


def activity(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "timestamp": "2024-05-01T10:00:00.000Z",
        "type": kind,
        **fields,
    }


def start_event(callee: str = "+4930111000") -> dict[str, Any]:
    return activity(
        "event", name="start", parameters={"caller": "+4915112345678", "callee": callee}
    )


async def create(
    http: aiohttp.ClientSession, sim: LegacyEndpointSim, flow: str | None = "support"
) -> tuple[str, str, dict[str, Any]]:
    conversation = str(uuid.uuid4())
    status, body = await post(http, sim.url(flow), {"conversation": conversation})
    assert status == 200, body
    base = sim.url(flow).rsplit("/", 1)[0]
    return conversation, f"{base}/{body['activitiesURL']}", body


def texts(activities: list[dict[str, Any]]) -> list[str]:
    return [a.get("text") or a["name"] for a in activities]


async def test_probe(http: aiohttp.ClientSession, sim: LegacyEndpointSim) -> None:
    for url in (sim.url(), sim.url("support")):
        async with http.get(url, headers=AUTH) as r:
            assert r.status == 200
            assert await r.json() == {"type": "ac-bot-api", "success": True}
    async with http.get(sim.url("support")) as r:
        assert r.status == 401
    async with http.get(sim.url("support"), headers={"Authorization": "Bearer nope"}) as r:
        assert r.status == 401
    async with http.get(sim.url("ghost"), headers=AUTH) as r:
        assert r.status == 404
    assert [(q.kind, q.status) for q in sim.requests] == [
        (RequestKind.PROBE, 200),
        (RequestKind.PROBE, 200),
        (RequestKind.PROBE, 401),
        (RequestKind.PROBE, 401),
        (RequestKind.PROBE, 404),
    ]


async def test_create_sync_returns_relative_urls(
    http: aiohttp.ClientSession, sim: LegacyEndpointSim
) -> None:
    conversation, _, body = await create(http, sim)
    assert body == {
        "activitiesURL": f"conversation/{conversation}/activities",
        "refreshURL": f"conversation/{conversation}/refresh",
        "disconnectURL": f"conversation/{conversation}/disconnect",
        "expiresSeconds": 120,
    }
    assert sim.call(conversation).flow == "support"
    assert not sim.call(conversation).async_mode


async def test_create_errors(http: aiohttp.ClientSession, sim: LegacyEndpointSim) -> None:
    assert (await post(http, sim.url("support"), {"conversation": "c"}, headers={}))[0] == 401
    assert (await post(http, sim.url("support"), {}))[0] == 400
    assert (await post(http, sim.url("ghost"), {"conversation": "c"}))[0] == 404
    async with http.post(sim.url("support"), data="{no json", headers=AUTH) as r:
        assert r.status == 400
        assert "error" in await r.json()


async def test_sync_turns_refresh_and_disconnect(
    http: aiohttp.ClientSession, sim: LegacyEndpointSim
) -> None:
    conversation, activities_url, _ = await create(http, sim)
    base = activities_url.rsplit("/", 1)[0]
    status, body = await post(
        http, activities_url, {"conversation": conversation, "activities": [start_event()]}
    )
    assert status == 200
    assert texts(body["activities"]) == ["Welcome to ACME support.", "How can I help you?"]
    for out in body["activities"]:
        uuid.UUID(out["id"])
        assert out["timestamp"].endswith("Z") and len(out["timestamp"]) == 24
    assert body["activities"][1]["activityParams"] == {
        "userNoInputTimeoutMS": 5000,
        "sendDTMF": True,
    }
    message = activity("message", text="I want to pay", parameters={"confidence": 0.9})
    _, body = await post(
        http, activities_url, {"conversation": conversation, "activities": [message]}
    )
    assert texts(body["activities"]) == ["Sure. Let's pay your bill.", "Please tell me the amount."]
    assert await post(http, f"{base}/refresh", {"conversation": conversation}) == (
        200,
        {"expiresSeconds": 120},
    )
    reason = {"conversation": conversation, "reasonCode": "client-disconnected", "reason": "x"}
    assert await post(http, f"{base}/disconnect", reason) == (200, {})
    call = sim.call(conversation)
    assert call.ended.is_set() and call.disconnect == reason
    assert call.refreshes == 1
    assert call.received_names() == ["start", "message"]
    assert call.start_parameters["callee"] == "+4930111000"
    assert [r.kind for r in call.requests] == [
        RequestKind.CREATE,
        RequestKind.ACTIVITIES,
        RequestKind.ACTIVITIES,
        RequestKind.REFRESH,
        RequestKind.DISCONNECT,
    ]
    # a dropped conversation is unknown from now on
    status, _ = await post(
        http, activities_url, {"conversation": conversation, "activities": [message]}
    )
    assert status == 404


async def test_unknown_conversation_is_404_and_token_is_checked(
    http: aiohttp.ClientSession, sim: LegacyEndpointSim
) -> None:
    root = sim.url()
    for op in ("activities", "refresh", "disconnect"):
        status, body = await post(http, f"{root}conversation/ghost/{op}", {"conversation": "ghost"})
        assert status == 404 and "error" in body
    conversation, activities_url, _ = await create(http, sim)
    body = {"conversation": conversation, "activities": [start_event()]}
    assert (await post(http, activities_url, body, headers={}))[0] == 401
    assert sim.call(conversation).received == []
    assert (await post(http, activities_url, {"conversation": conversation}))[0] == 400


async def test_duplicate_ids_answer_the_original_turn(
    http: aiohttp.ClientSession, sim: LegacyEndpointSim
) -> None:
    conversation, activities_url, _ = await create(http, sim)
    first = {"conversation": conversation, "activities": [start_event()]}
    _, original = await post(http, activities_url, first)
    silence = {
        "conversation": conversation,
        "activities": [activity("event", name="noUserInput", value=1)],
    }
    _, second = await post(http, activities_url, silence)
    assert texts(second["activities"]) == ["Sorry, I did not hear you.", "How can I help you?"]
    # VAIC retries both POSTs: each answered with its own turn's outputs, same ids, flow unmoved
    assert await post(http, activities_url, silence) == (200, second)
    assert await post(http, activities_url, first) == (200, original)
    call = sim.call(conversation)
    assert call.duplicates == 2
    assert len(call.turns) == 2
    # a POST mixing a seen id with a new one runs only the new activity
    bye = activity("message", text="bye")
    _, mixed = await post(
        http,
        activities_url,
        {"conversation": conversation, "activities": [silence["activities"][0], bye]},
    )
    assert texts(mixed["activities"]) == ["Thank you for calling. Goodbye.", "hangup"]


async def test_root_url_selects_the_flow_by_callee(
    http: aiohttp.ClientSession, sim: LegacyEndpointSim
) -> None:
    conversation, activities_url, _ = await create(http, sim, flow=None)
    assert sim.call(conversation).flow is None
    _, body = await post(
        http,
        activities_url,
        {"conversation": conversation, "activities": [start_event("+4930111001")]},
    )
    assert texts(body["activities"]) == ["For billing press 1. For sales press 2."]
    assert sim.call(conversation).flow == "menu"
    dtmf = activity("event", name="DTMF", value="2")
    _, body = await post(http, activities_url, {"conversation": conversation, "activities": [dtmf]})
    assert texts(body["activities"]) == ["You chose sales. Goodbye.", "hangup"]


async def test_transfer_answered_and_play_failed_inputs(
    http: aiohttp.ClientSession, sim: LegacyEndpointSim
) -> None:
    conversation, url, _ = await create(http, sim, "transfer_dial")
    await post(http, url, {"conversation": conversation, "activities": [start_event()]})
    answered = activity("event", name="transferStatus", value={"status": "answered"})
    _, body = await post(http, url, {"conversation": conversation, "activities": [answered]})
    assert body["activities"][0]["activityParams"] == {"hangupReason": "transferred"}

    conversation, url, _ = await create(http, sim, "media")
    await post(http, url, {"conversation": conversation, "activities": [start_event()]})
    other = activity("event", name="playUrlFailed", value={"playUrlUrl": "https://other/x.wav"})
    _, body = await post(http, url, {"conversation": conversation, "activities": [other]})
    assert body == {"activities": []}
    failed = activity(
        "event",
        name="playUrlFailed",
        value={"playUrlUrl": "https://media.example.com/prompts/announcement.wav"},
    )
    _, body = await post(http, url, {"conversation": conversation, "activities": [failed]})
    assert texts(body["activities"]) == [
        "Sorry, the announcement is not available.",
        "Did you understand the announcement?",
    ]


async def test_conversation_end_event_and_expiry(http: aiohttp.ClientSession) -> None:
    now = [100.0]
    async with LegacyEndpointSim(
        FLOWS, token=TOKEN, expires_seconds=60, clock=lambda: now[0]
    ) as sim:
        conversation, url, _ = await create(http, sim)
        await post(http, url, {"conversation": conversation, "activities": [start_event()]})
        now[0] += 59
        base = url.rsplit("/", 1)[0]
        assert (await post(http, f"{base}/refresh", {"conversation": conversation}))[0] == 200
        now[0] += 61
        assert (await post(http, f"{base}/refresh", {"conversation": conversation}))[0] == 404
        assert sim.call(conversation).expired

        conversation, url, _ = await create(http, sim)
        end = activity("event", name="conversationEnd", parameters={"reasonCode": "error"})
        await post(http, url, {"conversation": conversation, "activities": [start_event(), end]})
        assert sim.call(conversation).ended.is_set()
        assert (await post(http, url, {"conversation": conversation, "activities": []}))[0] == 404


# ---------------------------------------------------------------- async mode


async def receive_frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    frame: dict[str, Any] = json.loads(msg.data)
    return frame


async def test_async_mode_pushes_each_output(http: aiohttp.ClientSession) -> None:
    async with LegacyEndpointSim(
        FLOWS, token=TOKEN, async_flows={"support"}, push_delay=0.01
    ) as sim:
        _, _, sync_body = await create(http, sim, "menu")
        assert "websocketURL" not in sync_body
        conversation, url, body = await create(http, sim)
        assert body["websocketURL"] == f"conversation/{conversation}/websocket"
        ws_url = f"{sim.url()}{body['websocketURL']}"
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(ws_url)
        assert info.value.status == 401
        async with http.ws_connect(ws_url, headers=AUTH) as ws:
            assert await post(
                http, url, {"conversation": conversation, "activities": [start_event()]}
            ) == (200, {})
            frames = [await receive_frame(ws), await receive_frame(ws)]
            assert [f["conversation"] for f in frames] == [conversation, conversation]
            assert [texts(f["activities"]) for f in frames] == [
                ["Welcome to ACME support."],
                ["How can I help you?"],
            ]
            call = sim.call(conversation)
            assert call.sent == call.outputs()
            # a retry in async mode is answered {} and pushes nothing again
            retry = {"conversation": conversation, "activities": call.received[:1]}
            assert await post(http, url, retry) == (200, {})
            base = url.rsplit("/", 1)[0]
            assert await post(http, f"{base}/disconnect", {"conversation": conversation}) == (
                200,
                {},
            )
            closed = await ws.receive(timeout=5)
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert len(call.pushed) == 2 and call.duplicates == 1


async def waiting(call: LegacyCall, count: int) -> None:
    for _ in range(500):
        if len(call.waiting) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(call.waiting)} outputs waiting, expected {count}")


async def test_async_outputs_wait_for_a_socket_or_the_next_response(
    http: aiohttp.ClientSession,
) -> None:
    async with LegacyEndpointSim(FLOWS, token=TOKEN, async_mode=True) as sim:
        conversation, url, body = await create(http, sim, "menu")
        assert await post(
            http, url, {"conversation": conversation, "activities": [start_event()]}
        ) == (200, {})
        call = sim.call(conversation)
        await waiting(call, 1)  # the push task runs right after the response
        async with http.ws_connect(f"{sim.url()}{body['websocketURL']}", headers=AUTH) as ws:
            frame = await receive_frame(ws)
            assert texts(frame["activities"]) == ["For billing press 1. For sales press 2."]
        # socket gone: the next turn's outputs go out with the following response
        dtmf = activity("event", name="DTMF", value="3")
        assert await post(http, url, {"conversation": conversation, "activities": [dtmf]}) == (
            200,
            {},
        )
        await waiting(call, 2)
        dtmf = activity("event", name="DTMF", value="2")
        status, body = await post(http, url, {"conversation": conversation, "activities": [dtmf]})
        assert status == 200
        assert texts(body["activities"]) == [
            "That is not a valid choice.",
            "For billing press 1. For sales press 2.",
        ]


async def test_websocket_url_of_a_sync_conversation_is_404(
    http: aiohttp.ClientSession, sim: LegacyEndpointSim
) -> None:
    conversation, _, _ = await create(http, sim)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"{sim.url()}conversation/{conversation}/websocket", headers=AUTH)
    assert info.value.status == 404


# ---------------------------------------------------------------- shipped scenarios


@pytest.mark.parametrize("async_mode", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_shipped_scenarios_pass_against_the_legacy_endpoint(
    scenario: Scenario, async_mode: bool, http: aiohttp.ClientSession
) -> None:
    async with LegacyEndpointSim(FLOWS, token=TOKEN, async_mode=async_mode) as sim:
        for bot_url in (sim.url(scenario.flow), sim.url()):
            result = await run_scenario(
                scenario, "", TOKEN, session=http, bot_url=bot_url, push=async_mode, settle=0.05
            )
            assert result.passed, result.render()
            call = sim.call(result.conversation_id or "")
            assert call.flow == scenario.flow
            assert call.disconnect is not None


# ---------------------------------------------------------------- divergent variant


async def _outputs(sim: LegacyEndpointSim, http: aiohttp.ClientSession, name: str) -> list[Any]:
    """Play a scenario's caller script (its expectations unchecked): the outputs, unstamped."""
    scenario = next(s for s in SCENARIOS if s.name == name)
    async with VaicClient(sim.url(scenario.flow), TOKEN, session=http) as client:
        await client.create()
        for step in scenario.steps:
            if step.kind is not StepKind.HANGUP:
                await client.send([step_activity(step, scenario, client.conversation_id or "")])
        await client.disconnect()
    outputs = sim.call(client.conversation_id or "").outputs()
    return [{k: v for k, v in a.items() if k not in ("id", "timestamp")} for a in outputs]


def _differences(a: list[Any], b: list[Any]) -> list[tuple[int, Any, Any]]:
    assert len(a) == len(b)
    return [(i, x, y) for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


async def test_divergent_variant_differs_in_exactly_the_overridden_fields(
    http: aiohttp.ClientSession,
) -> None:
    async with (
        LegacyEndpointSim(FLOWS, token=TOKEN) as plain,
        LegacyEndpointSim(FLOWS, token=TOKEN, divergent=True) as divergent,
    ):
        assert set(DIVERGENT_OVERRIDES) <= set(divergent.flows)
        diff = _differences(
            await _outputs(plain, http, "greeting"), await _outputs(divergent, http, "greeting")
        )
        assert [(i, y["text"]) for i, _, y in diff] == [(0, "Welcome to ACME customer care.")]
        diff = _differences(
            await _outputs(plain, http, "play_url"), await _outputs(divergent, http, "play_url")
        )
        assert [(i, y["activityParams"]["playUrlUrl"]) for i, _, y in diff] == [
            (1, "https://media.example.com/prompts/announcement-v2.wav")
        ]
        diff = _differences(
            await _outputs(plain, http, "transfer_dial"),
            await _outputs(divergent, http, "transfer_dial"),
        )
        assert [(i, y["activityParams"]["transferTarget"]) for i, _, y in diff] == [
            (1, "tel:+4989654321")
        ]
        assert not _differences(
            await _outputs(plain, http, "dtmf_menu"), await _outputs(divergent, http, "dtmf_menu")
        )


async def test_explicit_overrides_and_unknown_flow() -> None:
    sim = LegacyEndpointSim(FLOWS, overrides={"menu": {"thanks": {"text": "Danke."}}})
    assert sim.flows["menu"].node("thanks").params["text"] == "Danke."
    assert FLOWS["menu"].node("thanks").params["text"] == "Thank you."
    with pytest.raises(ConfigError):
        LegacyEndpointSim(FLOWS, overrides={"ghost": {}})


async def test_without_recording_nothing_is_kept_after_the_call(
    http: aiohttp.ClientSession,
) -> None:
    scenario = SCENARIOS[0]
    async with LegacyEndpointSim(FLOWS, token=TOKEN, record=False) as sim:
        result = await run_scenario(
            scenario, "", TOKEN, session=http, bot_url=sim.url(scenario.flow), settle=0.05
        )
        assert result.passed, result.render()
        assert sim.requests == [] and sim.calls == {}
