"""Lifecycle: a drain (SIGTERM in `serve`, or `Gateway.drain`) and the expiry of idle calls.

A drain fails readiness and refuses new conversations (HTTP create and WebSocket initiate) while
calls in flight keep being served; at the drain timeout the rest end cleanly: VAIC gets a
`hangup` (push channel, or the next response), the Voice Gateway gets `call:status` completed and
close 1000, the legacy bot its disconnect. Expired calls end the same way toward the upstreams.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bridge.app import GatewayKey
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.scenario import Scenario, bot_url_for, step_activity
from bridge.sim.vaic import StreamingVaicClient, VaicClient
from bridge.sim.vg_endpoint import SimCall, VGEndpointSim
from tests.conftest import BridgeFactory, RunningBridge
from tests.test_legacy_path import (
    LEGACY_TOKEN,
    SCENARIOS,
    TOKEN,
    Caller,
    eventually,
    legacy_upstream,
    make_config,
    total,
)

REPO = Path(__file__).resolve().parent.parent
SCENARIO: Scenario = SCENARIOS["spoken_answer"]  # step 1 can be repeated: the flow loops
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def vg_sim() -> AsyncIterator[VGEndpointSim]:
    async with VGEndpointSim() as sim:
        yield sim


@pytest.fixture
async def legacy_sim() -> AsyncIterator[LegacyEndpointSim]:
    async with LegacyEndpointSim(token=LEGACY_TOKEN) as sim:
        yield sim


def names(activities: list[dict[str, Any]]) -> list[str]:
    return [str(a.get("name") if a.get("type") == "event" else a.get("type")) for a in activities]


async def ws_call(base_url: str, route: str, session: aiohttp.ClientSession) -> StreamingVaicClient:
    """A started WebSocket-mode call (its greeting consumed)."""
    client = StreamingVaicClient(bot_url_for(base_url, route), TOKEN, session=session)
    reply = await client.initiate(caller=SCENARIO.caller)
    assert reply["type"] == "session.accepted", reply
    assert client.conversation_id is not None
    await client.send([step_activity(SCENARIO.steps[0], SCENARIO, client.conversation_id)])
    assert await client.next_activities(10) is not None
    return client


async def ws_turn(client: StreamingVaicClient) -> list[dict[str, Any]]:
    assert client.conversation_id is not None
    await client.send([step_activity(SCENARIO.steps[1], SCENARIO, client.conversation_id)])
    message = await client.next_activities(10)
    assert message is not None
    activities: list[dict[str, Any]] = message["activities"]
    return activities


def vg_call(sim: VGEndpointSim, call_sid: str) -> SimCall:
    return sim.calls[call_sid]


async def ended_cleanly(call: SimCall) -> None:
    """The Voice Gateway side saw `call:status` completed, then the socket closed with 1000."""
    await asyncio.wait_for(call.closed.wait(), 15)
    statuses = [m["data"]["call_status"] for m in call.messages("call:status")]
    assert statuses[-1] == "completed", statuses
    assert call.close_code == 1000


def live_call_sids(bridge: RunningBridge) -> dict[str, str]:
    """conversation id -> call sid of the calls the bridge holds."""
    gateway = bridge.app[GatewayKey]
    return {c.conversation.conversation_id: c.call_sid for c in gateway.calls.all()}


# ---------------------------------------------------------------- Gateway.drain in process


async def test_drain_refuses_new_calls_serves_calls_in_flight_then_ends_the_rest(
    bridge_factory: BridgeFactory, vg_sim: VGEndpointSim, legacy_sim: LegacyEndpointSim
) -> None:
    config = make_config(
        {
            "vg": {"voicegateway": {"url": vg_sim.url()}},
            "legacy": {"legacy": legacy_upstream(legacy_sim)},
        }
    )
    bridge = await bridge_factory(config)
    gateway = bridge.app[GatewayKey]
    http_vg, http_legacy, leaving = (
        Caller(bridge, "vg"),
        Caller(bridge, "legacy"),
        Caller(bridge, "vg"),
    )
    for caller in (http_vg, http_legacy, leaving):
        await caller.create()
        assert len(await caller.step(SCENARIO, 0)) == 2
    ws = await ws_call(bridge.url, "vg", bridge.http)
    sids = live_call_sids(bridge)

    drain = asyncio.create_task(gateway.drain(1.0, grace_s=30))
    await eventually(lambda: gateway.draining)
    async with bridge.http.get(bridge.url + "/readyz") as resp:
        assert resp.status == 503 and (await resp.json())["status"] == "draining"
    async with bridge.http.get(bridge.url + "/healthz") as resp:
        assert resp.status == 200
    # new conversations are refused, both ways in
    async with bridge.http.post(
        bridge.url + "/ac/vg", json={"conversation": "new-1"}, headers=HEADERS
    ) as resp:
        assert resp.status == 503 and (await resp.json())["error"] == "draining"
    async with StreamingVaicClient(
        bot_url_for(bridge.url, "vg"), TOKEN, session=bridge.http
    ) as new:
        refused = await new.initiate(caller=SCENARIO.caller)
        assert refused["type"] == "session.error"
        assert await new.end(wait=10)
        assert new.close_code == 1008
    assert total(bridge, "acvg_rejected_requests_total", reason="draining") == 2
    assert gateway.calls.get("vg", "new-1") is None

    # calls in flight are still served: their turns are answered by their flows
    for caller in (http_vg, http_legacy):
        answer = await caller.step(SCENARIO, 1)
        assert answer[0]["text"] == "You said What are your opening hours."
    assert (await ws_turn(ws))[0]["text"] == "You said What are your opening hours."
    # one caller hangs up within the drain timeout: an ordinary end, not a drained one
    await leaving.step(SCENARIO, len(SCENARIO.steps) - 1)
    await ended_cleanly(vg_call(vg_sim, sids[leaving.conversation_id]))

    # at the drain timeout the rest end cleanly toward the upstreams...
    await ended_cleanly(vg_call(vg_sim, sids[http_vg.conversation_id]))
    await ended_cleanly(vg_call(vg_sim, sids[ws.conversation_id or ""]))
    legacy = legacy_sim.call(http_legacy.conversation_id)
    await asyncio.wait_for(legacy.ended.wait(), 15)
    assert legacy.disconnect is not None and legacy.disconnect["reason"] == "service shutting down"
    # ...and VAIC gets a hangup: pushed on the WebSocket, in the next response over HTTP
    pushed = await ws.next_activities(10)
    assert pushed is not None and names(pushed["activities"]) == ["hangup"]
    for caller in (http_vg, http_legacy):
        assert names(await caller.step(SCENARIO, 1)) == ["hangup"]
        await caller.step(SCENARIO, len(SCENARIO.steps) - 1)
    assert await ws.end(wait=10)

    assert await asyncio.wait_for(drain, 15) == 3
    assert len(gateway.calls) == 0 and gateway.streams == {}
    ended = {
        (path, reason): total(
            bridge, "acvg_calls_ended_total", path=path, role="primary", reason=reason
        )
        for path in ("voicegateway", "legacy")
        for reason in ("drained", "client_disconnected")
    }
    assert ended == {
        ("voicegateway", "drained"): 2,
        ("voicegateway", "client_disconnected"): 1,
        ("legacy", "drained"): 1,
        ("legacy", "client_disconnected"): 0,
    }
    assert total(bridge, "acvg_calls_active") == 0
    await ws.close()


async def test_calls_left_after_the_grace_are_closed_and_the_drain_returns(
    bridge_factory: BridgeFactory, vg_sim: VGEndpointSim
) -> None:
    bridge = await bridge_factory(make_config({"r": {"voicegateway": {"url": vg_sim.url()}}}))
    gateway = bridge.app[GatewayKey]
    silent = Caller(bridge)
    await silent.create()
    await silent.step(SCENARIO, 0)
    sid = live_call_sids(bridge)[silent.conversation_id]
    # VAIC never comes back for its hangup: the call is closed after the grace anyway
    assert await gateway.drain(0, grace_s=0) == 1
    await ended_cleanly(vg_call(vg_sim, sid))
    assert len(gateway.calls) == 0
    assert total(bridge, "acvg_calls_ended_total", reason="drained") == 1
    assert total(bridge, "acvg_calls_active") == 0
    reply = await silent.client.send([{"type": "message", "text": "hello?"}])
    assert reply.status == 404


# ---------------------------------------------------------------- SIGTERM in `serve`


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def readiness(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url + "/readyz") as resp:
        return resp.status, await resp.json()


@contextlib.asynccontextmanager
async def serving(
    vg_sim: VGEndpointSim, tmp_path: Path, drain_timeout_s: float, loop: str = "asyncio"
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`python -m bridge serve` in a subprocess (route `r` on `vg_sim`), once it is ready."""
    port = free_port()
    route = {"token": TOKEN, "turn_settle_ms": 100, "voicegateway": {"url": vg_sim.url()}}
    config = {
        "listen": f"127.0.0.1:{port}",
        "drain_timeout_s": drain_timeout_s,
        "routes": {"r": route},
    }
    config_file = tmp_path / "bridge.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with (tmp_path / "bridge.log").open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", "--config", str(config_file),
            "--loop", loop, cwd=REPO, env=env, stdout=log_file, stderr=log_file,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http, asyncio.timeout(30):
                while True:
                    with contextlib.suppress(aiohttp.ClientConnectionError):
                        if (await readiness(http, url))[0] == 200:
                            break
                    await asyncio.sleep(0.05)
            yield proc, url
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def http_call(url: str, http: aiohttp.ClientSession) -> VaicClient:
    """A started HTTP-mode call on route `r` (its greeting consumed)."""
    caller = VaicClient(bot_url_for(url, "r"), TOKEN, session=http)
    assert (await caller.create()).status == 200
    assert caller.conversation_id is not None
    start = step_activity(SCENARIO.steps[0], SCENARIO, caller.conversation_id)
    assert len((await caller.send([start])).activities) == 2
    return caller


