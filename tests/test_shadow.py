"""Shadow traffic and comparison end to end on 127.0.0.1 (design §3.7), both directions.

The primary path serves VAIC; the other path gets the same caller inputs and each turn's outputs
are compared in AudioCodes-activity space. With both simulators running the same flows every
node matches; with the legacy side running the divergent variant exactly the overridden fields
mismatch and reach the (redacted) divergence log. Shadow outputs and side effects never reach
VAIC, and a shadow that refuses, hangs, crashes or answers garbage changes nothing for VAIC.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web

from bridge.app import create_app
from bridge.budget import CoreBudget
from bridge.sim.flow import load_flows, override_flows, parse_flow
from bridge.sim.legacy_endpoint import DIVERGENT_OVERRIDES, LegacyEndpointSim
from bridge.sim.scenario import Transport
from bridge.sim.vg_endpoint import SUBPROTOCOL, VGEndpointSim
from tests.conftest import BridgeFactory, RunningBridge
from tests.test_legacy_path import (
    LEGACY_TOKEN,
    SCENARIOS,
    WAY_IDS,
    WAYS,
    assert_passed,
    drive,
    eventually,
    make_config,
    play_all,
    samples,
    serve,
    total,
)

PathName = Literal["legacy", "voicegateway"]
OTHER: dict[PathName, PathName] = {"legacy": "voicegateway", "voicegateway": "legacy"}
# The fields the divergent variant changes (DIVERGENT_OVERRIDES), as comparison labels.
DIVERGENT_FIELDS = {
    ("say", "text"),
    ("play", "activityParams.playUrlUrl"),
    ("transfer_dial", "activityParams.transferTarget"),
}
DIVERGENT_FLOWS = set(DIVERGENT_OVERRIDES)
PHONE_DIGITS = {
    re.sub(r"\D", "", number) for s in SCENARIOS.values() for number in (s.caller, s.callee)
} | {"4989123456", "4989654321"}


def strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(t for v in value.values() for t in strings(v))]
    if isinstance(value, list):
        return [t for v in value for t in strings(v)]
    return []


def numbers(value: Any) -> list[float]:
    """Every number in a JSON value."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return []


def shadowed_route(primary: PathName, legacy_url: str, vg_url: str, **route: Any) -> dict[str, Any]:
    """A route served by `primary` and mirrored to the other path."""
    return {
        "default_region": "DE",
        "legacy": {"url": legacy_url, "token": LEGACY_TOKEN},
        "voicegateway": {"url": vg_url},
        "migration": {"force": primary, "shadow": True},
        **route,
    }


def single_route(path: PathName, legacy_url: str, vg_url: str) -> dict[str, Any]:
    """A route served by `path` alone (shadow off)."""
    if path == "legacy":
        return {"default_region": "DE", "legacy": {"url": legacy_url, "token": LEGACY_TOKEN}}
    return {"default_region": "DE", "voicegateway": {"url": vg_url}}


def by_result(bridge: RunningBridge) -> dict[tuple[str, str], float]:
    """`acvg_shadow_comparisons_total` as (node, result) → count (non-zero only)."""
    out: dict[tuple[str, str], float] = {}
    for labels, value in samples(bridge, "acvg_shadow_comparisons_total").items():
        if value:
            named = dict(labels)
            key = (named["node"], named["result"])
            out[key] = out.get(key, 0.0) + value
    return out


def mismatched_fields(bridge: RunningBridge) -> set[tuple[str, str]]:
    found = samples(bridge, "acvg_shadow_field_mismatches_total")
    return {(dict(k)["node"], dict(k)["field"]) for k, v in found.items() if v}


async def shadows_ended(bridge: RunningBridge, calls: int) -> None:
    """Until `calls` shadow calls have ended (each compared every turn it finished)."""
    await eventually(lambda: total(bridge, "acvg_calls_ended_total", role="shadow") >= calls)


@pytest.fixture
async def vg_sim() -> AsyncIterator[VGEndpointSim]:
    async with VGEndpointSim() as sim:
        yield sim


# ---------------------------------------------------------------- same flows: all match


