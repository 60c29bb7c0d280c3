"""The console across a fleet (bridge/console/exchange.py, figures.py, the `fleet` state):
in-process bridges on one real redis-server, each console showing the calls, readiness and
divergences of every live instance; Redis down falls back to the serving instance's own figures;
the Fleet panel in headless Chromium. Also the pure parts: figures as JSON, their sum, the
fleet's history."""

from __future__ import annotations

import asyncio
import json
import math
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from redis.asyncio import Redis

from bridge.app import GatewayKey, create_app
from bridge.compare import ActivityComparison, ComparisonResult, DiffKind, FieldDiff, TurnComparison
from bridge.config import Config, parse_config
from bridge.console.exchange import DIVERGENCES_KEPT, figures_key
from bridge.console.figures import Figures, Turns, read_figures, sum_figures
from bridge.console.history import FleetReading, Reading
from bridge.console.server import ConsoleKey
from bridge.console.view import fleet_view
from bridge.metrics import LATENCY_BUCKETS, Metrics
from bridge.sim.redis_server import RedisServer
from bridge.sim.scenario import step_activity
from bridge.sim.vaic import stamp
from bridge.sim.vg_endpoint import VGEndpointSim
from tests.conftest import BridgeFactory, RunningBridge
from tests.nodepeer import PEERS_DIR, node_binary
from tests.test_legacy_path import SCENARIOS

SCENARIO = SCENARIOS["spoken_answer"]
ADMIN_TOKEN = "admin-tok"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ROUTE = {"Authorization": "Bearer tok"}
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
WITHIN_S = 10.0


# ---------------------------------------------------------------- pure: figures and history


def _turns(*observations: float) -> Turns:
    bounds = [*LATENCY_BUCKETS, math.inf]
    return Turns(
        float(len(observations)),
        tuple((b, float(sum(1 for o in observations if o <= b))) for b in bounds),
    )


