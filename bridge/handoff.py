"""Which instance serves a conversation: records in the shared store, adoption, forwarding.

With a shared store (`cluster.redis_url`) a conversation created on one instance may be served
by any other: the load balancer hashes on the conversation id, which the create request does
not carry in its path. So `create` only writes the conversation's record, owned by nobody, and
the instance that gets the conversation's first request claims and adopts it (no hop). A
request for a conversation a live peer owns is forwarded to that peer (`advertise_url`), once:
a forwarded request is never forwarded again.

Record (JSON, `acvg-call/1`): `phase` (`created`: no turn yet; `started`: a path serves it),
`route`, `conversation` (`Conversation.snapshot`) and, once a turn has been answered, `session`
(`CallSession.snapshot`: path, call_sid, number, the path's own state), written before VAIC gets
the turn's outputs. A call whose owner is dead is taken over from it: the Voice Gateway path
reconnects with `session:reconnect`, the legacy path goes on with the bot's URLs. A started
call without a usable record is answered 404 `owner_lost` and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
from aiohttp import web

from bridge.audiocodes.conversation import IDLE_FACTOR, Conversation
from bridge.cluster import Cluster
from bridge.config import Route
from bridge.metrics import Metrics
from bridge.store import CallKey, InstanceInfo, StoreUnavailable

log = logging.getLogger("bridge.handoff")
VERSION = "acvg-call/1"
FORWARDED_HEADER = "X-Acvg-Forwarded-By"
FORWARD_TIMEOUT_S = 30.0
# How often a request for a call whose owner cannot be reached asks whether its lease lapsed.
OWNER_POLL_S = 0.2
# Headers a forwarded request keeps; hop-by-hop ones and Host are the forwarder's own.
_FORWARDED_HEADERS = ("Authorization", "Content-Type", "Accept", "X-Request-Id")

Phase = Literal["created", "started"]


@dataclass(frozen=True, slots=True)
class Adopted:
    """The record of a conversation this instance now owns; `session` is the started call's
    `CallSession.snapshot` (None: no turn yet)."""

    conversation: Conversation
    previous_owner: str | None
    session: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class OwnedElsewhere:
    owner: InstanceInfo


@dataclass(frozen=True, slots=True)
class Lost:
    """A started call whose owner died; its upstream cannot be continued from the record."""

    previous_owner: str | None


Located = Adopted | OwnedElsewhere | Lost | None


def record_ttl_s(route: Route) -> float:
    """How long a record outlives its last write: the conversation's idle limit, plus margin."""
    return IDLE_FACTOR * route.expires_seconds + 30


def record(route_name: str, conversation: Conversation, phase: Phase) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    return {
        "v": VERSION,
        "phase": phase,
        "route": route_name,
        "conversation": conversation.snapshot(loop.time(), time.time()),
    }


async def publish_created(
    cluster: Cluster, route_name: str, route: Route, conversation: Conversation
) -> bool:
    """Write a new conversation's record, owned by nobody; False if the id is taken."""
    key = CallKey(route_name, conversation.conversation_id)
    if await cluster.store.load(key) is not None:
        return False
    await cluster.store.save(
        key, record(route_name, conversation, "created"), "", record_ttl_s(route)
    )
    return True


async def locate(cluster: Cluster, route_name: str, route: Route, conversation_id: str) -> Located:
    """Claim a conversation this instance does not hold; None when the store has no such call.

    Raises StoreUnavailable when the store cannot be asked."""
    key = CallKey(route_name, conversation_id)
    claim = await cluster.store.claim(key, cluster.instance_id)
    if claim.outcome == "unknown":
        return None
    if claim.outcome == "owned":
        assert claim.owner is not None
        return OwnedElsewhere(claim.owner)
    found = await cluster.store.load(key)
    if found is None:
        return None
    data, _ = found
    session = data.get("session")
    if data.get("v") != VERSION or (
        data.get("phase") != "created" and not isinstance(session, dict)
    ):
        return Lost(claim.previous)
    loop = asyncio.get_running_loop()
    try:
        conversation = Conversation.restore(data["conversation"], loop.time(), time.time())
    except (ValueError, KeyError, TypeError):
        log.warning("conversation record unreadable; treated as unknown")
        return None
    if conversation.expired(loop.time()):
        return None
    data["phase"] = "started"
    await cluster.store.save(key, data, cluster.instance_id, record_ttl_s(route))
    return Adopted(conversation, claim.previous, session if isinstance(session, dict) else None)


class _Snapshotting(Protocol):
    @property
    def conversation(self) -> Conversation: ...

    def snapshot(self) -> dict[str, Any] | None: ...


