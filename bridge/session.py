"""One VAIC conversation: its turns, its outputs' delivery, and the path(s) serving it.

The AudioCodes side (`audiocodes.Conversation`) and the output rules (`delivery.Outbox`) are
pure; the paths (`vg_path`, `legacy_path`) own their upstream I/O. This module owns the awaits
between them: the turn lock, the wait for a sync response, the push channel, the delivery timer,
and at `start` the routing decision, fallback and shadow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from bridge import routing
from bridge.audiocodes import wire as ac
from bridge.audiocodes.conversation import Conversation, InputKind, classify
from bridge.audiocodes.events import ActivitiesReceived, ConversationEnded, DuplicateReceived
from bridge.budget import CoreBudget
from bridge.config import Route
from bridge.delivery import Channel, Delivery, Outbox
from bridge.divergence import DivergenceLog
from bridge.errors import CallMoved
from bridge.kpi import CallKpi
from bridge.mapping.loader import MappingSet
from bridge.metrics import Metrics
from bridge.numbers import NumberInfo, number_metadata
from bridge.path import CallInfo, CallPath, PathName, PathSink, PathStartError
from bridge.recording import CallJournal, Journals
from bridge.shadow import ShadowRunner, close_in_background, shadow_admitted
from bridge.timer import DeadlineTimer

Outputs = tuple[dict[str, object], ...]
PathFactory = Callable[[PathName, CallInfo, PathSink], CallPath]
_END_REASONS = frozenset({"client-disconnected", "bot-disconnected", "transferred", "error"})
log = logging.getLogger("bridge.session")


GOING_AWAY = 1001  # WebSocket close code of a socket whose call moved to another instance


class PushChannel(Protocol):
    """Where unsolicited outputs go: the HTTP-mode push socket or the VAIC WebSocket."""

    @property
    def carries_responses(self) -> bool:
        """True when turn responses go out on this channel too (WebSocket mode)."""

    async def push(self, outputs: list[dict[str, object]]) -> None:
        """Deliver one batch; raise ConnectionError if VAIC did not get it."""

    async def close(self, code: int = 1000) -> None:
        """The conversation ended (1000), or moved to another instance (1001, going away:
        VAIC connects again, through the load balancer, and goes on there)."""


class CallSession:
    """A VAIC conversation served by the legacy or the voicegateway path."""

    def __init__(
        self,
        *,
        route_name: str,
        route: Route,
        conversation_id: str,
        metrics: Metrics,
        make_path: PathFactory,
        mappings: MappingSet,
        divergence: DivergenceLog | None = None,
        conversation: Conversation | None = None,
        expiry: Callable[[float], bool] | None = None,
        budget: CoreBudget | None = None,
        on_turn: Callable[[CallSession], Awaitable[None]] | None = None,
        journals: Journals | None = None,
        transport: str = "http",
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
        self.path: PathName | None = None
        self._metrics = metrics
        self._make_path = make_path
        self._mappings = mappings
        self._divergence = divergence
        self._budget = budget
        self._on_turn = on_turn  # after each turn's outputs, before they are answered
        self._journals, self._transport = journals, transport
        self._journal: CallJournal | None = None  # opened once the path is chosen, if sampled
        self._async_inputs: tuple[dict[str, Any], ...] = ()
        self._kpi = CallKpi(route.migration.early_hangup_s)
        self._outbox = Outbox(
            async_mode=route.async_mode,
            settle_s=route.turn_settle_ms / 1000,
            timeout_s=route.turn_timeout_ms / 1000,
        )
        self._primary: CallPath | None = None
        self._number_info = NumberInfo(None, None, "unparsable")
        self._shadow: ShadowRunner | None = None
        self._timer = DeadlineTimer(self._loop, self._on_deadline)
        self._turn_lock = asyncio.Lock()
        self._push_lock = asyncio.Lock()
        self._push: PushChannel | None = None
        self._responses: dict[int, asyncio.Future[Outputs]] = {}
        self._turn_done: dict[int, asyncio.Future[None]] = {}
        self._async_turn: tuple[int, float, list[dict[str, object]]] | None = None
        self._closed = False
        self._handed_off = False  # see CallMoved
        # While the path is being chosen (a VG ack may take its 5 s budget, then fall back), the
        # start turn's response waits: answering at turn_timeout_ms would lose the greeting.
        self._starting = False
        self.log = logging.LoggerAdapter(
            log, {"route": route_name, "conversation": conversation_id, "call_sid": self.call_sid}
        )

    @property
    def handed_off(self) -> bool:
        """The call went to the fleet (`hand_off`): this copy serves nothing more."""
        return self._handed_off

    # ---- VAIC requests -------------------------------------------------------------------

    async def receive_activities(self, body: object) -> dict[str, object]:
        """One activities POST; returns the response body (raises AudioCodesProtocolError, or
        CallMoved once the call has been handed off)."""
        if self._handed_off:
            raise CallMoved
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
                if self._handed_off:  # the snapshot went without this turn: serve it there
                    raise CallMoved
                started = self._loop.time()
                self._kpi.inputs(started, activities)
                response: asyncio.Future[Outputs] | None = None
                if self._outbox.async_mode:
                    self._close_async_turn(started)
                    self._async_turn, self._async_inputs = (turn, started, []), activities
                else:
                    response = self._loop.create_future()
                    self._responses[turn] = response
                    self._outbox.begin_turn(turn, started)
                await self._forward(turn, activities)
                await self.settle()
                outputs = self._outbox.take_waiting() if response is None else await response
                self.conversation.record_outputs(turn, outputs)
                if self._journal is not None and response is not None:
                    self._journal.turn(started, activities, outputs, self._loop.time())
                if self._on_turn is not None:
                    await self._on_turn(self)
                latency = self._loop.time() - started
                if self.path is not None:
                    self._metrics.child(
                        self._metrics.turn_duration, self.route_name, self.path, "primary"
                    ).observe(latency)
                    self._metrics.evidence.observe(
                        self.route_name, "turn_latency", self.path, latency
                    )
                if response is not None and self._shadow is not None:
                    self._shadow.primary_turn(turn, outputs, latency)
        finally:
            self._responses.pop(turn, None)
            done.set_result(None)
            self._turn_done.pop(turn - 8, None)
        return outputs

    def receive_refresh(self, body: object) -> dict[str, object]:
        if self._handed_off:
            raise CallMoved
        self.conversation.receive_refresh(body, self._loop.time())
        return {"expiresSeconds": self.route.expires_seconds}

    async def receive_disconnect(self, body: object) -> dict[str, object]:
        if self._handed_off:
            raise CallMoved
        ended = self.conversation.receive_disconnect(body, self._loop.time())[0]
        assert isinstance(ended, ConversationEnded)
        await self.end_by_caller(ended.reason_code, ended.reason)
        return {}

    async def end_by_caller(
        self, reason_code: str | None, reason: str | None, *, ended_by: str | None = None
    ) -> None:
        """VAIC ended the conversation (disconnect POST or `session.end`)."""
        if self._primary is not None:
            await self._primary.end(reason_code, reason)
        if self._shadow is not None:
            self._shadow.submit_end(reason_code, reason)
        code = reason_code if reason_code in _END_REASONS else "other"
        self._finish(ended_by or code.replace("-", "_"))

    async def attach_push(self, channel: PushChannel) -> None:
        """A push channel connected: what waits goes out first, then outputs as they come."""
        self._push = channel
        self._outbox.connect_push()
        await self.settle()

    def detach_push(self, channel: PushChannel) -> None:
        if self._push is channel:
            self._push = None
            self._outbox.disconnect_push()

    def expired(self, now: float) -> bool:
        return self._expiry(now)

    async def expire(self) -> None:
        """The conversation idled out: end the upstreams as the caller hanging up would."""
        await self.end_by_caller(None, "conversation expired", ended_by="expired")

    async def drain_end(self, reason: str = "service shutting down") -> None:
        """The gateway drains and this call outlived the drain timeout: a hangup to VAIC (the
        push channel or an open response now, else the next response), the upstreams ended as
        the gateway hanging up would (VG `call:status` completed, legacy disconnect)."""
        if self._starting:  # let the path choice finish, or the call's gauge would never drop
            async with self._turn_lock:
                pass
        if self._closed:
            return
        if self._primary is not None or self.path is None:  # else its failed start hung up
            hangup = {"type": "event", "name": "hangup", "activityParams": {"hangupReason": reason}}
            self.emit([ac.stamp(hangup, datetime.now(UTC))])
        self._outbox.call_ended()
        await self.settle()
        if self._primary is not None:
            await self._primary.end(None, reason)
        if self._shadow is not None:
            self._shadow.submit_end(None, reason)
        self._finish("drained")

    async def close(self) -> None:
        """Release the upstreams, the push channel and timers (after the call ended)."""
        self._finish("other")
        if self._push is not None:
            push, self._push = self._push, None
            await push.close()
        if self._primary is not None:
            await self._primary.close()
        if self._shadow is not None:
            shadow, self._shadow = self._shadow, None
            close_in_background(shadow)

    # ---- another instance goes on with the call (bridge/handoff.py) ----------------------

    def snapshot(self) -> dict[str, Any] | None:
        """The started call's state apart from its conversation: path, call_sid, the caller's
        number and the path's own snapshot. None when there is nothing to go on with (not
        started, ended, or a path that cannot say), with the outputs not delivered yet. Shadows stay
        here."""
        if self._closed or self._primary is None or self.path is None:
            return None
        state = self._primary.snapshot()
        if state is None:
            return None
        number = {"e164": self._number_info.e164, "metadata": self._number_info.metadata}
        snap: dict[str, Any] = {
            "path": self.path,
            "call_sid": self.call_sid,
            "number": number,
            "state": state,
        }
        pending = self._outbox.pending()
        if pending:  # produced, not delivered yet (e.g. async outputs waiting for a socket)
            snap["pending"] = pending
        return snap

    def hand_off_blocker(self) -> str | None:
        """Why `hand_off` would refuse now (for the operator's log), or None."""
        if self._closed:
            return "the call has ended"
        if self._primary is None or self.path is None:
            return "its path is not started"
        if self._turn_lock.locked():
            return "a turn is in flight"
        if self.snapshot() is None:
            return f"the {self.path} path has no state to hand off (connecting or closing)"
        return None

    async def hand_off(self, publish: Callable[[dict[str, Any]], Awaitable[bool]]) -> bool:
        """This instance stops (drain with a shared store): once no turn is in flight, give
        `snapshot()` to `publish` (the shared store) and, if it took it, detach the path
        without ending the upstream. Returns whether the call was handed off."""
        async with self._turn_lock:
            state = self.snapshot()
            if state is None or self._primary is None or not await publish(state):
                return False
            self._closed = self._handed_off = True
            if self._journal is not None:  # its rest is recorded where it goes on, if sampled
                self._journal.end(self._loop.time(), "moved")
            self._outbox.call_ended()
            self._timer.cancel()
            if self.path is not None:
                self._metrics.calls_active.labels(self.route_name, self.path, "primary").dec()
            await self._primary.detach()
            if self._push is not None:
                push, self._push = self._push, None
                await push.close(GOING_AWAY)
        if self._shadow is not None:  # a shadow does not move with its call: it ends here
            shadow, self._shadow = self._shadow, None
            shadow.submit_end(None, "the call moved to another instance")
            close_in_background(shadow)
        return True

    async def resume(self, data: dict[str, Any]) -> None:
        """Go on with a call another instance started, from `snapshot`; raises PathStartError
        (the call is then not served here)."""
        path = data.get("path")
        number = data.get("number")
        if path not in ("legacy", "voicegateway") or not isinstance(number, dict):
            raise PathStartError("bad_snapshot", "session snapshot without path or number")
        e164, metadata = number.get("e164"), number.get("metadata")
        self.call_sid = str(data.get("call_sid") or self.call_sid)
        self._number_info = NumberInfo(
            e164 if isinstance(e164, str) else None,
            metadata if isinstance(metadata, dict) else None,
            "parsed" if isinstance(e164, str) else "unparsable",
        )
        info = CallInfo(
            self.route_name,
            self.route,
            self.conversation.conversation_id,
            self.call_sid,
            self._number_info,
            "primary",
            self._metrics,
        )
        state = data.get("state")
        primary = self._make_path(path, info, self)
        try:
            await primary.resume(state if isinstance(state, dict) else {})
        except PathStartError:
            await primary.close()
            raise
        self._primary, self.path = primary, path
        self._metrics.calls_active.labels(self.route_name, path, "primary").inc()
        pending = data.get("pending")
        if isinstance(pending, list):
            self.emit([dict(o) for o in pending if isinstance(o, dict)])

    # ---- caller input → the paths ------------------------------------------------------

    async def _forward(self, turn: int, activities: Sequence[dict[str, Any]]) -> None:
        if self._primary is None:
            if not activities or classify(activities[0]) is not InputKind.START:
                self.log.info("input before the call started; nothing to forward")
                return
            self._starting = True
            try:
                await self._start(activities)
            finally:
                self._starting = False
            if self._shadow is not None:
                self._shadow.submit_turn(turn, activities)
            return
        if self._closed:
            return
        if self._shadow is not None:
            self._shadow.submit_turn(turn, activities)
        await self._primary.forward(activities)

    async def _start(self, activities: Sequence[dict[str, Any]]) -> None:
        params = activities[0].get("parameters")
        params = params if isinstance(params, dict) else {}
        number = self._number_info = self._number(params)
        decision = routing.decide(
            self.route_name,
            self.route,
            caller=_text(params.get("caller")),
            callee=_text(params.get("callee")),
            conversation_id=self.conversation.conversation_id,
            caller_country=_country(number),
            caller_e164=number.e164,
        )
        info = CallInfo(
            self.route_name,
            self.route,
            self.conversation.conversation_id,
            self.call_sid,
            number,
            "primary",
            self._metrics,
        )
        path, reason = decision.path, decision.reason
        started = await self._start_path(path, info, activities)
        # a caller who left while voicegateway set up is that path's call (an early hangup
        # there), not a fallback
        fall_back = path == "voicegateway" and self.route.legacy is not None and not self._closed
        if not started and fall_back:
            path, reason = "legacy", "fallback"
            started = await self._start_path(path, info, activities)
        self.path = path
        self._metrics.routing_decisions.labels(self.route_name, path, reason).inc()
        self._metrics.calls_started.labels(self.route_name, path, "primary").inc()
        if self._closed:  # VAIC hung up (or the call expired) while the path was being chosen
            self._metrics.calls_ended.labels(self.route_name, path, "primary", "other").inc()
            self._kpi.record(self._metrics, self.route_name, path, self._loop.time(), "other")
            if self._primary is not None:
                await self._primary.end(None, "caller left during call setup")
            return
        self._metrics.calls_active.labels(self.route_name, path, "primary").inc()
        if self._journals is not None:
            self._journal = self._journals.open_call(
                self.route_name,
                self.route,
                self.conversation.conversation_id,
                path=path,
                transport=self._transport,
                start=params,
                now=self._loop.time(),
            )
        if not started:
            self._fail(f"{path} unavailable")
            return
        if self.route.migration.shadow and reason != "fallback":
            other: PathName = "legacy" if path == "voicegateway" else "voicegateway"
            shadow_info = dataclasses.replace(info, role="shadow")
            if shadow_admitted(other, shadow_info, self._budget):
                self._shadow = ShadowRunner(
                    other,
                    shadow_info,
                    primary_path=path,
                    make_path=self._make_path,
                    mappings=self._mappings,
                    divergence=self._divergence,
                    budget=self._budget,
                )

    async def _start_path(
        self, path: PathName, info: CallInfo, activities: Sequence[dict[str, Any]]
    ) -> bool:
        try:
            self._primary = self._make_path(path, info, self)
            await self._primary.start(activities)
        except PathStartError as exc:
            if not self._closed:  # else the caller left during the setup: no upstream's fault
                self._metrics.upstream_errors.labels(self.route_name, path, exc.kind).inc()
                self.log.warning("%s path could not start the call (%s)", path, exc.kind)
            if self._primary is not None:
                await self._primary.close()
            self._primary = None
            return False
        return True

    def _number(self, params: dict[str, Any]) -> NumberInfo:
        number = number_metadata(_text(params.get("caller")), self.route.default_region)
        result = "preserved" if number.result == "parsed" else "unparsable"
        self._metrics.number_metadata.labels(self.route_name, result).inc()
        return number

    # ---- PathSink: outputs of the primary path -----------------------------------------

    def emit(self, outputs: Sequence[dict[str, object]], *, turn_ending: bool = False) -> None:
        self._outbox.add_outputs(outputs, self._loop.time(), turn_ending=turn_ending)
        if self._async_turn is not None:
            self._async_turn[2].extend(outputs)

    def set_busy(self, busy: bool) -> None:
        self._outbox.set_busy(busy, self._loop.time())

    def fail(self, reason: str) -> None:
        self._fail(reason)

    async def settle(self) -> None:
        """Hand every complete batch to its channel, then re-arm the timer."""
        if self._starting:
            return
        for delivery in self._outbox.poll(self._loop.time()):
            if delivery.channel is Channel.RESPONSE and delivery.turn is not None:
                response = self._responses.get(delivery.turn)
                if response is None or response.done():
                    self._outbox.requeue(delivery)
                    continue
                if self._push is not None and self._push.carries_responses:
                    await self._push_delivery(delivery)
                else:
                    self._kpi.delivered(self._loop.time(), delivery.outputs)
                response.set_result(delivery.outputs)
            else:
                await self._push_delivery(delivery)
        if not self._closed:
            self._timer.arm(self._outbox.deadline())

    def _fail(self, reason: str) -> None:
        """End the call cleanly toward VAIC: the route's apology if it has one, a hangup
        activity, then no more outputs."""
        at = datetime.now(UTC)
        hangup: dict[str, object] = {
            "type": "event",
            "name": "hangup",
            "activityParams": {"hangupReason": reason},
        }
        apology: list[dict[str, object]] = (
            [{"type": "message", "text": self.route.apology}] if self.route.apology else []
        )
        self.emit([ac.stamp(activity, at) for activity in [*apology, hangup]])
        self._outbox.call_ended()

    def _finish(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._outbox.call_ended()
        self._close_async_turn(self._loop.time())
        if self._journal is not None:
            self._journal.end(self._loop.time(), reason)
        for response in self._responses.values():
            if not response.done():
                response.set_result(self._take_all())
        self._timer.cancel()
        if self.path is not None:
            self._metrics.calls_active.labels(self.route_name, self.path, "primary").dec()
            self._metrics.calls_ended.labels(self.route_name, self.path, "primary", reason).inc()
            now = self._loop.time()
            self._kpi.record(self._metrics, self.route_name, self.path, now, reason)

    def _close_async_turn(self, now: float) -> None:
        """Async mode: a turn's outputs, for comparison, are those before the next input."""
        if self._async_turn is not None:
            turn, started, outputs = self._async_turn
            if self._shadow is not None:
                self._shadow.primary_turn(turn, tuple(outputs), now - started)
            if self._journal is not None:
                self._journal.turn(started, self._async_inputs, outputs)
        self._async_turn = None

    # ---- plumbing --------------------------------------------------------------------------

    async def _push_delivery(self, delivery: Delivery) -> None:
        async with self._push_lock:
            channel = self._push
            if channel is None:
                self._outbox.requeue(delivery)
                return
            try:
                await channel.push(list(delivery.outputs))
                self._kpi.delivered(self._loop.time(), delivery.outputs)
            except ConnectionError:
                self.log.info("push channel lost; outputs wait for the next channel")
                self._outbox.requeue(delivery)
                self.detach_push(channel)

    def _take_all(self) -> Outputs:
        return tuple(o for d in self._outbox.poll(self._loop.time()) for o in d.outputs)

    def _on_deadline(self) -> None:
        task = self._loop.create_task(self.settle())
        task.add_done_callback(_log_task_error)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _country(number: NumberInfo) -> str | None:
    if number.metadata is None:
        return None
    country = number.metadata.get("country")
    return country if isinstance(country, str) else None


def _log_task_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("call task failed", exc_info=task.exception())