def test_figures_travel_as_json_and_refuse_what_they_did_not_write() -> None:
    metrics = Metrics()
    metrics.calls_started.labels("r", "legacy", "primary").inc(3)
    metrics.calls_active.labels("r", "legacy", "primary").inc()
    metrics.routing_decisions.labels("r", "legacy", "percent").inc(3)
    metrics.shadow_comparisons.labels("r", "say", "mismatch").inc(2)
    metrics.turn_duration.labels("r", "legacy", "primary").observe(0.004)
    metrics.turn_duration.labels("r", "legacy", "shadow").observe(30.0)  # lands in +Inf only
    metrics.call_outcomes.labels("r", "legacy", "caller_hangup").inc(2)
    metrics.call_outcomes.labels("r", "voicegateway", "error").inc()
    metrics.time_to_first_prompt.labels("r", "legacy").observe(0.3)
    metrics.time_to_first_prompt.labels("r", "legacy").observe(20.0)  # +Inf only
    metrics.call_turns.labels("r", "legacy").observe(4)
    metrics.call_duration.labels("r", "legacy").observe(42.0)
    metrics.no_input_events.labels("r", "legacy").inc(3)
    metrics.no_input_events.labels("r", "voicegateway").inc(0)  # the series exists, counted 0
    figures = read_figures(metrics)
    assert figures.calls_started() == 3
    turns = figures.turns[("r", "legacy")]
    assert turns.count == 2 and turns.buckets[-1] == (math.inf, 2.0)
    assert turns.sum == 0.0  # turn latency carries no sum (its rows keep the earlier shape)
    assert figures.outcomes == {
        ("r", "legacy", "caller_hangup"): 2.0,
        ("r", "voicegateway", "error"): 1.0,
    }
    first = figures.first_prompt[("r", "legacy")]
    assert (first.count, first.sum) == (2.0, 20.3)
    assert dict(first.buckets)[0.25] == 0.0 and dict(first.buckets)[0.5] == 1.0
    assert first.buckets[-1] == (math.inf, 2.0)
    call_turns, duration = (
        figures.call_turns[("r", "legacy")],
        figures.call_duration[("r", "legacy")],
    )
    assert (call_turns.count, call_turns.sum, duration.count, duration.sum) == (1, 4, 1, 42)
    assert figures.no_inputs == {("r", "legacy"): 3.0, ("r", "voicegateway"): 0.0}
    text = json.dumps(figures.to_json(), allow_nan=False)  # +Inf is written as Prometheus does
    assert Figures.from_json(json.loads(text)) == figures

    good = figures.to_json()
    histogram = ["r", "legacy", 1.0, 4.0, [["1.0", 0.0], ["+Inf", 1.0]]]
    assert Figures.from_json({**good, "call_turns": [histogram]}).call_turns == {
        ("r", "legacy"): Turns(1.0, ((1.0, 0.0), (math.inf, 1.0)), 4.0)
    }
    bad: object
    for bad in [
        None,
        [],
        {**good, "format": "acvg-figures/0"},
        {**good, "started": [["r", "legacy", 3.0]]},
        {**good, "started": [["r", "legacy", "primary", "3"]]},
        {**good, "active": [["r", "legacy", "primary", True]]},
        {**good, "turns": [["r", "legacy", 1.0, [[0.005, 1.0]]]]},
        {**good, "turns": [["r", "legacy", 1.0, 0.0, [["+Inf", 1.0]]]]},  # no sum in turns
        {**good, "decisions": None},
        # the voice KPIs: present, they must be well-formed
        {**good, "outcomes": None},
        {**good, "outcomes": [["r", "legacy", "error"]]},
        {**good, "outcomes": [["r", "legacy", 1, 2.0]]},
        {**good, "no_inputs": {"r": 1}},
        {**good, "no_inputs": [["r", "legacy", "primary", 1.0]]},
        {**good, "no_inputs": [["r", "legacy", "1"]]},
        {**good, "first_prompt": None},
        {**good, "first_prompt": [["r", "legacy", 1.0, [["+Inf", 1.0]]]]},  # no sum
        {**good, "call_turns": [["r", "legacy", 1.0, "4", [["+Inf", 1.0]]]]},
        {**good, "call_turns": [["r", "legacy", 1.0, 4.0, [[1.0, 1.0]]]]},
        {**good, "call_duration": [["r", "legacy", 1.0, 4.0, [["+Inf", True]]]]},
        {**good, "call_duration": [["r", "legacy", 1.0, 4.0, None]]},
        {**good, "call_duration": [[None, "legacy", 1.0, 4.0, []]]},
    ]:
        with pytest.raises(ValueError):
            Figures.from_json(bad)


def test_figures_of_an_instance_without_the_voice_kpis_are_read_as_counting_none() -> None:
    # what an instance of the previous version writes: the same format, no voice-KPI keys
    earlier = {
        "format": "acvg-figures/1",
        "started": [["r", "legacy", "primary", 3.0]],
        "active": [],
        "decisions": [["r", "legacy", "percent", 3.0]],
        "comparisons": [],
        "turns": [["r", "legacy", 1.0, [["0.005", 1.0], ["+Inf", 1.0]]]],
    }
    figures = Figures.from_json(earlier)
    assert figures.calls_started() == 3
    assert figures.turns == {("r", "legacy"): Turns(1.0, ((0.005, 1.0), (math.inf, 1.0)))}
    assert (figures.outcomes, figures.no_inputs) == ({}, {})
    assert figures.first_prompt == figures.call_turns == figures.call_duration == {}
    # summed with a current instance's, the fleet's KPIs are that instance's
    current = Figures(
        outcomes={("r", "legacy", "bot_hangup"): 1.0},
        call_turns={("r", "legacy"): Turns(1.0, ((3.0, 1.0), (math.inf, 1.0)), 3.0)},
    )
    total = sum_figures([figures, current])
    assert total.outcomes == current.outcomes and total.call_turns == current.call_turns
    assert total.calls_started() == 3
    # and what this version writes an earlier one still reads: the rows it knows keep their shape
    written = current.to_json()
    assert {k: written[k] for k in earlier if k != "format"} == {
        "started": [],
        "active": [],
        "decisions": [],
        "comparisons": [],
        "turns": [],
    }
    assert all(len(row) == 4 for row in sum_figures([figures]).to_json()["turns"])


