"""bridge/control.py and bridge/console/fleet.py across real `acvg-bridge serve` processes on
one real redis-server: a change made on any instance applies on every instance, and survives
Redis restarting empty."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from redis.asyncio import Redis

from bridge.control import AUDIT_KEY, CHANNEL, OVERRIDES_KEY, ControlPlane
from bridge.sim.fleet import Fleet, Instance, make_fleet
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.redis_server import RedisServer
from bridge.sim.scenario import step_activity
from bridge.sim.vaic import stamp
from bridge.sim.vg_endpoint import VGEndpointSim
from tests.test_legacy_path import LEGACY_TOKEN, SCENARIOS

SCENARIO = SCENARIOS["spoken_answer"]

ADMIN = {"Authorization": "Bearer admin-tok"}
TOKEN = {"Authorization": "Bearer tok"}
ROUTES = {
    "s": {
        "token": "tok",
        "voicegateway": {"url": "ws://127.0.0.1:9/vg"},
        "legacy": {"url": "http://127.0.0.1:9/legacy", "token": "legacy-tok"},
        "migration": {"voicegateway_percent": 10},
    }
}


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[Fleet]:
    running = make_fleet(tmp_path / "fleet", redis_server.url, ROUTES)
    yield running
    running.stop()


async def _routes(http: aiohttp.ClientSession, instance: Instance) -> dict[str, Any]:
    async with http.get(f"{instance.url}/admin/routes", headers=ADMIN) as reply:
        assert reply.status == 200
        body: dict[str, Any] = await reply.json()
        routes: dict[str, Any] = body["routes"]
        return routes


async def _eventually(check: Callable[[], Awaitable[bool]], within_s: float = 1.5) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not await check():
        assert loop.time() < deadline, "not applied in time"
        await asyncio.sleep(0.05)


async def _steer(http: aiohttp.ClientSession, instance: Instance, change: dict[str, Any]) -> None:
    url = f"{instance.url}/console/api/routes/s/migration"
    async with http.post(url, json=change, headers=ADMIN) as reply:
        assert reply.status == 200, await reply.text()


async def test_steering_on_one_instance_applies_on_every_instance(
    fleet: Fleet, redis_server: RedisServer
) -> None:
    a, b, c = fleet.instances
    async with aiohttp.ClientSession() as http:
        await _steer(http, a, {"voicegateway_percent": 40})

        async def everywhere(key: str, value: object) -> bool:
            seen = [(await _routes(http, i))["s"]["migration"][key] for i in (a, b, c)]
            return seen == [value] * 3

        await _eventually(lambda: everywhere("voicegateway_percent", 40))
        await _steer(http, c, {"force": "legacy"})  # the kill switch, from another instance
        await _eventually(lambda: everywhere("force", "legacy"))
        assert (await _routes(http, a))["s"]["migration"]["voicegateway_percent"] == 40

    # each instance keeps the fleet's settings in its own override file and audit log
    directory = a.config_file.parent
    for name in ("a", "b", "c"):
        overrides = yaml.safe_load((directory / f"{name}.overrides.yaml").read_text())
        assert overrides == {
            "routes": {"s": {"migration": {"voicegateway_percent": 40, "force": "legacy"}}}
        }
        audit = [
            json.loads(line)
            for line in (directory / f"{name}.audit.jsonl").read_text().splitlines()
        ]
        assert [(e["setting"], e["new"]) for e in audit] == [
            ("voicegateway_percent", 40),
            ("force", "legacy"),
        ]
    # and the fleet's own audit list in Redis
    client = Redis.from_url(redis_server.url)
    try:
        fleet_audit = [json.loads(e) for e in await client.lrange("acvg:audit", 0, -1)]
    finally:
        await client.aclose()
    assert [(e["setting"], e["who"]) for e in fleet_audit] == [
        ("voicegateway_percent", "admin"),
        ("force", "admin"),
    ]


async def test_a_restarted_instance_follows_the_fleet(fleet: Fleet) -> None:
    a, b, _ = fleet.instances
    async with aiohttp.ClientSession() as http:
        b.stop()
        await _steer(http, a, {"voicegateway_percent": 70})  # while b is down
        b.start()

        async def b_follows() -> bool:
            return bool((await _routes(http, b))["s"]["migration"]["voicegateway_percent"] == 70)

        await _eventually(b_follows)


async def test_a_reload_on_one_instance_reloads_every_instance(fleet: Fleet) -> None:
    a, b, c = fleet.instances
    for instance in fleet.instances:  # config management rolled a new file out everywhere
        doc = yaml.safe_load(instance.config_file.read_text())
        doc["routes"]["s"]["migration"]["shadow"] = True
        instance.config_file.write_text(yaml.safe_dump(doc))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{a.url}/admin/reload", headers=ADMIN) as reply:
            assert reply.status == 200

        async def reloaded() -> bool:
            shadows = [(await _routes(http, i))["s"]["migration"]["shadow"] for i in (b, c)]
            return shadows == [True, True]

        await _eventually(reloaded)


async def test_steering_on_one_instance_moves_the_calls_started_on_the_others(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        VGEndpointSim() as vg_sim,
        LegacyEndpointSim(token=LEGACY_TOKEN) as legacy_sim,
    ):
        route = {
            "token": "tok",
            "voicegateway": {"url": vg_sim.url()},
            "legacy": {"url": legacy_sim.url(), "token": LEGACY_TOKEN},
            "migration": {"voicegateway_percent": 0},
        }
        fleet = make_fleet(tmp_path / "fleet", redis_server.url, {"s": route})
        try:
            a, b, c = fleet.instances
            async with aiohttp.ClientSession() as http:
                started: list[tuple[Instance, str]] = []

                async def start_calls() -> None:
                    for instance in (b, c, b, c, b, c):
                        started.append((instance, await _start_call(http, instance)))

                await start_calls()
                assert (len(vg_sim.calls), len(legacy_sim.calls)) == (0, 6)
                await _steer(http, a, {"voicegateway_percent": 100})
                await asyncio.sleep(1.0)  # the control plane's "within a second"
                await start_calls()
                assert (len(vg_sim.calls), len(legacy_sim.calls)) == (6, 6)
                await _steer(http, a, {"force": "legacy"})  # the kill switch, from a
                await asyncio.sleep(1.0)
                await start_calls()
                assert (len(vg_sim.calls), len(legacy_sim.calls)) == (6, 12)
                for instance, conversation in started:
                    url = f"{instance.url}/ac/s/conversation/{conversation}/disconnect"
                    async with http.post(url, json={}, headers=TOKEN) as reply:
                        assert reply.status == 200
        finally:
            fleet.stop()


async def _fleet_state(redis_url: str) -> tuple[Any, list[dict[str, Any]], int]:
    """The fleet's overrides document, its audit list and how many instances listen."""
    client = Redis.from_url(redis_url)
    try:
        raw = await client.get(OVERRIDES_KEY)
        audit = [json.loads(e) for e in await client.lrange(AUDIT_KEY, 0, -1)]
        listening = dict(await client.pubsub_numsub(CHANNEL))[CHANNEL.encode()]
    finally:
        await client.aclose()
    return (None if raw is None else json.loads(raw)), audit, int(listening)


