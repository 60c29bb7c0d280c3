"""bridge/cluster.py: identity, lease and `GET /admin/cluster`, alone and on a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml

from bridge.config import Config, parse_config
from bridge.errors import ConfigError
from bridge.reload import check_reloadable
from bridge.sim.redis_server import RedisServer
from tests.conftest import BridgeFactory, RunningBridge

ADMIN = {"Authorization": "Bearer admin-tok"}


def _config(cluster: dict[str, Any] | None = None) -> Config:
    doc: dict[str, Any] = {
        "admin_token": "admin-tok",
        "routes": {"r": {"token": "tok", "voicegateway": {"url": "ws://127.0.0.1:1/x"}}},
    }
    if cluster is not None:
        doc["cluster"] = cluster
    return parse_config(yaml.safe_dump(doc), env={})


def _member(redis: RedisServer, name: str, lease_s: float = 3) -> Config:
    return _config(
        {
            "redis_url": redis.url,
            "instance_id": name,
            "advertise_url": f"http://127.0.0.1:9/{name}",
            "lease_s": lease_s,
        }
    )


async def _status(bridge: RunningBridge) -> dict[str, Any]:
    async with bridge.http.get(f"{bridge.url}/admin/cluster", headers=ADMIN) as reply:
        assert reply.status == 200
        body: dict[str, Any] = await reply.json()
        return body


@pytest.mark.parametrize(
    ("cluster", "field", "reason"),
    [
        ({"redis_url": "redis://127.0.0.1:6379/0"}, "cluster", "advertise_url is required"),
        ({"redis_url": "http://x", "advertise_url": "http://a"}, "cluster.redis_url", "redis://"),
        ({"advertise_url": "10.0.0.5:8080"}, "cluster.advertise_url", "absolute"),
        ({"instance_id": "has space"}, "cluster.instance_id", "must match"),
        ({"lease_s": 0}, "cluster.lease_s", "greater than or equal to 1"),
        ({"redis": "x"}, "cluster.redis", "unknown key"),
    ],
)
def test_bad_cluster_settings_name_the_field(
    cluster: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _config(cluster)
    assert info.value.path == field
    assert reason in info.value.reason


def test_cluster_settings_need_a_restart() -> None:
    alone = _config()
    joined = _config({"redis_url": "redis://127.0.0.1:1/0", "advertise_url": "http://a:1"})
    with pytest.raises(ConfigError) as info:
        check_reloadable(alone, joined)
    assert info.value.path == "cluster.redis_url"


async def test_a_single_instance_is_its_own_fleet(bridge_factory: BridgeFactory) -> None:
    bridge = await bridge_factory(_config())
    status = await _status(bridge)
    assert status["store"] == "ok"
    assert [i["id"] for i in status["instances"]] == [status["instance_id"]]
    assert status["instances"][0]["calls"] == 0
    assert bridge.metric("acvg_cluster_instances") == 1
    async with bridge.http.get(f"{bridge.url}/admin/cluster") as reply:
        assert reply.status == 401


async def test_instances_on_one_redis_see_each_other(
    redis_server: RedisServer, bridge_factory: BridgeFactory
) -> None:
    a = await bridge_factory(_member(redis_server, "a"))
    b = await bridge_factory(_member(redis_server, "b"))
    status = await _status(a)
    assert status["store"] == "ok"
    assert status["instance_id"] == "a"
    assert [(i["id"], i["advertise_url"]) for i in status["instances"]] == [
        ("a", "http://127.0.0.1:9/a"),
        ("b", "http://127.0.0.1:9/b"),
    ]
    assert [i["id"] for i in (await _status(b))["instances"]] == ["a", "b"]
    assert a.metric("acvg_cluster_instances") == 2


async def test_redis_down_is_visible_and_nothing_breaks(
    redis_server: RedisServer, bridge_factory: BridgeFactory
) -> None:
    bridge = await bridge_factory(_member(redis_server, "a", lease_s=1))
    redis_server.stop()
    await asyncio.sleep(0.8)  # at least one heartbeat meets the dead store
    status = await _status(bridge)
    assert status["store"] == "down"
    assert [i["id"] for i in status["instances"]] == ["a"]  # itself, from local figures
    assert bridge.metric("acvg_store_errors_total", op="heartbeat") >= 1
    async with bridge.http.get(f"{bridge.url}/readyz") as reply:
        assert reply.status == 200  # Redis down is no reason to stop taking calls

    redis_server.start()  # back, empty: the next heartbeat re-announces this instance
    for _ in range(50):
        status = await _status(bridge)
        if status["store"] == "ok" and status["instances"]:
            break
        await asyncio.sleep(0.1)
    assert status["store"] == "ok"
    assert [i["id"] for i in status["instances"]] == ["a"]