def test_figures_sum_over_instances_and_histograms_stay_cumulative() -> None:
    one = Figures(
        started={("r", "legacy", "primary"): 2.0},
        comparisons={("r", "say", "match"): 5.0},
        turns={("r", "legacy"): _turns(0.004, 0.2)},
    )
    other = Figures(
        started={("r", "legacy", "primary"): 1.0, ("r", "voicegateway", "primary"): 4.0},
        comparisons={("r", "say", "mismatch"): 1.0},
        turns={("r", "legacy"): _turns(0.004)},
    )
    total = sum_figures([one, other])
    assert total.started == {("r", "legacy", "primary"): 3.0, ("r", "voicegateway", "primary"): 4.0}
    assert total.comparisons == {("r", "say", "match"): 5.0, ("r", "say", "mismatch"): 1.0}
    assert total.turns[("r", "legacy")] == _turns(0.004, 0.2, 0.004)
    assert sum_figures([]) == Figures()
    # the voice KPIs sum too, the histograms with their sums
    a = Figures(
        outcomes={("r", "legacy", "error"): 1.0, ("r", "legacy", "caller_hangup"): 2.0},
        first_prompt={("r", "legacy"): Turns(1.0, ((0.5, 1.0), (math.inf, 1.0)), 0.4)},
        call_turns={("r", "legacy"): Turns(2.0, ((3.0, 2.0), (math.inf, 2.0)), 5.0)},
        call_duration={("r", "legacy"): Turns(2.0, ((60.0, 2.0), (math.inf, 2.0)), 70.0)},
        no_inputs={("r", "legacy"): 1.0},
    )
    b = Figures(
        outcomes={("r", "legacy", "error"): 2.0, ("r", "voicegateway", "bot_hangup"): 1.0},
        first_prompt={("r", "legacy"): Turns(1.0, ((0.5, 0.0), (math.inf, 1.0)), 12.0)},
        call_turns={("r", "voicegateway"): Turns(1.0, ((3.0, 1.0), (math.inf, 1.0)), 1.0)},
        no_inputs={("r", "legacy"): 2.0, ("r", "voicegateway"): 0.0},
    )
    kpis = sum_figures([a, b])
    assert kpis.outcomes == {
        ("r", "legacy", "error"): 3.0,
        ("r", "legacy", "caller_hangup"): 2.0,
        ("r", "voicegateway", "bot_hangup"): 1.0,
    }
    assert kpis.first_prompt == {("r", "legacy"): Turns(2.0, ((0.5, 1.0), (math.inf, 2.0)), 12.4)}
    assert kpis.call_turns == {**a.call_turns, **b.call_turns}
    assert kpis.call_duration == a.call_duration
    assert kpis.no_inputs == {("r", "legacy"): 3.0, ("r", "voicegateway"): 0.0}
    # a sum's JSON reads back as that sum
    assert Figures.from_json(json.loads(json.dumps(kpis.to_json()))) == kpis
    # a difference since an earlier histogram keeps its sum; a reset counts from zero
    later = kpis.first_prompt[("r", "legacy")]
    earlier = a.first_prompt[("r", "legacy")]
    assert later.minus(earlier) == Turns(1.0, ((0.5, 0.0), (math.inf, 1.0)), 12.0)
    assert earlier.minus(later) == earlier
    # another version's buckets: the sum at each bound is what each counted up to it
    coarse = Turns(2.0, ((0.01, 1.0), (math.inf, 2.0)))
    fine = Turns(1.0, ((0.005, 1.0), (0.05, 1.0), (math.inf, 1.0)))
    assert coarse.plus(fine).buckets == (
        (0.005, 1.0),
        (0.01, 2.0),
        (0.05, 2.0),
        (math.inf, 3.0),
    )


