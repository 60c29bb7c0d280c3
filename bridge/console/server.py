"""The migration console's HTTP side: the page, its data endpoints, the live stream, steering.

`GET /console` and `GET /console/static/NAME` serve the self-contained page; they hold no data
and load without a token, so the page can show its login form. Every data endpoint needs
`Authorization: Bearer <admin_token>` — 401 without it, 403 when the config has no admin token —
and rejections are counted under the route label `_admin`, like the admin API:

- `GET /console/api/state`: routes (policy, split, readiness, latency), thresholds, history,
  audit, and `fleet` (null for one instance without a shared store);
- `GET /console/api/divergences?route=&node=&limit=`: recent non-matching items, newest first;
- `GET /console/api/stream`: `text/event-stream`, `state` every second, `divergences` when new;
- `POST /console/api/routes/{route}/migration`: `{"voicegateway_percent": N}` and/or
  `{"force": "legacy" | "voicegateway" | null}`.

At app creation the override file beside the config is applied, so a restarted bridge keeps what
the console changed; a background task samples the metrics into the history every few seconds.

With a shared store the figures, the history and the divergences are the fleet's, whichever
instance serves the page (bridge/console/exchange.py shares them): `fleet` lists the live
instances and says whether the figures are the fleet's (`"figures": "fleet"`) or, while Redis
cannot be read, this instance's only (`"local"`, with `"store": "down"` when Redis is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.app import Gateway, GatewayKey
from bridge.cluster import Cluster
from bridge.console.exchange import Exchange
from bridge.console.figures import Figures, read_figures
from bridge.console.fleet import announce_steering, fleet_sync
from bridge.console.history import FleetReading, History, figures_reading
from bridge.console.plan import get_plan, plan_loop, post_plan, rollout_for
from bridge.console.plan import prepare as prepare_plans
from bridge.console.steering import AuditLog, SteeringError, audit_path, parse_change, steer
from bridge.console.view import (
    divergence_items,
    fleet_view,
    merged_entries,
    route_views,
    thresholds,
)
from bridge.reload import apply_overrides, overrides_path, read_overrides
from bridge.store import RedisStore

__all__ = ["ADMIN_NAME", "Console", "ConsoleKey", "add_console_routes"]

STATIC_DIR = Path(__file__).parent / "static"
ADMIN_ROUTE = "_admin"  # the rejection label of the admin API
ADMIN_NAME = "admin"  # `who` in the audit log for the admin token
SAMPLE_EVERY_S = 5.0
STREAM_EVERY_S = 1.0
DIVERGENCES_SENT = 200
MAX_LIMIT = 500
STATUS_FRESH_S = 1.0  # how long the fleet's membership read for one state is reused
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class Console:
    """The console's state in one app: history, audit log, stream pacing and its stop signal;
    with a shared store, what the fleet shares (`exchange`) and its membership, as last read."""

    audit: AuditLog
    history: History = field(default_factory=History)
    stream_every_s: float = STREAM_EVERY_S
    sample_every_s: float = SAMPLE_EVERY_S
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    exchange: Exchange | None = None
    fleet_reading: FleetReading = field(default_factory=FleetReading)
    _status: dict[str, Any] | None = None
    _status_at: float = 0.0
    _status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def sample(self, gateway: Gateway, local: Figures | None = None) -> None:
        """Take this instance's figures (`local`, or read now) into the history; with a shared
        store, with the other instances' as last read."""
        reading = figures_reading(read_figures(gateway.metrics) if local is None else local)
        exchange = self.exchange
        if exchange is not None:
            others = exchange.others if exchange.others_read else {}
            readings = {name: figures_reading(f) for name, f in others.items()}
            reading = self.fleet_reading.observe({**readings, exchange.instance_id: reading})
        self.history.observe(reading, time.time())

    async def fleet_status(self, cluster: Cluster) -> dict[str, Any]:
        """`cluster.status()`, read at most once per `STATUS_FRESH_S` however many ask."""
        async with self._status_lock:
            if self._status is None or time.monotonic() - self._status_at >= STATUS_FRESH_S:
                self._status = await cluster.status()
                self._status_at = time.monotonic()
            return self._status

    def audit_for(self, gateway: Gateway) -> AuditLog:
        """The audit log beside the gateway's config file now (it may be set after startup)."""
        wanted = audit_path(gateway.config_path) if gateway.config_path is not None else None
        if self.audit.path != wanted:
            self.audit = AuditLog(wanted)
        return self.audit


ConsoleKey = web.AppKey("console", Console)
Handler = Callable[[web.Request, Gateway], Awaitable[web.StreamResponse]]


def _error(gateway: Gateway, status: int, code: str, message: str) -> web.Response:
    if status in (401, 403):
        gateway.metrics.rejected_requests.labels(ADMIN_ROUTE, code).inc()
    return web.json_response({"error": code, "message": message}, status=status)