async def _restart_empty(redis_server: RedisServer, listeners: int) -> None:
    """Redis restarted with nothing in it; back once `listeners` instances resubscribed."""
    redis_server.stop()
    redis_server.start()

    async def resubscribed() -> bool:
        return (await _fleet_state(redis_server.url))[2] == listeners

    await _eventually(resubscribed, within_s=5)
    await asyncio.sleep(0.3)  # each one's sync, right after its subscription


async def test_redis_restarted_empty_gets_the_fleets_overrides_back(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    fleet = make_fleet(tmp_path / "fleet", redis_server.url, ROUTES, names=("a", "b"))
    late: Fleet | None = None
    try:
        a, b = fleet.instances
        async with aiohttp.ClientSession() as http:

            async def percent(instance: Instance) -> int:
                return int(
                    (await _routes(http, instance))["s"]["migration"]["voicegateway_percent"]
                )

            await _steer(http, a, {"voicegateway_percent": 40})

            async def b_follows() -> bool:
                return await percent(b) == 40

            await _eventually(b_follows)
            # b missed a change (partitioned from Redis): its file and its running config say 70
            (tmp_path / "fleet" / "b.overrides.yaml").write_text(
                yaml.safe_dump({"routes": {"s": {"migration": {"voicegateway_percent": 70}}}})
            )
            async with http.post(f"{b.url}/admin/reload", headers=ADMIN) as reply:
                assert reply.status == 200
            assert (await percent(a), await percent(b)) == (40, 70)

            await _restart_empty(redis_server, listeners=2)
            # exactly one instance restored its file; the fleet follows it, and says who
            doc, audit, _ = await _fleet_state(redis_server.url)
            assert [(e["route"], e["setting"], e["old"]) for e in audit] == [
                ("s", "voicegateway_percent", None)
            ]
            winner = {"restore by instance a": a, "restore by instance b": b}[audit[0]["who"]]
            value = {a.name: 40, b.name: 70}[winner.name]
            assert audit[0]["new"] == value
            assert doc == {"s": {"voicegateway_percent": value}}

            async def both_follow() -> bool:
                return [await percent(a), await percent(b)] == [value, value]

            await _eventually(both_follow)
            assert f"instance {winner.name} restored them from its override file" in winner.log()
            loser = b if winner is a else a
            assert "restored them" not in loser.log()

            # an instance started afterwards with a file saying something else follows the fleet
            (tmp_path / "late").mkdir()
            (tmp_path / "late" / "c.overrides.yaml").write_text(
                yaml.safe_dump({"routes": {"s": {"migration": {"voicegateway_percent": 5}}}})
            )
            late = make_fleet(tmp_path / "late", redis_server.url, ROUTES, names=("c",))
            (c,) = late.instances

            async def c_follows() -> bool:
                return await percent(c) == value

            await _eventually(c_follows)
            assert (await _fleet_state(redis_server.url))[0] == doc
            assert yaml.safe_load((tmp_path / "late" / "c.overrides.yaml").read_text()) == {
                "routes": {"s": {"migration": {"voicegateway_percent": value}}}
            }
    finally:
        fleet.stop()
        if late is not None:
            late.stop()


async def test_instances_without_overrides_restore_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    directory = tmp_path / "fleet"
    directory.mkdir()
    (directory / "b.overrides.yaml").write_text("routes: {}\n")  # a file with no settings
    fleet = make_fleet(directory, redis_server.url, ROUTES, names=("a", "b"))
    try:
        await _restart_empty(redis_server, listeners=2)
        assert (await _fleet_state(redis_server.url))[:2] == (None, [])
    finally:
        fleet.stop()


async def test_of_instances_restoring_at_once_exactly_one_does(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.url)
    try:
        planes = [ControlPlane(client, name, lambda op: None) for name in ("a", "b", "c")]
        own = [{"s": {"voicegateway_percent": n}} for n in (10, 20)]
        audit = [[{"who": f"restore by instance {n}"}] for n in ("a", "b")]
        assert await planes[2].sync_overrides({}, []) == (None, False)  # writes no empty doc
        assert await client.exists(OVERRIDES_KEY) == 0
        results = await asyncio.gather(
            planes[0].sync_overrides(own[0], audit[0]),
            planes[1].sync_overrides(own[1], audit[1]),
        )
        assert sorted(restored for _, restored in results) == [False, True]
        winner = [restored for _, restored in results].index(True)
        assert [doc for doc, _ in results] == [own[winner], own[winner]]
        assert await planes[2].overrides() == own[winner]
        assert [json.loads(e) for e in await client.lrange(AUDIT_KEY, 0, -1)] == audit[winner]
        await client.flushall()  # lost again: the next to sync restores
        assert await planes[1].sync_overrides(own[1], audit[1]) == (own[1], True)
    finally:
        await client.aclose()


async def _start_call(http: aiohttp.ClientSession, instance: Instance) -> str:
    conversation = str(uuid.uuid4())
    auth = TOKEN
    async with http.post(
        f"{instance.url}/ac/s", json={"conversation": conversation}, headers=auth
    ) as reply:
        assert reply.status == 200
    activity = step_activity(SCENARIO.steps[0], SCENARIO, conversation)
    async with http.post(
        f"{instance.url}/ac/s/conversation/{conversation}/activities",
        json={"activities": [stamp(activity, datetime.now(UTC))]},
        headers=auth,
    ) as reply:
        assert reply.status == 200
        assert (await reply.json())["activities"]
    return conversation
