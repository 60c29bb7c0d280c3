"""The legacy path end to end on 127.0.0.1: VAIC (simulated) → bridge → simulated legacy bot.

The bridge plays VAIC toward the legacy AudioCodes Endpoint (design §3.5): every shipped scenario
passes through unchanged over each of VAIC's ways in, with the legacy bot in sync and in Async
Mode; activities travel unchanged both ways, a VAIC retry is not forwarded again, the bridge
refreshes the legacy conversation on its own, and a failing legacy bot ends only its own call.
Also holds the helpers the routing and shadow tests share.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import pytest
import yaml
from aiohttp import web

from bridge.app import GatewayKey
from bridge.config import Config, parse_config
from bridge.sim.legacy_endpoint import LegacyEndpointSim, RequestKind
from bridge.sim.scenario import (
    Scenario,
    ScenarioResult,
    StepKind,
    Transport,
    bot_url_for,
    check_step,
    load_scenarios,
    run_scenario,
    step_activity,
)
from bridge.sim.vaic import VaicClient
from tests.conftest import BridgeFactory, RunningBridge

TOKEN = "tok"
LEGACY_TOKEN = "legacy-tok"
SCENARIOS = {s.name: s for s in load_scenarios()}
# VAIC's ways in: (transport, route async_mode) — HTTP sync, HTTP async + push socket, WS sync
# and WS async.
WAYS: list[tuple[Transport, bool]] = [("http", False), ("http", True), ("ws", False), ("ws", True)]
WAY_IDS = ["http-sync", "http-async-push", "ws-sync", "ws-async"]


# ---------------------------------------------------------------- shared helpers


def make_config(routes: Mapping[str, Mapping[str, Any]], **top: Any) -> Config:
    """A config of `routes` (name → route body), each with token `TOKEN` unless given."""
    body = {
        name: {"token": TOKEN, "turn_settle_ms": 300, **route} for name, route in routes.items()
    }
    return parse_config(yaml.safe_dump({"routes": body, **top}), env={})


def legacy_upstream(sim: LegacyEndpointSim) -> dict[str, Any]:
    return {"url": sim.url(), "token": LEGACY_TOKEN}


def strip(activities: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Activities without the per-delivery `id` and `timestamp`."""
    return [{k: v for k, v in a.items() if k not in ("id", "timestamp")} for a in activities]


