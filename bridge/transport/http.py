"""The HTTP surface (design §2.2): VAIC-facing routes and operations endpoints.

Turns requests into calls on the session and protocol errors into JSON errors with the right
status and a counter; never lets one request's failure touch another call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge import handoff, jsontext
from bridge.app import Gateway, GatewayKey
from bridge.audiocodes import wire as ac
from bridge.audiocodes.conversation import Conversation, InputKind, classify, parse_create
from bridge.config import Route
from bridge.console import add_console_routes
from bridge.errors import AudioCodesProtocolError, CallMoved
from bridge.limits import RateLimiter
from bridge.path import PathStartError
from bridge.session import CallSession
from bridge.store import CallKey, StoreUnavailable
from bridge.transport.admin import add_admin_routes
from bridge.transport.vaic_ws import vaic_socket

log = logging.getLogger("bridge.http")
UNKNOWN_ROUTE = "_unknown"
JSON_DUMPS = jsontext.dumps

Handler = Callable[[web.Request, Gateway, str, Route], Awaitable[web.StreamResponse]]
# Per-conversation request buckets of HTTP mode, keyed (route, conversation id).
RequestRatesKey = web.AppKey("request_rates", RateLimiter)
# Statuses a client should retry after a short wait.
_RETRY_AFTER = {429: "1", 503: "1"}


def error_response(status: int, reason: str, message: str) -> web.Response:
    """The JSON error body every rejection uses: a bounded code and a readable message."""
    retry_after = _RETRY_AFTER.get(status)
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.json_response({"error": reason, "message": message}, status=status, headers=headers)


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def _route_handler(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Resolve the route, check the bearer token, map protocol errors to JSON errors.

    A request on a live conversation is served by the route settings the call started with, so
    a reload that drops or changes the route leaves calls in flight as they were; its bearer
    may be the call's token or the route's current one (a rotation mid-call breaks nothing).
    """

    async def wrapped(request: web.Request) -> web.StreamResponse:
        gateway = request.app[GatewayKey]
        name = request.match_info["route"]
        current = gateway.config.routes.get(name)
        conversation = request.match_info.get("conversation")
        call = gateway.calls.get(name, conversation) if conversation is not None else None
        route = current if call is None else call.route
        rejected = gateway.metrics.rejected_requests
        if route is None:
            rejected.labels(UNKNOWN_ROUTE, "not_found").inc()
            return error_response(404, "not_found", "unknown route")
        if not (
            _authorized(request, route.token)
            or (
                current is not None and current is not route and _authorized(request, current.token)
            )
        ):
            rejected.labels(name, "auth").inc()
            return error_response(401, "auth", "missing or invalid bearer token")
        try:
            if call is None and conversation is not None and gateway.cluster.shared:
                elsewhere = await _claim(request, gateway, name, route, conversation)
                if elsewhere is not None:
                    return elsewhere
            try:
                return await handler(request, gateway, name, route)
            except CallMoved:
                # handed off while this request waited for it: serve it where the call went
                assert conversation is not None
                elsewhere = await _claim(request, gateway, name, route, conversation)
                if elsewhere is not None:
                    return elsewhere
                return await handler(request, gateway, name, route)
        except AudioCodesProtocolError as exc:
            rejected.labels(name, exc.reason).inc()
            return error_response(exc.status, exc.reason, exc.message)
        except web.HTTPRequestEntityTooLarge:
            rejected.labels(name, "too_large").inc()
            limit = gateway.config.max_body_bytes
            return error_response(413, "too_large", f"request body exceeds {limit} bytes")
        except ConnectionResetError:  # the client went away (e.g. during a socket handshake)
            rejected.labels(name, "bad_request").inc()
            return error_response(400, "bad_request", "the client closed the connection")
        except web.HTTPClientError as exc:  # e.g. an `Upgrade: websocket` that is no handshake
            rejected.labels(name, "bad_request").inc()
            return error_response(exc.status, "bad_request", exc.text or exc.reason)
        except Exception:
            log.exception("request failed on route %s", name)
            rejected.labels(name, "internal").inc()
            return error_response(500, "internal", "internal error; the call may continue")

    return wrapped


