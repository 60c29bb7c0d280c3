"""The simulated VAIC client against a tiny bot, and the scenario runner's matching logic."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.errors import ConfigError
from bridge.sim.flow import FlowRun, load_flows
from bridge.sim.scenario import (
    Matcher,
    Scenario,
    Step,
    StepKind,
    Transport,
    check_step,
    describe_activity,
    load_scenarios,
    parse_scenario,
    run_scenario,
    step_activity,
)
from bridge.sim.vaic import StreamingVaicClient, VaicClient, resolve, stamp, websocket_url
from bridge.sim.vg_endpoint import VGEndpointSim
from tests.conftest import BridgeFactory, route_config

TOKEN = "secret"
BOT_PATH = "/webhooks/audiocodes/webhook"


@dataclass
class Bot:
    """A minimal AC Bot API bot: records requests, answers turns from a script."""

    url_style: str = "relative"
    replies: list[list[dict[str, Any]]] = field(default_factory=list)
    requests: list[tuple[str, str, str | None, Any]] = field(default_factory=list)
    push: list[dict[str, Any]] = field(default_factory=list)
    base: str = ""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get(BOT_PATH, self.probe)
        app.router.add_post(BOT_PATH, self.create)
        app.router.add_post("/webhooks/audiocodes/conversation/{cid}/activities", self.turn)
        app.router.add_post("/webhooks/audiocodes/conversation/{cid}/refresh", self.refresh)
        app.router.add_post("/webhooks/audiocodes/conversation/{cid}/disconnect", self.bye)
        app.router.add_get("/webhooks/audiocodes/conversation/{cid}/websocket", self.socket)
        app.router.add_post("/other/{cid}/activities", self.turn)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append(
            (request.method, request.path, request.headers.get("Authorization"), body)
        )
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "auth"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def probe(self, request: web.Request) -> web.Response:
        return web.json_response({"type": "ac-bot-api", "success": True})

    async def create(self, request: web.Request) -> web.Response:
        cid = (await request.json())["conversation"]
        prefix = {
            "relative": f"conversation/{cid}",
            "root": f"/webhooks/audiocodes/conversation/{cid}",
            "absolute": f"{self.base}/webhooks/audiocodes/conversation/{cid}",
        }[self.url_style]
        body = {
            "activitiesURL": f"{prefix}/activities",
            "refreshURL": f"{prefix}/refresh",
            "disconnectURL": f"{prefix}/disconnect",
            "expiresSeconds": 120,
        }
        if self.push:
            body["websocketURL"] = f"{prefix}/websocket"
        return web.json_response(body)

    async def turn(self, request: web.Request) -> web.Response:
        if self.push:
            return web.json_response({})
        activities = self.replies.pop(0) if self.replies else []
        return web.json_response({"activities": activities})

    async def refresh(self, request: web.Request) -> web.Response:
        return web.json_response({"expiresSeconds": 120})

    async def bye(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"activities": self.push})
        async for _ in ws:
            pass
        return ws


@pytest.fixture
async def bot() -> AsyncIterator[Bot]:
    state = Bot()
    runner = web.AppRunner(state.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


@pytest.mark.parametrize(
    ("ref", "resolved"),
    [
        ("conversation/X/activities", "https://h/webhooks/audiocodes/conversation/X/activities"),
        ("/ac/r/conversation/X/refresh", "https://h/ac/r/conversation/X/refresh"),
        ("https://other.example/c/X", "https://other.example/c/X"),
        ("../c/X", "https://h/webhooks/c/X"),
    ],
)
def test_resolve_follows_rfc3986(ref: str, resolved: str) -> None:
    assert resolve("https://h/webhooks/audiocodes/webhook", ref) == resolved


def test_stamp_adds_uuid_and_millisecond_utc_timestamp() -> None:
    at = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    stamped = stamp({"type": "message", "text": "hi"}, at)
    assert stamped["timestamp"] == "2024-05-01T10:00:00.123Z"
    assert uuid.UUID(stamped["id"]).version == 4
    assert stamped["text"] == "hi"


@pytest.mark.parametrize("style", ["relative", "root", "absolute"])
async def test_client_conversation_lifecycle(bot: Bot, style: str) -> None:
    bot.url_style = style
    bot.replies = [[{"type": "message", "text": "Hello."}]]
    async with VaicClient(bot.base + BOT_PATH, TOKEN) as client:
        probe = await client.probe()
        assert probe.status == 200 and probe.body == {"type": "ac-bot-api", "success": True}
        created = await client.create("conv-1")
        assert created.status == 200 and client.urls is not None
        assert (
            client.urls.activities
            == f"{bot.base}/webhooks/audiocodes/conversation/conv-1/activities"
        )
        assert client.urls.expires_seconds == 120 and client.urls.websocket is None
        reply = await client.send([{"type": "event", "name": "start", "parameters": {}}])
        assert reply.status == 200 and reply.activities == [{"type": "message", "text": "Hello."}]
        again = await client.retry()
        assert again.activities == []
        assert (await client.refresh()).body == {"expiresSeconds": 120}
        assert (await client.disconnect()).body == {}
    methods = [(m, p) for m, p, _, _ in bot.requests]
    assert methods == [
        ("GET", BOT_PATH),
        ("POST", BOT_PATH),
        ("POST", "/webhooks/audiocodes/conversation/conv-1/activities"),
        ("POST", "/webhooks/audiocodes/conversation/conv-1/activities"),
        ("POST", "/webhooks/audiocodes/conversation/conv-1/refresh"),
        ("POST", "/webhooks/audiocodes/conversation/conv-1/disconnect"),
    ]
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth, _ in bot.requests)
    sent = bot.requests[2][3]
    assert sent["conversation"] == "conv-1"
    (activity,) = sent["activities"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", activity["timestamp"])
    assert bot.requests[3][3] == sent  # retry re-posts the same ids
    assert bot.requests[5][3] == {
        "conversation": "conv-1",
        "reasonCode": "client-disconnected",
        "reason": "Client Side",
    }


async def test_client_without_token_gets_401(bot: Bot) -> None:
    async with VaicClient(bot.base + BOT_PATH) as client:
        reply = await client.probe()
    assert reply.status == 401 and reply.body == {"error": "auth"}
    assert bot.requests[0][2] is None


async def test_send_before_create_is_an_error(bot: Bot) -> None:
    async with VaicClient(bot.base + BOT_PATH, TOKEN) as client:
        with pytest.raises(RuntimeError):
            await client.send([])


async def test_push_socket_receives_async_activities(bot: Bot) -> None:
    bot.push = [{"type": "message", "text": "Pushed."}]
    async with VaicClient(bot.base + BOT_PATH, TOKEN) as client:
        await client.create()
        assert client.urls is not None and client.urls.websocket is not None
        assert await client.open_push_socket()
        assert (await client.send([{"type": "message", "text": "hi"}])).body == {}
        assert await client.pushed.get() == {"type": "message", "text": "Pushed."}


# ---------------------------------------------------------------- scenarios

SCENARIO = {
    "name": "demo",
    "route": "support",
    "flow": "support",
    "caller": "+4915112345678",
    "callee": "+4930111000",
    "steps": [
        {"start": None, "expect": [{"type": "message", "text": "Welcome."}]},
        {
            "say": "I want to pay",
            "expect": [
                {"type": "message", "text_contains": "pay"},
                {"type": "event", "name": "hangup", "activityParams": {"hangupReason": "done"}},
            ],
        },
        "hangup",
    ],
}


def step(*specs: dict[str, Any], more_ok: bool = False) -> Step:
    return Step(StepKind.SAY, "x", tuple(Matcher(s) for s in specs), more_ok)


def test_check_step_exact_count_and_order() -> None:
    s = step({"type": "message", "text": "A"}, {"type": "event", "name": "hangup"})
    assert (
        check_step(s, [{"type": "message", "text": "A"}, {"type": "event", "name": "hangup"}])
        is None
    )
    too_many = check_step(
        s,
        [
            {"type": "message", "text": "A"},
            {"type": "event", "name": "hangup"},
            {"type": "message", "text": "B"},
        ],
    )
    assert too_many is not None and "expected 2 activities, got 3" in too_many
    swapped = check_step(s, [{"type": "event", "name": "hangup"}, {"type": "message", "text": "A"}])
    assert swapped is not None and "activity 1" in swapped and "type" in swapped


def test_check_step_subsets_and_more_ok() -> None:
    transfer = {
        "type": "event",
        "name": "transfer",
        "activityParams": {
            "transferTarget": "tel:+4989123456",
            "transferSipHeaders": [{"name": "X-A", "value": "1"}],
            "handoverReason": "agent",
        },
    }
    ok = step(
        {
            "name": "transfer",
            "activityParams": {
                "transferTarget": "tel:+4989123456",
                "transferSipHeaders": [{"name": "X-A"}],
            },
        }
    )
    assert check_step(ok, [transfer]) is None
    wrong = step({"activityParams": {"transferTarget": "tel:+491"}})
    reason = check_step(wrong, [transfer])
    assert reason is not None and "activityParams.transferTarget" in reason
    missing = step({"sessionParams": {"language": "de-DE"}})
    assert check_step(missing, [transfer]) == (
        'activity 1 (event transfer tel:+4989123456 headers=[{"name":"X-A","value":"1"}]) '
        'does not match {"sessionParams": {"language": "de-DE"}}: sessionParams: missing'
    )
    bool_vs_int = step({"sessionParams": {"bargeIn": True}})
    assert check_step(bool_vs_int, [{"sessionParams": {"bargeIn": 1}}]) is not None
    int_vs_float = step({"activityParams": {"userNoInputTimeoutMS": 5000}})
    assert check_step(int_vs_float, [{"activityParams": {"userNoInputTimeoutMS": 5000.0}}]) is None
    more = step({"text": "A"}, {"text": "C"}, more_ok=True)
    acts = [{"text": "A"}, {"text": "B"}, {"text": "C"}]
    assert check_step(more, acts) is None
    out_of_order = step({"text": "C"}, {"text": "A"}, more_ok=True)
    reason = check_step(out_of_order, acts)
    assert reason is not None and reason.startswith("expectation 2")


def test_describe_activity_lines() -> None:
    assert describe_activity({"type": "message", "text": "Sure."}) == 'message "Sure."'
    assert (
        describe_activity(
            {
                "type": "event",
                "name": "transfer",
                "activityParams": {"transferTarget": "tel:+4989123456"},
            }
        )
        == "event transfer tel:+4989123456"
    )
    assert (
        describe_activity(
            {
                "type": "event",
                "name": "playUrl",
                "activityParams": {"playUrlUrl": "https://x/a.wav"},
            }
        )
        == "event playUrl https://x/a.wav"
    )
    assert (
        describe_activity({"type": "event", "name": "sendMetaData", "value": {"a": 1}})
        == 'event sendMetaData {"a":1}'
    )
    assert describe_activity({"type": "event", "name": "stopCallRecording"}) == (
        "event stopCallRecording"
    )


def test_step_activities_follow_the_ac_catalogue() -> None:
    scenario = parse_scenario(SCENARIO)
    start = step_activity(scenario.steps[0], scenario, "cid")
    assert start == {
        "type": "event",
        "name": "start",
        "parameters": {
            "vaigConversationId": "cid",
            "caller": "+4915112345678",
            "callee": "+4930111000",
        },
    }
    assert step_activity(scenario.steps[1], scenario, "cid") == {
        "type": "message",
        "text": "I want to pay",
        "parameters": {"confidence": 0.92},
    }
    assert step_activity(Step(StepKind.DTMF, "12"), scenario, "c") == {
        "type": "event",
        "name": "DTMF",
        "value": "12",
    }
    assert step_activity(Step(StepKind.SILENCE), scenario, "c", 2) == {
        "type": "event",
        "name": "noUserInput",
        "value": 2,
    }
    assert (
        step_activity(Step(StepKind.PLAY_FAILED, {"url": "u"}), scenario, "c")["value"][
            "playUrlUrl"
        ]
        == "u"
    )


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ({"steps": [{"say": "hi"}]}, "steps[0]"),
        ({"steps": [{"start": None, "expect": [{"colour": "red"}]}]}, "steps[0].expect[0].colour"),
        ({"steps": [{"start": None}, {"dtmf": "12x"}]}, "steps[1].dtmf"),
        ({"steps": [{"start": None}, {"shout": "x"}]}, "steps[1].shout"),
        ({"callee": ""}, "callee"),
    ],
)
def test_invalid_scenarios_name_the_field(patch: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenario({**SCENARIO, **patch}, "s.yaml")
    assert caught.value.path == path


async def test_run_scenario_passes_and_writes_a_transcript(bot: Bot) -> None:
    bot.replies = [
        [{"type": "message", "text": "Welcome.", "id": "1"}],
        [
            {"type": "message", "text": "Sure, pay."},
            {"type": "event", "name": "hangup", "activityParams": {"hangupReason": "done"}},
        ],
    ]
    scenario = parse_scenario({**SCENARIO, "route": "r"})
    # the bot is not under /ac/<route>: point the base so that base + /ac/r is the bot URL
    result = await run_scenario(scenario, bot.base, TOKEN)
    assert not result.passed  # /ac/r does not exist on this bot
    assert result.failure is not None and "create answered 404" in result.failure

    bot.requests.clear()
    result = await run_scenario(
        parse_scenario({**SCENARIO}),
        bot.base,
        TOKEN,
        conversation_id="cv",
        bot_url=bot.base + BOT_PATH,
    )
    assert result.passed, result.failure
    assert result.transcript == [
        "VAIC → start caller=+4915112345678 callee=+4930111000",
        'BOT ← message "Welcome."',
        'VAIC → say "I want to pay"',
        'BOT ← message "Sure, pay."',
        'BOT ← event hangup "done"',
        "VAIC → hangup (client-disconnected)",
    ]
    assert bot.requests[-1][1].endswith("/conversation/cv/disconnect")
    assert "PASS" in result.render()


async def test_run_scenario_reports_the_first_failure_and_disconnects(bot: Bot) -> None:
    bot.replies = [
        [{"type": "message", "text": "Welcome."}],
        [
            {"type": "message", "text": "Sure, pay."},
            {"type": "event", "name": "hangup", "activityParams": {"hangupReason": "other"}},
        ],
    ]
    result = await run_scenario(
        parse_scenario(SCENARIO), bot.base, TOKEN, bot_url=bot.base + BOT_PATH
    )
    assert not result.passed
    assert result.failure == (
        'step 2 (VAIC → say "I want to pay"): activity 2 (event hangup "other") does not match '
        '{"activityParams": {"hangupReason": "done"}, "name": "hangup", "type": "event"}: '
        'activityParams.hangupReason: expected "done", got "other"'
    )
    assert bot.requests[-1][1].endswith("/disconnect")


async def test_run_scenario_with_push_socket(bot: Bot) -> None:
    bot.push = [{"type": "message", "text": "Welcome."}]
    scenario = parse_scenario({**SCENARIO, "steps": [SCENARIO["steps"][0], "hangup"]})
    result = await run_scenario(
        scenario, bot.base, TOKEN, push=True, settle=0.05, bot_url=bot.base + BOT_PATH
    )
    assert result.passed, result.failure


# ---------------------------------------------------------------- shipped scenarios vs flows


def _reference_activities(verbs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A test-only reading of design.md §3.2, to check scenarios against their flows."""
    out: list[dict[str, Any]] = []
    for verb in verbs:
        name = verb["verb"]
        if name == "say":
            out.append({"type": "message", "text": verb["text"]})
        elif name == "gather":
            out.append(
                {
                    "type": "message",
                    "text": verb["say"]["text"],
                    "activityParams": {"userNoInputTimeoutMS": verb["timeout"] * 1000},
                }
            )
        elif name == "play":
            out.append(
                {"type": "event", "name": "playUrl", "activityParams": {"playUrlUrl": verb["url"]}}
            )
        elif name == "hangup":
            out.append(
                {
                    "type": "event",
                    "name": "hangup",
                    "activityParams": {"hangupReason": verb["headers"]["X-Reason"]},
                }
            )
        elif name == "dial":
            target = verb["target"][0]
            out.append(
                {
                    "type": "event",
                    "name": "transfer",
                    "activityParams": {
                        "transferTarget": "tel:" + target["number"],
                        "transferSipHeaders": [
                            {"name": k, "value": v} for k, v in verb.get("headers", {}).items()
                        ],
                    },
                }
            )
        elif name == "sip:refer":
            out.append(
                {
                    "type": "event",
                    "name": "transfer",
                    "activityParams": {
                        "transferTarget": verb["referTo"],
                        "transferReferredByURL": verb["referredBy"],
                    },
                }
            )
        elif name == "sip:request":
            out.append({"type": "event", "name": "sendMetaData", "value": json.loads(verb["body"])})
        elif name == "dtmf":
            out.append(
                {
                    "type": "event",
                    "name": "sendDtmf",
                    "activityParams": {"dtmfDigits": verb["dtmf"]},
                }
            )
        elif name == "config" and "record" in verb:
            out.append({"type": "event", "name": verb["record"]["action"]})
        elif name == "config":
            session: dict[str, Any] = {}
            if "synthesizer" in verb:
                session["language"] = verb["synthesizer"]["language"]
                session["voiceName"] = verb["synthesizer"]["voice"]
            if "bargeIn" in verb:
                session["bargeIn"] = verb["bargeIn"]["enable"]
            if "recognizer" in verb:
                session["sttContextPhrases"] = verb["recognizer"]["hints"]
            out.append({"type": "event", "name": "config", "sessionParams": session})
    return out


