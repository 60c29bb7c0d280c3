"""Routing and fallback end to end on 127.0.0.1 (design §3.6): which upstream serves a call.

A route with both upstreams, the simulated legacy bot and the simulated VG endpoint behind it;
VAIC plays scripted calls and the tests check which simulator saw each call and what
`acvg_routing_decisions_total` counted: the sticky percentage, `force`, rules, a reload through
`POST /admin/reload` while a call is in flight, and the fallback to legacy when the Voice
Gateway side cannot take a call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from bridge import routing
from bridge.app import create_app
from bridge.config import load_config
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.scenario import Scenario, check_step
from bridge.sim.vg_endpoint import SUBPROTOCOL, VGEndpointSim
from tests.conftest import BridgeFactory, RunningBridge
from tests.test_legacy_path import (
    LEGACY_TOKEN,
    SCENARIOS,
    TOKEN,
    Caller,
    assert_passed,
    eventually,
    legacy_upstream,
    make_config,
    play_all,
    serve,
    strip,
    total,
)

GREETING = SCENARIOS["greeting"]
US_CALLER = "+12025550143"


@pytest.fixture
async def legacy_sim() -> AsyncIterator[LegacyEndpointSim]:
    async with LegacyEndpointSim(token=LEGACY_TOKEN) as sim:
        yield sim


@pytest.fixture
async def vg_sim() -> AsyncIterator[VGEndpointSim]:
    async with VGEndpointSim() as sim:
        yield sim


def both(legacy: LegacyEndpointSim, vg_url: str, **migration: Any) -> dict[str, Any]:
    return {
        "default_region": "DE",
        "legacy": legacy_upstream(legacy),
        "voicegateway": {"url": vg_url},
        "migration": migration,
    }


def as_caller(scenario: Scenario, caller: str) -> Scenario:
    return dataclasses.replace(scenario, caller=caller)


def callers_by_path(route: str, percent: float) -> tuple[str, str]:
    """A caller the percentage sends to voicegateway and one it sends to legacy."""
    threshold = round(percent * 100)
    candidates = [f"+49151123456{n:02d}" for n in range(100)]
    vg = next(c for c in candidates if routing.bucket(route, c) < threshold)
    legacy = next(c for c in candidates if routing.bucket(route, c) >= threshold)
    return vg, legacy


def legacy_callers(sim: LegacyEndpointSim) -> list[str]:
    return [str(call.start_parameters.get("caller")) for call in sim.calls.values()]


def vg_callers(sim: VGEndpointSim) -> list[str]:
    return [str(call.messages("session:new")[0]["data"]["from"]) for call in sim.calls.values()]


def decisions(bridge: RunningBridge, path: str, reason: str) -> float:
    return total(bridge, "acvg_routing_decisions_total", route="r", path=path, reason=reason)


# ---------------------------------------------------------------- the percentage, force, rules


async def test_percentage_is_sticky_per_caller(
    bridge_factory: BridgeFactory, legacy_sim: LegacyEndpointSim, vg_sim: VGEndpointSim
) -> None:
    route = both(legacy_sim, vg_sim.url(), voicegateway_percent=50, sticky_key="caller")
    bridge = await bridge_factory(make_config({"r": route}))
    to_vg, to_legacy = callers_by_path("r", 50)
    for _ in range(3):  # one after the other: the same caller, call after call
        assert_passed(await play_all(bridge, [as_caller(GREETING, to_vg)]))
        assert_passed(await play_all(bridge, [as_caller(GREETING, to_legacy)]))
    assert vg_callers(vg_sim) == [to_vg] * 3
    assert legacy_callers(legacy_sim) == [to_legacy] * 3
    assert decisions(bridge, "voicegateway", "percent") == 3
    assert decisions(bridge, "legacy", "percent") == 3
    # many callers at 50 %: both paths get some
    many = [as_caller(GREETING, f"+4917012345{n:03d}") for n in range(20)]
    assert_passed(await play_all(bridge, many))
    assert len(vg_sim.calls) > 3 and len(legacy_sim.calls) > 3
    assert len(vg_sim.calls) + len(legacy_sim.calls) == 26


@pytest.mark.parametrize("force", ["legacy", "voicegateway"])
async def test_force_beats_rules_and_percentage(
    bridge_factory: BridgeFactory,
    legacy_sim: LegacyEndpointSim,
    vg_sim: VGEndpointSim,
    force: str,
) -> None:
    other = "voicegateway" if force == "legacy" else "legacy"
    route = both(
        legacy_sim,
        vg_sim.url(),
        force=force,
        voicegateway_percent=100 if force == "legacy" else 0,
        rules=[{"match": {"caller_country": ["DE", "US"]}, "path": other}],
    )
    bridge = await bridge_factory(make_config({"r": route}))
    calls = [as_caller(GREETING, caller) for caller in (US_CALLER, *callers_by_path("r", 50))]
    assert_passed(await play_all(bridge, calls))
    served, idle = (
        (legacy_sim.calls, vg_sim.calls)
        if force == "legacy"
        else (
            vg_sim.calls,
            legacy_sim.calls,
        )
    )
    assert len(served) == 3 and not idle
    assert decisions(bridge, force, "forced") == 3
    assert total(bridge, "acvg_routing_decisions_total") == 3


async def test_rule_beats_percentage(
    bridge_factory: BridgeFactory, legacy_sim: LegacyEndpointSim, vg_sim: VGEndpointSim
) -> None:
    route = both(
        legacy_sim,
        vg_sim.url(),
        voicegateway_percent=100,
        rules=[{"match": {"caller_country": ["US"]}, "path": "legacy"}],
    )
    bridge = await bridge_factory(make_config({"r": route}))
    german = GREETING.caller
    assert_passed(await play_all(bridge, [as_caller(GREETING, US_CALLER), GREETING]))
    assert legacy_callers(legacy_sim) == [US_CALLER]
    assert vg_callers(vg_sim) == [german]
    assert decisions(bridge, "legacy", "rule") == 1
    assert decisions(bridge, "voicegateway", "percent") == 1


# ---------------------------------------------------------------- reload while a call runs


async def test_reload_moves_new_calls_and_keeps_calls_in_flight(
    tmp_path: Path, legacy_sim: LegacyEndpointSim, vg_sim: VGEndpointSim
) -> None:
    file = tmp_path / "bridge.yaml"

    def write(percent: int) -> None:
        route = both(legacy_sim, vg_sim.url(), voicegateway_percent=percent)
        body = {"token": TOKEN, "turn_settle_ms": 100, **route}
        file.write_text(yaml.safe_dump({"admin_token": "admin-tok", "routes": {"r": body}}))

    write(0)
    app = create_app(load_config(file), config_path=file)
    runner, url = await serve(app)
    http = aiohttp.ClientSession()
    try:
        bridge = RunningBridge(app, url, http)
        scenario = SCENARIOS["spoken_answer"]
        in_flight = Caller(bridge)
        await in_flight.create()
        await in_flight.step(scenario, 0)
        assert list(legacy_sim.calls) == [in_flight.conversation_id]

        write(100)
        headers = {"Authorization": "Bearer admin-tok"}
        async with http.post(url + "/admin/reload", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            summary = await resp.json()
        assert summary["routes"]["r"]["migration"]["voicegateway_percent"] == 100

        # the call in flight stays on legacy for the rest of its turns ...
        call = legacy_sim.call(in_flight.conversation_id)
        for index in range(1, len(scenario.steps)):
            before = len(call.received)
            await in_flight.step(scenario, index)
            assert len(call.received) > before or index == len(scenario.steps) - 1
        assert call.disconnect is not None
        assert not vg_sim.calls
        # ... and new calls follow the new percentage, with the same caller as before
        assert_passed(await play_all(bridge, [GREETING, as_caller(GREETING, US_CALLER)]))
        assert len(vg_sim.calls) == 2 and len(legacy_sim.calls) == 1
        assert decisions(bridge, "legacy", "percent") == 1
        assert decisions(bridge, "voicegateway", "percent") == 2
    finally:
        await http.close()
        await runner.cleanup()


# ---------------------------------------------------------------- fallback to legacy


async def test_unreachable_voice_gateway_falls_back_to_legacy(
    bridge_factory: BridgeFactory, legacy_sim: LegacyEndpointSim
) -> None:
    route = both(legacy_sim, "ws://127.0.0.1:1/x", voicegateway_percent=100)
    bridge = await bridge_factory(make_config({"r": route}))
    assert_passed(await play_all(bridge, SCENARIOS.values()))
    assert len(legacy_sim.calls) == len(SCENARIOS)
    assert decisions(bridge, "legacy", "fallback") == len(SCENARIOS)
    assert total(bridge, "acvg_routing_decisions_total") == len(SCENARIOS)
    assert total(bridge, "acvg_upstream_errors_total", path="voicegateway", kind="connect") == len(
        SCENARIOS
    )
    assert total(bridge, "acvg_calls_started_total", path="voicegateway") == 0


class SilentVoiceGateway:
    """A jambonz WS app that accepts the socket and never answers anything."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.closed = 0

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.received.append(str(msg.data))
        self.closed += 1
        return ws


