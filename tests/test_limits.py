"""Limits (design §3.8): the pure token buckets and call counter, then the HTTP and WebSocket
mode answers — 503 over_capacity past `max_calls`, 429 rate_limited past
`max_requests_per_second` — each counted, and never touching the call or other calls."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import ConfigError
from bridge.limits import SWEEP_INTERVAL_S, CallCounter, RateLimiter, TokenBucket
from tests.conftest import BridgeFactory, RunningBridge, route_config

AUTH = {"Authorization": "Bearer tok"}
VG_URL = "ws://127.0.0.1:1/unused"

# ---------------------------------------------------------------- pure


def test_bucket_admits_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.4)  # 0.8 token refilled
    assert bucket.take(0.5)  # 1.0 token
    assert not bucket.take(0.5)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_bucket_ignores_time_going_backwards() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert bucket.take(11.0)


def test_bucket_rejects_nonsense_limits() -> None:
    for rate, burst in [(0, 1), (-1, 1), (1, 0.5)]:
        try:
            TokenBucket(rate, burst, 0.0)
        except ValueError:
            continue
        raise AssertionError(f"accepted rate={rate} burst={burst}")


@given(
    rate=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 0.5, allow_nan=False), min_size=1, max_size=200),
)
def test_bucket_never_admits_more_than_burst_plus_rate_times_elapsed(
    rate: int, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate, rate, 0.0)
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        admitted += bucket.take(now)
    assert admitted <= rate + rate * now + 1e-9


def test_limiter_keys_are_independent_and_refilled_keys_are_forgotten() -> None:
    limiter = RateLimiter()
    assert limiter.allow("a", 1, 1, 0.0)
    assert not limiter.allow("a", 1, 1, 0.0)
    assert limiter.allow("b", 1, 1, 0.0)  # another conversation is not affected
    assert len(limiter) == 2
    limiter.allow("c", 1, 1, SWEEP_INTERVAL_S + 1)  # a and b are full again: dropped
    assert len(limiter) == 1


def test_limiter_follows_a_reconfigured_rate() -> None:
    limiter = RateLimiter()
    assert [limiter.allow("a", 5, 5, 0.0) for _ in range(3)] == [True] * 3
    # lowered to 1/s: the 2 tokens left are capped at the new burst of 1
    assert [limiter.allow("a", 1, 1, 0.0) for _ in range(2)] == [True, False]
    limiter.forget("a")
    assert limiter.allow("a", 1, 1, 0.0)


def test_call_counter() -> None:
    counter = CallCounter()
    counter.add("r")
    counter.add("r")
    counter.add("s")
    assert (counter.count("r"), counter.count("s"), counter.count("t")) == (2, 1, 0)
    assert not counter.has_room("r", 2)
    assert counter.has_room("s", 2)
    counter.remove("r")
    counter.remove("r")
    counter.remove("r")  # more removes than adds never goes negative
    assert counter.count("r") == 0
    assert counter.has_room("r", 1)


# ---------------------------------------------------------------- HTTP mode


async def post(
    bridge: RunningBridge, path: str, body: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with bridge.http.post(bridge.url + path, json=body, headers=AUTH) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json(), resp


async def create(bridge: RunningBridge, route: str = "r") -> tuple[int, Any, str]:
    conversation = str(uuid.uuid4())
    status, body, _ = await post(bridge, f"/ac/{route}", {"conversation": conversation})
    return status, body, conversation


async def test_creates_beyond_max_calls_get_503_over_capacity(
    bridge_factory: BridgeFactory,
) -> None:
    bridge = await bridge_factory(route_config(VG_URL, max_calls=2))
    first = await create(bridge)
    second = await create(bridge)
    assert (first[0], second[0]) == (200, 200)
    status, body, _ = await create(bridge)
    assert status == 503
    assert body["error"] == "over_capacity"
    assert "2 concurrent calls" in body["message"]
    assert bridge.metric("acvg_rejected_requests_total", route="r", reason="over_capacity") == 1
    # a duplicate of a live conversation is still a conflict, not capacity
    status, body, _ = await post(bridge, "/ac/r", {"conversation": first[2]})
    assert (status, body["error"]) == (409, "conflict")
    # a call that ends frees its place
    status, _, _ = await post(bridge, f"/ac/r/conversation/{first[2]}/disconnect", {})
    assert status == 200
    assert (await create(bridge))[0] == 200
    assert (await create(bridge))[0] == 503
    assert bridge.metric("acvg_rejected_requests_total", route="r", reason="over_capacity") == 2


async def test_503_carries_retry_after(bridge_factory: BridgeFactory) -> None:
    bridge = await bridge_factory(route_config(VG_URL, max_calls=1))
    assert (await create(bridge))[0] == 200
    _, _, resp = await post(bridge, "/ac/r", {"conversation": str(uuid.uuid4())})
    assert resp.headers["Retry-After"] == "1"


async def test_requests_beyond_the_rate_get_429_and_the_call_goes_on(
    bridge_factory: BridgeFactory,
) -> None:
    bridge = await bridge_factory(route_config(VG_URL, max_requests_per_second=2))
    _, _, conversation = await create(bridge)
    _, _, other = await create(bridge)
    path = f"/ac/r/conversation/{conversation}/refresh"
    answers = await asyncio.gather(*(post(bridge, path, {}) for _ in range(20)))
    statuses = [status for status, _, _ in answers]
    assert set(statuses) == {200, 429}
    assert statuses.count(200) >= 2  # the burst
    for status, body, resp in answers:
        if status == 429:
            assert body["error"] == "rate_limited"
            assert "2 requests per second" in body["message"]
            assert resp.headers["Retry-After"] == "1"
    rejected = bridge.metric("acvg_rejected_requests_total", route="r", reason="rate_limited")
    assert rejected == statuses.count(429)
    # another conversation has its own budget
    status, _, _ = await post(bridge, f"/ac/r/conversation/{other}/refresh", {})
    assert status == 200
    # hanging up is never rate limited, and the call was still there to end
    status, body, _ = await post(bridge, f"/ac/r/conversation/{conversation}/disconnect", {})
    assert (status, body) == (200, {})


async def test_unknown_conversations_get_no_bucket(bridge_factory: BridgeFactory) -> None:
    from bridge.transport.http import RequestRatesKey

    bridge = await bridge_factory(route_config(VG_URL, max_requests_per_second=1))
    for _ in range(5):
        status, body, _ = await post(bridge, f"/ac/r/conversation/{uuid.uuid4()}/activities", {})
        assert (status, body["error"]) == (404, "not_found")
    assert len(bridge.app[RequestRatesKey]) == 0


# ---------------------------------------------------------------- WebSocket mode


def initiate(conversation: str) -> str:
    return json.dumps(
        {
            "type": "session.initiate",
            "conversationId": conversation,
            "expectAudioMessages": False,
            "supportedMediaFormats": ["raw/lpcm16"],
        }
    )


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    answer: dict[str, Any] = json.loads(msg.data)
    return answer


async def test_ws_initiate_beyond_max_calls_is_refused(bridge_factory: BridgeFactory) -> None:
    bridge = await bridge_factory(route_config(VG_URL, max_calls=1))
    async with bridge.http.ws_connect(bridge.url + "/ac/r", headers=AUTH) as first:
        await first.send_str(initiate(str(uuid.uuid4())))
        assert (await receive(first))["type"] == "session.accepted"
        async with bridge.http.ws_connect(bridge.url + "/ac/r", headers=AUTH) as second:
            await second.send_str(initiate(str(uuid.uuid4())))
            refused = await receive(second)
            assert refused["type"] == "session.error"
            assert "over capacity" in refused["reason"]
            closing = await second.receive(timeout=5)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert second.close_code == 1008
        # HTTP mode counts against the same route limit
        assert (await create(bridge))[0] == 503
        await first.send_str(json.dumps({"type": "connection.validate"}))
        assert (await receive(first))["type"] == "connection.validated"  # first call unharmed
    assert bridge.metric("acvg_rejected_requests_total", route="r", reason="over_capacity") == 2


async def test_ws_frames_beyond_the_rate_are_dropped_but_session_end_is_not(
    bridge_factory: BridgeFactory,
) -> None:
    bridge = await bridge_factory(route_config(VG_URL, max_requests_per_second=2))
    async with bridge.http.ws_connect(bridge.url + "/ac/r", headers=AUTH) as ws:
        await ws.send_str(initiate(str(uuid.uuid4())))  # spends one of the 2
        assert (await receive(ws))["type"] == "session.accepted"
        for _ in range(30):
            await ws.send_str(json.dumps({"type": "connection.validate"}))
        await ws.send_str(json.dumps({"type": "session.end", "reasonCode": "client-disconnected"}))
        answers: list[str] = []
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            answers.append(json.loads(msg.data)["type"])
        assert ws.close_code == 1000  # session.end went through and ended the call normally
    # at least one validate was answered, most were dropped, none produced an error
    assert 1 <= answers.count("connection.validated") < 30
    assert "session.error" not in answers
    dropped = bridge.metric("acvg_rejected_requests_total", route="r", reason="rate_limited")
    assert dropped == 30 - answers.count("connection.validated")


# ---------------------------------------------------------------- config


def test_limit_defaults_and_validation() -> None:
    route = route_config(VG_URL).routes["r"]
    assert (route.max_calls, route.max_requests_per_second) == (1000, 20)
    for key, value in [
        ("max_calls", 0),
        ("max_calls", -5),
        ("max_calls", "many"),
        ("max_requests_per_second", 0),
        ("max_requests_per_second", 1.5),
    ]:
        with pytest.raises(ConfigError) as raised:
            route_config(VG_URL, **{key: value})
        assert raised.value.path == f"routes.r.{key}"