def _admin_only(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        gateway = request.app[GatewayKey]
        token = gateway.config.admin_token
        if not token:
            return _error(gateway, 403, "admin_disabled", "admin API disabled (no admin_token)")
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            return _error(gateway, 401, "auth", "missing or invalid admin bearer token")
        return await handler(request, gateway)

    return wrapped


# ---------------------------------------------------------------- the page


def _static_files() -> dict[str, Path]:
    return {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in _TYPES}


async def page(request: web.Request) -> web.Response:
    return _file(STATIC_DIR / "index.html")


async def static(request: web.Request) -> web.Response:
    found = _static_files().get(request.match_info["name"])
    if found is None:
        return web.json_response({"error": "not_found", "message": "no such file"}, status=404)
    return _file(found)


def _file(path: Path) -> web.Response:
    return web.Response(
        body=path.read_bytes(), headers={"Content-Type": _TYPES[path.suffix], **_PAGE_HEADERS}
    )


# ---------------------------------------------------------------- data


async def _fleet(console: Console, gateway: Gateway, local: Figures) -> tuple[Any, Figures]:
    """The state's `fleet` and the figures its routes show (this instance's without a shared
    store)."""
    exchange = console.exchange
    if exchange is None:
        return None, local
    status = dict(await console.fleet_status(gateway.cluster))
    mine = gateway.cluster.info().as_json()  # this instance's entry, fresh rather than as beaten
    status["instances"] = sorted(
        [i for i in status["instances"] if i["id"] != mine["id"]] + [mine], key=lambda i: i["id"]
    )
    return fleet_view(status, local, exchange.others, others_read=exchange.others_read)


async def _state(request: web.Request, gateway: Gateway) -> dict[str, Any]:
    console = request.app[ConsoleKey]
    local = read_figures(gateway.metrics)
    console.sample(gateway, local)
    fleet, figures = await _fleet(console, gateway, local)
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "thresholds": thresholds(gateway.config.console),
        "steerable": gateway.config_path is not None,
        "draining": gateway.draining,
        "routes": route_views(gateway.config, figures),
        "fleet": fleet,
        "history": {
            "step_s": console.history.step_s,
            "span_s": console.history.span_s,
            "samples": [s.to_json() for s in console.history.samples()],
        },
        "audit": console.audit_for(gateway).recent(50),
        "plans": _plans(request.app, console),
    }


def _plans(app: web.Application, console: Console) -> list[dict[str, Any]]:
    rollout = rollout_for(app, console.audit_for)
    return [rollout.describe(name) for name in rollout.names()]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


async def state(request: web.Request, gateway: Gateway) -> web.Response:
    return _json(await _state(request, gateway))


def _fleet_readable(console: Console, gateway: Gateway) -> Exchange | None:
    """The exchange to read the fleet's divergences from, unless Redis is known to be down (a
    console request should not wait out its timeout)."""
    return console.exchange if gateway.cluster.store_up else None


async def _divergence_entries(console: Console, gateway: Gateway) -> list[Mapping[str, Any]]:
    """This instance's divergence entries, with the fleet's when a shared store answers (those
    of this instance not pushed yet, or lost with a restarted Redis, are still in its ring)."""
    local: list[Mapping[str, Any]] = list(gateway.divergence.recent(limit=1_000_000))
    exchange = _fleet_readable(console, gateway)
    fleet = None if exchange is None else await exchange.divergences()
    return local if fleet is None else merged_entries(fleet, local)


async def divergences(request: web.Request, gateway: Gateway) -> web.Response:
    query = request.query
    raw_limit = query.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        return _error(gateway, 400, "bad_request", f"limit: must be 1 to {MAX_LIMIT}")
    route = query.get("route") or None
    if route is not None and route not in gateway.config.routes:
        return _error(gateway, 400, "bad_request", f"route: no route {route!r}")
    items = divergence_items(
        await _divergence_entries(request.app[ConsoleKey], gateway),
        route=route,
        node=query.get("node") or None,
        limit=int(raw_limit),
    )
    return _json({"divergences": items})


async def _divergence_mark(console: Console, gateway: Gateway) -> str:
    newest = gateway.divergence.recent(1)
    mark = ""
    if newest:
        entry = newest[0]
        mark = f"{entry.get('time')}|{entry.get('conversation_id')}|{entry.get('turn')}"
    exchange = _fleet_readable(console, gateway)
    fleet = None if exchange is None else await exchange.divergence_mark()
    return mark if fleet is None else f"{mark}|fleet:{fleet}"


def _event(name: str, body: Any) -> bytes:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"event: {name}\ndata: {data}\n\n".encode()