@pytest.mark.parametrize(("transport", "async_mode"), WAYS, ids=WAY_IDS)
@pytest.mark.parametrize("primary", ["legacy", "voicegateway"])
async def test_shadow_matches_on_every_shipped_scenario(
    bridge_factory: BridgeFactory,
    vg_sim: VGEndpointSim,
    primary: PathName,
    transport: Transport,
    async_mode: bool,
) -> None:
    async with LegacyEndpointSim(token=LEGACY_TOKEN) as legacy:
        route = shadowed_route(primary, legacy.url(), vg_sim.url(), async_mode=async_mode)
        bridge = await bridge_factory(make_config({"r": route}))
        results = await play_all(
            bridge, SCENARIOS.values(), transport=transport, async_mode=async_mode
        )
        assert_passed(results)
        await shadows_ended(bridge, len(SCENARIOS))

    shadow = OTHER[primary]
    assert len(legacy.calls) == len(vg_sim.calls) == len(SCENARIOS)  # both paths saw every call
    assert total(bridge, "acvg_calls_started_total", path=shadow, role="shadow") == len(SCENARIOS)
    assert total(bridge, "acvg_calls_ended_total", path=shadow, reason="ended") == len(SCENARIOS)
    compared = by_result(bridge)
    assert compared, "nothing was compared"
    assert {result for _, result in compared} == {"match"}, compared
    assert {"say", "play", "hangup", "transfer_dial", "transfer_refer", "send_metadata"} <= {
        node for node, _ in compared
    }
    assert not mismatched_fields(bridge)
    assert total(bridge, "acvg_upstream_errors_total") == 0


# ---------------------------------------------------------------- the divergent variant


@pytest.mark.parametrize("primary", ["legacy", "voicegateway"])
async def test_divergent_legacy_flows_show_exactly_the_overridden_fields(
    bridge_factory: BridgeFactory, vg_sim: VGEndpointSim, tmp_path: Path, primary: PathName
) -> None:
    log_file = tmp_path / "divergence.jsonl"
    async with LegacyEndpointSim(token=LEGACY_TOKEN, divergent=True) as legacy:
        route = shadowed_route(primary, legacy.url(), vg_sim.url())
        config = make_config({"r": route}, divergence_log={"path": str(log_file)})
        bridge = await bridge_factory(config)
        results = await play_all(bridge, SCENARIOS.values())
        await shadows_ended(bridge, len(SCENARIOS))
    name_of = {str(r.conversation_id): r.name for r in results}
    if primary == "voicegateway":
        assert_passed(results)  # VAIC hears the voicegateway flows, whatever the shadow says

    assert mismatched_fields(bridge) == DIVERGENT_FIELDS
    compared = by_result(bridge)
    assert {node for node, result in compared if result == "mismatch"} == {
        node for node, _ in DIVERGENT_FIELDS
    }

    entries = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert entries
    diverged: set[tuple[str, int]] = set()
    for entry in entries:
        name = name_of[entry["conversation_id"]]
        items = entry["items"]
        # redacted: no digit runs in any logged text, no long numbers
        assert not [t for t in strings(items) if re.search(r"\d{3,}", t)], items
        assert not [n for n in numbers(items) if abs(n) >= 1_000_000], items
        kinds = {item["result"] for item in items}
        if kinds & {"missing", "extra"}:
            # the primary's play failed on its own URL, which the divergent shadow never played
            assert (name, entry["turn"]) == ("play_failed", 2), entry
            continue
        diverged.add((name, entry["turn"]))
        wrong = [item for item in items if item["result"] == "mismatch"]
        assert len(wrong) == 1
        assert (wrong[0]["node"], *wrong[0]["fields"]) in DIVERGENT_FIELDS
    assert diverged == {(s.name, 1) for s in SCENARIOS.values() if s.flow in DIVERGENT_FLOWS}
    text = log_file.read_text()
    assert not [digits for digits in PHONE_DIGITS if digits in text]


