"""The fleet as deployed: three `acvg-bridge serve` processes, one redis-server and nginx with
the shipped deploy/nginx/acvg-bridge.conf, all real, on 127.0.0.1. Scripted calls on both paths
go through nginx while the instance holding the most calls is killed with SIGKILL mid-run and
another is restarted with SIGTERM, or while all three are restarted one after the other: every
turn is answered, every call finishes, no caller input reaches a bot twice (but the one in
flight at a SIGKILL, which nginx retries on the new owner). WebSocket-mode calls whose instance
is killed reconnect through nginx and resume where they were (`session.resume`); async-mode
calls connect their push socket again and get the next turns' outputs on it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.sim.fleet import Fleet, Instance, make_fleet
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.nginx_server import Nginx, running_nginx
from bridge.sim.redis_server import RedisServer
from bridge.sim.scenario import step_activity
from bridge.sim.vaic import stamp
from bridge.sim.vg_endpoint import VGEndpointSim
from tests.test_legacy_path import LEGACY_TOKEN, SCENARIOS

SCENARIO = SCENARIOS["spoken_answer"]  # step 1 can be repeated: the flow loops
AUTH = {"Authorization": "Bearer tok"}
ADMIN = {"Authorization": "Bearer admin-tok"}
CALLS = 24
TURNS = 8
GAP_S = 0.25
WS_CALLS = 8
NGINX_FAIL_TIMEOUT_S = 1  # deploy/nginx/acvg-bridge.conf's max_fails=1 fail_timeout=1s


@pytest.fixture
async def vg_sim() -> AsyncIterator[VGEndpointSim]:
    async with VGEndpointSim() as sim:
        yield sim


@pytest.fixture
async def legacy_sim() -> AsyncIterator[LegacyEndpointSim]:
    async with LegacyEndpointSim(token=LEGACY_TOKEN) as sim:
        yield sim


@pytest.fixture
def deployed(
    tmp_path: Path, redis_server: RedisServer, vg_sim: VGEndpointSim, legacy_sim: LegacyEndpointSim
) -> Iterator[tuple[Fleet, Nginx]]:
    routes = {
        "v": {"token": "tok", "turn_settle_ms": 150, "voicegateway": {"url": vg_sim.url()}},
        "va": {"token": "tok", "async_mode": True, "voicegateway": {"url": vg_sim.url()}},
        "l": {
            "token": "tok",
            "turn_settle_ms": 150,
            "legacy": {"url": legacy_sim.url(), "token": LEGACY_TOKEN},
        },
    }
    fleet = make_fleet(tmp_path / "fleet", redis_server.url, routes, lease_s=1.5)
    try:
        upstreams = [f"127.0.0.1:{i.port}" for i in fleet.instances]
        with running_nginx(tmp_path / "nginx", upstreams) as nginx:
            yield fleet, nginx
    finally:
        fleet.stop()


async def _call(
    http: aiohttp.ClientSession,
    base: str,
    route: str,
    answers: dict[str, list[int]],
    turns: int = TURNS,
) -> None:
    conversation = str(uuid.uuid4())
    statuses = answers.setdefault(f"{route}:{conversation}", [])
    async with http.post(
        f"{base}/ac/{route}", json={"conversation": conversation}, headers=AUTH
    ) as r:
        statuses.append(r.status)
    url = f"{base}/ac/{route}/conversation/{conversation}"
    for turn in range(turns):
        activity = step_activity(SCENARIO.steps[min(turn, 1)], SCENARIO, conversation)
        body = {"activities": [stamp(activity, datetime.now(UTC))]}
        async with http.post(f"{url}/activities", json=body, headers=AUTH) as r:
            outputs = (await r.json()).get("activities") if r.status == 200 else None
            statuses.append(r.status if outputs else -r.status)
        await asyncio.sleep(GAP_S)
    async with http.post(f"{url}/disconnect", json={}, headers=AUTH) as r:
        statuses.append(r.status)


async def _kill_busiest(
    http: aiohttp.ClientSession, fleet: Fleet, nginx: Nginx
) -> tuple[Instance, int]:
    """SIGKILL the instance holding the most calls (asked through nginx): it, and its calls."""
    async with http.get(f"{nginx.url}/admin/cluster", headers=ADMIN) as reply:
        status = await reply.json()
    busiest = max(status["instances"], key=lambda i: i["calls"])
    assert busiest["calls"] > 0
    victim = next(i for i in fleet.instances if i.name == busiest["id"])
    victim.kill()
    calls: int = busiest["calls"]
    return victim, calls


def _bad(statuses: list[int]) -> list[tuple[int, int]]:
    """(request number, status) of each request not answered 200 with outputs."""
    return [(n, status) for n, status in enumerate(statuses) if status != 200]


async def test_calls_through_nginx_survive_a_kill_and_a_restart(
    deployed: tuple[Fleet, Nginx], vg_sim: VGEndpointSim, legacy_sim: LegacyEndpointSim
) -> None:
    fleet, nginx = deployed
    answers: dict[str, list[int]] = {}
    async with aiohttp.ClientSession() as http:
        calls = asyncio.gather(
            *(_call(http, nginx.url, "v" if n % 2 else "l", answers) for n in range(CALLS))
        )
        await asyncio.sleep(TURNS * GAP_S / 3)
        victim, _ = await _kill_busiest(http, fleet, nginx)  # mid-run, turns in flight
        await asyncio.sleep(TURNS * GAP_S / 3)
        survivor = next(i for i in fleet.instances if i is not victim)
        await asyncio.to_thread(survivor.stop)  # a rolling restart: SIGTERM, then start again
        await asyncio.to_thread(survivor.start)
        await calls

    assert len(answers) == CALLS
    failed = {c: _bad(s) for c, s in answers.items() if _bad(s)}
    assert failed == {}, failed  # every create, turn and disconnect answered, with outputs
    assert len(vg_sim.calls) == CALLS // 2
    for call in vg_sim.calls.values():
        types = [m.get("type") for m in call.received]
        assert types.count("session:new") == 1  # taken over by session:reconnect, never anew
        assert types[-1] == "call:status"
        # one hook per caller input (the first input starts the call); the turn in flight at
        # the kill may reach the app twice
        assert TURNS - 1 <= types.count("verb:hook") <= TURNS
    legacy_calls = [c for c in legacy_sim.calls.values()]
    assert len(legacy_calls) == CALLS // 2
    for legacy in legacy_calls:
        kinds = [str(r.kind) for r in legacy.requests]
        assert kinds.count("create") == 1
        assert kinds.count("disconnect") == 1
        assert legacy.duplicates <= 1  # the turn in flight at the kill, answered from its record
        assert len(legacy.turns) == TURNS  # every input forwarded once: none lost, none twice


async def test_a_rolling_restart_of_every_instance_loses_nothing(
    deployed: tuple[Fleet, Nginx], vg_sim: VGEndpointSim, legacy_sim: LegacyEndpointSim
) -> None:
    fleet, nginx = deployed
    turns = 56  # 14 s a call: long enough for three restarts one after the other
    answers: dict[str, list[int]] = {}
    async with aiohttp.ClientSession() as http:
        calls = asyncio.gather(
            *(_call(http, nginx.url, "v" if n % 2 else "l", answers, turns) for n in range(CALLS))
        )
        await asyncio.sleep(GAP_S * 2)
        for instance in fleet.instances:  # SIGTERM, start, next
            await asyncio.to_thread(instance.stop)
            await asyncio.to_thread(instance.start)
            # nginx skips an instance that refused a connection for fail_timeout (1 s, on a
            # clock of whole seconds): the next one goes down once this one is back in nginx
            await asyncio.sleep(NGINX_FAIL_TIMEOUT_S + 1)
        await calls
        taken = 0.0
        for instance in fleet.instances:
            async with http.get(f"{instance.url}/metrics") as reply:
                text = await reply.text()
            taken += sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("acvg_takeovers_total{") and 'reason="handoff"' in line
            )

    assert len(answers) == CALLS
    failed = {c: _bad(s) for c, s in answers.items() if _bad(s)}
    assert failed == {}, failed
    assert taken > 0  # the restarts did hand calls over (counted by the instances now up)
    for call in vg_sim.calls.values():
        types = [m.get("type") for m in call.received]
        assert types.count("session:new") == 1
        assert types.count("verb:hook") == turns - 1  # exactly once each: a handoff cuts nothing
        assert types[-1] == "call:status"
    for legacy in legacy_sim.calls.values():
        assert legacy.duplicates == 0
        assert len(legacy.turns) == turns


class _WsCall:
    """VAIC in WebSocket mode through nginx: on a dropped socket it reconnects (nginx picks an
    instance) and sends `session.resume`, then the turn in flight again, same activity id."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.url = base.replace("http", "ws", 1) + "/ac/v"
        self.conversation = str(uuid.uuid4())
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.answered = 0
        self.resumed = 0

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_json({"conversationId": self.conversation, **message})

    async def _receive(self) -> dict[str, Any]:
        assert self.ws is not None
        msg = await asyncio.wait_for(self.ws.receive(), 15)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket {msg.type.name}")
        message: dict[str, Any] = json.loads(msg.data)
        return message

    async def _open(self, first: dict[str, Any]) -> None:
        self.ws = await self.http.ws_connect(self.url, headers=AUTH)
        await self._send(first)
        reply = await self._receive()
        assert reply["type"] == "session.accepted", reply

    async def run(self, turns: int) -> None:
        await self._open(
            {
                "type": "session.initiate",
                "expectAudioMessages": False,
                "supportedMediaFormats": ["raw/lpcm16"],
                "caller": SCENARIO.caller,
            }
        )
        for turn in range(turns):
            activity = step_activity(SCENARIO.steps[min(turn, 1)], SCENARIO, self.conversation)
            stamped = stamp(activity, datetime.now(UTC))
            for _ in range(3):
                try:
                    await self._send({"type": "activities", "activities": [stamped]})
                    reply = await self._receive()
                    break
                except (ConnectionError, aiohttp.ClientError):
                    self.resumed += 1
                    await self._open({"type": "session.resume"})
            else:
                raise AssertionError("the turn was never answered")
            assert reply["type"] == "activities" and reply["activities"], reply
            self.answered += 1
            await asyncio.sleep(GAP_S)
        await self._send({"type": "session.end", "reasonCode": "client-disconnected"})
        assert self.ws is not None
        while not self.ws.closed:  # the bot closes the socket once the session ended
            await asyncio.wait_for(self.ws.receive(), 10)