def samples(bridge: RunningBridge, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of metric `name` (e.g. `acvg_shadow_comparisons_total`) by label set."""
    out: dict[frozenset[tuple[str, str]], float] = {}
    for metric in bridge.app[GatewayKey].metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == name:
                out[frozenset(sample.labels.items())] = sample.value
    return out


def total(bridge: RunningBridge, name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for k, v in samples(bridge, name).items() if wanted <= k)


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `check` until it holds (fails the test after `timeout` seconds)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def play_all(
    bridge: RunningBridge,
    scenarios: Iterable[Scenario],
    *,
    route: str = "r",
    transport: Transport = "http",
    async_mode: bool = False,
) -> list[ScenarioResult]:
    """Play `scenarios` at once, each as its own VAIC conversation on `route`."""
    return list(
        await asyncio.gather(
            *(
                run_scenario(
                    scenario,
                    bridge.url,
                    TOKEN,
                    session=bridge.http,
                    transport=transport,
                    async_mode=async_mode,
                    route=route,
                    settle=0.05,
                )
                for scenario in scenarios
            )
        )
    )


def assert_passed(results: Iterable[ScenarioResult]) -> None:
    failed = [r.render() for r in results if not r.passed]
    assert not failed, "\n\n".join(failed)


class Caller:
    """One VAIC conversation over HTTP sync, step by step (for tests that act between turns)."""

    def __init__(self, bridge: RunningBridge, route: str = "r") -> None:
        self.client = VaicClient(bot_url_for(bridge.url, route), TOKEN, session=bridge.http)
        self.no_input = 0

    @property
    def conversation_id(self) -> str:
        assert self.client.conversation_id is not None
        return self.client.conversation_id

    async def create(self) -> None:
        reply = await self.client.create()
        assert reply.status == 200, reply.text

    async def step(self, scenario: Scenario, index: int) -> list[dict[str, Any]]:
        """Play step `index` of `scenario`; returns what VAIC got back (ids kept)."""
        step = scenario.steps[index]
        if step.kind is StepKind.HANGUP:
            arg = step.arg or {}
            reply = await self.client.disconnect(
                str(arg.get("reasonCode", "client-disconnected")), str(arg.get("reason", "BYE"))
            )
        else:
            self.no_input += step.kind is StepKind.SILENCE
            activity = step_activity(step, scenario, self.conversation_id, self.no_input)
            reply = await self.client.send([activity])
        assert reply.status == 200, reply.text
        return reply.activities


async def drive(
    bridge: RunningBridge,
    scenario: Scenario,
    *,
    route: str = "r",
    after_first_turn: Callable[[], Awaitable[None]] | None = None,
    before_hangup: Callable[[], Awaitable[None]] | None = None,
) -> list[list[dict[str, Any]]]:
    """Play every step of `scenario` over HTTP sync; returns each step's outputs, stripped."""
    caller = Caller(bridge, route)
    await caller.create()
    outputs: list[list[dict[str, Any]]] = []
    for index, step in enumerate(scenario.steps):
        if step.kind is StepKind.HANGUP and before_hangup is not None:
            await before_hangup()
        outputs.append(strip(await caller.step(scenario, index)))
        if index == 0 and after_first_turn is not None:
            await after_first_turn()
    return outputs


@pytest.fixture
async def legacy_sim() -> AsyncIterator[LegacyEndpointSim]:
    async with LegacyEndpointSim(token=LEGACY_TOKEN) as sim:
        yield sim


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve `app` on an ephemeral loopback port; returns the runner and `http://host:port`."""
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


# ---------------------------------------------------------------- every scenario, every way


@pytest.mark.parametrize("legacy_async", [False, True], ids=["legacy-sync", "legacy-async"])
@pytest.mark.parametrize(("transport", "async_mode"), WAYS, ids=WAY_IDS)
async def test_shipped_scenarios_pass_through_the_legacy_path(
    bridge_factory: BridgeFactory, transport: Transport, async_mode: bool, legacy_async: bool
) -> None:
    async with LegacyEndpointSim(token=LEGACY_TOKEN, async_mode=legacy_async) as sim:
        route = {"async_mode": async_mode, "legacy": legacy_upstream(sim)}
        bridge = await bridge_factory(make_config({"r": route}))
        results = await play_all(
            bridge, SCENARIOS.values(), transport=transport, async_mode=async_mode
        )
        assert_passed(results)
        await eventually(lambda: all(not call.active for call in sim.calls.values()))

    scenario_of = {str(r.conversation_id): SCENARIOS[r.name] for r in results}
    assert sorted(sim.calls) == sorted(scenario_of)
    for call in sim.calls.values():
        kinds = [r.kind for r in call.requests]
        assert kinds[0] is RequestKind.CREATE
        assert kinds[-1] is RequestKind.DISCONNECT
        assert all(
            r.status == (101 if r.kind is RequestKind.WEBSOCKET else 200) for r in call.requests
        )
        # each caller activity arrived once: the first is `start`, no id twice, no retries
        ids = [a["id"] for a in call.received]
        assert len(ids) == len(set(ids)) and call.duplicates == 0
        assert call.received_names()[0] == "start"
        assert call.disconnect is not None
        hangup = scenario_of[call.conversation_id].steps[-1]
        assert hangup.kind is StepKind.HANGUP
        reason_code = (hangup.arg or {}).get("reasonCode", "client-disconnected")
        assert call.disconnect["reasonCode"] == reason_code
        # the legacy bot's push socket (websocketURL) was connected and carried the outputs
        assert (RequestKind.WEBSOCKET in kinds) is legacy_async
        assert bool(call.pushed) is legacy_async
    assert total(bridge, "acvg_upstream_errors_total") == 0
    assert total(bridge, "acvg_routing_decisions_total", path="legacy", reason="single") == len(
        SCENARIOS
    )
    assert total(bridge, "acvg_calls_active") == 0


@pytest.mark.parametrize("legacy_async", [False, True], ids=["legacy-sync", "legacy-async"])
async def test_activities_travel_unchanged_and_a_retry_is_not_forwarded(
    bridge_factory: BridgeFactory, legacy_async: bool
) -> None:
    async with LegacyEndpointSim(token=LEGACY_TOKEN, async_mode=legacy_async) as sim:
        bridge = await bridge_factory(make_config({"r": {"legacy": legacy_upstream(sim)}}))
        scenario = SCENARIOS["spoken_answer"]
        caller = Caller(bridge)
        await caller.create()
        vaic = caller.client

        greeting = await caller.step(scenario, 0)
        call = sim.call(caller.conversation_id)
        assert vaic.last_body is not None
        # the start event reached the legacy bot exactly as VAIC stamped it
        assert call.received == vaic.last_body["activities"]
        # and the legacy bot's outputs reached VAIC as the bot stamped them (ids included)
        assert [a["text"] for a in greeting] == ["Welcome to ACME support.", "How can I help you?"]
        assert greeting == call.sent[: len(greeting)]
        assert [a["id"] for a in greeting] == [a["id"] for a in call.turns[0]]

        answer = await caller.step(scenario, 1)
        assert [a["id"] for a in answer] == [a["id"] for a in call.turns[1]]
        received = len(call.received)
        # VAIC retries the timed-out POST with the same ids: answered, not forwarded again
        retried = await vaic.retry()
        assert retried.status == 200
        assert retried.activities == answer
        assert len(call.received) == received and call.duplicates == 0

        # a retry that adds one new activity forwards only the new one
        assert vaic.last_body is not None
        old = vaic.last_body["activities"][0]
        new = {
            "id": str(uuid.uuid4()),
            "timestamp": old["timestamp"],
            "type": "message",
            "text": "I want to pay my bill",
        }
        body = {"conversation": caller.conversation_id, "activities": [old, new]}
        assert vaic.urls is not None
        async with bridge.http.post(
            vaic.urls.activities, json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp:
            assert resp.status == 200
            mixed = (await resp.json())["activities"]
        assert call.received[received:] == [new]
        assert [a["text"] for a in mixed] == [
            "Sure. Let's pay your bill.",
            "Please tell me the amount.",
        ]

        reply = await vaic.disconnect("client-disconnected", "caller hung up")
        assert reply.status == 200 and reply.body == {}
        assert call.disconnect == {
            "conversation": caller.conversation_id,
            "reasonCode": "client-disconnected",
            "reason": "caller hung up",
        }
        assert call.ended.is_set()
    ids = [a["id"] for a in call.received]
    assert len(ids) == len(set(ids))


async def test_bridge_refreshes_the_legacy_conversation_before_it_expires(
    bridge_factory: BridgeFactory,
) -> None:
    async with LegacyEndpointSim(token=LEGACY_TOKEN, expires_seconds=2) as sim:
        bridge = await bridge_factory(make_config({"r": {"legacy": legacy_upstream(sim)}}))
        scenario = SCENARIOS["spoken_answer"]
        caller = Caller(bridge)
        await caller.create()
        await caller.step(scenario, 0)
        call = sim.call(caller.conversation_id)
        # the caller is silent for longer than the legacy conversation lives without a refresh
        await asyncio.sleep(3.0)
        assert call.refreshes > 0
        assert call.active and not call.expired
        outputs = strip(await caller.step(scenario, 1))
        assert outputs[0] == {"type": "message", "text": "You said What are your opening hours."}
        assert total(bridge, "acvg_upstream_errors_total") == 0
        await caller.step(scenario, len(scenario.steps) - 1)
        assert call.disconnect is not None


# ---------------------------------------------------------------- a failing legacy bot


class FlakyLegacy:
    """A legacy bot that creates conversations and answers `ok_turns` turns, then 500s."""

    def __init__(self, ok_turns: int) -> None:
        self.ok_turns = ok_turns
        self.turns = 0
        self.requests: list[str] = []

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self._create)
        app.router.add_post("/conversation/{id}/{op}", self._op)
        return app

    async def _create(self, request: web.Request) -> web.Response:
        self.requests.append("create")
        base = f"conversation/{(await request.json())['conversation']}"
        return web.json_response(
            {
                "activitiesURL": f"{base}/activities",
                "refreshURL": f"{base}/refresh",
                "disconnectURL": f"{base}/disconnect",
                "expiresSeconds": 60,
            }
        )

    async def _op(self, request: web.Request) -> web.Response:
        op = request.match_info["op"]
        self.requests.append(op)
        if op != "activities":
            return web.json_response({})
        self.turns += 1
        if self.turns > self.ok_turns:
            return web.json_response({"error": "boom"}, status=500)
        activity = {"id": str(uuid.uuid4()), "type": "message", "text": "Hello from legacy."}
        return web.json_response({"activities": [activity]})


@pytest.mark.parametrize("failure", ["500-at-start", "500-mid-call", "connection-refused"])
async def test_failing_legacy_bot_ends_only_its_call(
    bridge_factory: BridgeFactory, legacy_sim: LegacyEndpointSim, failure: str
) -> None:
    flaky = FlakyLegacy(ok_turns=1 if failure == "500-mid-call" else 0)
    runner, flaky_url = await serve(flaky.make_app())
    try:
        bad_url = "http://127.0.0.1:1/" if failure == "connection-refused" else flaky_url + "/"
        config = make_config(
            {
                "good": {"legacy": legacy_upstream(legacy_sim)},
                "bad": {"legacy": {"url": bad_url, "token": LEGACY_TOKEN}},
            }
        )
        bridge = await bridge_factory(config)
        scenario = SCENARIOS["spoken_answer"]
        good = Caller(bridge, "good")
        await good.create()
        assert len(await good.step(scenario, 0)) == 2

        bad = Caller(bridge, "bad")
        await bad.create()
        first = strip(await bad.step(scenario, 0))
        if failure == "500-mid-call":
            assert first == [{"type": "message", "text": "Hello from legacy."}]
            failed = strip(await bad.step(scenario, 1))
        else:
            failed = first
        assert [a["type"] for a in failed] == ["event"]
        assert failed[0]["name"] == "hangup"
        assert failed[0]["activityParams"]["hangupReason"]
        kind = {"connection-refused": "connect"}.get(failure, "http_5xx")
        assert total(bridge, "acvg_upstream_errors_total", route="bad", kind=kind) == 1
        if failure != "connection-refused":
            # one retry of the failed POST, then no further turn reached the bot
            assert flaky.requests.count("activities") == flaky.ok_turns + 2
        # VAIC hangs up after the hangup activity; that is answered as usual
        reply = await bad.client.disconnect("bot-disconnected", "hangup")
        assert reply.status == 200

        # the other call went on undisturbed
        for index in range(1, len(scenario.steps)):
            outputs = await good.step(scenario, index)
            assert check_step(scenario.steps[index], outputs) is None
        assert total(bridge, "acvg_upstream_errors_total", route="good") == 0
        assert legacy_sim.call(good.conversation_id).disconnect is not None
    finally:
        await runner.cleanup()
