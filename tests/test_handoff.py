"""bridge/handoff.py through in-process bridges on one real redis-server: a conversation created on
one instance is adopted by the one that gets its first turn, later requests on any other
instance are forwarded to its owner, and a call whose owner died is answered, never hung."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from bridge import handoff
from bridge.app import GatewayKey
from bridge.config import Config, parse_config
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.redis_server import RedisServer
from bridge.sim.scenario import step_activity
from bridge.sim.vaic import stamp
from bridge.sim.vg_endpoint import VGEndpointSim
from bridge.store import CallKey, InstanceInfo, RedisStore
from tests.conftest import BridgeFactory, RunningBridge
from tests.test_legacy_path import LEGACY_TOKEN, SCENARIOS

SCENARIO = SCENARIOS["spoken_answer"]
AUTH = {"Authorization": "Bearer tok"}


@pytest.fixture
async def vg_sim() -> AsyncIterator[VGEndpointSim]:
    async with VGEndpointSim() as sim:
        yield sim


def _config(redis: RedisServer, vg: VGEndpointSim, name: str, port: int) -> Config:
    doc: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "cluster": {
            "redis_url": redis.url,
            "instance_id": name,
            "advertise_url": f"http://127.0.0.1:{port}",
            "lease_s": 3,
        },
        "routes": {"r": {"token": "tok", "turn_settle_ms": 150, "voicegateway": {"url": vg.url()}}},
    }
    return parse_config(yaml.safe_dump(doc), env={})


async def _fleet(
    redis: RedisServer, vg: VGEndpointSim, bridge_factory: BridgeFactory, *names: str
) -> list[RunningBridge]:
    """Bridges whose advertise_url is their real address: start each, then point its cluster
    at the port it got (the factory binds port 0)."""
    bridges = []
    for name in names:
        bridge = await bridge_factory(_config(redis, vg, name, 0))
        cluster = bridge.app[GatewayKey].cluster
        cluster.advertise_url = bridge.url
        # the heartbeat task's first beat may still be writing the old URL: let it land first
        await asyncio.sleep(0.1)
        await cluster.beat()
        bridges.append(bridge)
    return bridges


async def _post(bridge: RunningBridge, path: str, body: Any) -> tuple[int, Any]:
    async with bridge.http.post(f"{bridge.url}{path}", json=body, headers=AUTH) as reply:
        return reply.status, await reply.json()


async def _create(bridge: RunningBridge) -> str:
    conversation = str(uuid.uuid4())
    status, body = await _post(bridge, "/ac/r", {"conversation": conversation})
    assert status == 200, body
    assert body["activitiesURL"] == f"/ac/r/conversation/{conversation}/activities"
    return conversation


async def _turn(bridge: RunningBridge, conversation: str, step: int) -> tuple[int, Any]:
    activity = stamp(step_activity(SCENARIO.steps[step], SCENARIO, conversation), datetime.now(UTC))
    return await _post(
        bridge, f"/ac/r/conversation/{conversation}/activities", {"activities": [activity]}
    )


def _texts(body: Any) -> list[str]:
    return [a.get("text", a.get("name", "")) for a in body["activities"]]


async def test_created_on_one_served_by_another_forwarded_from_a_third(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    a, b, c = await _fleet(redis_server, vg_sim, bridge_factory, "a", "b", "c")
    conversation = await _create(a)
    assert len(a.app[GatewayKey].calls) == 0  # created in the store, owned by nobody yet

    status, greeting = await _turn(b, conversation, 0)  # the first turn: b adopts the call
    assert status == 200, greeting
    assert _texts(greeting)
    assert len(b.app[GatewayKey].calls) == 1
    assert len(vg_sim.calls) == 1

    status, answer = await _turn(c, conversation, 1)  # c forwards to b, the owner
    assert status == 200, answer
    assert _texts(answer)
    assert c.metric("acvg_forwarded_requests_total", route="r") == 1
    assert len(c.app[GatewayKey].calls) == 0
    assert len(vg_sim.calls) == 1  # one upstream session, whoever got the request

    # VAIC's retry of that turn through yet another instance: the same answer, not forwarded
    # upstream twice (the owner answers a repeated activity id from its record)
    activity_path = f"/ac/r/conversation/{conversation}/activities"
    retry = stamp(step_activity(SCENARIO.steps[1], SCENARIO, conversation), datetime.now(UTC))
    first = await _post(a, activity_path, {"activities": [retry]})
    again = await _post(c, activity_path, {"activities": [retry]})
    assert first[0] == again[0] == 200
    assert first[1]["activities"] == again[1]["activities"]

    status, body = await _post(a, f"/ac/r/conversation/{conversation}/disconnect", {})
    assert (status, body) == (200, {})
    assert len(b.app[GatewayKey].calls) == 0
    store = RedisStore(redis_server.url)
    try:
        for _ in range(50):
            if await store.load(CallKey("r", conversation)) is None:
                break
            await asyncio.sleep(0.02)
        assert await store.load(CallKey("r", conversation)) is None
    finally:
        await store.close()


async def test_a_conversation_id_is_created_once_in_the_fleet(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    a, b = await _fleet(redis_server, vg_sim, bridge_factory, "a", "b")
    conversation = await _create(a)
    status, body = await _post(b, "/ac/r", {"conversation": conversation})
    assert (status, body["error"]) == (409, "conflict")


async def test_a_created_call_whose_claimer_died_is_taken_over(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    (a,) = await _fleet(redis_server, vg_sim, bridge_factory, "a")
    conversation = await _create(a)
    store = RedisStore(redis_server.url)
    try:  # "ghost" claimed it and died before its first turn got anywhere
        assert (await store.claim(CallKey("r", conversation), "ghost")).outcome == "claimed"
    finally:
        await store.close()
    status, greeting = await _turn(a, conversation, 0)
    assert status == 200 and _texts(greeting)
    assert a.metric("acvg_takeovers_total", route="r", path="none", reason="owner_lost") == 1


async def test_a_started_call_without_a_usable_record_is_answered_404(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    a, b = await _fleet(redis_server, vg_sim, bridge_factory, "a", "b")
    conversation = await _create(a)
    assert (await _turn(b, conversation, 0))[0] == 200
    key = CallKey("r", conversation)
    store = RedisStore(redis_server.url)
    try:  # b's record lost its session part (e.g. written by an older version)
        loaded = await store.load(key)
        assert loaded is not None and "session" in loaded[0]
        del loaded[0]["session"]
        await store.save(key, loaded[0], "b", ttl_s=60)
    finally:
        await store.close()
    await b.app[GatewayKey].cluster.leave()  # b's lease is gone: presumed dead
    status, body = await _turn(a, conversation, 1)
    assert (status, body["error"]) == (404, "owner_lost")
    assert a.metric("acvg_rejected_requests_total", route="r", reason="owner_lost") == 1


async def test_redis_down_at_create_serves_the_call_here(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    (a,) = await _fleet(redis_server, vg_sim, bridge_factory, "a")
    redis_server.stop()
    conversation = await _create(a)
    assert len(a.app[GatewayKey].calls) == 1
    status, greeting = await _turn(a, conversation, 0)
    assert status == 200 and _texts(greeting)
    assert a.metric("acvg_store_errors_total", op="load") >= 1


async def test_an_unreachable_owner_is_waited_out_then_the_call_taken_over(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    (a,) = await _fleet(redis_server, vg_sim, bridge_factory, "a")
    conversation = await _create(a)
    assert (await _turn(a, conversation, 0))[0] == 200
    gateway = a.app[GatewayKey]
    call = gateway.calls.get("r", conversation)
    assert call is not None
    store = RedisStore(redis_server.url)
    try:  # the call now belongs to "ghost", which died a moment ago: its lease runs for 1 s
        await store.heartbeat(InstanceInfo("ghost", "http://127.0.0.1:1", 1, time.time()), 1.0)

        async def to_ghost(state: dict[str, Any]) -> bool:
            record = handoff.record("r", call.conversation, "started") | {"session": state}
            await store.save(CallKey("r", conversation), record, "ghost", ttl_s=60)
            return True

        assert await call.hand_off(to_ghost)
        gateway.calls.remove(call, ended=False)
    finally:
        await store.close()

    status, answer = await _turn(a, conversation, 1)  # forward fails, the lease lapses, taken
    assert status == 200, answer
    assert _texts(answer)
    assert a.metric("acvg_takeovers_total", route="r", path="voicegateway", reason="owner_lost")
    [vg_call] = vg_sim.calls.values()
    types = [m.get("type") for m in vg_call.received]
    assert (types.count("session:new"), types.count("session:reconnect")) == (1, 1)


async def test_a_request_waiting_on_a_call_being_handed_off_is_served_where_it_went(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    (a,) = await _fleet(redis_server, vg_sim, bridge_factory, "a")
    conversation = await _create(a)
    assert (await _turn(a, conversation, 0))[0] == 200
    gateway = a.app[GatewayKey]
    call = gateway.calls.get("r", conversation)
    assert call is not None
    publishing = asyncio.Event()
    go = asyncio.Event()

    async def publish(state: dict[str, Any]) -> bool:
        record = handoff.record("r", call.conversation, "started") | {"session": state}
        publishing.set()
        await go.wait()  # the next turn's request arrives while the call is being handed off
        await gateway.cluster.store.save(CallKey("r", conversation), record, "", ttl_s=60)
        return True

    handing = asyncio.create_task(call.hand_off(publish))
    await publishing.wait()
    turn = asyncio.create_task(_turn(a, conversation, 1))
    await asyncio.sleep(0.2)
    go.set()
    assert await handing
    gateway.calls.remove(call, ended=False)
    status, answer = await turn
    assert status == 200, answer  # not "unknown conversation": served by the call's new copy
    assert _texts(answer)
    assert a.metric("acvg_takeovers_total", route="r", path="voicegateway", reason="handoff") == 1
    [vg_call] = vg_sim.calls.values()
    assert [m.get("type") for m in vg_call.received].count("verb:hook") == 1  # sent once


async def test_a_draining_instance_forwards_to_a_live_peer_and_is_not_sent_calls(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    a, b = await _fleet(redis_server, vg_sim, bridge_factory, "a", "b")
    conversation = await _create(a)
    assert (await _turn(b, conversation, 0))[0] == 200  # b owns the call
    draining = a.app[GatewayKey]
    draining.draining = draining.cluster.draining = True
    await draining.cluster.beat()

    status, answer = await _turn(a, conversation, 1)  # a forwards to b
    assert status == 200 and _texts(answer)
    assert a.metric("acvg_forwarded_requests_total", route="r") == 1
    peers = await handoff.live_peers(b.app[GatewayKey].cluster, "r", conversation)
    assert peers == []  # b sends nothing to a draining instance

    # a request a peer forwarded to a before a handed its calls off: the sender is told so
    activity = stamp(step_activity(SCENARIO.steps[1], SCENARIO, conversation), datetime.now(UTC))
    async with a.http.post(
        f"{a.url}/ac/r/conversation/{conversation}/activities",
        json={"activities": [activity]},
        headers={**AUTH, handoff.FORWARDED_HEADER: "b"},
    ) as reply:
        assert reply.status == 421
        assert (await reply.json())["error"] == "not_here"


async def test_a_handed_off_calls_shadow_is_ended_where_it_ran(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    async with LegacyEndpointSim(token=LEGACY_TOKEN) as legacy_sim:
        doc = yaml.safe_load(yaml.safe_dump(_config(redis_server, vg_sim, "a", 0).model_dump()))
        doc["routes"]["r"] |= {
            "legacy": {"url": legacy_sim.url(), "token": LEGACY_TOKEN},
            "migration": {"voicegateway_percent": 100, "shadow": True},
        }
        a = await bridge_factory(parse_config(yaml.safe_dump(doc), env={}))
        gateway = a.app[GatewayKey]
        conversation = await _create(a)
        assert (await _turn(a, conversation, 0))[0] == 200
        call = gateway.calls.get("r", conversation)
        assert call is not None and call.path == "voicegateway"
        for _ in range(100):  # the shadow starts beside the primary, off the caller's path
            if legacy_sim.calls:
                break
            await asyncio.sleep(0.02)
        [shadow] = legacy_sim.calls.values()
        assert shadow.active

        async def publish(state: dict[str, Any]) -> bool:
            return await handoff.release(gateway.cluster, "r", call.route, call.conversation, state)

        assert await call.hand_off(publish)
        # the shadow cannot move with the call: its conversation is ended, not left to expire
        await asyncio.wait_for(shadow.ended.wait(), 5)
        assert shadow.disconnect is not None


async def _eventually_forwarded(b: RunningBridge, conversation: str, step: int) -> Any:
    for _ in range(40):  # until a's next heartbeat has written its records again
        status, body = await _turn(b, conversation, step)
        if status == 200:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"never served: {status} {body}")


@pytest.mark.parametrize("fault", ["restarted", "flushed"])
async def test_records_are_written_again_when_redis_comes_back_empty(
    fault: str, redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    a, b = await _fleet(redis_server, vg_sim, bridge_factory, "a", "b")
    started = await _create(a)
    assert (await _turn(a, started, 0))[0] == 200  # a owns it
    if fault == "restarted":
        redis_server.stop()
        conversation = str(uuid.uuid4())
        status, _ = await _post(a, "/ac/r", {"conversation": conversation})
        assert status == 200  # made while Redis is down: a serves it alone
        assert (await _turn(a, conversation, 0))[0] == 200
        redis_server.start()  # empty
        made_while_down = [conversation]
    else:  # emptied between two heartbeats: no error ever seen, the lease is simply gone
        store = RedisStore(redis_server.url)
        try:
            await store.client.flushall()
        finally:
            await store.close()
        made_while_down = []

    if fault == "flushed":  # at once: b finds its own lease gone and asks its peers
        status, answer = await _turn(b, started, 1)
        assert status == 200, answer
    for conversation in (started, *made_while_down):  # b finds them and forwards to a
        assert _texts(await _eventually_forwarded(b, conversation, 1))
    assert b.metric("acvg_forwarded_requests_total", route="r") >= 1 + len(made_while_down)
    assert len(b.app[GatewayKey].calls) == 0
    assert len(vg_sim.calls) == 1 + len(made_while_down)  # never started twice


async def test_while_redis_is_down_a_call_is_found_on_the_peer_holding_it(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    a, b, _ = await _fleet(redis_server, vg_sim, bridge_factory, "a", "b", "c")
    await b.app[GatewayKey].cluster.beat()  # b has seen a and c (c, asked first, has not it)
    redis_server.stop()
    conversation = str(uuid.uuid4())
    status, _ = await _post(a, "/ac/r", {"conversation": conversation})
    assert status == 200  # served by a alone: the store cannot take it
    assert (await _turn(a, conversation, 0))[0] == 200
    status, answer = await _turn(b, conversation, 1)  # b asks its peers: a has it
    assert status == 200, answer
    assert _texts(answer)
    unknown = str(uuid.uuid4())
    status, body = await _turn(b, unknown, 0)  # nobody has it: still a 503 to retry
    assert (status, body["error"]) == (503, "store_unavailable")
    assert len(vg_sim.calls) == 1


async def test_a_push_socket_brings_its_call_to_the_instance_it_reaches(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    a, b = await _fleet(redis_server, vg_sim, bridge_factory, "a", "b")
    conversation = await _create(a)
    assert (await _turn(b, conversation, 0))[0] == 200  # b owns the call
    url = f"{a.url}/ac/r/conversation/{conversation}/websocket".replace("http", "ws", 1)
    ws = await a.http.ws_connect(url, headers=AUTH)  # a socket cannot be forwarded: a takes it
    try:
        assert a.app[GatewayKey].calls.get("r", conversation) is not None
        assert b.app[GatewayKey].calls.get("r", conversation) is None
        assert a.metric("acvg_takeovers_total", route="r", path="voicegateway", reason="handoff")
        status, answer = await _turn(a, conversation, 1)
        assert status == 200, answer
    finally:
        await ws.close()
    [call] = vg_sim.calls.values()
    types = [m.get("type") for m in call.received]
    assert (types.count("session:new"), types.count("session:reconnect")) == (1, 1)


async def test_a_refused_hand_off_request_says_why(
    redis_server: RedisServer, vg_sim: VGEndpointSim, bridge_factory: BridgeFactory
) -> None:
    """Asked to hand off a call it cannot hand off yet (here: created, not started), the owner
    answers 409 naming the reason; once started, the same request hands it off."""
    a, b = await _fleet(redis_server, vg_sim, bridge_factory, "a", "b")
    conversation = await _create(a)
    gateway = b.app[GatewayKey]
    call = gateway.new_call("r", gateway.config.routes["r"], conversation)
    assert gateway.calls.add(call)
    assert call.hand_off_blocker() == "its path is not started"
    url = f"{b.url}/cluster/r/conversation/{conversation}/handoff"
    async with b.http.post(url, headers=AUTH) as reply:
        body = await reply.json()
    assert reply.status == 409 and body["error"] == "conflict"
    assert body["message"] == "the call cannot be handed off: its path is not started"
    gateway.calls.remove(call, ended=False)
    await call.close()

    assert (await _turn(b, conversation, 0))[0] == 200  # b starts it (adopted from the store)
    held = gateway.calls.get("r", conversation)
    assert held is not None and held.hand_off_blocker() is None
    async with b.http.post(url, headers=AUTH) as reply:
        assert reply.status == 200 and (await reply.json()) == {"handed_off": True}
