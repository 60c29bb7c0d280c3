"""The aiohttp application: typed app keys, the live-call registry and lifetimes.

`create_app(config)` builds everything one gateway instance owns; background work (expiry of
idle conversations, closing calls at shutdown) is started and stopped in `cleanup_ctx`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from bridge.audiocodes.streaming import StreamingSession
from bridge.config import Config
from bridge.mapping.engine import Engine
from bridge.mapping.loader import load_mappings
from bridge.metrics import Metrics
from bridge.session import CallSession, SocketOpener, _open

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
    """What one running bridge holds: config, engine, metrics and the live calls."""

    def __init__(self, config: Config, *, metrics: Metrics, engine: Engine, opener: SocketOpener):
        self.config = config
        self.metrics = metrics
        self.engine = engine
        self.opener = opener
        self.calls = CallRegistry()
        # WebSocket-mode calls by (route, conversation): what `session.resume` reattaches to.
        self.streams: dict[tuple[str, str], tuple[StreamingSession, CallSession]] = {}

    def prune_streams(self) -> None:
        for key in [key for key in self.streams if self.calls.get(*key) is None]:
            del self.streams[key]


GatewayKey = web.AppKey("gateway", Gateway)


def create_app(
    config: Config,
    *,
    metrics: Metrics | None = None,
    engine: Engine | None = None,
    opener: SocketOpener = _open,
) -> web.Application:
    """Build the gateway application for `config`."""
    from bridge.transport.http import add_routes

    if engine is None:
        engine = Engine(load_mappings(Path(config.mappings) if config.mappings else None))
    gateway = Gateway(config, metrics=metrics or Metrics(), engine=engine, opener=opener)
    app = web.Application(client_max_size=config.max_body_bytes)
    app[GatewayKey] = gateway
    add_routes(app)
    app.cleanup_ctx.append(_expiry_loop)
    return app


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
