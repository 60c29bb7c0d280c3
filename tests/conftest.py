"""Shared fixtures: a running bridge on 127.0.0.1 with a config built per test."""

from __future__ import annotations

import gc
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from bridge.app import GatewayKey, create_app
from bridge.config import Config, parse_config
from bridge.logs import configure_logging
from bridge.sim.redis_server import RedisServer, running_redis


@pytest.fixture(autouse=True, scope="module")
def _short_gc_pauses() -> None:
    """What earlier test modules left alive is moved out of the collector's way: in one long
    test process a full collection walked it all and paused the loop for up to 400 ms, enough to
    cut a timed turn (turn_settle_ms) short in a test that otherwise passes."""
    gc.collect()
    gc.freeze()


@dataclass
class RunningBridge:
    """A bridge served on loopback, with a client session for VAIC-side requests."""

    app: web.Application
    url: str
    http: aiohttp.ClientSession

    def metric(self, name: str, **labels: str) -> float:
        value = self.app[GatewayKey].metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def route_config(vg_url: str, *, token: str = "tok", **route: Any) -> Config:
    """A one-route config whose route `r` is served by the voicegateway at `vg_url`."""
    body = {"token": token, "voicegateway": {"url": vg_url}, **route}
    return parse_config(yaml.safe_dump({"routes": {"r": body}}), env={})


BridgeFactory = Callable[[Config], Awaitable[RunningBridge]]


@pytest.fixture
async def bridge_factory() -> AsyncIterator[BridgeFactory]:
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(config: Config) -> RunningBridge:
        app = create_app(config)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        http = aiohttp.ClientSession()
        sessions.append(http)
        return RunningBridge(app, f"http://127.0.0.1:{port}", http)

    yield start
    for http in sessions:
        await http.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1 for this test."""
    with running_redis(tmp_path / "redis") as server:
        yield server


@contextmanager
def logging_into(level: str) -> Iterator[io.StringIO]:
    """configure_logging(`level`) into a buffer; the root logger's state is restored after."""
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    frames = logging.getLogger("websockets")
    frames_level = frames.level
    stream = io.StringIO()
    configure_logging(level, stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(root_level)
        frames.setLevel(frames_level)
