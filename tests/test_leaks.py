"""No task, socket or session outlives its call: many calls through a bridge with both paths and
shadow on, ended every way a call ends (VAIC disconnect, bot hangup, WebSocket `session.end`,
expiry, a crashing Voice Gateway), then the live-call state, tasks, sockets and gauges are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import bridge as bridge_package
from bridge import shadow
from bridge.app import GatewayKey, create_app
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.vg_endpoint import VGEndpointSim
from tests.conftest import RunningBridge
from tests.test_legacy_path import (
    LEGACY_TOKEN,
    SCENARIOS,
    Caller,
    assert_passed,
    eventually,
    make_config,
    play_all,
    samples,
    total,
)
from tests.test_lifecycle import SCENARIO, ws_call
from tests.test_shadow import shadowed_route

BRIDGE_DIR = Path(bridge_package.__file__).resolve().parent
SIM_DIR = BRIDGE_DIR / "sim"
# The app's own background tasks while it runs (the expiry scan, the core budget's watch).
FIXED_TASKS = {"scan", "watch", "run_plans"}  # expiry, core budget, migration plans


@pytest.fixture
async def sims() -> AsyncIterator[tuple[VGEndpointSim, LegacyEndpointSim, LegacyEndpointSim]]:
    async with (
        VGEndpointSim() as vg,
        LegacyEndpointSim(token=LEGACY_TOKEN) as legacy,
        LegacyEndpointSim(token=LEGACY_TOKEN, async_mode=True) as legacy_async,
    ):
        yield vg, legacy, legacy_async


def live_tasks() -> set[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if not t.done() and t is not current}


def code_file(task: asyncio.Task[Any]) -> Path | None:
    code = getattr(task.get_coro(), "cr_code", None)
    return Path(code.co_filename).resolve() if code is not None else None


def bridge_tasks() -> list[str]:
    """What the bridge itself (not the simulators) still runs, beyond its fixed tasks."""
    found = []
    for task in live_tasks():
        file = code_file(task)
        if file is None or SIM_DIR in file.parents or BRIDGE_DIR not in file.parents:
            continue
        name = getattr(task.get_coro(), "__qualname__", "?")
        if name.rsplit(".", 1)[-1] not in FIXED_TASKS:
            found.append(name)
    return found


def library_tasks(library: str) -> list[str]:
    return [
        getattr(t.get_coro(), "__qualname__", "?")
        for t in live_tasks()
        if (file := code_file(t)) is not None and f"/{library}/" in str(file)
    ]


def open_fds() -> set[str]:
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd, already closed
            fds.add(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}")
    return fds


def tcp_ports_of_open_sockets() -> list[tuple[int, int, str]]:
    """(local port, remote port, state) of this process's TCP sockets."""
    inodes = {
        target[len("socket:[") : -1]
        for entry in open_fds()
        if (target := entry.split(":", 1)[1]).startswith("socket:[")
    }
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[9] in inodes:
                    local = int(fields[1].rsplit(":", 1)[1], 16)
                    remote = int(fields[2].rsplit(":", 1)[1], 16)
                    found.append((local, remote, fields[3]))
    return found


def connections_to(*ports: int) -> list[tuple[int, int, str]]:
    """Open TCP connections (either end) on `ports`, listening sockets left out."""
    listening = "0A"
    return [
        s for s in tcp_ports_of_open_sockets() if s[2] != listening and {s[0], s[1]} & set(ports)
    ]


async def none_left(leftovers: Callable[[], Collection[object]], timeout: float = 10) -> None:
    """Wait until `leftovers()` is empty; fail naming what is left."""
    with contextlib.suppress(TimeoutError):
        await eventually(lambda: not leftovers(), timeout)
    assert not leftovers(), leftovers()


async def hangup_arrives(caller: Caller, turns: int = 20) -> bool:
    """VAIC keeps talking until the bridge hangs up (each turn answered at the latest at the
    turn timeout)."""
    for _ in range(turns):
        reply = await caller.step(SCENARIO, 1)
        if any(a.get("name") == "hangup" for a in reply):
            return True
    return False


