"""A call survives the loss of its instance: real `acvg-bridge serve` processes on one real
redis-server, the owner killed with SIGKILL between turns, the next turn taken over by another
instance — Voice Gateway with `session:reconnect` for the same call_sid, legacy with the bot's
URLs — answered as the owner would have, upstream inputs never duplicated."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.sim.fleet import Fleet, Instance, make_fleet
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.redis_server import RedisServer
from bridge.sim.scenario import step_activity
from bridge.sim.vaic import stamp
from bridge.sim.vg_endpoint import VGEndpointSim
from tests.test_legacy_path import LEGACY_TOKEN, SCENARIOS

SCENARIO = SCENARIOS["spoken_answer"]  # step 1 can be repeated: the flow loops
AUTH = {"Authorization": "Bearer tok"}
LEASE_S = 1.5


@pytest.fixture
async def vg_sim() -> AsyncIterator[VGEndpointSim]:
    async with VGEndpointSim() as sim:
        yield sim


@pytest.fixture
async def legacy_sim() -> AsyncIterator[LegacyEndpointSim]:
    async with LegacyEndpointSim(token=LEGACY_TOKEN) as sim:
        yield sim


def _routes(vg_sim: VGEndpointSim, legacy_sim: LegacyEndpointSim) -> dict[str, Any]:
    return {
        "v": {"token": "tok", "turn_settle_ms": 150, "voicegateway": {"url": vg_sim.url()}},
        "l": {
            "token": "tok",
            "turn_settle_ms": 150,
            "legacy": {"url": legacy_sim.url(), "token": LEGACY_TOKEN},
        },
    }


@pytest.fixture
def fleet(
    tmp_path: Path, redis_server: RedisServer, vg_sim: VGEndpointSim, legacy_sim: LegacyEndpointSim
) -> Iterator[Fleet]:
    routes = _routes(vg_sim, legacy_sim)
    # a long drain timeout: a SIGTERMed instance that waited for its calls would show
    running = make_fleet(
        tmp_path / "fleet", redis_server.url, routes, lease_s=LEASE_S, drain_timeout_s=60
    )
    yield running
    running.stop()


async def _post(
    http: aiohttp.ClientSession, instance: Instance, path: str, body: Any
) -> tuple[int, Any]:
    async with http.post(f"{instance.url}{path}", json=body, headers=AUTH) as reply:
        return reply.status, await reply.json()


async def _turn(
    http: aiohttp.ClientSession, instance: Instance, route: str, conversation: str, step: int
) -> list[dict[str, Any]]:
    activity = stamp(step_activity(SCENARIO.steps[step], SCENARIO, conversation), datetime.now(UTC))
    status, body = await _post(
        http,
        instance,
        f"/ac/{route}/conversation/{conversation}/activities",
        {"activities": [activity]},
    )
    assert status == 200, (instance.name, body)
    return [
        {k: v for k, v in a.items() if k not in ("id", "timestamp")} for a in body["activities"]
    ]


async def _metric(
    http: aiohttp.ClientSession, instance: Instance, name: str, **labels: str
) -> float:
    async with http.get(f"{instance.url}/metrics") as reply:
        text = await reply.text()
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


@pytest.mark.parametrize("route", ["v", "l"])
async def test_a_killed_owners_call_goes_on_elsewhere(
    route: str, fleet: Fleet, vg_sim: VGEndpointSim, legacy_sim: LegacyEndpointSim
) -> None:
    a, b, c = fleet.instances
    conversation = str(uuid.uuid4())
    async with aiohttp.ClientSession() as http:
        status, _ = await _post(http, a, f"/ac/{route}", {"conversation": conversation})
        assert status == 200
        greeting = await _turn(http, b, route, conversation, 0)  # b adopts and starts it
        assert greeting
        first = await _turn(http, b, route, conversation, 1)
        assert first

        b.kill()
        await asyncio.sleep(LEASE_S + 0.5)  # b's lease runs out

        again = await _turn(http, c, route, conversation, 1)  # c takes the call over
        assert again == first  # the looping step answers the same, from the same flow state
        path = "voicegateway" if route == "v" else "legacy"
        taken = await _metric(
            http, c, "acvg_takeovers_total", route=route, path=path, reason="owner_lost"
        )
        assert taken == 1
        # the next turn through a third instance is forwarded to the new owner
        assert await _turn(http, a, route, conversation, 1) == first
        status, body = await _post(
            http, a, f"/ac/{route}/conversation/{conversation}/disconnect", {}
        )
        assert (status, body) == (200, {})

    if route == "v":
        [call] = vg_sim.calls.values()
        types = [m.get("type") for m in call.received]
        assert types.count("session:new") == 1
        assert types.count("session:reconnect") == 1
        reconnect = next(m for m in call.received if m.get("type") == "session:reconnect")
        assert reconnect["call_sid"] == call.call_sid
        hooks = [m for m in call.received if m.get("type") == "verb:hook"]
        assert len(hooks) == 3  # one per caller input: none lost, none sent twice
        assert types[-1] == "call:status"
    else:
        kinds = [r.kind for r in legacy_sim.requests if r.conversation == conversation]
        assert [str(k) for k in kinds].count("create") == 1
        assert [str(k) for k in kinds].count("activities") == 4


@pytest.mark.parametrize("route", ["v", "l"])
async def test_sigterm_hands_the_calls_off_and_exits_at_once(
    route: str, fleet: Fleet, vg_sim: VGEndpointSim, legacy_sim: LegacyEndpointSim
) -> None:
    a, b, c = fleet.instances
    conversation = str(uuid.uuid4())
    async with aiohttp.ClientSession() as http:
        status, _ = await _post(http, a, f"/ac/{route}", {"conversation": conversation})
        assert status == 200
        assert await _turn(http, b, route, conversation, 0)
        first = await _turn(http, b, route, conversation, 1)

        assert b.process is not None
        started = time.monotonic()
        b.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(b.process.wait, 30)
        assert time.monotonic() - started < 10  # not the 60 s drain timeout
        assert "handed 1 of 1 call(s) to the fleet" in b.log()

        again = await _turn(http, c, route, conversation, 1)  # no lease to wait out
        assert again == first
        path = "voicegateway" if route == "v" else "legacy"
        taken = await _metric(
            http, c, "acvg_takeovers_total", route=route, path=path, reason="handoff"
        )
        assert taken == 1
        status, body = await _post(
            http, c, f"/ac/{route}/conversation/{conversation}/disconnect", {}
        )
        assert (status, body) == (200, {})

    if route == "v":
        [call] = vg_sim.calls.values()
        types = [m.get("type") for m in call.received]
        assert types.count("session:new") == 1
        assert types.count("session:reconnect") == 1
        assert types.count("verb:hook") == 2  # the turn before and the turn after the handoff
        statuses = [m["data"]["call_status"] for m in call.received if m["type"] == "call:status"]
        assert statuses == ["in-progress", "completed"]  # ended once, by the new owner
    else:
        kinds = [str(r.kind) for r in legacy_sim.requests if r.conversation == conversation]
        assert kinds.count("create") == 1
        assert kinds.count("disconnect") == 1  # the handoff did not end the bot's conversation


class _WsCaller:
    """VAIC in WebSocket mode against one instance, then another (session.resume)."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.conversation = str(uuid.uuid4())
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, instance: Instance) -> None:
        url = instance.url.replace("http", "ws", 1) + "/ac/v"
        self.ws = await self.http.ws_connect(url, headers=AUTH)

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_json({"conversationId": self.conversation, **message})

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        assert self.ws is not None
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        message: dict[str, Any] = json.loads(msg.data)
        return message

    async def turn(self, step: int) -> list[dict[str, Any]]:
        activity = step_activity(SCENARIO.steps[step], SCENARIO, self.conversation)
        await self.send({"type": "activities", "activities": [stamp(activity, datetime.now(UTC))]})
        reply = await self.receive()
        assert reply["type"] == "activities", reply
        return [
            {k: v for k, v in a.items() if k not in ("id", "timestamp")}
            for a in reply["activities"]
        ]


