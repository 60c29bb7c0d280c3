"""The HTTP surface (design §2.2): VAIC-facing routes and operations endpoints.

Turns requests into calls on the session and protocol errors into JSON errors with the right
status and a counter; never lets one request's failure touch another call.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge.app import Gateway, GatewayKey
from bridge.audiocodes import wire as ac
from bridge.audiocodes.conversation import parse_create
from bridge.config import Route
from bridge.errors import AudioCodesProtocolError
from bridge.session import CallSession
from bridge.transport.admin import add_admin_routes
from bridge.transport.vaic_ws import vaic_socket

log = logging.getLogger("bridge.http")
UNKNOWN_ROUTE = "_unknown"
JSON_DUMPS = json.dumps

Handler = Callable[[web.Request, Gateway, str, Route], Awaitable[web.StreamResponse]]


def error_response(status: int, reason: str, message: str) -> web.Response:
    """The JSON error body every rejection uses: a bounded code and a readable message."""
    return web.json_response({"error": reason, "message": message}, status=status)


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def _route_handler(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Resolve the route, check the bearer token, map protocol errors to JSON errors."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        gateway = request.app[GatewayKey]
        name = request.match_info["route"]
        route = gateway.config.routes.get(name)
        rejected = gateway.metrics.rejected_requests
        if route is None:
            rejected.labels(UNKNOWN_ROUTE, "not_found").inc()
            return error_response(404, "not_found", "unknown route")
        if not _authorized(request, route.token):
            rejected.labels(name, "auth").inc()
            return error_response(401, "auth", "missing or invalid bearer token")
        try:
            return await handler(request, gateway, name, route)
        except AudioCodesProtocolError as exc:
            rejected.labels(name, exc.reason).inc()
            return error_response(exc.status, exc.reason, exc.message)
        except web.HTTPRequestEntityTooLarge:
            rejected.labels(name, "too_large").inc()
            limit = gateway.config.max_body_bytes
            return error_response(413, "too_large", f"request body exceeds {limit} bytes")
        except Exception:
            log.exception("request failed on route %s", name)
            rejected.labels(name, "internal").inc()
            return error_response(500, "internal", "internal error; the call may continue")

    return wrapped


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AudioCodesProtocolError(f"body is not valid JSON: {exc}") from None


def _session(gateway: Gateway, route: str, request: web.Request) -> CallSession:
    session = gateway.calls.get(route, request.match_info["conversation"])
    if session is None:
        raise AudioCodesProtocolError("unknown conversation", status=404, reason="not_found")
    return session


async def probe(
    request: web.Request, gateway: Gateway, name: str, route: Route
) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await vaic_socket(request, gateway, name, route)
    return web.json_response(ac.probe_response())


async def create(request: web.Request, gateway: Gateway, name: str, route: Route) -> web.Response:
    conversation_id = parse_create(await _json_body(request))
    session = gateway.new_call(name, route, conversation_id)
    if not gateway.calls.add(session):
        raise AudioCodesProtocolError("conversation already exists", status=409, reason="conflict")
    base = f"{gateway.config.public_url or ''}/ac/{name}"
    return web.json_response(
        ac.create_response(base, conversation_id, route.expires_seconds, websocket=route.async_mode)
    )


async def activities(
    request: web.Request, gateway: Gateway, name: str, route: Route
) -> web.Response:
    session = _session(gateway, name, request)
    body = await _json_body(request)
    return web.json_response(await session.receive_activities(body), dumps=JSON_DUMPS)


async def refresh(request: web.Request, gateway: Gateway, name: str, route: Route) -> web.Response:
    session = _session(gateway, name, request)
    return web.json_response(session.receive_refresh(await _json_body(request)))


async def disconnect(
    request: web.Request, gateway: Gateway, name: str, route: Route
) -> web.Response:
    session = _session(gateway, name, request)
    body = await _json_body(request)
    result = await session.receive_disconnect(body)
    gateway.calls.remove(session)
    await session.close()
    return web.json_response(result)


class PushSocket:
    """The HTTP-mode push channel: `{"conversation": ID, "activities": [...]}` text frames."""

    carries_responses = False

    def __init__(self, ws: web.WebSocketResponse, conversation_id: str) -> None:
        self._ws = ws
        self._conversation_id = conversation_id

    async def push(self, outputs: list[dict[str, object]]) -> None:
        if self._ws.closed:
            raise ConnectionError("push socket closed")
        frame = ac.activities_response(self._conversation_id, outputs)
        try:
            await self._ws.send_str(JSON_DUMPS(frame))
        except (ConnectionError, RuntimeError) as exc:
            raise ConnectionError(str(exc)) from exc

    async def close(self) -> None:
        await self._ws.close()


async def push_socket(
    request: web.Request, gateway: Gateway, name: str, route: Route
) -> web.StreamResponse:
    session = _session(gateway, name, request)
    ws = web.WebSocketResponse(autoping=True)
    await ws.prepare(request)
    channel = PushSocket(ws, session.conversation.conversation_id)
    await session.attach_push(channel)
    try:
        async for _ in ws:  # VAIC sends nothing meaningful here (audiocodes-bot-api.md §1.6)
            pass
    finally:
        session.detach_push(channel)
    return ws


async def metrics(request: web.Request) -> web.Response:
    body = request.app[GatewayKey].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app[GatewayKey]
    return web.json_response({"status": "ready", "calls": len(gateway.calls)})


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Router-level rejections (no such path, wrong method) answer JSON like the rest."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = {404: "not_found", 405: "bad_method", 413: "too_large"}.get(
            exc.status, "bad_request"
        )
        request.app[GatewayKey].metrics.rejected_requests.labels(UNKNOWN_ROUTE, reason).inc()
        return error_response(exc.status, reason, exc.reason)


def add_routes(app: web.Application) -> None:
    app.middlewares.append(json_errors)
    add_admin_routes(app)
    conv = "/ac/{route}/conversation/{conversation}"
    app.add_routes(
        [
            web.get("/ac/{route}", _route_handler(probe)),
            web.post("/ac/{route}", _route_handler(create)),
            web.post(f"{conv}/activities", _route_handler(activities)),
            web.post(f"{conv}/refresh", _route_handler(refresh)),
            web.post(f"{conv}/disconnect", _route_handler(disconnect)),
            web.get(f"{conv}/websocket", _route_handler(push_socket)),
            web.get("/metrics", metrics),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
        ]
    )