async def _claim(
    request: web.Request, gateway: Gateway, name: str, route: Route, conversation_id: str
) -> web.StreamResponse | None:
    """A conversation this instance does not hold: adopt it from the shared store (None: the
    handler goes on with it registered), or answer by forwarding it to its live owner.

    An owner that cannot be reached may have died with its lease still running: the request
    waits for the lease to lapse (at most `lease_s` + 1 s), then takes the call over."""
    cluster = gateway.cluster
    forwarded = handoff.FORWARDED_HEADER in request.headers
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    http = gateway.http
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cluster.lease_s + 1.0
    while True:
        if gateway.draining and not forwarded and not upgrade and http is not None:
            # a draining instance takes no call on: a live peer serves it (the last one
            # standing serves it itself, until its drain ends it)
            for peer in await handoff.live_peers(cluster, name, conversation_id):
                reply = await handoff.forward(request, http, peer, cluster, gateway.metrics, name)
                if reply is not None:
                    return reply
        if gateway.draining and upgrade and not forwarded:
            # a push socket for a call this instance handed off: VAIC connects again, and once
            # this instance has gone (at once) nginx sends it to the next one
            raise AudioCodesProtocolError(
                "the gateway is shutting down", status=503, reason="draining"
            )
        if gateway.draining and forwarded:
            # sent here before this instance handed the call off: the sender claims it now
            raise AudioCodesProtocolError(
                "this instance is handing its calls off", status=421, reason="not_here"
            )
        async with gateway.adoption_lock(name, conversation_id):
            held = gateway.calls.get(name, conversation_id)
            if held is not None and not held.handed_off:
                return None  # a concurrent request of the same call adopted it
            store_down = False
            try:
                found = await handoff.locate(cluster, name, route, conversation_id)
            except StoreUnavailable:
                found, store_down = None, True
            if isinstance(found, handoff.Adopted | handoff.Lost) and not forwarded:
                # the store came back empty: the "dead" owner may only have lost its lease with
                # it, and still serve the call (its next write makes the record its own again)
                offered = await _ask_previous_owner(request, gateway, name, conversation_id, found)
                if offered is not None:
                    return offered
            if isinstance(found, handoff.Adopted):
                return await _adopt(gateway, name, route, conversation_id, found)
        if found is None and not store_down:
            await cluster.check_lease()  # an emptied store, not yet noticed by the heartbeat?
        unsure = store_down or (found is None and cluster.store_settling())
        if unsure and not forwarded and http is not None:
            # unknown here, and the store cannot say where the call lives (down, or back but
            # not yet given every instance's records again): ask the peers last seen (a call
            # created while Redis was down lives only on the instance that made it)
            for peer in cluster.peers_to_ask():
                reply = await handoff.forward(request, http, peer, cluster, gateway.metrics, name)
                if reply is not None and reply.status not in (404, 503):
                    return reply
        if found is None and await _starts_the_call(request):
            # created here, and its record lost with the store's data before its first turn
            # (no peer has it): this instance serves it. Only for the start itself: a later
            # request means another instance started the call (its record is only missing
            # until that instance writes it again), and a second copy must never begin here.
            created = gateway.created.take(name, conversation_id, loop.time())
            if created is not None:
                log.info("a conversation created here lost its record: served here")
                adopted = handoff.Adopted(created, None)
                async with gateway.adoption_lock(name, conversation_id):
                    if gateway.calls.get(name, conversation_id) is None:
                        return await _adopt(gateway, name, route, conversation_id, adopted)
                return None
        if store_down:
            raise AudioCodesProtocolError(
                "the state store is unreachable; retry", status=503, reason="store_unavailable"
            )
        if isinstance(found, handoff.Lost) and request.path.endswith("/disconnect"):
            return web.json_response({})  # the call is over either way: nothing left to end
        if isinstance(found, handoff.Lost):
            raise AudioCodesProtocolError(
                "the instance serving this call was lost; the call cannot continue",
                status=404,
                reason="owner_lost",
            )
        if not isinstance(found, handoff.OwnedElsewhere):
            return None
        if http is None:
            return None
        if upgrade:
            # a socket cannot be forwarded: the call comes here instead (its owner hands it
            # off), so the instance nginx picks for it serves it from now on
            asked = await handoff.request_handoff(
                http, found.owner, name, conversation_id, request.headers.get("Authorization")
            )
            if asked:
                continue
            raise AudioCodesProtocolError(  # e.g. not started yet: VAIC connects again later
                "this conversation is served by another instance, which did not hand it off; retry",
                status=409,
                reason="wrong_instance",
            )
        if not forwarded:  # forwarded once already: never bounce it on
            reply = await handoff.forward(
                request, http, found.owner, cluster, gateway.metrics, name
            )
            if reply is not None:
                return reply
        if loop.time() >= deadline:
            raise AudioCodesProtocolError(
                "the instance serving this call is unreachable; retry",
                status=503,
                reason="owner_unreachable",
            )
        await asyncio.sleep(handoff.OWNER_POLL_S)


