"""The live-call registry: add/get/remove, duplicates, and expiry of idle conversations."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import yaml

from bridge.app import CallRegistry, GatewayKey
from bridge.config import Config, parse_config
from bridge.session import CallSession
from tests.conftest import BridgeFactory, RunningBridge

HEADERS = {"Authorization": "Bearer tok"}


def _closed_port_url() -> str:
    """A ws:// URL nothing listens on: no Voice Gateway ever connects."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"ws://127.0.0.1:{port}/nothing"


def _config(**expires: int) -> Config:
    url = _closed_port_url()
    routes = {
        name: {"token": "tok", "expires_seconds": seconds, "voicegateway": {"url": url}}
        for name, seconds in expires.items()
    }
    return parse_config(yaml.safe_dump({"routes": routes}), env={})


def _session(bridge: RunningBridge, route: str, conversation_id: str) -> CallSession:
    gateway = bridge.app[GatewayKey]
    return gateway.new_call(route, gateway.config.routes[route], conversation_id)


async def _post(bridge: RunningBridge, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with bridge.http.post(bridge.url + path, json=body, headers=HEADERS) as resp:
        return resp.status, await resp.json()


async def _create(bridge: RunningBridge, route: str) -> str:
    conversation = str(uuid.uuid4())
    status, body = await _post(bridge, f"/ac/{route}", {"conversation": conversation})
    assert status == 200, body
    return conversation


async def test_registry_add_get_remove_and_duplicate(bridge_factory: BridgeFactory) -> None:
    bridge = await bridge_factory(_config(a=60, b=60))
    registry = CallRegistry()
    first = _session(bridge, "a", "c-1")
    same_id_other_route = _session(bridge, "b", "c-1")
    assert len(registry) == 0 and registry.get("a", "c-1") is None

    assert registry.add(first) is True
    assert registry.add(same_id_other_route) is True
    assert len(registry) == 2
    assert registry.get("a", "c-1") is first
    assert registry.get("b", "c-1") is same_id_other_route
    assert registry.get("a", "c-2") is None

    duplicate = _session(bridge, "a", "c-1")
    assert registry.add(duplicate) is False
    assert registry.get("a", "c-1") is first, "a duplicate must not replace the live call"

    registry.remove(first)
    assert registry.get("a", "c-1") is None
    assert registry.all() == [same_id_other_route]
    registry.remove(first)  # removing twice is harmless
    assert len(registry) == 1


async def test_create_twice_answers_409(bridge_factory: BridgeFactory) -> None:
    bridge = await bridge_factory(_config(r=60))
    conversation = await _create(bridge, "r")
    status, body = await _post(bridge, "/ac/r", {"conversation": conversation})
    assert status == 409 and body["error"] == "conflict"
    assert len(bridge.app[GatewayKey].calls) == 1


async def test_expire_ends_only_calls_idle_past_one_and_a_half_times_expires(
    bridge_factory: BridgeFactory,
) -> None:
    bridge = await bridge_factory(_config(short=10, long=100))
    calls = bridge.app[GatewayKey].calls
    loop = asyncio.get_running_loop()
    short = await _create(bridge, "short")
    started = await _create(bridge, "short")
    long = await _create(bridge, "long")
    # A started call whose Voice Gateway was unreachable: ended toward VAIC, still registered.
    status, body = await _post(
        bridge,
        f"/ac/short/conversation/{started}/activities",
        {
            "conversation": started,
            "activities": [
                {
                    "id": str(uuid.uuid4()),
                    "timestamp": "2026-11-25T10:00:00.000Z",
                    "type": "event",
                    "name": "start",
                    "parameters": {"caller": "+4921154591991", "callee": "+18005550100"},
                }
            ],
        },
    )
    assert status == 200 and body["activities"][-1]["name"] == "hangup"
    assert len(calls) == 3

    # Idle longer than expiresSeconds but not 1.5x: kept.
    assert await calls.expire(loop.time() + 14) == 0
    assert len(calls) == 3

    assert await calls.expire(loop.time() + 16) == 2
    assert calls.get("short", short) is None and calls.get("short", started) is None
    assert calls.get("long", long) is not None
    ended = bridge.metric(
        "acvg_calls_ended_total",
        route="short",
        path="voicegateway",
        role="primary",
        reason="expired",
    )
    assert ended == 1, "only the started call counts as an ended call"
    active = bridge.metric("acvg_calls_active", route="short", path="voicegateway", role="primary")
    assert active == 0

    for conversation in (short, started):
        base = f"/ac/short/conversation/{conversation}"
        status, body = await _post(bridge, f"{base}/activities", {"activities": []})
        assert (status, body["error"]) == (404, "not_found")
        status, body = await _post(bridge, f"{base}/refresh", {"conversation": conversation})
        assert (status, body["error"]) == (404, "not_found")
    status, body = await _post(
        bridge, f"/ac/long/conversation/{long}/refresh", {"conversation": long}
    )
    assert (status, body) == (200, {"expiresSeconds": 100})

    async with bridge.http.get(bridge.url + "/readyz") as resp:
        assert (await resp.json())["calls"] == 1
    assert await calls.expire(loop.time() + 151) == 1
    assert len(calls) == 0