@pytest.mark.parametrize(("transport", "async_mode"), [WAYS[0], WAYS[3]], ids=["http", "ws-async"])
@pytest.mark.parametrize("primary", ["legacy", "voicegateway"])
async def test_shadow_outputs_never_reach_vaic(
    bridge_factory: BridgeFactory, primary: PathName, transport: Transport, async_mode: bool
) -> None:
    flows = load_flows()
    divergent = override_flows(flows, DIVERGENT_OVERRIDES)
    # the shadow side runs the divergent variant, the primary side the shipped flows
    legacy_flows, vg_flows = (flows, divergent) if primary == "legacy" else (divergent, flows)
    async with (
        LegacyEndpointSim(legacy_flows, token=LEGACY_TOKEN) as legacy,
        VGEndpointSim(vg_flows) as vg,
    ):
        routes = {
            "plain": single_route(primary, legacy.url(), vg.url()),
            "shadowed": shadowed_route(primary, legacy.url(), vg.url()),
        }
        routes = {name: {**r, "async_mode": async_mode} for name, r in routes.items()}
        bridge = await bridge_factory(make_config(routes))
        kwargs: dict[str, Any] = {"transport": transport, "async_mode": async_mode}
        plain = await play_all(bridge, SCENARIOS.values(), route="plain", **kwargs)
        shadowed = await play_all(bridge, SCENARIOS.values(), route="shadowed", **kwargs)
        await shadows_ended(bridge, len(SCENARIOS))
    assert_passed(plain)
    assert_passed(shadowed)
    assert [r.transcript for r in shadowed] == [r.transcript for r in plain]
    assert mismatched_fields(bridge) == DIVERGENT_FIELDS  # the shadow did answer differently


# ---------------------------------------------------------------- shadow side effects


def _hangs_up() -> dict[str, Any]:
    return {
        "name": "support",
        "numbers": ["+4930111000"],
        "nodes": [{"id": "end", "type": "hangup", "reason": "shadow hangs up"}],
    }


def _transfers() -> dict[str, Any]:
    return {
        "name": "support",
        "numbers": ["+4930111000"],
        "nodes": [
            {"id": "transfer", "type": "transfer", "mode": "dial", "number": "+4989000111"},
            {"id": "end", "type": "hangup", "reason": "transferred"},
        ],
    }


@pytest.mark.parametrize("action", ["hangup", "transfer"])
@pytest.mark.parametrize("shadow", ["legacy", "voicegateway"])
async def test_shadow_hangup_or_transfer_leaves_the_primary_call_alone(
    bridge_factory: BridgeFactory, shadow: PathName, action: str
) -> None:
    flows = load_flows()
    variant = {**flows, "support": parse_flow(_hangs_up() if action == "hangup" else _transfers())}
    legacy_flows, vg_flows = (variant, flows) if shadow == "legacy" else (flows, variant)
    primary = OTHER[shadow]
    async with (
        LegacyEndpointSim(legacy_flows, token=LEGACY_TOKEN) as legacy,
        VGEndpointSim(vg_flows) as vg,
    ):
        route = shadowed_route(primary, legacy.url(), vg.url())
        bridge = await bridge_factory(make_config({"r": route}))
        # four caller turns after the shadow hung up / transferred at the first one
        results = await play_all(bridge, [SCENARIOS["spoken_answer"]])
        await shadows_ended(bridge, 1)
    assert_passed(results)
    node = "hangup" if action == "hangup" else "transfer_dial"
    assert by_result(bridge).get((node, "extra"), 0) >= 1  # the shadow did produce it
    assert (
        total(bridge, "acvg_calls_ended_total", role="primary", reason="client_disconnected") == 1
    )
    if primary == "voicegateway":
        [vg_call] = vg.calls.values()
        hooks = [m for m in vg_call.received if m.get("type") == "verb:hook"]
        assert len(hooks) == 3  # every caller answer reached the primary's flow
    else:
        [legacy_call] = legacy.calls.values()
        assert legacy_call.received_names() == ["start", "message", "message", "message"]
        assert legacy_call.disconnect is not None
        assert legacy_call.disconnect["reasonCode"] == "client-disconnected"


