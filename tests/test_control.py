"""bridge/control.py and bridge/console/fleet.py across real `acvg-bridge serve` processes on
one real redis-server: a change made on any instance applies on every instance."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from redis.asyncio import Redis

from bridge.sim.fleet import Fleet, Instance, make_fleet
from bridge.sim.redis_server import RedisServer

ADMIN = {"Authorization": "Bearer admin-tok"}
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