def test_the_fleet_history_never_goes_backwards_as_instances_come_and_go() -> None:
    fleet = FleetReading()

    def reading(match: float, total: float) -> Reading:
        return Reading({"r": (match, total)})

    assert fleet.observe({"a": reading(5, 10)}).comparisons == {}  # a first seen: its baseline
    assert fleet.observe({"a": reading(6, 12), "b": reading(1, 1)}).comparisons == {"r": (1, 2)}
    now = fleet.observe({"a": reading(6, 12), "b": reading(3, 4)})
    assert now.comparisons == {"r": (3, 5)}
    # b died: what it added stays; a restarted: counts from zero again
    assert fleet.observe({"a": reading(1, 1)}).comparisons == {"r": (4, 6)}
    # b back (a new baseline, not its whole count again)
    assert fleet.observe({"a": reading(1, 1), "b": reading(9, 9)}).comparisons == {"r": (4, 6)}


def test_the_fleet_view_sums_the_live_instances_only() -> None:
    def instance(name: str) -> dict[str, Any]:
        return {"id": name, "calls": 1, "draining": False, "last_seen": 1.0, "advertise_url": "x"}

    status = {"store": "ok", "instance_id": "a", "instances": [instance("a"), instance("b")]}
    local = Figures(started={("r", "legacy", "primary"): 1.0})
    others = {
        "b": Figures(started={("r", "legacy", "primary"): 2.0}),
        "dead": Figures(started={("r", "legacy", "primary"): 40.0}),  # its lease ran out
    }
    fleet, figures = fleet_view(status, local, others, others_read=True)
    assert figures.started == {("r", "legacy", "primary"): 3.0}
    assert fleet["figures"] == "fleet"
    assert [(i["id"], i["this"], i["counted"], i["calls_started"]) for i in fleet["instances"]] == [
        ("a", True, True, 1),
        ("b", False, True, 2),
    ]
    assert "advertise_url" not in json.dumps(fleet)
    fleet, figures = fleet_view(status, local, others, others_read=False)
    assert figures == local and fleet["figures"] == "local"
    assert [i["calls_started"] for i in fleet["instances"]] == [1, None]


# ---------------------------------------------------------------- in-process fleets on Redis


@pytest.fixture
async def vg_sim() -> AsyncIterator[VGEndpointSim]:
    async with VGEndpointSim() as sim:
        yield sim


def _config(redis: RedisServer | None, vg: VGEndpointSim, name: str) -> Config:
    doc: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin_token": ADMIN_TOKEN,
        "routes": {"r": {"token": "tok", "turn_settle_ms": 150, "voicegateway": {"url": vg.url()}}},
    }
    if redis is not None:
        doc["cluster"] = {
            "redis_url": redis.url,
            "instance_id": name,
            "advertise_url": f"http://127.0.0.1:9/{name}",  # the real one set once listening
            "lease_s": 3,
        }
    return parse_config(yaml.safe_dump(doc), env={})


async def _fleet(
    redis: RedisServer, vg: VGEndpointSim, bridge_factory: BridgeFactory, *names: str
) -> list[RunningBridge]:
    bridges = []
    for name in names:
        bridge = await bridge_factory(_config(redis, vg, name))
        bridge.app[GatewayKey].cluster.advertise_url = bridge.url
        await asyncio.sleep(0.1)  # the first heartbeat, with the old URL, lands first
        await bridge.app[GatewayKey].cluster.beat()
        bridges.append(bridge)
    return bridges


async def _get(bridge: RunningBridge, path: str) -> Any:
    async with bridge.http.get(bridge.url + path, headers=ADMIN) as reply:
        assert reply.status == 200, await reply.text()
        return await reply.json()


async def _state(bridge: RunningBridge) -> dict[str, Any]:
    state: dict[str, Any] = await _get(bridge, "/console/api/state")
    return state