def _hook_for(step_: Step) -> tuple[str, dict[str, Any]]:
    match step_.kind:
        case StepKind.SAY:
            return "voice", {
                "reason": "speechDetected",
                "speech": {"alternatives": [{"transcript": step_.arg, "confidence": 0.9}]},
            }
        case StepKind.DTMF:
            return "voice", {"reason": "dtmfDetected", "digits": step_.arg}
        case StepKind.SILENCE:
            return "voice", {"reason": "timeout"}
        case StepKind.TRANSFER_STATUS:
            status = (
                "completed"
                if step_.arg["status"] == "answered"
                else step_.arg.get("reasonCode", "failed")
            )
            return "dial", {"dial_call_status": status}
        case _:
            return "play", {"reason": "playFailed", "status": "fail"}


SCENARIOS = load_scenarios()


def test_shipped_scenarios_cover_the_required_behaviours() -> None:
    names = {s.name for s in SCENARIOS}
    assert {
        "greeting",
        "spoken_answer",
        "dtmf_menu",
        "no_input",
        "play_url",
        "transfer_dial",
        "transfer_refer",
        "send_metadata",
        "session_config",
        "recording",
        "hang_up",
    } <= names


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_shipped_scenario_agrees_with_its_flow(scenario: Scenario) -> None:
    flows = load_flows()
    flow = flows[scenario.flow]
    assert flow.serves(scenario.callee)
    run = FlowRun(flow)
    for index, step_ in enumerate(scenario.steps):
        if step_.kind is StepKind.START:
            verbs = run.start()
        elif step_.kind is StepKind.HANGUP:
            verbs = []
        else:
            verbs = run.receive_hook(*_hook_for(step_))
        reason = check_step(step_, _reference_activities(verbs))
        assert reason is None, f"{scenario.name} step {index + 1}: {reason}"