async def _starts_the_call(request: web.Request) -> bool:
    """Whether the request is the conversation's first turn (its activities begin with the
    `start` event)."""
    if request.method != "POST" or not request.path.endswith("/activities"):
        return False
    try:
        body = await request.json(loads=jsontext.loads)
    except ValueError:
        return False
    activities = body.get("activities") if isinstance(body, dict) else None
    if not isinstance(activities, list) or not activities or not isinstance(activities[0], dict):
        return False
    return classify(activities[0]) is InputKind.START


async def _ask_previous_owner(
    request: web.Request,
    gateway: Gateway,
    name: str,
    conversation_id: str,
    found: handoff.Adopted | handoff.Lost,
) -> web.Response | None:
    """While the store settles, a call just claimed from an instance seen alive before is
    first offered back to it; its answer, if it still holds the call, is the answer."""
    cluster, http = gateway.cluster, gateway.http
    owner = next((p for p in cluster.peers if p.id == found.previous_owner), None)
    if owner is None or http is None or not cluster.store_settling():
        return None
    reply = await handoff.forward(request, http, owner, cluster, gateway.metrics, name)
    if reply is None or reply.status in (404, 503):
        return None
    with contextlib.suppress(StoreUnavailable):
        await cluster.store.release(CallKey(name, conversation_id), cluster.instance_id)
    return reply


async def _adopt(
    gateway: Gateway, name: str, route: Route, conversation_id: str, found: handoff.Adopted
) -> web.StreamResponse | None:
    """Serve a conversation from its record: a fresh one as is, a started one by resuming its
    path (Voice Gateway: `session:reconnect`)."""
    gateway.created.drop(name, conversation_id)
    session = gateway.new_call(name, route, conversation_id, conversation=found.conversation)
    path = "none"
    if found.session is not None:
        try:
            await session.resume(found.session)
        except PathStartError as exc:
            failed = str(found.session.get("path", "voicegateway"))
            gateway.metrics.upstream_errors.labels(name, failed, exc.kind).inc()
            log.warning("taking over a call failed (%s)", exc.kind)
            await session.close()
            raise AudioCodesProtocolError(
                "this call's upstream could not be resumed; retry",
                status=503,
                reason="takeover_failed",
            ) from None
        path = session.path or "none"
    if not gateway.calls.add(session):  # another request adopted it meanwhile
        await session.close()
        return None
    if found.previous_owner is not None or found.session is not None:
        # a started call owned by nobody was released by a draining instance
        reason = "owner_lost" if found.previous_owner is not None else "handoff"
        gateway.metrics.child(gateway.metrics.takeovers, name, path, reason).inc()
        log.info("took over a call (%s, %s path)", reason, path)
    return None


