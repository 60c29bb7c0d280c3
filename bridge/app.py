"""The aiohttp application: typed app keys, the live-call registry and lifetimes.

`create_app(config)` builds everything one gateway instance owns; background work (expiry of
idle conversations, closing calls at shutdown) is started and stopped in `cleanup_ctx`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from bridge.audiocodes.conversation import Conversation
from bridge.audiocodes.streaming import StreamingSession
from bridge.config import Config, Route
from bridge.divergence import DivergenceLog
from bridge.legacy_path import LegacyPath
from bridge.mapping.engine import Engine
from bridge.mapping.loader import load_mappings
from bridge.metrics import Metrics
from bridge.path import CallInfo, CallPath, PathName, PathSink, PathStartError
from bridge.session import CallSession
from bridge.shadow import drain_closing
from bridge.vg_path import SocketOpener, VoiceGatewayPath, open_vg_socket

log = logging.getLogger("bridge.app")
EXPIRY_SCAN_S = 5.0


class CallRegistry:
    """Live calls by (route, conversation id)."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], CallSession] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, route: str, conversation_id: str) -> CallSession | None:
        return self._calls.get((route, conversation_id))

    def add(self, session: CallSession) -> bool:
        key = (session.route_name, session.conversation.conversation_id)
        if key in self._calls:
            return False
        self._calls[key] = session
        return True

    def remove(self, session: CallSession) -> None:
        self._calls.pop((session.route_name, session.conversation.conversation_id), None)

    def all(self) -> list[CallSession]:
        return list(self._calls.values())

    async def expire(self, now: float) -> int:
        """End and drop calls idle longer than their conversation allows."""
        expired = [call for call in self._calls.values() if call.expired(now)]
        for call in expired:
            self.remove(call)
            await call.expire()
            await call.close()
        return len(expired)


class Gateway:
    """What one running bridge holds: config, mappings, metrics, upstream clients, live calls."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics,
        engine: Engine,
        opener: SocketOpener,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.config_path = config_path
        self.listen_override: str | None = None  # `serve --listen`, kept across reloads
        self.metrics = metrics
        self.opener = opener
        self.calls = CallRegistry()
        self.http: aiohttp.ClientSession | None = None  # legacy upstreams; opened at startup
        settings = config.divergence_log
        self.divergence = DivergenceLog(
            Path(settings.path) if settings.path else None,
            sample_rate=settings.sample_rate,
            max_bytes=settings.max_bytes,
        )
        # WebSocket-mode calls by (route, conversation): what `session.resume` reattaches to.
        self.streams: dict[tuple[str, str], tuple[StreamingSession, CallSession]] = {}

    def swap(self, config: Config, engine: Engine) -> None:
        """Atomically switch to a new config and mappings; calls in flight keep theirs."""
        self.config, self.engine = config, engine

    def make_path(self, name: PathName, info: CallInfo, sink: PathSink) -> CallPath:
        if name == "voicegateway":
            return VoiceGatewayPath(info, sink, self.engine, self.opener)
        if self.http is None:
            raise PathStartError("not_ready", "the legacy client is not running")
        return LegacyPath(info, sink, self.http)

    def new_call(
        self,
        route_name: str,
        route: Route,
        conversation_id: str,
        *,
        conversation: Conversation | None = None,
        expiry: Callable[[float], bool] | None = None,
    ) -> CallSession:
        return CallSession(
            route_name=route_name,
            route=route,
            conversation_id=conversation_id,
            metrics=self.metrics,
            make_path=self.make_path,
            mappings=self.engine.mappings,
            divergence=self.divergence,
            conversation=conversation,
            expiry=expiry,
        )

    def prune_streams(self) -> None:
        for key in [key for key in self.streams if self.calls.get(*key) is None]:
            del self.streams[key]


GatewayKey = web.AppKey("gateway", Gateway)


def create_app(
    config: Config,
    *,
    metrics: Metrics | None = None,
    engine: Engine | None = None,
    opener: SocketOpener = open_vg_socket,
    config_path: Path | None = None,
) -> web.Application:
    """Build the gateway application for `config`."""
    from bridge.transport.http import add_routes

    if engine is None:
        engine = Engine(load_mappings(Path(config.mappings) if config.mappings else None))
    gateway = Gateway(
        config, metrics=metrics or Metrics(), engine=engine, opener=opener, config_path=config_path
    )
    app = web.Application(client_max_size=config.max_body_bytes)
    app[GatewayKey] = gateway
    add_routes(app)
    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(_expiry_loop)
    return app


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GatewayKey]
    # TLS to upstreams is verified (aiohttp's default); no cookies shared between calls.
    gateway.http = aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30),
    )
    yield
    await gateway.http.close()
    gateway.divergence.close()


async def _expiry_loop(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GatewayKey]
    loop = asyncio.get_running_loop()

    async def scan() -> None:
        while True:
            await asyncio.sleep(EXPIRY_SCAN_S)
            try:
                await gateway.calls.expire(loop.time())
                gateway.prune_streams()
            except Exception:
                log.exception("expiry scan failed")

    task = asyncio.create_task(scan())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    for call in gateway.calls.all():
        gateway.calls.remove(call)
        await call.close()
    await drain_closing()
