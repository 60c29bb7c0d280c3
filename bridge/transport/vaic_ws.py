"""AudioCodes Bot API WebSocket (streaming) mode, text only: socket I/O for `GET /ac/R` upgrades.

The protocol rules are `audiocodes.streaming.StreamingSession`'s; the call is a `CallSession`
like in HTTP mode. This module reads frames, runs turns on their own tasks (so `session.end`
is read while a sync turn waits), and writes what the streaming session queues, in order.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import WSMsgType, web

from bridge import handoff, jsontext
from bridge.app import Gateway
from bridge.audiocodes.events import (
    ActivitiesReceived,
    MessageRejected,
    SessionEnded,
    SessionInitiated,
)
from bridge.audiocodes.streaming import StreamingSession, parse_resume
from bridge.audiocodes.wire import VaicStreamMessage
from bridge.config import Route
from bridge.errors import CallMoved
from bridge.limits import TokenBucket
from bridge.path import PathStartError
from bridge.session import CallSession
from bridge.store import StoreUnavailable

log = logging.getLogger("bridge.vaic_ws")
OVER_CAPACITY = "over capacity: the bot cannot take more calls now"


class VaicSocket:
    """The push channel of a WebSocket-mode call: every output goes out as `activities`."""

    carries_responses = True

    def __init__(self, ws: web.WebSocketResponse, stream: StreamingSession) -> None:
        self._ws = ws
        self._stream = stream
        self._lock = asyncio.Lock()

    async def push(self, outputs: list[dict[str, object]]) -> None:
        if self._ws.closed:
            raise ConnectionError("VAIC socket closed")
        self._stream.send_activities(outputs)
        await self.flush()

    async def flush(self) -> None:
        """Send what the streaming session queued, then close if it asked to."""
        async with self._lock:
            for message in self._stream.messages_to_send():
                try:
                    await self._ws.send_str(jsontext.dumps(message))
                except (ConnectionError, RuntimeError) as exc:
                    raise ConnectionError(str(exc)) from exc
            code = self._stream.close_requested
            if code is not None and not self._ws.closed:
                await self._ws.close(code=code)

    async def close(self, code: int = 1000) -> None:
        await self._ws.close(code=code)


class StreamingCall:
    """One VAIC socket: frames in, turns to the call, `activities` out."""

    def __init__(
        self, gateway: Gateway, route_name: str, route: Route, authorization: str | None = None
    ) -> None:
        self._gateway = gateway
        self._authorization = authorization  # VAIC's bearer: asking a peer for a handoff
        self._route_name = route_name
        self._route = route
        self._loop = asyncio.get_running_loop()
        self._stream: StreamingSession | None = None
        self._call: CallSession | None = None
        self._turns: set[asyncio.Task[None]] = set()
        rate = route.max_requests_per_second
        # One socket carries one conversation: its frames share one bucket.
        self._rate = TokenBucket(rate, rate, self._loop.time())
        self._rate_limited = 0

    async def serve(self, ws: web.WebSocketResponse) -> None:
        channel: VaicSocket | None = None
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                if not self._rate.take(self._loop.time()) and not _ends_session(msg.data):
                    self._drop_rate_limited()
                    continue
                if channel is None:  # first frame: a new conversation, or a resume
                    stream = await self._open(msg.data)
                    channel = VaicSocket(ws, stream)
                    if self._call is not None:  # resumed: reattached, the frame is answered
                        await channel.flush()
                        await self._call.attach_push(channel)
                        continue
                else:
                    assert self._stream is not None
                    stream = self._stream
                stream.receive_text(msg.data, self._loop.time())
                await self._handle_events(stream, channel)
                await channel.flush()
        finally:
            if self._stream is not None:
                self._stream.detach(self._loop.time())
            if self._call is not None and channel is not None:
                self._call.detach_push(channel)
            # Turn tasks run on: the caller's input was received and must reach the flow.

    def _drop_rate_limited(self) -> None:
        """Over `max_requests_per_second`: the frame is dropped, counted, and the call goes on
        (no `session.error`: VAIC ends a session on it)."""
        self._gateway.metrics.rejected_requests.labels(self._route_name, "rate_limited").inc()
        self._rate_limited += 1
        if self._rate_limited == 1:
            log.warning(
                "VAIC socket on route %s over %d messages per second; dropping the excess",
                self._route_name,
                self._route.max_requests_per_second,
            )

    async def _open(self, frame: str | bytes) -> StreamingSession:
        conversation_id = parse_resume(frame)
        if conversation_id is not None:
            held = self._gateway.streams.get((self._route_name, conversation_id))
            if held is None and self._gateway.cluster.shared:
                held = await self._take_over(conversation_id)
            if held is not None:
                stream, call = held
                stream.reattach(self._loop.time())
                self._stream, self._call = stream, call
                return stream
        self._stream = StreamingSession(
            self._route.expires_seconds, self._loop.time(), self._route.max_activities
        )
        return self._stream

    async def _take_over(self, conversation_id: str) -> tuple[StreamingSession, CallSession] | None:
        """VAIC resumed a session this instance does not hold: continue it from the shared
        store (its owner died, or, asked here, handed it off). None: the resume is refused."""
        gateway, name = self._gateway, self._route_name
        key = (name, conversation_id)
        async with gateway.adoption_lock(name, conversation_id):
            if key in gateway.streams:
                return gateway.streams[key]
            try:
                found = await self._locate(conversation_id)
            except StoreUnavailable:
                return None
            if not isinstance(found, handoff.Adopted) or found.session is None:
                return None
            stream = StreamingSession.restore(found.conversation, self._loop.time())
            assert stream.conversation is not None
            call = gateway.new_call(
                name,
                self._route,
                conversation_id,
                conversation=stream.conversation,
                expiry=stream.expired,
                transport="ws",
            )
            try:
                await call.resume(found.session)
            except PathStartError as exc:
                log.warning("taking over a WebSocket-mode call failed (%s)", exc.kind)
                await call.close()
                return None
            gateway.calls.add(call)
            gateway.streams[key] = (stream, call)
        reason = "owner_lost" if found.previous_owner is not None else "handoff"
        metrics = gateway.metrics
        metrics.child(metrics.takeovers, name, call.path or "none", reason).inc()
        log.info("took over a WebSocket-mode call (%s)", reason)
        return stream, call

    async def _locate(self, conversation_id: str) -> handoff.Located:
        """Claim the call; a live owner is asked to hand it off, and an owner that cannot be
        asked (it may have died, its lease still running) is waited out, at most `lease_s` +
        1 s."""
        gateway, name = self._gateway, self._route_name
        deadline = self._loop.time() + gateway.cluster.lease_s + 1.0
        while True:
            found = await handoff.locate(gateway.cluster, name, self._route, conversation_id)
            if not isinstance(found, handoff.OwnedElsewhere) or gateway.http is None:
                return found
            if await handoff.request_handoff(
                gateway.http, found.owner, name, conversation_id, self._authorization
            ):
                return await handoff.locate(gateway.cluster, name, self._route, conversation_id)
            if self._loop.time() >= deadline:
                return found
            await asyncio.sleep(handoff.OWNER_POLL_S)

    async def _handle_events(self, stream: StreamingSession, channel: VaicSocket) -> None:
        metrics = self._gateway.metrics
        for event in stream.events_received():
            if isinstance(event, SessionInitiated):
                await self._initiate(stream, channel, event)
            elif isinstance(event, ActivitiesReceived) and self._call is not None:
                task = self._loop.create_task(self._run_turn(self._call, event))
                self._turns.add(task)
                task.add_done_callback(self._turns.discard)
            elif isinstance(event, SessionEnded) and self._call is not None:
                await self._end(self._call, event)
            elif isinstance(event, MessageRejected):
                metrics.rejected_requests.labels(self._route_name, event.reason).inc()
                log.info("VAIC message rejected on route %s: %s", self._route_name, event.reason)

    async def _initiate(
        self, stream: StreamingSession, channel: VaicSocket, event: SessionInitiated
    ) -> None:
        if self._gateway.draining:
            self._gateway.metrics.rejected_requests.labels(self._route_name, "draining").inc()
            stream.refuse("draining: the gateway is shutting down", self._loop.time())
            return
        key = (self._route_name, event.conversation_id)
        if self._gateway.calls.get(*key) is not None:
            stream.refuse("conversation already exists", self._loop.time())
            return
        if self._gateway.calls.count(self._route_name) >= self._route.max_calls:
            self._gateway.metrics.rejected_requests.labels(self._route_name, "over_capacity").inc()
            stream.refuse(OVER_CAPACITY, self._loop.time())
            return
        assert stream.conversation is not None
        call = self._gateway.new_call(
            self._route_name,
            self._route,
            event.conversation_id,
            conversation=stream.conversation,
            expiry=stream.expired,
            transport="ws",
        )
        self._gateway.calls.add(call)
        self._gateway.streams[key] = (stream, call)
        self._call = call
        stream.accept(self._loop.time())
        await channel.flush()
        await call.attach_push(channel)

    async def _run_turn(self, call: CallSession, event: ActivitiesReceived) -> None:
        try:
            await call.run_turn(event.turn, event.activities)
        except CallMoved:  # VAIC resumed the session on another instance, which has the call
            log.info("a turn arrived after its call was handed off; dropped here")
        except Exception:
            log.exception("turn failed on route %s", self._route_name)

    async def _end(self, call: CallSession, event: SessionEnded) -> None:
        await call.end_by_caller(event.reason_code, event.reason)
        self._forget(call)
        await call.close()

    def _forget(self, call: CallSession) -> None:
        self._gateway.calls.remove(call)
        self._gateway.streams.pop((call.route_name, call.conversation.conversation_id), None)


def _ends_session(frame: str | bytes) -> bool:
    """`session.end` is never rate limited: dropping it would leave the call up."""
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return False
    return isinstance(message, dict) and message.get("type") == VaicStreamMessage.SESSION_END


async def vaic_socket(
    request: web.Request, gateway: Gateway, name: str, route: Route
) -> web.StreamResponse:
    """`GET /ac/R` with an upgrade: one VAIC conversation in WebSocket mode."""
    ws = web.WebSocketResponse(autoping=True)
    await ws.prepare(request)
    await StreamingCall(gateway, name, route, request.headers.get("Authorization")).serve(ws)
    return ws