async def test_voice_gateway_that_never_acks_falls_back_after_the_ack_budget(
    bridge_factory: BridgeFactory, legacy_sim: LegacyEndpointSim
) -> None:
    silent = SilentVoiceGateway()
    runner, url = await serve(silent.make_app())
    try:
        # the route's defaults: turn_timeout_ms 4000, below the 5 s session:new ack budget
        route = both(legacy_sim, url.replace("http://", "ws://") + "/app", voicegateway_percent=100)
        bridge = await bridge_factory(make_config({"r": route}))
        caller = Caller(bridge)
        await caller.create()
        greeting = strip(await caller.step(GREETING, 0))
        assert len(silent.received) >= 1 and '"session:new"' in silent.received[0]
        assert list(legacy_sim.calls) == [caller.conversation_id]
        assert decisions(bridge, "legacy", "fallback") == 1
        assert total(bridge, "acvg_vg_ack_timeouts_total", route="r") == 1
        assert total(bridge, "acvg_calls_started_total", path="voicegateway") == 0
        await eventually(lambda: silent.closed == 1)  # the bridge let go of the silent app
        # the call is served by legacy from its first turn: the caller hears the greeting
        assert check_step(GREETING.steps[0], greeting) is None, greeting
        await caller.step(GREETING, 1)
        assert legacy_sim.call(caller.conversation_id).disconnect is not None
    finally:
        await runner.cleanup()