# ---------------------------------------------------------------- a broken shadow


class BrokenLegacy:
    """A legacy bot that hangs on every request, answers 500 (once `release` is set), or
    creates conversations and answers every turn with garbage."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.release = asyncio.Event()
        self.pending = 0
        self.abandoned = 0
        self.requests = 0

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.mode in ("hang", "500"):
            self.pending += 1
            try:
                await (asyncio.Event() if self.mode == "hang" else self.release).wait()
            except asyncio.CancelledError:
                self.abandoned += 1
                raise
            finally:
                self.pending -= 1
            return web.json_response({"error": "boom"}, status=500)
        if request.match_info["tail"] == "":  # create: fine; every turn: garbage
            return web.json_response(
                {"activitiesURL": "conversation/x/activities", "expiresSeconds": 60}
            )
        return web.Response(text="<html>not json", content_type="text/html")


class BrokenVoiceGateway:
    """A jambonz app that hangs (accepts the socket, never answers) or answers garbage."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.received: list[str] = []
        self.open = 0

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        self.open += 1
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                self.received.append(str(msg.data))
                answered = '"session:new"' in msg.data or '"verb:hook"' in msg.data
                if self.mode == "garbage" and answered:
                    await ws.send_str("{not json")
                    await ws.send_str("[1, 2, 3]")
                    await ws.send_str(json.dumps({"type": "ack", "msgid": "no-such-msgid"}))
        finally:
            self.open -= 1
        return ws


BROKEN = [
    "legacy-refused",
    "legacy-hang",
    "legacy-crash",
    "legacy-500",
    "legacy-garbage",
    "vg-refused",
    "vg-hang",
    "vg-crash",
    "vg-garbage",
]


