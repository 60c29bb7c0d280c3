"""The aiohttp application: typed app keys, the live-call registry and lifetimes.

`create_app(config)` builds everything one gateway instance owns; background work (expiry of
idle conversations, ending calls at shutdown) is started and stopped in `cleanup_ctx`. `drain`
is the graceful stop: readiness fails, no new calls, calls in flight finish or end cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bridge import handoff, jsontext
from bridge.audiocodes.conversation import Conversation
from bridge.audiocodes.streaming import StreamingSession
from bridge.budget import CoreBudget, watch
from bridge.cluster import Cluster
from bridge.config import Config, Route
from bridge.created import CreatedCalls
from bridge.divergence import DivergenceLog
from bridge.legacy_path import LegacyPath
from bridge.limits import CallCounter
from bridge.mapping.engine import Engine
from bridge.mapping.loader import load_mappings
from bridge.metrics import Metrics
from bridge.path import CallInfo, CallPath, PathName, PathSink, PathStartError
from bridge.recording import Journals
from bridge.session import CallSession
from bridge.shadow import drain_closing
from bridge.tls import build_ssl_context
from bridge.transport.vg import VoiceGatewayClient, socket_opener
from bridge.vg_path import SocketOpener, VoiceGatewayPath

log = logging.getLogger("bridge.app")
EXPIRY_SCAN_S = 5.0
# After the drain timeout, calls ended by the drain wait this long for VAIC to fetch the hangup
# (an HTTP-mode call without push socket gets it in its next response) and hang up.
HANGUP_GRACE_S = 5.0
# While draining with a shared store, how often calls adopted meanwhile are handed off too.
_HANDOFF_ROUND_S = 0.25


class CallRegistry:
    """Live calls by (route, conversation id)."""

    def __init__(self, on_remove: Callable[[str, str], None] = lambda route, cid: None) -> None:
        self._calls: dict[tuple[str, str], CallSession] = {}
        self._on_remove = on_remove
        self._empty = asyncio.Event()  # set while no call is registered (what a drain waits for)
        self._empty.set()
        self._per_route = CallCounter()

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, route: str, conversation_id: str) -> CallSession | None:
        return self._calls.get((route, conversation_id))

    def add(self, session: CallSession) -> bool:
        key = (session.route_name, session.conversation.conversation_id)
        if key in self._calls:
            return False
        self._calls[key] = session
        self._empty.clear()
        self._per_route.add(session.route_name)
        return True

    def remove(self, session: CallSession, *, ended: bool = True) -> None:
        """Drop a call; `ended=False`: it goes on elsewhere (handoff), its record stays."""
        key = (session.route_name, session.conversation.conversation_id)
        if self._calls.get(key) is session:
            del self._calls[key]
            self._per_route.remove(session.route_name)
            if not self._calls:
                self._empty.set()
            if ended:
                self._on_remove(*key)

    def count(self, route: str) -> int:
        """Live calls on `route` (what `max_calls` limits)."""
        return self._per_route.count(route)

    def all(self) -> list[CallSession]:
        return list(self._calls.values())

    async def until_empty(self, timeout_s: float) -> bool:
        """Wait (bounded) until no call is registered; returns whether none is."""
        if self._calls:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._empty.wait(), timeout_s)
        return not self._calls

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
        self.calls = CallRegistry(on_remove=self._forget_record)
        self._background: set[asyncio.Task[Any]] = set()
        self._adopting: dict[tuple[str, str], asyncio.Lock] = {}
        self.http: aiohttp.ClientSession | None = None  # legacy upstreams; opened at startup
        self.budget = CoreBudget()  # fed once a second by `_budget_watch`
        settings = config.divergence_log
        self.divergence = DivergenceLog(
            Path(settings.path) if settings.path else None,
            sample_rate=settings.sample_rate,
            max_bytes=settings.max_bytes,
        )
        # WebSocket-mode calls by (route, conversation): what `session.resume` reattaches to.
        self.streams: dict[tuple[str, str], tuple[StreamingSession, CallSession]] = {}
        # Set once by `drain`: readiness fails and new conversations are refused from then on.
        self.draining = False
        self.cluster = Cluster(
            config.cluster,
            metrics,
            calls=lambda: len(self.calls),
            listen_url=f"http://{config.listen}",
        )
        self.cluster.on_store_back = self._store_back
        self.created = CreatedCalls()  # with a shared store: created here, first turn not yet
        self.cluster.on_beat = self._check_created
        self.journals = Journals(lambda reason: metrics.journal_dropped.labels(reason).inc())
        self._rewriting: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def adoption_lock(self, route: str, conversation_id: str) -> AsyncIterator[None]:
        """One adoption at a time per conversation on this instance (two requests of an
        orphaned call must not both resume its upstream)."""
        key = (route, conversation_id)
        lock = self._adopting.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._adopting.get(key) is lock:
                del self._adopting[key]

    def _forget_record(self, route: str, conversation_id: str) -> None:
        """An ended call's record leaves the shared store (in the background: never awaited
        by the request that ended the call)."""
        if not self.cluster.shared:
            return
        task = asyncio.get_running_loop().create_task(
            handoff.forget(self.cluster, route, conversation_id)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _check_created(self) -> None:
        if len(self.created):
            written = await self.created.check(
                self.cluster.store, asyncio.get_running_loop().time()
            )
            if written:
                log.info("state store: %d new conversation record(s) written again", written)

    def _store_back(self) -> None:
        if self._rewriting is None or self._rewriting.done():
            self._rewriting = asyncio.get_running_loop().create_task(self._rewrite_records())

    async def _rewrite_records(self) -> None:
        """The store is back (or came back empty): every call here gets its record again, so
        the fleet can find it (a call created while Redis was down included). A call another
        instance took over meanwhile leaves this one without being ended: it goes on there."""
        calls = self.calls.all()
        results = await asyncio.gather(
            *(handoff.rewrite(self.cluster, c.route_name, c.route, c) for c in calls),
            return_exceptions=True,
        )
        written = sum(1 for r in results if r is True)
        for call, result in zip(calls, results, strict=True):
            if result is False and await self._leave(call):
                log.warning("a call was taken over elsewhere while the store was away")
        if calls:
            log.info("state store back: %d of %d call record(s) written again", written, len(calls))

    def swap(self, config: Config, engine: Engine) -> None:
        """Atomically switch to a new config and mappings; calls in flight keep theirs.

        The divergence log takes the new `sample_rate`; its file and size limit, like the
        other start-up-only settings, never change here (`reload.check_reloadable`)."""
        self.config, self.engine = config, engine
        self.divergence.sample_rate = config.divergence_log.sample_rate

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
        transport: str = "http",
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
            budget=self.budget,
            on_turn=self._save_turn if self.cluster.shared else None,
            journals=self.journals,
            transport=transport,
        )

    async def _save_turn(self, call: CallSession) -> None:
        """A turn's outputs are complete: its state goes to the shared store before VAIC gets
        them, so a takeover from here on loses nothing VAIC was told. A call another instance
        took over meanwhile (this one was thought dead) is left after this turn: its record is
        the new owner's, and its next request goes there."""
        if await handoff.save_started(self.cluster, call.route_name, call.route, call):
            return
        log.warning("a call was taken over by another instance: it leaves this one")
        task = asyncio.get_running_loop().create_task(self._leave(call))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _leave(
        self,
        call: CallSession,
        publish: Callable[[dict[str, Any]], Awaitable[bool]] | None = None,
    ) -> bool:
        """The call leaves this instance without ending upstream, once its turn in flight is
        over (`hand_off` takes the turn lock) and `publish` took its state (default: another
        instance owns it already, nothing to write)."""
        if not await call.hand_off(publish or _already_elsewhere):
            return False
        self.calls.remove(call, ended=False)
        key = (call.route_name, call.conversation.conversation_id)
        held = self.streams.get(key)
        if held is not None and held[1] is call:
            del self.streams[key]
        return True

    def prune_streams(self) -> None:
        for key in [key for key in self.streams if self.calls.get(*key) is None]:
            del self.streams[key]

    async def _hand_off_calls(self, *, report_none: bool = True) -> None:
        """Drain as handoff: every call whose state the store takes leaves this instance at
        once, without ending upstream; its next request lands elsewhere and continues. A
        WebSocket-mode call's socket is closed with 1001 (going away): VAIC connects again and
        resumes the session (`session.resume`) on whichever instance it reaches."""
        calls = list(self.calls.all())

        async def one(call: CallSession) -> bool:
            async def publish(state: dict[str, object]) -> bool:
                return await handoff.release(
                    self.cluster, call.route_name, call.route, call.conversation, dict(state)
                )

            return await self._leave(call, publish)

        results = await asyncio.gather(*(one(call) for call in calls), return_exceptions=True)
        handed = sum(1 for r in results if r is True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("handing a call off failed", exc_info=result)
        if calls and (handed or report_none):
            log.info("drain: handed %d of %d call(s) to the fleet", handed, len(calls))

    async def _hand_off_while_draining(self, timeout_s: float) -> None:
        """Hand calls off until none is left or `timeout_s` is up: a call adopted during the
        drain (no live peer could take its request then) goes at the next round."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        first = True
        while True:
            await self._hand_off_calls(report_none=first)
            first = False
            left = deadline - loop.time()
            if left <= 0 or not len(self.calls):
                return
            await self.calls.until_empty(min(_HANDOFF_ROUND_S, left))

    def forget(self, call: CallSession) -> None:
        """Drop an ended call from the registry and from the WebSocket-mode streams."""
        self.calls.remove(call)
        key = (call.route_name, call.conversation.conversation_id)
        held = self.streams.get(key)
        if held is not None and held[1] is call:
            del self.streams[key]

    async def expire_idle(self, now: float) -> int:
        """End and forget the conversations idle longer than they may be."""
        expired = await self.calls.expire(now)
        self.prune_streams()
        return expired

    async def drain(self, timeout_s: float, *, grace_s: float = HANGUP_GRACE_S) -> int:
        """Stop taking calls; calls in flight get `timeout_s` to end on their own, then the
        rest end cleanly (`CallSession.drain_end`) and VAIC gets `grace_s` to fetch their
        hangup and hang up; whatever is left is closed. Returns how many calls the drain ended.
        """
        if not self.draining:
            self.draining = True
            log.info("draining: new conversations refused, %d call(s) in flight", len(self.calls))
            if self.cluster.shared and self.cluster.store_up:
                self.cluster.draining = True
                await self.cluster.beat()  # peers stop sending this instance calls at once
                await self._hand_off_while_draining(timeout_s)
        await self.calls.until_empty(timeout_s)
        remaining = self.calls.all()
        if remaining:
            log.info("drain: ending the %d call(s) still in flight", len(remaining))
            ended = await asyncio.gather(
                *(call.drain_end() for call in remaining), return_exceptions=True
            )
            for result in ended:
                if isinstance(result, BaseException):
                    log.error("ending a call at drain failed", exc_info=result)
            await self.calls.until_empty(grace_s)
        for call in self.calls.all():
            self.forget(call)
            await call.close()
        self.prune_streams()
        await drain_closing()
        return len(remaining)


async def _already_elsewhere(state: dict[str, object]) -> bool:
    return True  # its record belongs to the instance that took it over: nothing to write


GatewayKey = web.AppKey("gateway", Gateway)
UpstreamSslKey = web.AppKey("upstream_ssl", ssl.SSLContext)


def create_app(
    config: Config,
    *,
    metrics: Metrics | None = None,
    engine: Engine | None = None,
    opener: SocketOpener | None = None,
    config_path: Path | None = None,
    budget: CoreBudget | None = None,
) -> web.Application:
    """Build the gateway application for `config`.

    `opener` replaces how Voice Gateway sockets are opened (tests); by default they use the
    upstream TLS context built from `config.tls` (ConfigError if its CA bundle is unusable).
    `budget` replaces the core budget (tests: their own window and CPU clock).
    """
    from bridge.transport.http import add_routes

    upstream_ssl = build_ssl_context(config.tls)
    if opener is None:
        opener = socket_opener(upstream_ssl)
    if engine is None:
        engine = Engine(load_mappings(Path(config.mappings) if config.mappings else None))
    gateway = Gateway(
        config, metrics=metrics or Metrics(), engine=engine, opener=opener, config_path=config_path
    )
    if budget is not None:
        gateway.budget = budget
    app = web.Application(client_max_size=config.max_body_bytes)
    app[GatewayKey] = gateway
    app[UpstreamSslKey] = upstream_ssl
    add_routes(app)
    app.cleanup_ctx.append(_journals)  # closed last: the drain's calls are written first
    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(_voicegateway_client)  # closed after the drain of _expiry_loop
    app.cleanup_ctx.append(_cluster)  # leaves the fleet after the drain of _expiry_loop
    app.cleanup_ctx.append(_expiry_loop)
    app.cleanup_ctx.append(_budget_watch)
    return app


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GatewayKey]
    # TLS to upstreams per `config.tls` (verified by default); no cookies shared between calls.
    gateway.http = aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        json_serialize=jsontext.dumps,
        connector=aiohttp.TCPConnector(
            limit=0, limit_per_host=0, keepalive_timeout=30, ssl=app[UpstreamSslKey]
        ),
    )
    yield
    await gateway.http.close()
    gateway.divergence.close()


async def _budget_watch(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GatewayKey]
    gateway.metrics.core_busy.set_function(lambda: gateway.budget.busy)
    task = asyncio.create_task(watch(gateway.budget))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _journals(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[GatewayKey].journals.close()


async def _cluster(app: web.Application) -> AsyncIterator[None]:
    """The heartbeat that keeps this instance's lease (only with a shared store)."""
    cluster = app[GatewayKey].cluster
    task = asyncio.create_task(cluster.run()) if cluster.shared else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await cluster.leave()
    await cluster.close()


async def _voicegateway_client(app: web.Application) -> AsyncIterator[None]:
    """The session every Voice Gateway socket of the gateway is opened on (when the gateway
    opens them itself: a test's own opener is its own business)."""
    opener = app[GatewayKey].opener
    client = opener if isinstance(opener, VoiceGatewayClient) else None
    if client is not None:
        await client.start()
    yield
    if client is not None:
        await client.close()


async def _expiry_loop(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GatewayKey]
    loop = asyncio.get_running_loop()

    async def scan() -> None:
        while True:
            await asyncio.sleep(EXPIRY_SCAN_S)
            try:
                await gateway.expire_idle(loop.time())
            except Exception:
                log.exception("expiry scan failed")

    task = asyncio.create_task(scan())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # Calls still live at shutdown (no drain, or a second signal) end cleanly all the same.
    await gateway.drain(0, grace_s=0)