async def _eventually(
    bridge: RunningBridge,
    holds: Callable[[dict[str, Any]], bool],
    what: str,
    within_s: float = WITHIN_S,
) -> dict[str, Any]:
    """The console state of `bridge` once `holds(state)`, polled."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        state = await _state(bridge)
        if holds(state):
            return state
        assert loop.time() < deadline, f"{what}: not within {within_s} s; last state {state}"
        await asyncio.sleep(0.1)


async def _call(bridge: RunningBridge) -> str:
    """Create a conversation on `bridge` and play its first turn there (it adopts the call)."""
    conversation = str(uuid.uuid4())
    async with bridge.http.post(
        f"{bridge.url}/ac/r", json={"conversation": conversation}, headers=ROUTE
    ) as reply:
        assert reply.status == 200, await reply.text()
    activity = stamp(step_activity(SCENARIO.steps[0], SCENARIO, conversation), datetime.now(UTC))
    async with bridge.http.post(
        f"{bridge.url}/ac/r/conversation/{conversation}/activities",
        json={"activities": [activity]},
        headers=ROUTE,
    ) as reply:
        assert reply.status == 200, await reply.text()
    return conversation


def _vg(state: dict[str, Any]) -> dict[str, Any]:
    split: dict[str, Any] = state["routes"][0]["split"]["voicegateway"]
    return split


def _nodes(state: dict[str, Any]) -> dict[str, Any]:
    return {row["node"]: row for row in state["routes"][0]["readiness"]["nodes"]}


def _instances(state: dict[str, Any]) -> dict[str, Any]:
    return {i["id"]: i for i in state["fleet"]["instances"]}


def _divergent_turn(text_a: str, text_b: str) -> TurnComparison:
    return TurnComparison(
        items=(
            ActivityComparison(
                "say",
                ComparisonResult.MISMATCH,
                ("text",),
                {"type": "message", "text": text_a},
                {"type": "message", "text": text_b},
                (FieldDiff("text", DiffKind.VALUE),),
            ),
        ),
        order_matches=True,
        primary_path="voicegateway",
    )


async def test_calls_and_readiness_on_one_instance_show_in_the_console_of_another(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    a, b = await _fleet(redis_server, vg_sim, bridge_factory, "a", "b")
    await _call(a)
    a.app[GatewayKey].metrics.shadow_comparisons.labels("r", "say", "match").inc(5)
    b.app[GatewayKey].metrics.shadow_comparisons.labels("r", "say", "mismatch").inc(1)

    state = await _eventually(
        b,
        lambda s: _vg(s)["calls"] == 1 and _nodes(s).get("say", {}).get("samples") == 6,
        "a's call and comparisons counted by b's console",
    )
    assert b.metric("acvg_calls_started_total", route="r", path="voicegateway", role="primary") == 0
    assert _vg(state)["active"] == 1  # a's call is still up
    say = _nodes(state)["say"]
    assert (say["match"], say["mismatch"]) == (5, 1)
    assert state["routes"][0]["latency"]["voicegateway"]["turns"] >= 1  # a's turn
    fleet = state["fleet"]
    assert (fleet["store"], fleet["figures"], fleet["instance_id"]) == ("ok", "fleet", "b")
    state = await _eventually(b, lambda s: _instances(s)["a"]["calls"] == 1, "a's live call")
    instances = _instances(state)
    assert sorted(instances) == ["a", "b"]
    assert (instances["a"]["calls_started"], instances["a"]["this"]) == (1, False)
    assert (instances["b"]["calls"], instances["b"]["calls_started"]) == (0, 0)
    assert instances["b"]["this"] and instances["a"]["counted"] and not instances["a"]["draining"]

    # a's own console shows the same fleet
    own = await _eventually(
        a, lambda s: _nodes(s).get("say", {}).get("samples") == 6, "b's comparisons counted by a"
    )
    assert _vg(own)["calls"] == 1
    assert own["fleet"]["instance_id"] == "a"


async def test_a_divergence_recorded_on_one_instance_is_listed_by_another(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    a, b = await _fleet(redis_server, vg_sim, bridge_factory, "a", "b")
    b.app[ConsoleKey].stream_every_s = 0.05
    a.app[GatewayKey].divergence.record("r", "on-a", 1, _divergent_turn("Call +4930123456", "x"))

    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHIN_S
    while not (listed := (await _get(b, "/console/api/divergences"))["divergences"]):
        assert loop.time() < deadline, "a's divergence not listed by b"
        await asyncio.sleep(0.1)
    assert [(i["id"], i["node"], i["result"]) for i in listed] == [("on-a/1/0", "say", "mismatch")]
    assert "4930123456" not in json.dumps(listed)  # what the fleet holds is redacted
    assert b.app[GatewayKey].divergence.recent() == []  # b never saw it itself

    # b's live stream sends it, and the next one when a records it
    seen: list[list[str]] = []
    async with b.http.get(b.url + "/console/api/stream", headers=ADMIN) as resp:
        buffer = b""
        async with asyncio.timeout(WITHIN_S):
            while len(seen) < 2:
                buffer += await resp.content.readany()
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    fields = dict(line.split(": ", 1) for line in block.decode().split("\n"))
                    if fields["event"] == "divergences":
                        body = json.loads(fields["data"])
                        seen.append([i["id"] for i in body["divergences"]])
                        if len(seen) == 1:
                            a.app[GatewayKey].divergence.record(
                                "r", "again", 2, _divergent_turn("p", "q")
                            )
    assert seen == [["on-a/1/0"], ["again/2/0", "on-a/1/0"]]

    # the fleet's list is capped
    for turn in range(DIVERGENCES_KEPT + 20):
        a.app[GatewayKey].divergence.record("r", "many", turn, _divergent_turn("p", "q"))
    redis = Redis.from_url(redis_server.url)
    try:
        deadline = loop.time() + WITHIN_S
        while await redis.llen("acvg:divergences") < DIVERGENCES_KEPT:
            assert loop.time() < deadline
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # another tick: still capped
        assert await redis.llen("acvg:divergences") == DIVERGENCES_KEPT
        head = await redis.lindex("acvg:divergences", 0)
        assert head is not None
        newest = json.loads(head)
        assert (newest["conversation_id"], newest["turn"]) == ("many", DIVERGENCES_KEPT + 19)
    finally:
        await redis.aclose()


async def test_an_instance_that_left_leaves_the_fleet_figures(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    (b,) = await _fleet(redis_server, vg_sim, bridge_factory, "b")
    app = create_app(_config(redis_server, vg_sim, "c"))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        app[GatewayKey].metrics.calls_started.labels("r", "voicegateway", "primary").inc(7)
        state = await _eventually(b, lambda s: _vg(s)["calls"] == 7, "c's calls counted by b")
        assert sorted(_instances(state)) == ["b", "c"]
    finally:
        await runner.cleanup()  # c leaves the fleet
    # with its lease, well before its figures document expires (three lease periods, 9 s)
    state = await _eventually(
        b, lambda s: _vg(s)["calls"] == 0, "c's calls gone from b's view", within_s=3.0
    )
    assert sorted(_instances(state)) == ["b"]
    redis = Redis.from_url(redis_server.url)
    try:
        assert await redis.exists(figures_key("c"))
    finally:
        await redis.aclose()


async def test_with_redis_down_the_console_shows_its_own_figures_and_says_so(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    a, b = await _fleet(redis_server, vg_sim, bridge_factory, "a", "b")
    await _call(a)
    b.app[GatewayKey].divergence.record("r", "on-b", 1, _divergent_turn("p", "q"))
    await _eventually(b, lambda s: _vg(s)["calls"] == 1, "a's call counted by b")

    redis_server.stop()
    state = await _eventually(
        b, lambda s: s["fleet"]["store"] == "down", "b's console noticing Redis is down"
    )
    b.app[GatewayKey].divergence.record("r", "while-down", 1, _divergent_turn("p", "q"))
    assert state["fleet"]["figures"] == "local"
    assert [i["id"] for i in state["fleet"]["instances"]] == ["b"]
    assert _vg(state)["calls"] == 0  # b's own
    listed = (await _get(b, "/console/api/divergences"))["divergences"]
    assert [i["id"] for i in listed] == ["while-down/1/0", "on-b/1/0"]  # b's own ring
    async with b.http.get(b.url + "/console/api/stream", headers=ADMIN) as resp:
        assert resp.status == 200
        async with asyncio.timeout(WITHIN_S):
            first = await resp.content.readuntil(b"\n\n")
    assert first.startswith(b"event: state\n")
    await asyncio.sleep(1.5)  # a tick of b's exchange meets the dead store
    assert b.metric("acvg_store_errors_total", op="figures") >= 1
    async with b.http.get(b.url + "/readyz") as reply:
        assert reply.status == 200

    redis_server.start()  # back, empty: every instance publishes again
    state = await _eventually(
        b, lambda s: s["fleet"]["figures"] == "fleet" and _vg(s)["calls"] == 1, "the fleet back"
    )
    assert sorted(_instances(state)) == ["a", "b"]
    # what b recorded while Redis was down reaches the fleet once it is back (the restarted
    # Redis lost what was pushed before: b's own console still has it in its ring)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHIN_S
    while not (await _get(a, "/console/api/divergences"))["divergences"]:
        assert loop.time() < deadline, "b's queued divergence not pushed after Redis came back"
        await asyncio.sleep(0.1)
    listed = (await _get(a, "/console/api/divergences"))["divergences"]
    assert [i["id"] for i in listed] == ["while-down/1/0"]
    listed = (await _get(b, "/console/api/divergences"))["divergences"]
    assert [i["id"] for i in listed] == ["while-down/1/0", "on-b/1/0"]


async def test_one_instance_without_redis_shows_no_fleet(
    vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    single = await bridge_factory(_config(None, vg_sim, "solo"))
    assert single.app[ConsoleKey].exchange is None
    assert single.app[GatewayKey].divergence.on_record is None
    await _call(single)
    single.app[GatewayKey].divergence.record("r", "c", 1, _divergent_turn("p", "q"))
    state = await _state(single)
    assert state["fleet"] is None
    assert _vg(state)["calls"] == 1
    listed = (await _get(single, "/console/api/divergences"))["divergences"]
    assert [i["id"] for i in listed] == ["c/1/0"]


# ---------------------------------------------------------------- the Fleet panel in Chromium

# Drives the page with playwright-core (tests/peers/node_modules) in Debian's Chromium: the Fleet
# panel of the fleet's console, its Redis-down warning (after the test answers DOWN on stdin),
# and no panel on a single instance. Prints one JSON line of what it saw.
PANEL_SCRIPT = r"""
"use strict";
const readline = require("readline");
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const [fleetUrl, singleUrl, token, screenshot] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const vgCalls = 'section.route[data-route="r"] td[data-field=calls][data-path=voicegateway]';