# ---------------------------------------------------------------- WebSocket mode (§2)


@dataclass
class StreamBot:
    """A minimal WebSocket-mode bot: answers each `activities` message from a script."""

    turns: list[list[list[dict[str, Any]]]] = field(default_factory=list)
    refuse: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.auth.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "auth"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            message = json.loads(msg.data)
            self.received.append(message)
            kind = message["type"]
            if kind == "connection.validate":
                await ws.send_json({"type": "connection.validated", "success": True})
            elif kind == "session.initiate" and self.refuse is not None:
                await ws.send_json({"type": "session.error", "reason": self.refuse})
                await ws.close(code=1008)
            elif kind == "session.initiate":
                await ws.send_json({"type": "session.accepted", "mediaFormat": "raw/lpcm16"})
            elif kind == "activities":
                for outputs in self.turns.pop(0) if self.turns else []:
                    await ws.send_json({"type": "activities", "activities": outputs})
            elif kind == "session.end":
                await ws.close()
        return ws


@pytest.fixture
async def stream_bot() -> AsyncIterator[StreamBot]:
    state = StreamBot()
    app = web.Application()
    app.router.add_get(BOT_PATH, state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}{BOT_PATH}"
    yield state
    await runner.cleanup()


def test_websocket_url_swaps_the_scheme() -> None:
    assert websocket_url("http://h:1/ac/r") == "ws://h:1/ac/r"
    assert websocket_url("https://h/ac/r?x=1") == "wss://h/ac/r?x=1"
    assert websocket_url("ws://h/ac/r") == "ws://h/ac/r"