async def _json_body(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.RequestPayloadError as exc:  # e.g. a Content-Encoding the body does not match
        raise AudioCodesProtocolError(f"body could not be read: {exc.__cause__ or exc}") from None
    except ConnectionResetError:  # the client went away mid-body: nobody to answer
        raise AudioCodesProtocolError("the client closed the connection mid-request") from None
    if not raw:
        return {}
    try:
        return jsontext.loads(raw)
    except ValueError as exc:
        raise AudioCodesProtocolError(f"body is not valid JSON: {exc}") from None


def _session(gateway: Gateway, route: str, request: web.Request) -> CallSession:
    session = gateway.calls.get(route, request.match_info["conversation"])
    if session is None:
        raise AudioCodesProtocolError("unknown conversation", status=404, reason="not_found")
    return session


def _rate_limited_session(
    gateway: Gateway, name: str, route: Route, request: web.Request
) -> CallSession:
    """`_session`, after charging the request to the conversation's `max_requests_per_second`.

    Only live conversations get a bucket, so unknown ids cannot grow the limiter.
    """
    session = _session(gateway, name, request)
    rate = route.max_requests_per_second
    key = (name, session.conversation.conversation_id)
    now = asyncio.get_running_loop().time()
    if not request.app[RequestRatesKey].allow(key, rate, rate, now):
        raise AudioCodesProtocolError(
            f"more than {rate} requests per second on this conversation",
            status=429,
            reason="rate_limited",
        )
    return session


def _check_capacity(gateway: Gateway, name: str, route: Route) -> None:
    if gateway.calls.count(name) >= route.max_calls:
        raise AudioCodesProtocolError(
            f"route is at its limit of {route.max_calls} concurrent calls; retry later",
            status=503,
            reason="over_capacity",
        )


async def probe(
    request: web.Request, gateway: Gateway, name: str, route: Route
) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await vaic_socket(request, gateway, name, route)
    return web.json_response(ac.probe_response())


async def create(request: web.Request, gateway: Gateway, name: str, route: Route) -> web.Response:
    shared = gateway.cluster.shared
    if gateway.draining and not shared:
        raise AudioCodesProtocolError("the gateway is shutting down", status=503, reason="draining")
    conversation_id = parse_create(await _json_body(request))
    if gateway.calls.get(name, conversation_id) is None:  # a duplicate is a 409, not a 503
        _check_capacity(gateway, name, route)
    # with a shared store a create only writes the call's record, which a draining instance
    # may still do: the instance that gets the call's first request serves it
    published = shared and await _published(gateway, name, route, conversation_id)
    if not published and gateway.draining:
        raise AudioCodesProtocolError("the gateway is shutting down", status=503, reason="draining")
    if not published:
        session = gateway.new_call(name, route, conversation_id)
        if not gateway.calls.add(session):
            raise AudioCodesProtocolError(
                "conversation already exists", status=409, reason="conflict"
            )
    base = f"{gateway.config.public_url or ''}/ac/{name}"
    return web.json_response(
        ac.create_response(base, conversation_id, route.expires_seconds, websocket=route.async_mode)
    )


async def _published(gateway: Gateway, name: str, route: Route, conversation_id: str) -> bool:
    """Write a new conversation to the shared store, where the instance that gets its first
    turn adopts it (bridge/handoff.py). False when the store is down: the call is then served
    here, as by a single instance. An id the store already has is a 409."""
    conversation = Conversation(
        conversation_id,
        route.expires_seconds,
        asyncio.get_running_loop().time(),
        max_activities=route.max_activities,
    )
    try:
        fresh = await handoff.publish_created(gateway.cluster, name, route, conversation)
    except StoreUnavailable:
        return False
    if not fresh:
        raise AudioCodesProtocolError("conversation already exists", status=409, reason="conflict")
    gateway.created.add(name, route, conversation)
    return True


async def activities(
    request: web.Request, gateway: Gateway, name: str, route: Route
) -> web.Response:
    session = _rate_limited_session(gateway, name, route, request)
    body = await _json_body(request)
    return web.json_response(await session.receive_activities(body), dumps=JSON_DUMPS)


async def refresh(request: web.Request, gateway: Gateway, name: str, route: Route) -> web.Response:
    session = _rate_limited_session(gateway, name, route, request)
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


async def handoff_request(
    request: web.Request, gateway: Gateway, name: str, route: Route
) -> web.Response:
    """Another instance got VAIC's `session.resume` for a call held here: hand it off."""
    conversation_id = request.match_info["cid"]
    call = gateway.calls.get(name, conversation_id)
    if call is None or not gateway.cluster.shared:
        raise AudioCodesProtocolError("no such call here", status=404, reason="not_found")

    async def publish(state: dict[str, object]) -> bool:
        return await handoff.release(
            gateway.cluster, name, call.route, call.conversation, dict(state)
        )

    blocker = call.hand_off_blocker()
    if not await call.hand_off(publish):
        why = blocker or call.hand_off_blocker() or "the state store did not take its state"
        log.info("asked to hand a call off, could not: %s", why)
        raise AudioCodesProtocolError(
            f"the call cannot be handed off: {why}", status=409, reason="conflict"
        )
    gateway.calls.remove(call, ended=False)
    gateway.streams.pop((name, conversation_id), None)
    log.info("handed a call off on request of another instance")
    return web.json_response({"handed_off": True})


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

    async def close(self, code: int = 1000) -> None:
        await self._ws.close(code=code)


async def push_socket(
    request: web.Request, gateway: Gateway, name: str, route: Route
) -> web.StreamResponse:
    session = _rate_limited_session(gateway, name, route, request)
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
    if gateway.draining:
        return web.json_response({"status": "draining", "calls": len(gateway.calls)}, status=503)
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
    app[RequestRatesKey] = RateLimiter()
    app.middlewares.append(json_errors)
    add_admin_routes(app)
    add_console_routes(app)
    conv = "/ac/{route}/conversation/{conversation}"
    app.add_routes(
        [
            web.get("/ac/{route}", _route_handler(probe)),
            web.post("/ac/{route}", _route_handler(create)),
            web.post(f"{conv}/activities", _route_handler(activities)),
            web.post(f"{conv}/refresh", _route_handler(refresh)),
            web.post(f"{conv}/disconnect", _route_handler(disconnect)),
            web.get(f"{conv}/websocket", _route_handler(push_socket)),
            # {cid}, not {conversation}: the call must be here, never claimed from the store
            web.post(
                "/cluster/{route}/conversation/{cid}/handoff", _route_handler(handoff_request)
            ),
            web.get("/metrics", metrics),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
        ]
    )
