"""One call on the voicegateway path: drives the two protocol objects and the mapping engine.

The AudioCodes side (`audiocodes.Conversation`) and the jambonz side (`voicegateway.CallProtocol`)
are pure; this module owns the awaits: the socket, the ack timer and the wait for a sync
response. Translation is the engine's, turn cutting is `turns.TurnCollector`'s.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from bridge.audiocodes import wire as ac
from bridge.audiocodes.conversation import Conversation, InputKind, classify
from bridge.audiocodes.events import ActivitiesReceived, ConversationEnded, DuplicateReceived
from bridge.config import Route
from bridge.delivery import Channel, Delivery, Outbox
from bridge.mapping.engine import Engine, Translation
from bridge.metrics import Metrics
from bridge.numbers import number_metadata
from bridge.transport.vg import UpstreamConnectError, VoiceGatewaySocket, open_socket
from bridge.voicegateway import events as vge
from bridge.voicegateway.protocol import CallProtocol
from bridge.voicegateway.wire import HookKind

PATH = "voicegateway"
ROLE = "primary"
TURN_ENDING_VERBS = frozenset({"gather", "hangup", "dial", "sip:refer"})
_TRANSFER_VERBS = frozenset({"dial", "sip:refer"})
_HOOK_KINDS = {"input": HookKind.INPUT, "transfer": HookKind.TRANSFER, "play": HookKind.PLAY}
_END_REASONS = frozenset({"client-disconnected", "bot-disconnected", "transferred", "error"})

SocketOpener = Callable[[str, float], Awaitable[VoiceGatewaySocket]]
Outputs = tuple[dict[str, object], ...]
log = logging.getLogger("bridge.session")


class PushChannel(Protocol):
    """Where unsolicited outputs go: the HTTP-mode push socket or the VAIC WebSocket."""

    @property
    def carries_responses(self) -> bool:
        """True when turn responses go out on this channel too (WebSocket mode)."""

    async def push(self, outputs: list[dict[str, object]]) -> None:
        """Deliver one batch; raise ConnectionError if VAIC did not get it."""

    async def close(self) -> None:
        """The conversation ended: close the channel."""


async def _open(url: str, timeout_s: float) -> VoiceGatewaySocket:
    return await open_socket(url, timeout_s=timeout_s)


class CallSession:
    """A VAIC conversation served by a Voice Gateway endpoint."""

    def __init__(
        self,
        *,
        route_name: str,
        route: Route,
        conversation_id: str,
        engine: Engine,
        metrics: Metrics,
        opener: SocketOpener = _open,
        conversation: Conversation | None = None,
        expiry: Callable[[float], bool] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self.route_name = route_name
        self.route = route
        self.conversation = conversation or Conversation(
            conversation_id, route.expires_seconds, now, max_activities=route.max_activities
        )
        self._expiry = expiry or self.conversation.expired
        self.call_sid = str(uuid.uuid4())
        self._engine = engine
        self._metrics = metrics
        self._opener = opener
        self._protocol = CallProtocol(self.call_sid, input_hook=route.input_hook, now=now)
        self._outbox = Outbox(
            async_mode=route.async_mode,
            settle_s=route.turn_settle_ms / 1000,
            timeout_s=route.turn_timeout_ms / 1000,
        )
        self._ctx: dict[str, Any] = {
            "route": route_name,
            "call_sid": self.call_sid,
            "conversation_id": conversation_id,
            "account_sid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"acvg-bridge:{route_name}")),
            "application_sid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"acvg-bridge:{route_name}:app")),
            "caller_e164": None,
            "number_metadata": None,
            "sip_headers": dict(route.sip_headers),
            "language": "en-US",
            "transfer_verb": None,
            "default_region": route.default_region,
        }
        self._socket: VoiceGatewaySocket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._turn_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._push_lock = asyncio.Lock()
        self._push: PushChannel | None = None
        self._responses: dict[int, asyncio.Future[Outputs]] = {}
        self._turn_done: dict[int, asyncio.Future[None]] = {}
        self._started = False
        self._vg_open = False
        self._closed = False
        self._unmapped_logged: set[str] = set()
        self.log = logging.LoggerAdapter(
            log, {"route": route_name, "conversation": conversation_id, "call_sid": self.call_sid}
        )

    # ---- VAIC requests -------------------------------------------------------------------

    async def receive_activities(self, body: object) -> dict[str, object]:
        """One activities POST; returns the response body (raises AudioCodesProtocolError)."""
        event = self.conversation.receive_activities(body, self._loop.time())[0]
        if isinstance(event, DuplicateReceived):
            outputs = await self.replay_turn(event.turn)
        else:
            assert isinstance(event, ActivitiesReceived)
            outputs = await self.run_turn(event.turn, event.activities)
        return ac.activities_response(self.conversation.conversation_id, list(outputs))

    async def replay_turn(self, turn: int) -> Outputs:
        """VAIC retried a turn: the outputs of the original, never forwarded upstream again."""
        done = self._turn_done.get(turn)
        if done is not None:
            await asyncio.shield(done)
        return tuple(self.conversation.outputs_of(turn))

    async def run_turn(self, turn: int, activities: tuple[dict[str, Any], ...]) -> Outputs:
        """Forward a turn's caller inputs; sync: the turn's outputs, async: what was waiting."""
        done = self._loop.create_future()
        self._turn_done[turn] = done
        outputs: Outputs = ()
        try:
            async with self._turn_lock:
                started = self._loop.time()
                response: asyncio.Future[Outputs] | None = None
                if not self._outbox.async_mode:
                    response = self._loop.create_future()
                    self._responses[turn] = response
                    self._outbox.begin_turn(turn, started)
                for activity in activities:
                    await self._receive_input(activity)
                await self._deliver()
                if response is None:
                    outputs = self._outbox.take_waiting()
                else:
                    outputs = await response
                self.conversation.record_outputs(turn, outputs)
                if self._started:
                    self._metrics.turn_duration.labels(self.route_name, PATH, ROLE).observe(
                        self._loop.time() - started
                    )
        finally:
            self._responses.pop(turn, None)
            done.set_result(None)
            self._turn_done.pop(turn - 8, None)
        return outputs

    async def attach_push(self, channel: PushChannel) -> None:
        """A push channel connected: what waits goes out first, then outputs as they come."""
        self._push = channel
        self._outbox.connect_push()
        await self._deliver()

    def detach_push(self, channel: PushChannel) -> None:
        if self._push is channel:
            self._push = None
            self._outbox.disconnect_push()

    def receive_refresh(self, body: object) -> dict[str, object]:
        self.conversation.receive_refresh(body, self._loop.time())
        return {"expiresSeconds": self.route.expires_seconds}

    async def receive_disconnect(self, body: object) -> dict[str, object]:
        events = self.conversation.receive_disconnect(body, self._loop.time())
        ended = events[0]
        assert isinstance(ended, ConversationEnded)
        await self.end_by_caller(ended.reason_code, ended.reason)
        return {}

    async def end_by_caller(self, reason_code: str | None, reason: str | None) -> None:
        """VAIC ended the conversation (disconnect POST or `session.end`)."""
        end_activity = {
            "type": "event",
            "name": "conversationEnd",
            "parameters": {"reasonCode": reason_code, "reason": reason},
        }
        await self._end_by_caller(end_activity, reason_code)

    def expired(self, now: float) -> bool:
        return self._expiry(now)

    async def expire(self) -> None:
        """The conversation idled out: end the Voice Gateway side as jambonz would."""
        if self._vg_open:
            self._protocol.end("jambonz", self._loop.time())
            await self._after_protocol()
        self._finish("expired")

    # ---- caller input → Voice Gateway --------------------------------------------------

    async def _receive_input(self, activity: dict[str, Any]) -> None:
        kind = classify(activity)
        if kind is InputKind.START:
            await self._start(activity)
            return
        if kind is InputKind.END:
            await self._end_by_caller(activity, _reason_code(activity))
            return
        if not self._vg_open:
            self.log.info("input after the Voice Gateway side ended: %s", kind.value)
            return
        translation = self._engine.activity_to_voicegateway(activity, self._ctx)
        if not self._accept("to_voicegateway", translation, activity_name(activity)):
            return
        hook_kind = _HOOK_KINDS.get(translation.message or "")
        if hook_kind is None or not translation.outputs:
            self.log.warning("mapping %s gave no hook message", translation.node)
            return
        self._protocol.send_input(hook_kind, dict(translation.outputs[0]), self._loop.time())
        await self._after_protocol()

    async def _start(self, activity: dict[str, Any]) -> None:
        if self._started:
            self.log.info("repeated start event ignored")
            return
        self._started = True
        params = activity.get("parameters")
        params = params if isinstance(params, dict) else {}
        caller = params.get("caller")
        info = number_metadata(
            caller if isinstance(caller, str) else None, self.route.default_region
        )
        self._ctx["caller_e164"] = info.e164
        self._ctx["number_metadata"] = info.metadata
        result = "preserved" if info.result == "parsed" else "unparsable"
        self._metrics.number_metadata.labels(self.route_name, result).inc()
        self._metrics.calls_started.labels(self.route_name, PATH, ROLE).inc()
        self._metrics.calls_active.labels(self.route_name, PATH, ROLE).inc()
        translation = self._engine.activity_to_voicegateway(activity, self._ctx)
        if not self._accept("to_voicegateway", translation, "start") or not translation.outputs:
            self._fail("start event could not be translated")
            return
        upstream = self.route.voicegateway
        assert upstream is not None
        try:
            self._socket = await self._opener(upstream.url, upstream.connect_timeout_ms / 1000)
        except UpstreamConnectError as exc:
            self._metrics.upstream_errors.labels(self.route_name, PATH, exc.kind).inc()
            self.log.warning("voice gateway unreachable (%s)", exc.kind)
            self._fail("voice gateway unreachable")
            return
        self._vg_open = True
        self._protocol.start(dict(translation.outputs[0]), self._loop.time())
        self._reader = asyncio.create_task(self._read_frames(self._socket))
        await self._after_protocol()

    async def _end_by_caller(self, activity: dict[str, Any], reason_code: str | None) -> None:
        if self._vg_open:
            translation = self._engine.activity_to_voicegateway(activity, self._ctx)
            by = "caller"
            if self._accept("to_voicegateway", translation, "conversationEnd") and (
                translation.outputs
            ):
                by = str(translation.outputs[0].get("call_termination_by", "caller"))
            self._protocol.end(by, self._loop.time())
            await self._after_protocol()
        reason = reason_code if reason_code in _END_REASONS else "other"
        self._finish(reason.replace("-", "_"))

    # ---- Voice Gateway → outputs ---------------------------------------------------------

    async def _read_frames(self, socket: VoiceGatewaySocket) -> None:
        while True:
            frame = await socket.receive()
            if frame is None:
                break
            self._protocol.receive_text(frame, self._loop.time())
            await self._after_protocol()
        if self._vg_open:
            self._vg_open = False
            self._metrics.upstream_errors.labels(self.route_name, PATH, "closed").inc()
            self.log.warning(
                "voice gateway closed the socket mid-call (code %s)", socket.close_code
            )
            self._fail("voice gateway connection lost")
            await self._deliver()

    async def _after_protocol(self) -> None:
        """Apply what the jambonz side produced, send its messages, re-arm the ack timer."""
        now = self._loop.time()
        close_code: int | None = None
        while events := self._protocol.events_received():
            for event in events:
                close_code = self._apply(event, now) or close_code
        self._outbox.set_busy(self._protocol.awaiting_ack, now)
        await self._send_pending()
        await self._deliver()
        if close_code is not None and self._socket is not None:
            self._vg_open = False
            socket, self._socket = self._socket, None
            await socket.close(close_code)

    def _apply(self, event: object, now: float) -> int | None:
        """Apply one jambonz-side event; returns a close code when the socket must close."""
        if isinstance(event, vge.VerbExecuted):
            self._run_verb(event.verb, now)
        elif isinstance(event, vge.SessionAccepted):
            self._metrics.vg_ack.labels(self.route_name).observe(event.ack_seconds)
        elif isinstance(event, vge.AckTimedOut):
            self._metrics.vg_ack_timeouts.labels(self.route_name).inc()
            if event.message_type == "session:new":
                self._fail("voice gateway did not answer the call")
        elif isinstance(event, vge.CloseRequested):
            return event.code
        elif isinstance(event, vge.FrameRejected):
            self._metrics.upstream_errors.labels(self.route_name, PATH, "bad_frame").inc()
            self.log.warning("voice gateway frame rejected: %s", event.reason)
        return None

    def _run_verb(self, verb: dict[str, Any], now: float) -> None:
        name = str(verb.get("verb"))
        if name in _TRANSFER_VERBS:
            self._ctx["transfer_verb"] = name
        elif name == "config":
            language = _recognizer_language(verb)
            if language:
                self._ctx["language"] = language
        outputs: list[dict[str, object]] = []
        at = datetime.now(UTC)
        for translation in self._engine.verb_to_activities(verb, self._ctx):
            if self._accept("to_audiocodes", translation, name):
                outputs.extend(ac.stamp(output, at) for output in translation.outputs)
            elif self.route.unmapped == "fail":
                self._fail(f"unmapped verb {name}")
                return
        self._outbox.add_outputs(outputs, now, turn_ending=name in TURN_ENDING_VERBS)
        if name == "hangup" and self._vg_open:
            self._protocol.end("jambonz", now)

    def _accept(self, direction: str, translation: Translation, what: str) -> bool:
        self._metrics.translations.labels(direction, translation.node, translation.result).inc()
        if translation.result == "ok":
            return True
        if what not in self._unmapped_logged:
            self._unmapped_logged.add(what)
            self.log.warning(
                "%s %s: %s (%s)", direction, what, translation.result, translation.error or "-"
            )
        return False

    def _fail(self, reason: str) -> None:
        """End the call cleanly toward VAIC: a hangup activity, then no more outputs."""
        hangup = {"type": "event", "name": "hangup", "activityParams": {"hangupReason": reason}}
        self._outbox.add_outputs([ac.stamp(hangup, datetime.now(UTC))], self._loop.time())
        self._outbox.call_ended()
        if self._vg_open:
            self._protocol.end("jambonz", self._loop.time())

    def _finish(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._outbox.call_ended()
        for response in self._responses.values():
            if not response.done():
                response.set_result(self._outbox_take_all())
        if self._timer is not None:
            self._timer.cancel()
        if self._started:
            self._metrics.calls_active.labels(self.route_name, PATH, ROLE).dec()
            self._metrics.calls_ended.labels(self.route_name, PATH, ROLE, reason).inc()

    async def close(self) -> None:
        """Release the socket and tasks (after the call ended)."""
        self._finish("other")
        self._vg_open = False
        if self._push is not None:
            push, self._push = self._push, None
            await push.close()
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await socket.close(1000)
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    # ---- plumbing --------------------------------------------------------------------------

    async def _send_pending(self) -> None:
        async with self._send_lock:
            messages = self._protocol.messages_to_send()
            if messages and self._socket is not None:
                try:
                    await self._socket.send_messages(messages)
                except Exception:  # the reader notices the closed socket and ends the call
                    self.log.warning("sending to the voice gateway failed")

    async def _deliver(self) -> None:
        """Hand every complete batch to its channel, then re-arm the timer."""
        for delivery in self._outbox.poll(self._loop.time()):
            if delivery.channel is Channel.RESPONSE and delivery.turn is not None:
                response = self._responses.get(delivery.turn)
                if response is None or response.done():
                    self._outbox.requeue(delivery)
                    continue
                if self._push is not None and self._push.carries_responses:
                    await self._push_delivery(delivery)
                response.set_result(delivery.outputs)
            else:
                await self._push_delivery(delivery)
        self._arm_timer()

    async def _push_delivery(self, delivery: Delivery) -> None:
        async with self._push_lock:
            channel = self._push
            if channel is None:
                self._outbox.requeue(delivery)
                return
            try:
                await channel.push(list(delivery.outputs))
            except ConnectionError:
                self.log.info("push channel lost; outputs wait for the next channel")
                self._outbox.requeue(delivery)
                self.detach_push(channel)

    def _outbox_take_all(self) -> Outputs:
        taken: list[dict[str, object]] = []
        for delivery in self._outbox.poll(self._loop.time()):
            taken.extend(delivery.outputs)
        return tuple(taken)

    def _arm_timer(self) -> None:
        deadlines = [d for d in (self._protocol.next_deadline(), self._outbox.deadline()) if d]
        deadline = min(deadlines) if deadlines else None
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and not self._closed:
            self._timer = self._loop.call_at(deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        self._timer_at = None
        self._protocol.tick(self._loop.time())
        task = self._loop.create_task(self._after_protocol())
        task.add_done_callback(_log_task_error)


def activity_name(activity: dict[str, Any]) -> str:
    """A short description of an activity for logs (never its text or values)."""
    if activity.get("type") == "event":
        return f"event {activity.get('name')}"
    return str(activity.get("type"))


def _reason_code(activity: dict[str, Any]) -> str | None:
    for container in (activity.get("parameters"), activity.get("value")):
        if isinstance(container, dict) and isinstance(container.get("reasonCode"), str):
            return str(container["reasonCode"])
    return None


def _recognizer_language(verb: dict[str, Any]) -> str | None:
    recognizer = verb.get("recognizer")
    if isinstance(recognizer, dict) and isinstance(recognizer.get("language"), str):
        return str(recognizer["language"])
    return None


def _log_task_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("call task failed", exc_info=task.exception())