async def test_streaming_client_lifecycle(stream_bot: StreamBot) -> None:
    stream_bot.turns = [[[{"type": "message", "text": "Hello."}]]]
    async with StreamingVaicClient(stream_bot.url, TOKEN) as client:
        assert await client.validate() == {"type": "connection.validated", "success": True}
        accepted = await client.initiate("conv-1", "+4915112345678")
        assert accepted["type"] == "session.accepted"
        at = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
        sent = await client.send([{"type": "event", "name": "start"}], at=at)
        reply = await client.next_activities(5.0)
        assert reply == {
            "type": "activities",
            "activities": [{"type": "message", "text": "Hello."}],
        }
        assert await client.end("client-disconnected", "Client Side")
        assert client.close_code == 1000
        assert await client.next_activities(5.0) is None  # closed, nothing left
    assert stream_bot.auth == [f"Bearer {TOKEN}"]
    validate, initiate, activities, end = stream_bot.received
    assert validate == {"type": "connection.validate"}
    assert initiate == {
        "type": "session.initiate",
        "conversationId": "conv-1",
        "expectAudioMessages": False,
        "supportedMediaFormats": ["raw/lpcm16"],
        "caller": "+4915112345678",
    }
    assert activities == sent
    assert activities["conversationId"] == "conv-1"
    (activity,) = activities["activities"]
    assert activity["timestamp"] == "2024-05-01T10:00:00.123Z"
    assert uuid.UUID(activity["id"]).version == 4
    assert end == {
        "type": "session.end",
        "conversationId": "conv-1",
        "reasonCode": "client-disconnected",
        "reason": "Client Side",
    }