async def test_websocket_mode_calls_through_nginx_resume_after_a_kill(
    deployed: tuple[Fleet, Nginx], vg_sim: VGEndpointSim
) -> None:
    fleet, nginx = deployed
    async with aiohttp.ClientSession() as http:
        callers = [_WsCall(http, nginx.url) for _ in range(WS_CALLS)]
        calls = asyncio.gather(*(caller.run(TURNS) for caller in callers))
        await asyncio.sleep(TURNS * GAP_S / 3)
        _, killed = await _kill_busiest(http, fleet, nginx)
        await calls

    assert [c.answered for c in callers] == [TURNS] * WS_CALLS
    assert sum(c.resumed for c in callers) == killed  # those on the killed instance
    assert len(vg_sim.calls) == WS_CALLS
    for call in vg_sim.calls.values():
        types = [m.get("type") for m in call.received]
        assert types.count("session:new") == 1
        assert types.count("session:reconnect") <= 1
        assert TURNS - 1 <= types.count("verb:hook") <= TURNS
        assert types[-1] == "call:status"


async def test_websocket_mode_calls_move_at_a_sigterm_and_resume_elsewhere(
    deployed: tuple[Fleet, Nginx], vg_sim: VGEndpointSim
) -> None:
    """SIGTERM hands WebSocket-mode calls off too: their sockets close with 1001, VAIC resumes
    through nginx on another instance, which takes the call over from the store; the Voice
    Gateway app sees `session:reconnect`, and every turn reaches it exactly once."""
    fleet, nginx = deployed
    async with aiohttp.ClientSession() as http:
        callers = [_WsCall(http, nginx.url) for _ in range(WS_CALLS)]
        calls = asyncio.gather(*(caller.run(TURNS) for caller in callers))
        await asyncio.sleep(TURNS * GAP_S / 3)
        async with http.get(f"{nginx.url}/admin/cluster", headers=ADMIN) as reply:
            status = await reply.json()
        busiest = max(status["instances"], key=lambda i: i["calls"])
        assert busiest["calls"] > 0
        victim = next(i for i in fleet.instances if i.name == busiest["id"])
        await asyncio.to_thread(victim.stop)  # SIGTERM: a drain that hands off
        await calls
        assert "handed" in victim.log()

    assert [c.answered for c in callers] == [TURNS] * WS_CALLS
    assert sum(c.resumed for c in callers) == busiest["calls"]
    assert len(vg_sim.calls) == WS_CALLS
    for call in vg_sim.calls.values():
        types = [m.get("type") for m in call.received]
        assert types.count("session:new") == 1
        assert types.count("session:reconnect") <= 1
        assert types.count("verb:hook") == TURNS - 1  # a handoff cuts nothing, repeats nothing
        assert types[-1] == "call:status"