async function signIn(page, base) {
  await page.goto(base + "/console");
  await page.fill("#token", token);
  await page.click("#login-form button[type=submit]");
  await page.locator("#app").waitFor({ state: "visible" });
  await page.locator("section.route").first().waitFor();
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM, headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
  try {
    const problems = [];
    const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
    page.on("pageerror", (e) => problems.push("page error: " + e.message));
    page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
    await signIn(page, fleetUrl);
    await page.locator("#fleet").waitFor({ state: "visible" });
    await page.locator("#fleet-rows tr[data-instance=a] td[data-field=calls-started]")
      .filter({ hasText: /^1$/ }).waitFor();
    const rows = await page.locator("#fleet-rows tr").evaluateAll((trs) => trs.map((tr) => ({
      id: tr.getAttribute("data-instance"),
      this: tr.classList.contains("this"),
      calls: tr.querySelector("[data-field=calls]").textContent,
      started: tr.querySelector("[data-field=calls-started]").textContent,
      state: tr.querySelector("[data-field=state]").textContent,
    })));
    const split = await page.locator(vgCalls).textContent();
    const hint = await page.locator("#fleet-hint").textContent();
    const warnedUp = await page.locator("#fleet-store").isVisible();
    await page.screenshot({ path: screenshot, fullPage: true });

    process.stdout.write("UP\n");
    await lines.next();  // DOWN: Redis was stopped
    const warning = page.locator("#fleet-store");
    await warning.filter({ hasText: "unreachable" }).waitFor({ state: "visible" });
    const down = {
      warning: await warning.textContent(),
      hint: await page.locator("#fleet-hint").textContent(),
      split: await page.locator(vgCalls).textContent(),
    };

    const single = await browser.newPage();
    single.on("pageerror", (e) => problems.push("page error: " + e.message));
    await signIn(single, singleUrl);
    const singlePanel = await single.locator("#fleet").isVisible();
    const seen = { rows, split, hint, warnedUp, down, singlePanel, problems };
    process.stdout.write(JSON.stringify(seen) + "\n");
  } finally {
    await browser.close();
  }
}