async def until_draining(http: aiohttp.ClientSession, url: str, calls: int) -> None:
    async with asyncio.timeout(10):
        while (await readiness(http, url)) != (503, {"status": "draining", "calls": calls}):
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_sigterm_drains_then_exits_zero(
    vg_sim: VGEndpointSim, tmp_path: Path, loop: str
) -> None:
    async with serving(vg_sim, tmp_path, drain_timeout_s=3, loop=loop) as (proc, url):
        async with aiohttp.ClientSession() as http:
            caller = await http_call(url, http)
            assert caller.conversation_id is not None
            ws = await ws_call(url, "r", http)
            assert len(vg_sim.calls) == 2

            proc.send_signal(signal.SIGTERM)
            await until_draining(http, url, calls=2)
            refused = await VaicClient(bot_url_for(url, "r"), TOKEN, session=http).create()
            assert refused.status == 503 and refused.body["error"] == "draining"
            # the calls in flight still get their turns answered
            say = step_activity(SCENARIO.steps[1], SCENARIO, caller.conversation_id)
            answer = (await caller.send([say])).activities
            assert answer[0]["text"] == "You said What are your opening hours."
            assert (await ws_turn(ws))[0]["text"] == "You said What are your opening hours."

            # drain timeout: both end cleanly upstream, and VAIC gets its hangups
            for sim_call in vg_sim.calls.values():
                await ended_cleanly(sim_call)
            pushed = await ws.next_activities(10)
            assert pushed is not None and names(pushed["activities"]) == ["hangup"]
            say = step_activity(SCENARIO.steps[1], SCENARIO, caller.conversation_id)
            assert names((await caller.send([say])).activities) == ["hangup"]
            # counted once the upstream end completed, which may be just after VAIC's hangup
            drained = 'reason="drained",role="primary",route="r"} 2.0'
            async with asyncio.timeout(10):
                while True:
                    async with http.get(url + "/metrics") as resp:
                        exposition = await resp.text()
                    if any(
                        line.startswith("acvg_calls_ended_total") and line.endswith(drained)
                        for line in exposition.splitlines()
                    ):
                        break
                    await asyncio.sleep(0.05)
            assert (await caller.disconnect("bot-disconnected", "hangup")).status == 200
            assert await ws.end(wait=10)
            await ws.close()
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_a_second_signal_cuts_the_drain_short(vg_sim: VGEndpointSim, tmp_path: Path) -> None:
    async with serving(vg_sim, tmp_path, drain_timeout_s=3600) as (proc, url):
        async with aiohttp.ClientSession() as http:
            await http_call(url, http)
            proc.send_signal(signal.SIGTERM)
            await until_draining(http, url, calls=1)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    # the call left was still ended cleanly toward the Voice Gateway
    (sim_call,) = vg_sim.calls.values()
    await ended_cleanly(sim_call)