@pytest.mark.parametrize("owner_fate", ["alive", "killed"])
async def test_websocket_mode_resume_on_another_instance(
    owner_fate: str, fleet: Fleet, vg_sim: VGEndpointSim
) -> None:
    a, b, _ = fleet.instances
    async with aiohttp.ClientSession() as http:
        caller = _WsCaller(http)
        await caller.connect(b)
        await caller.send(
            {
                "type": "session.initiate",
                "expectAudioMessages": False,
                "supportedMediaFormats": ["raw/lpcm16"],
                "caller": SCENARIO.caller,
            }
        )
        assert (await caller.receive())["type"] == "session.accepted"
        assert await caller.turn(0)
        first = await caller.turn(1)
        assert caller.ws is not None
        await caller.ws.close()  # VAIC's socket to b is gone
        if owner_fate == "killed":
            b.kill()  # its lease runs on: the resume waits it out, then takes the call over

        await caller.connect(a)  # VAIC reconnects, and the load balancer picks a
        await caller.send({"type": "session.resume"})
        assert (await caller.receive())["type"] == "session.accepted"
        assert await caller.turn(1) == first
        reason = "handoff" if owner_fate == "alive" else "owner_lost"
        assert (
            await _metric(
                http, a, "acvg_takeovers_total", route="v", path="voicegateway", reason=reason
            )
            == 1
        )
        await caller.send({"type": "session.end", "reasonCode": "client-disconnected"})
        assert caller.ws is not None
        while not caller.ws.closed:  # the bot closes the socket once the session ended
            await asyncio.wait_for(caller.ws.receive(), 10)

    [call] = vg_sim.calls.values()
    types = [m.get("type") for m in call.received]
    assert (types.count("session:new"), types.count("session:reconnect")) == (1, 1)
    assert types.count("verb:hook") == 2