async def test_streaming_client_refusals(stream_bot: StreamBot) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await StreamingVaicClient(stream_bot.url, "wrong").initiate()
    assert info.value.status == 401
    stream_bot.refuse = "no common media format"
    async with StreamingVaicClient(stream_bot.url, TOKEN) as client:
        with pytest.raises(RuntimeError):
            await client.send([])
        refused = await client.initiate()
        assert refused == {"type": "session.error", "reason": "no common media format"}
        await client.closed.wait()
        assert client.close_code == 1008


WS_SCENARIO = {**SCENARIO, "steps": [SCENARIO["steps"][0], SCENARIO["steps"][1], "hangup"]}
WELCOME = {"type": "message", "text": "Welcome."}
PAY = {"type": "message", "text": "Sure, pay."}
BYE = {"type": "event", "name": "hangup", "activityParams": {"hangupReason": "done"}}


@pytest.mark.parametrize(
    ("async_mode", "turns"),
    [(False, [[[WELCOME]], [[PAY, BYE]]]), (True, [[[WELCOME]], [[PAY], [BYE]]])],
)
async def test_run_scenario_over_websocket(
    stream_bot: StreamBot, async_mode: bool, turns: list[list[list[dict[str, Any]]]]
) -> None:
    stream_bot.turns = turns
    result = await run_scenario(
        parse_scenario(WS_SCENARIO),
        "",
        TOKEN,
        bot_url=stream_bot.url,
        transport="ws",
        async_mode=async_mode,
        settle=0.05,
    )
    assert result.passed, result.failure
    assert result.transcript[-1] == "VAIC → hangup (client-disconnected)"
    assert [m["type"] for m in stream_bot.received] == [
        "session.initiate",
        "activities",
        "activities",
        "session.end",
    ]
    mode = "async" if async_mode else "sync"
    assert result.render().startswith(f"== demo: PASS (route support, ws, {mode})")