async def stream(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    console = request.app[ConsoleKey]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    mark: str | None = None
    try:
        while not console.stopping.is_set():
            await response.write(_event("state", await _state(request, gateway)))
            now_mark = await _divergence_mark(console, gateway)
            if now_mark != mark:
                mark = now_mark
                items = divergence_items(
                    await _divergence_entries(console, gateway), limit=DIVERGENCES_SENT
                )
                await response.write(_event("divergences", {"divergences": items}))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(console.stopping.wait(), console.stream_every_s)
    except (ConnectionResetError, ConnectionError):
        return response
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def migration(request: web.Request, gateway: Gateway) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return _error(gateway, 400, "bad_request", "the body is not JSON")
    try:
        change = parse_change(body)
        result = steer(
            gateway,
            request.match_info["route"],
            change,
            who=ADMIN_NAME,
            audit=request.app[ConsoleKey].audit_for(gateway),
            at=datetime.now(UTC),
        )
    except SteeringError as exc:
        return _error(gateway, exc.status, exc.code, exc.message)
    await announce_steering(gateway, request.app[ConsoleKey].audit_for(gateway), len(change))
    return _json({"status": "changed", **result})


async def plan_state(request: web.Request, gateway: Gateway) -> web.Response:
    return await get_plan(request, gateway, rollout_for(request.app, _audit_of(request)))


async def plan_action(request: web.Request, gateway: Gateway) -> web.Response:
    audit = _audit_of(request)
    return await post_plan(request, gateway, rollout_for(request.app, audit), audit(gateway))


def _audit_of(request: web.Request) -> Any:
    return request.app[ConsoleKey].audit_for


# ---------------------------------------------------------------- wiring


def _apply_saved_overrides(gateway: Gateway) -> None:
    """A restart keeps the console's changes: the override file goes over the loaded config."""
    if gateway.config_path is None:
        return
    file = overrides_path(gateway.config_path)
    overrides = read_overrides(file)
    if overrides:
        gateway.swap(apply_overrides(gateway.config, overrides, file=str(file)), gateway.engine)


def add_console_routes(app: web.Application) -> None:
    """Register the console on an app that holds a `GatewayKey` (see the module doc).

    Raises ConfigError when the override file beside the config is invalid.
    """
    gateway = app[GatewayKey]
    _apply_saved_overrides(gateway)
    path = gateway.config_path
    app[ConsoleKey] = Console(
        AuditLog(audit_path(path) if path is not None else None), exchange=_exchange_for(gateway)
    )
    app.add_routes(
        [
            web.get("/console", page),
            web.get("/console/", page),
            web.get("/console/static/{name}", static),
            web.get("/console/api/state", _admin_only(state)),
            web.get("/console/api/divergences", _admin_only(divergences)),
            web.get("/console/api/stream", _admin_only(stream)),
            web.post("/console/api/routes/{route}/migration", _admin_only(migration)),
            web.get("/admin/plan", _admin_only(plan_state)),
            web.post("/admin/plan", _admin_only(plan_action)),
        ]
    )
    app.cleanup_ctx.append(_sampler)
    app.cleanup_ctx.append(_sharing)
    app.cleanup_ctx.append(fleet_sync(app[ConsoleKey].audit_for))
    prepare_plans(app, app[ConsoleKey].audit_for)  # before the app starts (and freezes)
    app.cleanup_ctx.append(plan_loop(app[ConsoleKey].audit_for))
    app.on_shutdown.append(_stop_streams)


def _exchange_for(gateway: Gateway) -> Exchange | None:
    cluster = gateway.cluster
    store = cluster.store
    if not isinstance(store, RedisStore):
        return None
    # counted like every other failed store operation (acvg_store_errors_total{op})
    on_error = cluster._store_error
    return Exchange(store.client, cluster.instance_id, cluster.lease_s, on_error)


async def _stop_streams(app: web.Application) -> None:
    app[ConsoleKey].stopping.set()


async def _sampler(app: web.Application) -> AsyncIterator[None]:
    console, gateway = app[ConsoleKey], app[GatewayKey]

    # Named like the app's expiry scan: one fixed background task per app, for its lifetime.
    async def scan() -> None:
        while True:
            console.sample(gateway)
            await asyncio.sleep(console.sample_every_s)

    task = asyncio.create_task(scan())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sharing(app: web.Application) -> AsyncIterator[None]:
    """With a shared store: this instance's divergences and figures go to the fleet, until the
    app shuts down (bridge/console/exchange.py)."""
    console, gateway = app[ConsoleKey], app[GatewayKey]
    exchange = console.exchange
    if exchange is None:
        yield
        return
    gateway.divergence.on_record = exchange.offer
    task = asyncio.create_task(
        exchange.run(lambda: read_figures(gateway.metrics), console.stopping)
    )
    yield
    gateway.divergence.on_record = None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