main().then(() => process.exit(0), (error) => {
  process.stderr.write(String((error && error.stack) || error) + "\n");
  process.exit(1);
});
"""


def _require_browser() -> str:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM} (`apt-get install -y chromium`)")
    node = node_binary()
    if not (PEERS_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("tests/peers/node_modules/playwright-core is missing: run `make peers`")
    return node


async def _drive_panel(
    node: str, script: Path, args: list[str], on_up: Callable[[], Awaitable[None]]
) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        node,
        str(script),
        *args,
        env={
            **os.environ,
            "CHROMIUM": str(CHROMIUM),
            "PLAYWRIGHT_CORE": str(PEERS_DIR / "node_modules" / "playwright-core"),
        },
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdin is not None
    stderr = asyncio.ensure_future(process.stderr.read()) if process.stderr else None
    last = b""
    try:
        async with asyncio.timeout(120):
            while line := await process.stdout.readline():
                last = line
                if line == b"UP\n":
                    await on_up()
                    process.stdin.write(b"DOWN\n")
                    await process.stdin.drain()
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    errors = (await stderr).decode() if stderr else ""
    assert code == 0, f"the panel script failed:\n{errors}"
    seen: dict[str, Any] = json.loads(last)
    return seen


async def test_the_fleet_panel_in_chromium(
    redis_server: RedisServer,
    vg_sim: VGEndpointSim,
    bridge_factory: BridgeFactory,
    tmp_path: Path,
) -> None:
    node = _require_browser()
    a, b = await _fleet(redis_server, vg_sim, bridge_factory, "a", "b")
    single = await bridge_factory(_config(None, vg_sim, "solo"))
    await _call(a)
    await _eventually(b, lambda s: _instances(s)["a"]["calls"] == 1, "a's call in b's fleet")
    script = tmp_path / "fleet_panel.js"
    script.write_text(PANEL_SCRIPT, encoding="utf-8")
    screenshot = tmp_path / "fleet.png"

    async def redis_down() -> None:
        redis_server.stop()

    seen = await _drive_panel(
        node, script, [b.url, single.url, ADMIN_TOKEN, str(screenshot)], redis_down
    )

    assert seen["problems"] == []
    assert seen["rows"] == [
        {"id": "a", "this": False, "calls": "1", "started": "1", "state": "serving"},
        {"id": "b", "this": True, "calls": "0", "started": "0", "state": "serving"},
    ]
    assert seen["split"].strip() == "1"  # a's call, on b's page
    assert "2 of 2 live instance" in seen["hint"] and seen["warnedUp"] is False
    assert "b only" in seen["down"]["warning"]
    assert seen["down"]["split"].strip() == "0" and "this instance's only" in seen["down"]["hint"]
    assert seen["singlePanel"] is False
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