async def test_calls_ended_every_way_leave_nothing_behind(
    sims: tuple[VGEndpointSim, LegacyEndpointSim, LegacyEndpointSim],
) -> None:
    vg_sim, legacy_sim, legacy_async = sims
    baseline_fds = open_fds()
    baseline_tasks = live_tasks()
    crash_sim = VGEndpointSim()
    await crash_sim.start()
    config = make_config(
        {
            "vg": shadowed_route("voicegateway", legacy_sim.url(), vg_sim.url()),
            "legacy": shadowed_route("legacy", legacy_async.url(), vg_sim.url()),
            "push": shadowed_route(
                "voicegateway", legacy_async.url(), vg_sim.url(), async_mode=True
            ),
            "crash": {
                **shadowed_route("voicegateway", legacy_sim.url(), crash_sim.url()),
                "voicegateway": {
                    "url": crash_sim.url(),
                    "reconnect": {"max_retries": 1, "initial_backoff_ms": 10},
                },
                "turn_timeout_ms": 1000,
            },
        }
    )
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    http = aiohttp.ClientSession()
    bridge = RunningBridge(app, url, http)
    gateway = app[GatewayKey]
    try:
        # calls that will expire, and calls whose Voice Gateway will crash
        idle = [Caller(bridge, "vg"), Caller(bridge, "legacy")]
        crashing = [Caller(bridge, "crash"), Caller(bridge, "crash")]
        for caller in (*idle, *crashing):
            await caller.create()
            assert len(await caller.step(SCENARIO, 0)) == 2
        dropped_ws = await ws_call(url, "vg", http)
        await dropped_ws.close()  # no session.end: held for a resume, then expires

        # every shipped scenario (disconnects, bot hangups, transfers) over HTTP and WebSocket
        some = list(SCENARIOS.values())[:4]
        results = await asyncio.gather(
            play_all(bridge, SCENARIOS.values(), route="vg"),
            play_all(bridge, SCENARIOS.values(), route="legacy", transport="ws"),
            play_all(bridge, some, route="push", async_mode=True),
        )
        for played in results:
            assert_passed(played)
        calls = 2 * len(SCENARIOS) + len(some) + len(idle) + len(crashing) + 1
        assert calls >= 30

        # the Voice Gateway endpoint crashes: its calls get a hangup (once reconnecting failed),
        # then VAIC hangs up
        await crash_sim.stop()
        for caller in crashing:
            assert await hangup_arrives(caller)
            await caller.step(SCENARIO, len(SCENARIO.steps) - 1)

        await eventually(lambda: len(gateway.calls) == len(idle) + 1)
        loop = asyncio.get_running_loop()
        assert await gateway.expire_idle(loop.time() + 10_000) == len(idle) + 1

        # nothing of any call is left
        assert len(gateway.calls) == 0
        assert gateway.streams == {}
        await none_left(lambda: shadow._closing)  # shadows finishing after their call
        await none_left(bridge_tasks)
        await none_left(lambda: library_tasks("websockets"))
        await none_left(lambda: connections_to(vg_sim.port, crash_sim.port))
        for sim in (legacy_sim, legacy_async):
            assert all(not c.active for c in sim.calls.values())
            assert not any(c.socket_connected.is_set() for c in sim.calls.values())
        active = samples(bridge, "acvg_calls_active")
        assert active and all(value == 0 for value in active.values()), active
        started = total(bridge, "acvg_calls_started_total", role="primary")
        assert started == total(bridge, "acvg_calls_ended_total", role="primary") == calls
        shadows = total(bridge, "acvg_calls_started_total", role="shadow")
        assert shadows == total(bridge, "acvg_calls_ended_total", role="shadow") > 0
    finally:
        await http.close()
        await runner.cleanup()
        await crash_sim.stop()

    # once the bridge is gone, the process is back where it started
    await none_left(lambda: live_tasks() - baseline_tasks)
    await none_left(lambda: open_fds() ^ baseline_fds)