async def save_started(
    cluster: Cluster, route_name: str, route: Route, call: _Snapshotting
) -> bool:
    """Write a started call's record (conversation + session) at a turn boundary: one
    pipelined write, made only while this instance owns the call. False when another instance
    took it over (this one was thought dead: its lease ran out); its record is left alone. A
    store that is down costs the turn nothing but the counted error."""
    rec = record(route_name, call.conversation, "started")
    session = call.snapshot()
    if session is not None:
        rec["session"] = session
    key = CallKey(route_name, call.conversation.conversation_id)
    try:
        return await cluster.store.save_if_ours(key, rec, cluster.instance_id, record_ttl_s(route))
    except StoreUnavailable:
        return True


async def rewrite(cluster: Cluster, route_name: str, route: Route, call: _Snapshotting) -> bool:
    """Write a call's record again (the store came back, maybe empty): started or, if no turn
    has been answered yet, created — owned by this instance either way. False when another
    instance owns the call now (it took it over while this one could not write)."""
    session = call.snapshot()
    rec = record(route_name, call.conversation, "created" if session is None else "started")
    if session is not None:
        rec["session"] = session
    key = CallKey(route_name, call.conversation.conversation_id)
    return await cluster.store.save_if_ours(key, rec, cluster.instance_id, record_ttl_s(route))


async def release(
    cluster: Cluster,
    route_name: str,
    route: Route,
    conversation: Conversation,
    session: dict[str, Any],
) -> bool:
    """Hand a started call to whichever instance gets its next request: its record, owned
    by nobody (drain). False when the store did not take it (the call stays here)."""
    rec = record(route_name, conversation, "started")
    rec["session"] = session
    key = CallKey(route_name, conversation.conversation_id)
    try:
        await cluster.store.save(key, rec, "", record_ttl_s(route))
    except StoreUnavailable:
        return False
    return True


async def live_peers(cluster: Cluster, route_name: str, conversation_id: str) -> list[InstanceInfo]:
    """The other live instances that take calls on, best first: the call's owner when it has a
    live one, then the rest from a place spread by the conversation id. Empty when the store
    cannot say."""
    try:
        peers = [
            i
            for i in await cluster.store.instances()
            if i.id != cluster.instance_id and not i.draining
        ]
        found = await cluster.store.load(CallKey(route_name, conversation_id)) if peers else None
    except StoreUnavailable:
        return []
    if not peers:
        return []
    start = zlib.crc32(conversation_id.encode()) % len(peers)
    ordered = peers[start:] + peers[:start]
    owner = found[1] if found is not None else ""
    return sorted(ordered, key=lambda i: i.id != owner)


async def request_handoff(
    http: aiohttp.ClientSession,
    owner: InstanceInfo,
    route_name: str,
    conversation_id: str,
    authorization: str | None,
) -> bool:
    """Ask the live instance holding a call to hand it off (VAIC resumed its WebSocket-mode
    session elsewhere); True once it has. `authorization` is VAIC's bearer for the route."""
    url = f"{owner.advertise_url}/cluster/{route_name}/conversation/{conversation_id}/handoff"
    headers = {"Authorization": authorization} if authorization else {}
    try:
        async with http.post(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
        ) as reply:
            return reply.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def forget(cluster: Cluster, route_name: str, conversation_id: str) -> None:
    """Drop an ended call's record (best effort: it expires on its own)."""
    with contextlib.suppress(StoreUnavailable):
        await cluster.store.delete(CallKey(route_name, conversation_id))


async def forward(
    request: web.Request,
    http: aiohttp.ClientSession,
    owner: InstanceInfo,
    cluster: Cluster,
    metrics: Metrics,
    route_name: str,
) -> web.Response | None:
    """Send `request` to the instance that owns its call and answer with what it answered;
    None when that instance cannot be reached (it may have died: its lease has yet to lapse) or
    answers 421 (it is draining and has handed the call off: the record is free to claim)."""
    headers = {h: request.headers[h] for h in _FORWARDED_HEADERS if h in request.headers}
    headers[FORWARDED_HEADER] = cluster.instance_id
    body = await request.read()
    url = owner.advertise_url + request.path_qs
    metrics.child(metrics.forwarded_requests, route_name).inc()
    try:
        async with http.request(
            request.method,
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
        ) as reply:
            if reply.status == 421:  # the peer is handing its calls off: not there any more
                return None
            payload = await reply.read()
            content_type = reply.headers.get("Content-Type", "application/json")
            retry_after = reply.headers.get("Retry-After")
            status = reply.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("forward to %s failed: %s", owner.id, type(exc).__name__)
        return None
    out_headers = {"Content-Type": content_type}
    if retry_after is not None:
        out_headers["Retry-After"] = retry_after
    return web.Response(body=payload, status=status, headers=out_headers)