async def test_run_scenario_over_websocket_checks_the_framing(stream_bot: StreamBot) -> None:
    # async mode: one message per output; two outputs in one message is a failure
    stream_bot.turns = [[[WELCOME]], [[PAY, BYE]]]
    result = await run_scenario(
        parse_scenario(WS_SCENARIO),
        "",
        TOKEN,
        bot_url=stream_bot.url,
        transport="ws",
        async_mode=True,
        settle=0.05,
    )
    assert not result.passed
    assert result.failure is not None
    assert result.failure.startswith("step 2 (say): async mode sends one activities message")
    assert stream_bot.received[-1]["type"] == "session.end"  # the runner still ends the call

    # sync mode: one message per turn; a second one shows up as an extra output
    stream_bot.received.clear()
    stream_bot.turns = [[[WELCOME]], [[PAY], [BYE]]]
    result = await run_scenario(
        parse_scenario(WS_SCENARIO), "", TOKEN, bot_url=stream_bot.url, transport="ws"
    )
    assert not result.passed
    assert result.failure is not None and result.failure.startswith("step 2 ")
    assert "expected 2 activities, got 1" in result.failure


# ---------------------------------------------------------------- against the real bridge


@pytest.fixture
async def vg_sim() -> AsyncIterator[VGEndpointSim]:
    sim = VGEndpointSim()
    await sim.start()
    yield sim
    await sim.stop()