@pytest.mark.parametrize("broken", BROKEN)
async def test_broken_shadow_changes_nothing_for_vaic(
    broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    shadow: PathName = "legacy" if broken.startswith("legacy") else "voicegateway"
    mode = broken.split("-", 1)[1]
    primary = OTHER[shadow]
    scenario = SCENARIOS["spoken_answer"]
    crash_sim: LegacyEndpointSim | VGEndpointSim | None = None
    server: BrokenLegacy | BrokenVoiceGateway | None = None
    runners: list[web.AppRunner] = []
    async with (
        LegacyEndpointSim(token=LEGACY_TOKEN) as legacy,
        VGEndpointSim() as vg,
        aiohttp.ClientSession() as http,
    ):
        try:
            if mode == "refused":
                shadow_url = "http://127.0.0.1:1/" if shadow == "legacy" else "ws://127.0.0.1:1/x"
            elif mode == "crash":
                crash_sim = (
                    LegacyEndpointSim(token=LEGACY_TOKEN) if shadow == "legacy" else VGEndpointSim()
                )
                await crash_sim.start()
                shadow_url = crash_sim.url()
            else:
                server = BrokenLegacy(mode) if shadow == "legacy" else BrokenVoiceGateway(mode)
                server_runner, base = await serve(server.make_app())
                runners.append(server_runner)
                shadow_url = base + "/" if shadow == "legacy" else base.replace("http", "ws") + "/"
            legacy_url, vg_url = (
                (shadow_url, vg.url()) if shadow == "legacy" else (legacy.url(), shadow_url)
            )
            routes = {
                "plain": single_route(primary, legacy.url(), vg.url()),
                "r": shadowed_route(primary, legacy_url, vg_url),
            }
            app = create_app(make_config(routes))
            bridge_runner, url = await serve(app)
            runners.insert(0, bridge_runner)
            bridge = RunningBridge(app, url, http)
            baseline = await drive(bridge, scenario, route="plain")

            async def crash() -> None:
                if isinstance(crash_sim, LegacyEndpointSim):
                    await eventually(lambda: any(c.turns for c in crash_sim.calls.values()))
                    await crash_sim.stop()
                elif isinstance(crash_sim, VGEndpointSim):
                    await eventually(lambda: any(c.sent for c in crash_sim.calls.values()))
                    await crash_sim.stop()

            def blocked() -> None:
                """The shadow still waits for its first answer."""
                if isinstance(server, BrokenLegacy) and mode == "hang":
                    assert (server.requests, server.pending, server.abandoned) == (1, 1, 0)
                if isinstance(server, BrokenVoiceGateway) and mode == "hang":
                    assert server.open == 1
                    assert [json.loads(m)["type"] for m in server.received] == ["session:new"]

            async def before_hangup() -> None:
                blocked()  # every primary turn is done while the shadow is stuck on its first
                if isinstance(server, BrokenLegacy):
                    server.release.set()  # the 500 comes after every turn was queued

            mirrored = await drive(
                bridge, scenario, route="r", after_first_turn=crash, before_hangup=before_hangup
            )
            blocked()  # and so is VAIC's disconnect
            assert mirrored == baseline
            assert total(bridge, "acvg_calls_ended_total", route="r", role="primary") == 1
            assert total(bridge, "acvg_upstream_errors_total", path=primary) == 0
            if mode in ("refused", "hang", "500"):
                assert not by_result(bridge)  # the shadow never finished a turn to compare
        finally:
            for runner in runners:  # the bridge first: it lets go of the shadow
                await runner.cleanup()
            if crash_sim is not None:
                await crash_sim.stop()
    if mode != "hang":
        assert total(bridge, "acvg_upstream_errors_total", path=shadow) >= 1
    gauges = samples(bridge, "acvg_calls_active")
    assert all(value == 0 for value in gauges.values()), gauges
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# ---------------------------------------------------------------- the core budget


async def test_shadows_give_way_while_the_core_is_over_the_route_budget(
    vg_sim: VGEndpointSim,
) -> None:
    scenario = SCENARIOS["spoken_answer"]
    cpu = [0.0]  # the budget's CPU clock, moved by hand (wall time is the loop's)
    budget = CoreBudget(window_s=3600, cpu=lambda: cpu[0])  # never ticks by itself
    async with LegacyEndpointSim(token=LEGACY_TOKEN) as legacy, aiohttp.ClientSession() as http:
        migration = {"force": "legacy", "shadow": True, "shadow_max_cpu": 0.5}
        routes = {
            "plain": single_route("legacy", legacy.url(), vg_sim.url()),
            "r": shadowed_route("legacy", legacy.url(), vg_sim.url(), migration=migration),
        }
        app = create_app(make_config(routes), budget=budget)
        runner, url = await serve(app)
        try:
            bridge = RunningBridge(app, url, http)
            baseline = await drive(bridge, scenario, route="plain")

            loop = asyncio.get_running_loop()
            budget.observe(loop.time() - 1.0, cpu[0])
            cpu[0] += 1000.0  # busy far over the route's 50 %, whatever the window
            assert await drive(bridge, scenario, route="r") == baseline
            assert not vg_sim.calls  # no shadow was started
            assert total(bridge, "acvg_upstream_errors_total", kind="shed") == 1

            now = loop.time()
            budget.observe(now, cpu[0])
            budget.observe(now + 0.001, cpu[0])  # idle again: the next call is mirrored
            shed: list[Any] = []

            async def overloaded() -> None:
                await eventually(lambda: len(vg_sim.calls) == 1)
                shed.extend(budget.observe(loop.time() + 1.0, cpu[0] + 1000.0))
                for shadow in shed:
                    shadow.shed()

            assert await drive(bridge, scenario, route="r", after_first_turn=overloaded) == baseline
            assert len(shed) == 1
            (vg_call,) = vg_sim.calls.values()
            await asyncio.wait_for(vg_call.closed.wait(), 5)  # its jambonz socket let go
            await shadows_ended(bridge, 1)
            ended = total(bridge, "acvg_calls_ended_total", role="shadow", reason="dropped")
            assert ended == 1
            assert total(bridge, "acvg_upstream_errors_total", kind="shed") == 2
            assert total(bridge, "acvg_calls_ended_total", role="primary", route="r") == 2
            assert len(budget) == 0
        finally:
            await runner.cleanup()
    assert total(bridge, "acvg_calls_active", role="shadow") == 0
