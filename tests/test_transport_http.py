"""The HTTP surface under bad input: JSON errors with the right status, counted, no crash."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import BridgeFactory, RunningBridge, route_config

AUTH = {"Authorization": "Bearer tok"}
VG_URL = "ws://127.0.0.1:1/unused"


async def request(
    bridge: RunningBridge,
    method: str,
    path: str,
    *,
    data: bytes | str | None = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"headers": AUTH if headers is None else headers}
    if json_body is not None:
        kwargs["json"] = json_body
    elif data is not None:
        kwargs["data"] = data
    async with bridge.http.request(method, bridge.url + path, **kwargs) as resp:
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json()


async def created(bridge: RunningBridge) -> str:
    conversation = str(uuid.uuid4())
    status, body = await request(bridge, "POST", "/ac/r", json_body={"conversation": conversation})
    assert status == 200, body
    return conversation


@pytest.fixture
async def bridge(bridge_factory: BridgeFactory) -> RunningBridge:
    return await bridge_factory(route_config(VG_URL))


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic tok"}, {"Authorization": ""}],
)
async def test_bad_token_is_401_everywhere(bridge: RunningBridge, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/ac/r"),
        ("POST", "/ac/r"),
        ("POST", "/ac/r/conversation/x/activities"),
        ("POST", "/ac/r/conversation/x/refresh"),
        ("POST", "/ac/r/conversation/x/disconnect"),
    ]:
        status, body = await request(bridge, method, path, json_body={}, headers=headers)
        assert status == 401
        assert body["error"] == "auth"
    assert bridge.metric("acvg_rejected_requests_total", route="r", reason="auth") == 5


async def test_unknown_route_and_path_are_404(bridge: RunningBridge) -> None:
    status, body = await request(bridge, "GET", "/ac/nope")
    assert (status, body["error"]) == (404, "not_found")
    status, body = await request(bridge, "GET", "/not/a/path")
    assert (status, body["error"]) == (404, "not_found")
    status, body = await request(bridge, "DELETE", "/ac/r")
    assert status == 405


async def test_unknown_conversation_is_404(bridge: RunningBridge) -> None:
    for op in ("activities", "refresh", "disconnect"):
        status, body = await request(bridge, "POST", f"/ac/r/conversation/none/{op}", json_body={})
        assert (status, body["error"]) == (404, "not_found")
    assert bridge.metric("acvg_rejected_requests_total", route="r", reason="not_found") == 3


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"{not json", "JSON"),
        (b"[1, 2]", ""),
        (b'{"conversation": 5}', "conversation"),
        (b'{"conversation": ""}', "conversation"),
        (b"\xff\xfe", "JSON"),
    ],
)
async def test_bad_create_is_400(bridge: RunningBridge, payload: bytes, needle: str) -> None:
    status, body = await request(bridge, "POST", "/ac/r", data=payload)
    assert status == 400
    assert body["error"] == "bad_request"
    assert needle in body["message"]


async def test_duplicate_create_is_409(bridge: RunningBridge) -> None:
    conversation = await created(bridge)
    status, body = await request(bridge, "POST", "/ac/r", json_body={"conversation": conversation})
    assert (status, body["error"]) == (409, "conflict")


@pytest.mark.parametrize(
    "payload",
    [
        {"activities": "nope"},
        {"activities": [5]},
        {"activities": [{"type": 3}]},
        {"activities": [{"type": "message"}]},
        {"activities": [{"type": "event"}]},
        {"conversation": "someone-else", "activities": []},
    ],
)
async def test_bad_activities_are_400_and_call_survives(
    bridge: RunningBridge, payload: dict[str, Any]
) -> None:
    conversation = await created(bridge)
    path = f"/ac/r/conversation/{conversation}/activities"
    status, body = await request(bridge, "POST", path, json_body=payload)
    assert status == 400, body
    assert body["error"] == "bad_request"
    status, body = await request(
        bridge,
        "POST",
        f"/ac/r/conversation/{conversation}/refresh",
        json_body={"conversation": conversation},
    )
    assert (status, body) == (200, {"expiresSeconds": 120})


async def test_too_many_activities_is_413(bridge_factory: BridgeFactory) -> None:
    bridge = await bridge_factory(route_config(VG_URL, max_activities=2))
    conversation = await created(bridge)
    activities = [{"type": "message", "text": "x"}] * 3
    status, body = await request(
        bridge,
        "POST",
        f"/ac/r/conversation/{conversation}/activities",
        json_body={"activities": activities},
    )
    assert (status, body["error"]) == (413, "too_large")


async def test_oversized_body_is_413(bridge: RunningBridge) -> None:
    conversation = await created(bridge)
    big = b'{"activities": [], "pad": "' + b"x" * (300 * 1024) + b'"}'
    status, body = await request(
        bridge, "POST", f"/ac/r/conversation/{conversation}/activities", data=big
    )
    assert (status, body["error"]) == (413, "too_large")
    assert bridge.metric("acvg_rejected_requests_total", route="r", reason="too_large") == 1


async def test_refresh_and_disconnect(bridge: RunningBridge) -> None:
    conversation = await created(bridge)
    base = f"/ac/r/conversation/{conversation}"
    assert await request(bridge, "POST", f"{base}/refresh", data=b"") == (
        200,
        {"expiresSeconds": 120},
    )
    assert await request(bridge, "POST", f"{base}/disconnect", json_body={}) == (200, {})
    status, body = await request(bridge, "POST", f"{base}/disconnect", json_body={})
    assert (status, body["error"]) == (404, "not_found")


async def test_operations_endpoints(bridge: RunningBridge) -> None:
    status, body = await request(bridge, "GET", "/healthz", headers={})
    assert (status, body["status"]) == (200, "ok")
    status, body = await request(bridge, "GET", "/readyz", headers={})
    assert (status, body["status"]) == (200, "ready")
    async with bridge.http.get(bridge.url + "/metrics") as resp:
        text = await resp.text()
    assert resp.status == 200
    assert "acvg_rejected_requests_total" in text
    assert "acvg_build_info" in text


async def test_public_url_makes_absolute_urls(bridge_factory: BridgeFactory) -> None:
    config = route_config(VG_URL)
    config = config.model_copy(update={"public_url": "https://bridge.example"})
    bridge = await bridge_factory(config)
    status, body = await request(bridge, "POST", "/ac/r", json_body={"conversation": "c-1"})
    assert status == 200
    assert body["activitiesURL"] == "https://bridge.example/ac/r/conversation/c-1/activities"
    assert "websocketURL" not in body