async def test_an_owner_thought_dead_never_overwrites_the_new_owners_record(
    fleet: Fleet, redis_server: RedisServer, legacy_sim: LegacyEndpointSim
) -> None:
    """c claimed b's call while b was thought dead (here: the record's owner set to c, as a
    claim after b's lease ran out leaves it); b, alive after all, serves one more turn of it
    before it notices, but its per-turn save is refused (the record is c's), so b leaves the
    call and the call goes on at c."""
    from redis.asyncio import Redis

    from bridge.store import CallKey

    a, b, c = fleet.instances
    route, conversation = "l", str(uuid.uuid4())
    key = CallKey(route, conversation).redis_key()
    redis = Redis.from_url(redis_server.url)
    try:
        async with aiohttp.ClientSession() as http:
            status, _ = await _post(http, a, f"/ac/{route}", {"conversation": conversation})
            assert status == 200
            assert await _turn(http, b, route, conversation, 0)  # b adopts it
            first = await _turn(http, b, route, conversation, 1)
            assert (await redis.hget(key, "owner")) == b.name.encode()
            claimed = await redis.hget(key, "state")
            await redis.hset(key, "owner", c.name)  # c's claim

            assert await _turn(http, b, route, conversation, 1) == first  # b serves it
            assert (await redis.hget(key, "owner")) == c.name.encode()
            assert (await redis.hget(key, "state")) == claimed  # c's record, untouched
            deadline = time.monotonic() + 5
            while "taken over by another instance" not in b.log():
                assert time.monotonic() < deadline, b.log()[-2000:]
                await asyncio.sleep(0.05)
            # b let the call go: its next request goes to c, the owner, which goes on with it
            assert await _turn(http, b, route, conversation, 1) == first
            status, body = await _post(
                http, a, f"/ac/{route}/conversation/{conversation}/disconnect", {}
            )
            assert (status, body) == (200, {})
    finally:
        await redis.aclose()


@pytest.mark.parametrize("outage", ["restarted_empty", "down"])
async def test_a_conversation_created_before_redis_lost_it_is_still_served(
    outage: str, fleet: Fleet, redis_server: RedisServer, legacy_sim: LegacyEndpointSim
) -> None:
    """A create only writes a record; its first turn is adopted wherever it lands. Redis
    losing the record before that (restarted empty, or down at the first turn) must not lose
    the call: the creating instance kept it and serves it when no peer has it."""
    a, b, _ = fleet.instances
    route, conversation = "l", str(uuid.uuid4())
    async with aiohttp.ClientSession() as http:
        status, _ = await _post(http, a, f"/ac/{route}", {"conversation": conversation})
        assert status == 200
        await asyncio.to_thread(redis_server.stop)
        if outage == "restarted_empty":
            await asyncio.to_thread(redis_server.start)
        try:
            greeting = await _turn(http, b, route, conversation, 0)  # b does not know it
            assert greeting
            assert await _turn(http, b, route, conversation, 1)
        finally:
            if outage == "down":
                await asyncio.to_thread(redis_server.start)
        status, body = await _post(
            http, b, f"/ac/{route}/conversation/{conversation}/disconnect", {}
        )
        assert (status, body) == (200, {})
    kinds = [str(r.kind) for r in legacy_sim.requests if r.conversation == conversation]
    assert kinds.count("create") == 1 and kinds.count("activities") == 2