# ---------------------------------------------------------------- expiry


async def test_expired_calls_end_cleanly_on_both_paths(
    bridge_factory: BridgeFactory, vg_sim: VGEndpointSim, legacy_sim: LegacyEndpointSim
) -> None:
    config = make_config(
        {
            "vg": {"voicegateway": {"url": vg_sim.url()}},
            "legacy": {"legacy": legacy_upstream(legacy_sim)},
        }
    )
    bridge = await bridge_factory(config)
    gateway = bridge.app[GatewayKey]
    http_vg, http_legacy = Caller(bridge, "vg"), Caller(bridge, "legacy")
    for caller in (http_vg, http_legacy):
        await caller.create()
        await caller.step(SCENARIO, 0)
    # a WebSocket-mode call whose socket dropped without `session.end`: held for a resume
    ws = await ws_call(bridge.url, "vg", bridge.http)
    await ws.close()
    assert ws.conversation_id is not None
    await eventually(
        lambda: gateway.streams[("vg", ws.conversation_id or "")][0].state == "detached"
    )
    sids = live_call_sids(bridge)
    assert len(gateway.streams) == 1

    loop = asyncio.get_running_loop()
    assert await gateway.expire_idle(loop.time()) == 0
    assert await gateway.expire_idle(loop.time() + 10_000) == 3

    assert len(gateway.calls) == 0 and gateway.streams == {}
    for conversation in (http_vg.conversation_id, ws.conversation_id):
        await ended_cleanly(vg_call(vg_sim, sids[conversation]))
    legacy = legacy_sim.call(http_legacy.conversation_id)
    assert legacy.disconnect is not None and legacy.disconnect["reason"] == "conversation expired"
    assert total(bridge, "acvg_calls_ended_total", reason="expired") == 3
    assert total(bridge, "acvg_calls_active") == 0
    reply = await http_vg.client.send([{"type": "message", "text": "still there?"}])
    assert reply.status == 404