class _AsyncCall:
    """VAIC in HTTP async mode through nginx: turns answered at once, outputs pushed on the
    conversation's socket; a dropped socket is connected again (nginx picks the instance)."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.conversation = str(uuid.uuid4())
        self.url = f"{base}/ac/va/conversation/{self.conversation}"
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pushed = 0  # turns whose outputs were pushed
        self.reconnects = 0

    async def _connect(self) -> None:
        url = self.url.replace("http", "ws", 1) + "/websocket"
        for _ in range(50):  # the takeover waits out the dead owner's lease
            try:
                self.ws = await self.http.ws_connect(url, headers=AUTH)
                return
            except aiohttp.WSServerHandshakeError:
                await asyncio.sleep(0.2)
        raise AssertionError("the push socket never connected again")

    async def _outputs(self) -> bool:
        """Wait for this turn's pushed outputs; False when the socket dropped first."""
        assert self.ws is not None
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), 10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                return False
            if json.loads(msg.data)["activities"]:
                return True

    async def run(self, turns: int) -> None:
        async with self.http.post(
            f"{self.base}/ac/va", json={"conversation": self.conversation}, headers=AUTH
        ) as reply:
            assert reply.status == 200
        await self._connect()
        for turn in range(turns):
            activity = step_activity(SCENARIO.steps[min(turn, 1)], SCENARIO, self.conversation)
            body = {"activities": [stamp(activity, datetime.now(UTC))]}
            async with self.http.post(f"{self.url}/activities", json=body, headers=AUTH) as r:
                assert r.status == 200, await r.text()
            if await self._outputs():
                self.pushed += 1
            else:  # its instance died: this turn's outputs went with it
                self.reconnects += 1
                await self._connect()
            await asyncio.sleep(GAP_S)
        async with self.http.post(f"{self.url}/disconnect", json={}, headers=AUTH) as r:
            assert r.status == 200


async def test_async_mode_push_sockets_reconnect_to_the_new_owner(
    deployed: tuple[Fleet, Nginx], vg_sim: VGEndpointSim
) -> None:
    fleet, nginx = deployed
    async with aiohttp.ClientSession() as http:
        callers = [_AsyncCall(http, nginx.url) for _ in range(WS_CALLS)]
        calls = asyncio.gather(*(caller.run(TURNS) for caller in callers))
        await asyncio.sleep(TURNS * GAP_S / 3)
        _, killed = await _kill_busiest(http, fleet, nginx)
        await calls

    assert sum(c.reconnects for c in callers) == killed  # those on the killed one
    for caller in callers:  # every turn's outputs pushed, but the one in flight at the kill
        assert caller.pushed >= TURNS - caller.reconnects
    assert len(vg_sim.calls) == WS_CALLS
    for call in vg_sim.calls.values():
        types = [m.get("type") for m in call.received]
        assert types.count("session:new") == 1
        assert TURNS - 1 <= types.count("verb:hook") <= TURNS
        assert types[-1] == "call:status"
