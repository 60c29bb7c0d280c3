"""Migration plans across a fleet (bridge/console/plan_fleet.py): two in-process bridges on one
real redis-server, each with its own config file. One leader decides on the fleet's evidence,
every instance applies the step, the others show the leader's state and pass operator actions
to it, and when the leader dies the other goes on from where it stood."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from bridge.app import GatewayKey, create_app
from bridge.config import load_config
from bridge.console import plan as plan_module
from bridge.console import plan_fleet
from bridge.console.server import ConsoleKey
from bridge.gates import vg_calls
from bridge.rollout import Rollout
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.redis_server import RedisServer
from bridge.sim.rollout_traffic import caller_numbers, place_calls, support_callee
from bridge.sim.vg_endpoint import VGEndpointSim
from bridge.transport.http_errors import JsonErrorRunner
from tests.test_rollout import ADMIN, LEGACY_TOKEN, ROUTE, TOKEN, Clock, plan

WITHIN_S = 5.0


class Instance:
    def __init__(self, name: str, app: web.Application, runner: web.AppRunner) -> None:
        self.name, self.app, self.runner = name, app, runner
        self.url = ""

    @property
    def rollout(self) -> Rollout:
        return self.app[plan_module.RolloutKey]

    @property
    def percent(self) -> float:
        return float(self.app[GatewayKey].config.routes[ROUTE].migration.voicegateway_percent)

    async def tick(self) -> None:
        await plan_module.tick_once(self.app, self.app[ConsoleKey].audit_for)

    def decisions(self, decision: str) -> float:
        return float(
            self.app[GatewayKey].metrics.rollout_decisions.labels(ROUTE, decision)._value.get()
        )


async def _start(
    name: str, directory: Path, redis: RedisServer, urls: dict[str, str], clock: Clock
) -> Instance:
    config_path = directory / "bridge.yaml"
    route = {
        "token": TOKEN,
        "default_region": "DE",
        "turn_settle_ms": 100,
        "voicegateway": {"url": urls["vg"]},
        "legacy": {"url": urls["legacy"], "token": LEGACY_TOKEN},
        "migration": {"shadow": True, "early_hangup_s": 0, "plan": plan()},
    }
    doc = {
        "listen": "127.0.0.1:0",
        "admin_token": ADMIN,
        "cluster": {
            "redis_url": redis.url,
            "instance_id": name,
            "advertise_url": "http://127.0.0.1:9",  # the real one set once listening
            "lease_s": 3,
        },
        "routes": {ROUTE: route},
    }
    config_path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    app = create_app(load_config(config_path, env={}), config_path=config_path)
    plan_module.rollout_for(app, app[ConsoleKey].audit_for).clock = clock
    runner = JsonErrorRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    instance = Instance(name, app, runner)
    instance.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    cluster = app[GatewayKey].cluster
    cluster.advertise_url = instance.url
    await cluster.beat()
    return instance


async def _eventually(check: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WITHIN_S
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {WITHIN_S} s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def fleet(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[list[Instance]]:
    plan_module.TICK_S = 3600.0  # the test ticks each instance itself
    async with AsyncExitStack() as stack:
        legacy = LegacyEndpointSim(token=LEGACY_TOKEN)
        vg = VGEndpointSim()
        await legacy.start()
        stack.push_async_callback(legacy.stop)
        await vg.start()
        stack.push_async_callback(vg.stop)
        urls = {"vg": vg.url(), "legacy": legacy.url()}
        clock = Clock()
        instances = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            instance = await _start(name, tmp_path / name, redis_server, urls, clock)
            stack.push_async_callback(instance.runner.cleanup)
            instances.append(instance)
        for instance in instances:
            await instance.app[GatewayKey].cluster.beat()  # each knows the other
        instances[0].rollout.clock = clock
        try:
            yield instances
        finally:
            plan_module.TICK_S = 1.0


async def _calls(http: aiohttp.ClientSession, instance: Instance, seed: int, n: int = 40) -> None:
    callers = caller_numbers(n, seed=seed)
    cut = n // 2
    for group, patience in ((callers[:cut], 0.4), (callers[cut:], None)):
        tally = await place_calls(
            instance.url,
            TOKEN,
            ROUTE,
            group,
            callee=support_callee(),
            session=http,
            patience_s=patience,
        )
        assert tally.errors == 0, tally.failures


async def test_one_leader_decides_on_the_fleets_calls_and_a_new_leader_goes_on(
    fleet: list[Instance], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = fleet
    clock = a.rollout.clock
    assert isinstance(clock, Clock)
    # a started first: its first tick took the lock and started the plan; b follows the fleet
    await _eventually(lambda: b.percent == 5, "b applies the plan's first step")
    assert a.percent == 5 and a.rollout.leader
    await b.tick()
    assert not b.rollout.leader and b.decisions("promote") == 0
    seed = 100
    async with aiohttp.ClientSession() as http:
        for _ in range(12):
            seed += 1
            await _calls(http, a, seed)
            seed += 1
            await _calls(http, b, seed)
            clock.now += 601
            await b.tick()  # b shares its window
            local = [vg_calls(i.app[GatewayKey].metrics.evidence.window(ROUTE)) for i in fleet]
            await a.tick()
            if a.rollout.describe(ROUTE)["step"] == 25:
                break
        state = a.rollout.describe(ROUTE)
        assert state["step"] == 25, state
        promoted = state["history"][0]
        assert promoted["decision"] == "promote" and promoted["new"] == 25
        # the leader judged the fleet's calls, not only its own
        assert local[1] > 0 and promoted["voicegateway_calls"] == sum(local)
        await _eventually(lambda: b.percent == 25, "b applies the promotion")
        assert b.decisions("promote") == 0  # one instance decided

        # b shows the leader's state, and passes an operator's action on to it
        await b.tick()
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with http.get(f"{b.url}/admin/plan", params={"route": ROUTE}, headers=headers) as r:
            shown = await r.json()
        assert shown["leader"] is False and shown["step"] == 25
        assert shown["history"] == state["history"]
        async with http.post(
            f"{b.url}/admin/plan",
            params={"route": ROUTE},
            json={"action": "resume"},
            headers=headers,
        ) as reply:
            assert reply.status == 409  # the leader's answer: nothing was rolled back
            assert (await reply.json())["error"] == "not_rolled_back"

        # the leader dies; its lock runs out; b takes over where a stood
        monkeypatch.setattr(plan_fleet, "LEADER_TTL_S", 0.5)
        await a.tick()  # the lock renewed with the short TTL
        await a.runner.cleanup()
        await asyncio.sleep(0.7)
        await b.app[GatewayKey].cluster.beat()
        for _ in range(12):
            seed += 1
            await _calls(http, b, seed)
            clock.now += 601
            await b.tick()
            if b.rollout.leader and b.rollout.describe(ROUTE)["step"] == 50:
                break
        state = b.rollout.describe(ROUTE)
        assert state["leader"] is True and state["step"] == 50, state
        assert [(e["decision"], e["new"]) for e in reversed(state["history"])][:3] == [
            ("promote", 5),
            ("promote", 25),
            ("promote", 50),
        ]
        assert b.percent == 50 and b.decisions("promote") == 1