async def test_streaming_client_against_the_bridge(
    vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    sync = await bridge_factory(route_config(vg_sim.url()))
    async_ = await bridge_factory(route_config(vg_sim.url(), async_mode=True))
    start = {
        "type": "event",
        "name": "start",
        "parameters": {"caller": "+4915112345678", "callee": "+4930111000"},
    }
    prompts = ["Welcome to ACME support.", "How can I help you?"]

    async with StreamingVaicClient(sync.url + "/ac/r", "tok") as client:
        assert (await client.initiate(caller="+4915112345678"))["type"] == "session.accepted"
        await client.send([start])
        message = await client.next_activities(5.0)
        assert message is not None and message["type"] == "activities"
        assert [a["text"] for a in message["activities"]] == prompts  # one message per turn
        assert await client.end()

    async with StreamingVaicClient(async_.url + "/ac/r", "tok") as client:
        assert (await client.initiate(caller="+4915112345678"))["type"] == "session.accepted"
        await client.send([start])
        messages = [await client.next_activities(5.0) for _ in prompts]
        assert [[a["text"] for a in m["activities"]] for m in messages if m] == [
            [p] for p in prompts
        ]  # one message per output
        assert await client.end()
    assert len(vg_sim.calls) == 2
    for call in vg_sim.calls.values():
        statuses = [m["data"].get("call_status") for m in call.messages("call:status")]
        assert statuses[-1:] == ["completed"]


@pytest.mark.parametrize(
    ("transport", "async_mode"), [("http", False), ("http", True), ("ws", False), ("ws", True)]
)
async def test_a_scenario_holds_on_every_transport_against_the_bridge(
    vg_sim: VGEndpointSim, bridge_factory: BridgeFactory, transport: Transport, async_mode: bool
) -> None:
    bridge = await bridge_factory(route_config(vg_sim.url(), async_mode=async_mode))
    (scenario,) = [s for s in SCENARIOS if s.name == "spoken_answer"]
    result = await run_scenario(
        scenario,
        bridge.url,
        "tok",
        session=bridge.http,
        route="r",
        transport=transport,
        async_mode=async_mode,
        settle=0.05,
    )
    assert result.passed, result.failure
    assert result.transcript == EXPECTED_SPOKEN_ANSWER
    (call,) = vg_sim.calls.values()
    assert call.flow == "support"
    assert [m["type"] for m in call.received][-1] == "call:status"


EXPECTED_SPOKEN_ANSWER = [
    "VAIC → start caller=+4915112345678 callee=+4930111000",
    'BOT ← message "Welcome to ACME support."',
    'BOT ← message "How can I help you?"',
    'VAIC → say "What are your opening hours"',
    'BOT ← message "You said What are your opening hours."',
    'BOT ← message "How can I help you?"',
    'VAIC → say "I want to pay my bill"',
    'BOT ← message "Sure. Let\'s pay your bill."',
    'BOT ← message "Please tell me the amount."',
    'VAIC → say "Fifty euros"',
    'BOT ← message "Thank you for calling. Goodbye."',
    'BOT ← event hangup "flow completed"',
    "VAIC → hangup (client-disconnected)",
]
