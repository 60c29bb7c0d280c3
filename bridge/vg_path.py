"""The voicegateway path: the bridge plays Voice Gateway toward a Cognigy VG Endpoint.

Drives `voicegateway.CallProtocol` over one jambonz WebSocket, translates caller activities to
hook payloads and executed verbs to AudioCodes activities through the mapping engine, and
reports the activities to its sink. Owns the socket, its reader task and the ack timer.

Socket faults, as Voice Gateway handles them (voicegateway-ws.md §1.6): a close with a code other
than 1000 (or a dropped connection) is followed by reconnecting to the same URL with backoff
(500 ms doubling to 2 s, then +2 s), at most min(`#rc=`, `reconnect.max_retries`) attempts per
call, and `session:reconnect`; when that fails the call ends cleanly (`sink.fail`). A close with
1000 is graceful: the call goes on with the verbs it has and hangs up when they run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.audiocodes import wire as ac
from bridge.audiocodes.conversation import InputKind, classify
from bridge.mapping.engine import UNMAPPED_NODE, Engine, Translation
from bridge.path import TURN_ENDING_VERBS, CallInfo, PathName, PathSink, PathStartError
from bridge.timer import DeadlineTimer
from bridge.transport.vg import (
    UpstreamConnectError,
    VoiceGatewaySocket,
    next_backoff,
    open_socket,
    reconnect_options,
    should_retry,
)
from bridge.voicegateway import events as vge
from bridge.voicegateway.protocol import UNSUPPORTED, CallProtocol
from bridge.voicegateway.wire import HookKind

SocketOpener = Callable[[str, float], Awaitable[VoiceGatewaySocket]]
_HOOK_KINDS = {"input": HookKind.INPUT, "transfer": HookKind.TRANSFER, "play": HookKind.PLAY}
_TRANSFER_VERBS = frozenset({"dial", "sip:refer"})
_ENDING_VERBS = frozenset({"hangup", "sip:decline"})
MAX_REJECTED_FRAMES = 50
log = logging.getLogger("bridge.vg_path")


async def open_vg_socket(url: str, timeout_s: float) -> VoiceGatewaySocket:
    return await open_socket(url, timeout_s=timeout_s)


class VoiceGatewayPath:
    """One call on a Voice Gateway endpoint."""

    name: PathName = "voicegateway"

    def __init__(
        self, info: CallInfo, sink: PathSink, engine: Engine, opener: SocketOpener
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._info = info
        self._sink = sink
        self._engine = engine
        self._opener = opener
        self._metrics = info.metrics
        self._route = info.route
        self._protocol = CallProtocol(
            info.call_sid,
            input_hook=info.route.input_hook,
            now=self._loop.time(),
            serves=lambda verb: self._engine.serves(verb, self._ctx),
        )
        self._ctx: dict[str, Any] = {
            "route": info.route_name,
            "call_sid": info.call_sid,
            "conversation_id": info.conversation_id,
            "account_sid": _sid(info.route_name),
            "application_sid": _sid(f"{info.route_name}:app"),
            "caller_e164": info.number.e164,
            "number_metadata": info.number.metadata,
            "sip_headers": dict(info.route.sip_headers),
            "language": "en-US",
            "transfer_verb": None,
            "default_region": info.route.default_region,
            "replay": info.route.replay,
        }
        self._socket: VoiceGatewaySocket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._timer = DeadlineTimer(self._loop, self._on_deadline)
        self._send_lock = asyncio.Lock()
        self._accepted: asyncio.Future[None] = self._loop.create_future()
        self._open = False
        self._unmapped_logged: set[str] = set()
        self._rejected = 0
        upstream = info.route.voicegateway
        self._url = upstream.url if upstream is not None else ""
        self._options = reconnect_options(self._url)
        self._reconnects_left = 0
        if upstream is not None:
            self._reconnects_left = min(
                self._options.max_reconnects, upstream.reconnect.max_retries
            )
            self._backoff_s = upstream.reconnect.initial_backoff_ms / 1000
        self.log = logging.LoggerAdapter(
            log,
            {
                "route": info.route_name,
                "conversation": info.conversation_id,
                "call_sid": info.call_sid,
            },
        )

    # ---- caller side ---------------------------------------------------------------------

    async def start(self, activities: Sequence[dict[str, Any]]) -> None:
        translation = self._engine.activity_to_voicegateway(activities[0], self._ctx)
        if not self._accept("to_voicegateway", translation, "start") or not translation.outputs:
            raise PathStartError("translation", "start event could not be translated")
        upstream = self._route.voicegateway
        assert upstream is not None
        try:
            self._socket = await self._opener(upstream.url, upstream.connect_timeout_ms / 1000)
        except UpstreamConnectError as exc:
            raise PathStartError(exc.kind, exc.detail) from exc
        self._open = True
        self._protocol.start(dict(translation.outputs[0]), self._loop.time())
        self._reader = asyncio.create_task(self._serve(self._socket))
        await self._after_protocol()
        await asyncio.shield(self._accepted)  # raises PathStartError if the app never took it
        await self.forward(activities[1:])

    def snapshot(self) -> dict[str, Any] | None:
        """What another instance needs to go on with this call (`CallProtocol.snapshot` and
        the translation context); None when there is nothing to go on with."""
        if not self._open:
            return None
        protocol = self._protocol.snapshot(self._loop.time())
        if protocol is None:
            return None
        context = {k: self._ctx[k] for k in ("language", "transfer_verb")}
        return {"protocol": protocol, "context": context}

    async def resume(self, data: dict[str, Any]) -> None:
        """Go on with a call another instance served: a new socket to the same app and
        `session:reconnect` for the same call_sid, as after a dropped socket (§1.6). Raises
        PathStartError when the snapshot is unusable or the app cannot be reached."""
        try:
            self._protocol = CallProtocol.restore(
                data["protocol"],
                self._loop.time(),
                serves=lambda verb: self._engine.serves(verb, self._ctx),
            )
            self._ctx.update({k: data["context"][k] for k in ("language", "transfer_verb")})
        except (ValueError, KeyError, TypeError) as exc:
            raise PathStartError("bad_snapshot", str(exc)) from exc
        upstream = self._route.voicegateway
        assert upstream is not None
        try:
            self._socket = await self._opener(upstream.url, upstream.connect_timeout_ms / 1000)
        except UpstreamConnectError as exc:
            raise PathStartError(exc.kind, exc.detail) from exc
        self._open = True
        self._accepted.set_result(None)  # accepted long ago, on the instance that started it
        self._protocol.reconnected(self._loop.time())
        self._reader = asyncio.create_task(self._serve(self._socket))
        await self._after_protocol()

    async def forward(self, activities: Sequence[dict[str, Any]]) -> None:
        for activity in activities:
            if not self._open:
                self.log.info("input after the Voice Gateway side ended")
                return
            if classify(activity) is InputKind.END:
                await self.end(_reason_code(activity), None)
                return
            translation = self._engine.activity_to_voicegateway(activity, self._ctx)
            if not self._accept("to_voicegateway", translation, _activity_name(activity)):
                continue
            hook_kind = _HOOK_KINDS.get(translation.message or "")
            if hook_kind is None or not translation.outputs:
                self.log.warning("mapping %s gave no hook message", translation.node)
                continue
            sent = self._protocol.send_input(
                hook_kind, dict(translation.outputs[0]), self._loop.time()
            )
            if not sent:
                self.log.info("no %s hook pending; input not reported", hook_kind.value)
            await self._after_protocol()

    async def end(self, reason_code: str | None, reason: str | None) -> None:
        if not self._open:
            return
        end = {
            "type": "event",
            "name": "conversationEnd",
            "parameters": {"reasonCode": reason_code, "reason": reason},
        }
        translation = self._engine.activity_to_voicegateway(end, self._ctx)
        by = "caller"
        if self._accept("to_voicegateway", translation, "conversationEnd") and translation.outputs:
            by = str(translation.outputs[0].get("call_termination_by", "caller"))
        self._protocol.end(by, self._loop.time())
        await self._after_protocol()

    async def expire(self) -> None:
        if self._open:
            self._protocol.end("jambonz", self._loop.time())
            await self._after_protocol()

    async def detach(self) -> None:
        # 1001 (going away), as a Voice Gateway shutting down: the app keeps the call for the
        # session:reconnect of the instance that resumes it
        await self.close(1001)

    async def close(self, code: int = 1000) -> None:
        self._open = False
        self._timer.cancel()
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await socket.close(code)
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if not self._accepted.done():
            self._accepted.set_exception(PathStartError("closed", "call closed"))
            self._accepted.exception()

    # ---- Voice Gateway side --------------------------------------------------------------

    async def _serve(self, socket: VoiceGatewaySocket | None) -> None:
        """Read the socket; when it closes under the call, reconnect or end the call."""
        try:
            while socket is not None:
                while (frame := await socket.receive()) is not None:
                    self._protocol.receive_text(frame, self._loop.time())
                    await self._after_protocol()
                socket = await self._after_close(socket)
        except Exception:
            # A bug must not leave the call waiting forever (start() awaits the ack): end it.
            self.log.exception("voice gateway reader failed; ending the call")
            if self._accepted.done():  # before that, the session counts the failed start
                self._count_error("internal")
            self._lost("internal error", kind="internal")
            with contextlib.suppress(Exception):  # already logged; flush what the end produced
                await self._after_protocol()
            await self._sink.settle()

    async def _after_close(self, socket: VoiceGatewaySocket) -> VoiceGatewaySocket | None:
        """The app's side closed `socket`; returns the socket that replaces it, if any."""
        if not self._open or self._socket is not socket:
            return None  # the bridge closed it
        self._socket = None
        if socket.close_code == 1000:
            self.log.info("voice gateway app closed the socket; the call ends with its verbs")
            self._protocol.closed_gracefully(self._loop.time())
            await self._after_protocol()
            return None
        self._count_error("closed")
        self.log.warning("voice gateway socket dropped (close code %s)", socket.close_code)
        self._protocol.connection_lost(self._loop.time())
        await self._after_protocol()
        replacement = await self._reconnect()
        if replacement is None:
            if self._open:
                if self._accepted.done():  # before that, the failed start is counted
                    self._count_error("reconnect_failed")
                self._lost("voice gateway connection lost", kind="reconnect_failed")
                await self._after_protocol()
            return None
        self._socket = replacement
        self._protocol.reconnected(self._loop.time())
        await self._after_protocol()
        return replacement

    async def _reconnect(self) -> VoiceGatewaySocket | None:
        """Connect again to the same URL with backoff, within the call's attempt budget."""
        upstream = self._route.voicegateway
        assert upstream is not None
        while self._open and self._reconnects_left > 0:
            self._reconnects_left -= 1
            delay, self._backoff_s = self._backoff_s, next_backoff(self._backoff_s)
            await asyncio.sleep(delay)
            if not self._open:
                return None
            try:
                socket = await self._opener(self._url, upstream.connect_timeout_ms / 1000)
            except UpstreamConnectError as exc:
                self.log.warning("reconnecting to the voice gateway failed (%s)", exc.kind)
                if not should_retry(exc, self._options):
                    return None
                continue
            if not self._open:  # the call ended while connecting
                await socket.close(1000)
                return None
            self.log.info("reconnected to the voice gateway")
            return socket
        return None

    async def _after_protocol(self) -> None:
        """Apply what the jambonz side produced, send its messages, re-arm the ack timer."""
        now = self._loop.time()
        close_code: int | None = None
        while events := self._protocol.events_received():
            for event in events:
                close_code = self._apply(event, now) or close_code
        self._sink.set_busy(self._protocol.awaiting_ack)
        await self._send_pending()
        self._timer.arm(self._protocol.next_deadline())
        await self._sink.settle()
        if close_code is not None and self._open:
            self._open = False
            socket, self._socket = self._socket, None
            if socket is not None:
                await socket.close(close_code)
            if not self._accepted.done():
                self._lost("voice gateway refused the call")

    def _apply(self, event: object, now: float) -> int | None:
        """Apply one jambonz-side event; returns a close code when the socket must close."""
        if isinstance(event, vge.VerbExecuted):
            self._run_verb(event.verb, now)
        elif isinstance(event, vge.SessionAccepted):
            self._metrics.vg_ack.labels(self._info.route_name).observe(event.ack_seconds)
            if not self._accepted.done():
                self._accepted.set_result(None)
        elif isinstance(event, vge.Acked):
            metrics = self._metrics
            metrics.child(metrics.vg_ack, self._info.route_name).observe(event.ack_seconds)
        elif isinstance(event, vge.AckTimedOut):
            self._metrics.vg_ack_timeouts.labels(self._info.route_name).inc()
            if event.message_type == "session:new":
                self._lost("voice gateway did not answer the call", kind="ack_timeout")
            elif event.message_type == "session:reconnect":
                self._count_error("reconnect_ack_timeout")
                self._lost("voice gateway did not take the reconnect", kind="ack_timeout")
        elif isinstance(event, vge.CloseRequested):
            return event.code
        elif isinstance(event, vge.CommandIgnored):
            self._command_ignored(event, now)
        elif isinstance(event, vge.FrameRejected):
            self._count_error("bad_frame")
            self._rejected += 1
            if self._rejected <= 3:
                self.log.warning("voice gateway frame rejected: %s", event.reason)
            if self._rejected == MAX_REJECTED_FRAMES:  # an app that only sends garbage
                self._lost("voice gateway sends only invalid frames", kind="bad_frames")
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
            elif self._route.unmapped == "fail":
                self._sink.fail(f"unmapped verb {name}")
                self._end_now(now)
                return
        self._sink.emit(outputs, turn_ending=name in TURN_ENDING_VERBS)
        if name in _ENDING_VERBS:
            self._end_now(now)

    def _command_ignored(self, event: vge.CommandIgnored, now: float) -> None:
        """A command with no AudioCodes counterpart is unmapped like a verb without a mapping:
        counted, logged once per call, and the route's `unmapped` policy decides."""
        if event.reason != UNSUPPORTED:
            self.log.debug("command %s ignored: %s", event.command, event.reason)
            return
        translation = Translation(UNMAPPED_NODE, "unmapped", error="no AudioCodes counterpart")
        self._accept("to_audiocodes", translation, f"command {event.command}")
        if self._route.unmapped == "fail":
            self._sink.fail(f"unmapped command {event.command}")
            self._end_now(now)

    def _lost(self, reason: str, *, kind: str | None = None) -> None:
        """The Voice Gateway side failed: before the call was taken, starting fails (so the
        call can fall back); after, the call ends cleanly."""
        if not self._accepted.done():
            self._accepted.set_exception(PathStartError(kind or "refused", reason))
            self._accepted.exception()  # retrieved here: start() may be gone already
            self._end_now(self._loop.time())
            return
        if self._accepted.exception() is not None:
            return  # the start already failed; the call has moved on
        self._sink.fail(reason)
        self._end_now(self._loop.time())

    def _end_now(self, now: float) -> None:
        if self._open and not self._protocol.ended:
            self._protocol.end("jambonz", now)

    def _accept(self, direction: str, translation: Translation, what: str) -> bool:
        metrics = self._metrics
        metrics.child(metrics.translations, direction, translation.node, translation.result).inc()
        if translation.result == "ok":
            return True
        if what not in self._unmapped_logged:
            self._unmapped_logged.add(what)
            self.log.warning(
                "%s %s: %s (%s)", direction, what, translation.result, translation.error or "-"
            )
        return False

    def _count_error(self, kind: str) -> None:
        self._metrics.upstream_errors.labels(self._info.route_name, self.name, kind).inc()

    async def _send_pending(self) -> None:
        async with self._send_lock:
            messages = self._protocol.messages_to_send()
            if messages and self._socket is not None:
                try:
                    await self._socket.send_messages(messages)
                except Exception:  # the reader notices the closed socket and ends the call
                    self.log.warning("sending to the voice gateway failed")

    def _on_deadline(self) -> None:
        self._protocol.tick(self._loop.time())
        task = self._loop.create_task(self._after_protocol())
        task.add_done_callback(_log_task_error)


def _sid(name: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"acvg-bridge:{name}"))


def _activity_name(activity: dict[str, Any]) -> str:
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
        log.error("voice gateway task failed", exc_info=task.exception())
