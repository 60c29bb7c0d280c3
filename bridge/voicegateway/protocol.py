"""Sans-I/O Voice Gateway (jambonz feature-server) role of one call on the jambonz WS API.

`CallProtocol` takes app frames in (`receive_text`/`receive_message`), caller-side results in
(`send_input`), and hands out the frames to send (`messages_to_send()`) and typed events
(`events_received()`). It owns the envelope, ack bookkeeping, deadlines and the verb stack,
following voicegateway-ws.md §1 and feature-server's rules. Performs no I/O and reads no clock:
every method that needs time takes `now` (a monotonic reading, seconds).

Decisions where the bridge differs from, or had to pick within, feature-server behaviour:
- `session:new` ack without a non-empty verb array, or no ack within ACK_TIMEOUT_S: the call is
  rejected as jambonz does at app retrieval (480 to the caller, socket closed 1001, no
  `jambonz:error`): `FrameRejected` (or `AckTimedOut`) then `CloseRequested(1001)`.
- `verb:hook` not acked within ACK_TIMEOUT_S: `AckTimedOut`, then the stack carries on as after
  an empty ack (feature-server would also send `jambonz:error`; apps that never ack hooks are
  tolerated, design.md §3.2).
- A blocking verb (`gather`, `dial`, `sip:refer`) completes when the ack of its hook arrives (or
  times out): the ack's verbs replace the remaining stack, an empty ack lets it continue.
- An ack carrying verbs replaces the stack even if the verb that sent the hook was killed
  meanwhile (feature-server's `performAction` does the same).
- A non-sticky `config.bargeIn` hook is used for one input only (feature-server stops the
  background gather after its first result unless `sticky`).
- `call:status` in-progress is sent right after the `session:new` ack (design.md §3.1);
  no separate `trying` status is sent (the `session:new` data already carries it).
- Socket dropped (close code other than 1000), as feature-server's ws-requestor does: hooks in
  flight are abandoned (their verb completes as after an empty ack); `reconnected()` sends
  `session:reconnect` with the `session:new` data and a new msgid; frames produced meanwhile are
  held until its ack (their ack budgets start when they are sent); a reconnect before the
  `session:new` ack re-keys that ack to the new msgid. Verbs in a `session:reconnect` ack are
  ignored (feature-server drops them); no ack within ACK_TIMEOUT_S: `AckTimedOut`, held frames
  are dropped and the driver ends the call (feature-server hangs up).
- Hooks the bridge reports itself (kind `VERB`, never fed by caller input): a `redirect` verb's
  actionHook (feature-server `redirect.js`), and the actionHook of a verb that on Voice Gateway
  waits for it but that no mapping serves (`UNSERVED_HOOK_RESULTS`: enqueue, conference, llm,
  ...), reported at once with the failure result, or the success result of a served verb VAIC
  never answers (`sip:request`); all block the stack until the ack.
- `redirect` command with object data: `call_hook` sends `session:redirect` (acked; its verbs
  replace the stack), `parent_call` runs its verbs at once; child legs do not exist here. The
  `tag` command (@jambonz/sdk `injectTag`; feature-server's WS switch has none) acts as the
  `tag` verb. `sip:decline` ends the call as `hangup` does (the call is already answered).
- App closed with 1000 (`closed_gracefully()`): every later frame is dropped, the remaining
  stack runs (a blocking verb completes on its next result, which is not reported), and a
  `hangup` runs when the stack is empty. Before the `session:new` ack it rejects the call at once
  (feature-server would wait for the ack timeout).
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

from bridge import jsontext
from bridge.errors import VoiceGatewayProtocolError
from bridge.voicegateway.events import (
    Acked,
    AckTimedOut,
    CloseRequested,
    CommandIgnored,
    Event,
    FrameRejected,
    SessionAccepted,
    StackIdle,
    VerbExecuted,
)
from bridge.voicegateway.verbs import hook_name, normalize_verbs
from bridge.voicegateway.wire import (
    ACK_TIMEOUT_S,
    COMMANDS_WITHOUT_DATA,
    ERROR_CONTENT_MAX_CHARS,
    HANDED_OFF_HOOK_RESULTS,
    UNSERVED_HOOK_RESULTS,
    CallStatus,
    CloseCode,
    Command,
    ErrorMsg,
    HookKind,
    MessageType,
    Verb,
)

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

# CallInfo.toJSON fields (§2.2) copied from the session:new data into every later payload.
_BASE_FIELDS = (
    "call_sid",
    "direction",
    "from",
    "to",
    "call_id",
    "sbc_callid",
    "sip_status",
    "sip_reason",
    "call_status",
    "caller_id",
    "caller_name",
    "account_sid",
    "trace_id",
    "application_sid",
    "fs_sip_address",
    "parent_call_sid",
    "originating_sip_ip",
    "originating_sip_trunk_name",
    "api_base_url",
    "fs_public_ip",
)

_TRANSFER_VERBS = frozenset({Verb.DIAL, Verb.SIP_REFER})
# sip:decline rejects an unanswered call; the bridge's calls are answered, so it ends the call.
_ENDING_VERBS = frozenset({Verb.HANGUP, Verb.SIP_DECLINE})
_OWN_HOOK_VERBS = frozenset(UNSERVED_HOOK_RESULTS) | frozenset(HANDED_OFF_HOOK_RESULTS)
_DTMF_COMMAND_DURATION_MS = 250  # the dtmf command's default; the dtmf verb's is 500 (§3.1)


_msgids = random.Random()


def new_msgid() -> str:
    """A short-uuid-like message id: 22 base58 characters from 128 random bits (§1.2).

    One draw of random bits, not one per character, from a seeded non-cryptographic generator
    (a msgid only has to be unique on its socket): this runs for every message (bench profile,
    docs/benchmarks.md)."""
    value = _msgids.getrandbits(128)
    chars = []
    for _ in range(22):
        value, digit = divmod(value, 58)
        chars.append(_BASE58[digit])
    return "".join(chars)


class _Phase(Enum):
    NEW = auto()  # start() not called yet
    OFFERED = auto()  # session:new sent, waiting for its ack
    ACTIVE = auto()  # app accepted; the verb stack runs
    ENDED = auto()  # ended or rejected; every later frame is ignored


@dataclass
class _PendingAck:
    message_type: MessageType
    sent_at: float
    deadline: float
    blocking_token: int | None  # the blocking verb this hook completes, if any


@dataclass
class _Blocking:
    verb: dict[str, Any]
    kind: HookKind
    hook: str | None
    token: int
    hook_msgid: str | None = None  # set once its hook was sent: it no longer takes input


class CallProtocol:
    """One call's jambonz WS session, Voice Gateway side."""

    def __init__(
        self,
        call_sid: str,
        *,
        input_hook: str = "voice",
        now: float,
        msgid_factory: Callable[[], str] | None = None,
        serves: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.call_sid = call_sid
        self.input_hook = input_hook
        self._created_at = now
        self._now = now
        self._serves = serves or _serves_none
        self._new_msgid = msgid_factory or new_msgid
        self._outbox: list[dict[str, Any]] = []
        self._events: list[Event] = []
        self._phase = _Phase.NEW
        self._session_new_data: dict[str, Any] = {}
        self._started_at = now
        self._base: dict[str, Any] = {"call_sid": call_sid}
        self._customer_data: dict[str, Any] = {}
        self._stack: list[dict[str, Any]] = []
        self._blocking: _Blocking | None = None
        self._tokens = 0
        self._pending: dict[str, _PendingAck] = {}
        self._bargein_hook: str | None = None
        self._bargein_sticky = False
        self._play_hook: str | None = None
        self._idle = False
        self._hung_up = False
        self._held: list[dict[str, Any]] | None = None  # frames waiting for a reconnect ack
        self._disconnected = False
        self._reconnect_msgid: str | None = None
        self._graceful = False  # the app closed with 1000: frames are dropped

    # ----------------------------------------------------------------- outputs

    def messages_to_send(self) -> list[dict[str, Any]]:
        """Frames to send to the app, in order (drains the outbox)."""
        out, self._outbox = self._outbox, []
        return out

    def events_received(self) -> list[Event]:
        """Events since the last call, in order (drains)."""
        out, self._events = self._events, []
        return out

    # ------------------------------------------------------------------- state

    @property
    def accepted(self) -> bool:
        """The app acked `session:new` with verbs and the call has not ended."""
        return self._phase is _Phase.ACTIVE

    @property
    def ended(self) -> bool:
        return self._phase is _Phase.ENDED

    @property
    def hung_up(self) -> bool:
        """A `hangup` verb (or `call:status` completed command) ran; the session should end()."""
        return self._hung_up

    @property
    def awaiting_ack(self) -> bool:
        """A message we sent (`session:new`, `verb:hook`) still waits for the app's ack."""
        return self._phase is not _Phase.ENDED and bool(self._pending)

    @property
    def session_new_data(self) -> dict[str, Any]:
        """The `session:new` data as sent (`session:reconnect` resends it verbatim, §1.3)."""
        return copy.deepcopy(self._session_new_data)

    @property
    def customer_data(self) -> dict[str, Any]:
        return copy.deepcopy(self._customer_data)

    def pending_hook(self, kind: HookKind) -> str | None:
        """The hook `send_input(kind, ...)` would use now, or None if it would send nothing."""
        if self._phase is not _Phase.ACTIVE or self._hung_up or kind is HookKind.VERB:
            return None
        blocking = self._open_blocking(kind)
        if kind is HookKind.INPUT:
            if blocking is not None and blocking.hook is not None:
                return blocking.hook
            return self._bargein_hook or self.input_hook
        if kind is HookKind.TRANSFER:
            return blocking.hook if blocking is not None else None
        return self._play_hook

    def next_deadline(self) -> float | None:
        """The earliest ack deadline, for the driver's timer; None when nothing waits."""
        deadlines = [p.deadline for p in self._pending.values() if p.deadline != math.inf]
        if self._phase is _Phase.ENDED or not deadlines:
            return None
        return min(deadlines)

    # ------------------------------------------------------------------ inputs

    def start(self, session_new_data: Mapping[str, Any], now: float) -> None:
        """Queue `session:new` with `session_new_data` (snake_case call details, §2.1)."""
        if self._phase is not _Phase.NEW:
            raise VoiceGatewayProtocolError("session:new already sent for this call")
        data = copy.deepcopy(dict(session_new_data))
        data.setdefault("call_sid", self.call_sid)
        self._session_new_data = data
        self._started_at = now
        for field in _BASE_FIELDS:
            if field in data:
                self._base[field] = copy.deepcopy(data[field])
        if "fs_sip_address" not in self._base and "local_sip_address" in data:
            self._base["fs_sip_address"] = data["local_sip_address"]
        self._base["call_sid"] = self.call_sid
        customer = data.get("customerData", data.get("customer_data"))
        if isinstance(customer, dict):
            self._customer_data = copy.deepcopy(customer)
        self._phase = _Phase.OFFERED
        self._send_acked(MessageType.SESSION_NEW, data, now)

    def receive_text(self, text: str | bytes, now: float) -> None:
        """One text frame from the app. Invalid frames queue `jambonz:error`; never raises."""
        self.tick(now)
        if self._phase is _Phase.ENDED:
            return
        raw = text if isinstance(text, str) else text.decode("utf-8", errors="replace")
        try:
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            msg = jsontext.loads(text)
        except (ValueError, RecursionError) as exc:
            self._reject_frame(f"invalid JSON: {type(exc).__name__}", raw)
            return
        if not isinstance(msg, dict):
            self._reject_frame("frame is not a JSON object", raw)
            return
        self._dispatch(msg, raw, now)

    def receive_message(self, msg: object, now: float) -> None:
        """One already-parsed frame from the app (same rules as `receive_text`)."""
        self.tick(now)
        if self._phase is _Phase.ENDED:
            return
        raw = _dump(msg)
        if not isinstance(msg, dict):
            self._reject_frame("frame is not a JSON object", raw)
            return
        self._dispatch(msg, raw, now)

    def send_input(self, kind: HookKind, result: Mapping[str, Any], now: float) -> bool:
        """Report a caller-side result as `verb:hook` on the hook of `kind`.

        `result` holds the hook's result fields (snake_case, §3.2); base fields are added.
        Returns False, sending nothing, when no hook of that kind is pending.
        """
        self.tick(now)
        if self._phase is not _Phase.ACTIVE or self._hung_up or kind is HookKind.VERB:
            return False
        blocking = self._open_blocking(kind)
        if self._graceful:
            # the socket is closed: the result completes its verb but cannot be reported
            if blocking is not None:
                self._blocking = None
                self._run()
            return False
        token: int | None = None
        if kind is HookKind.INPUT:
            if blocking is not None:
                hook = blocking.hook or self._bargein_hook or self.input_hook
                token = blocking.token
            elif self._bargein_hook is not None:
                hook = self._bargein_hook
                if not self._bargein_sticky:
                    self._bargein_hook = None
            else:
                hook = self.input_hook
        elif kind is HookKind.TRANSFER:
            if blocking is None:
                return False
            if blocking.hook is None:
                # a dial / sip:refer without actionHook simply completes
                self._blocking = None
                self._run()
                return False
            hook = blocking.hook
            token = blocking.token
        else:
            if self._play_hook is None:
                return False
            hook, self._play_hook = self._play_hook, None
        msgid = self._send_acked(
            MessageType.VERB_HOOK, self._payload(result), now, hook=hook, blocking_token=token
        )
        if blocking is not None and token is not None:
            blocking.hook_msgid = msgid
        return True

    def send_call_status(
        self, status: CallStatus | str, extra: Mapping[str, Any] | None, now: float
    ) -> None:
        """Queue `call:status` (not acked). Keys of `extra` that are base fields update them."""
        self.tick(now)
        if self._phase in (_Phase.NEW, _Phase.ENDED):
            return
        self._queue_call_status(str(status), extra or {})

    def end(self, termination_by: str, now: float) -> None:
        """The call is over: queue `call:status` completed, then ask to close 1000.

        `termination_by`: "caller", "jambonz" (upstream) or "bot" (Cognigy's fork). Idempotent.
        """
        if self._phase is _Phase.ENDED:
            return
        if self._phase is not _Phase.NEW:
            duration = int(max(0.0, now - self._started_at))
            self._base["sip_status"] = 200
            self._base["sip_reason"] = "OK"
            self._queue_call_status(
                CallStatus.COMPLETED,
                {"call_termination_by": termination_by, "duration": duration},
            )
        self._finish(CloseCode.NORMAL)

    def connection_lost(self, now: float) -> None:
        """The socket dropped (closed with a code other than 1000); the driver reconnects.

        Hooks in flight are abandoned; a pending `session:new` ack keeps its budget. Frames
        produced from now on are held until the `session:reconnect` ack.
        """
        self.tick(now)
        if self._phase not in (_Phase.OFFERED, _Phase.ACTIVE) or self._graceful:
            return
        self._disconnected = True
        if self._held is None:
            self._held = []
        if self._reconnect_msgid is not None:
            pending = self._pending.get(self._reconnect_msgid)
            if pending is not None and pending.message_type is MessageType.SESSION_RECONNECT:
                del self._pending[self._reconnect_msgid]  # a re-keyed session:new ack stays
            self._reconnect_msgid = None
        for msg in self._outbox:  # never handed out: they wait with the held ones
            if msg["type"] in (MessageType.SESSION_NEW, MessageType.SESSION_RECONNECT):
                continue  # the next session:reconnect stands for them
            self._held.append(msg)
            unsent = self._pending.get(msg["msgid"])
            if unsent is not None:
                unsent.deadline = math.inf
        self._outbox = []
        for msgid, pending in list(self._pending.items()):
            if pending.message_type is not MessageType.SESSION_NEW and pending.deadline != math.inf:
                del self._pending[msgid]
                self._complete_hook(pending, [])

    def reconnected(self, now: float) -> str | None:
        """A new socket is open: queue `session:reconnect` (the `session:new` data, a new msgid,
        ack required). Returns its msgid, or None when there is nothing to reconnect."""
        self.tick(now)
        if self._phase not in (_Phase.OFFERED, _Phase.ACTIVE) or not self._disconnected:
            return None
        self._disconnected = False
        msgid = self._new_msgid()
        self._outbox.append(
            {
                "type": MessageType.SESSION_RECONNECT.value,
                "msgid": msgid,
                "call_sid": self.call_sid,
                "data": copy.deepcopy(self._session_new_data),
            }
        )
        offered = [m for m, p in self._pending.items() if p.message_type is MessageType.SESSION_NEW]
        if offered:  # not acked yet: the app's ack to the reconnect accepts the call
            self._pending[msgid] = self._pending.pop(offered[0])
        else:
            self._pending[msgid] = _PendingAck(
                MessageType.SESSION_RECONNECT, now, now + ACK_TIMEOUT_S, None
            )
        self._reconnect_msgid = msgid
        return msgid

    # --------------------------------------------------------------- snapshots

    def snapshot(self, now: float) -> dict[str, Any] | None:
        """JSON-ready state for continuing this call on another instance, as if its socket had
        dropped: the new owner restores it and reconnects (`session:reconnect`). Hooks waiting
        for an ack are not part of it (a dropped socket abandons them too), and neither are
        frames not yet sent. None when there is nothing to continue (not accepted, ended, or
        closed by the app)."""
        if self._phase is not _Phase.ACTIVE or self._graceful:
            return None
        blocking = self._blocking
        # Shares values with the live state (no copies: this runs every turn); the caller
        # serializes it before the protocol sees another event.
        return {
            "call_sid": self.call_sid,
            "input_hook": self.input_hook,
            "elapsed_s": max(0.0, now - self._started_at),
            "session_new": self._session_new_data,
            "base": self._base,
            "customer_data": self._customer_data,
            "stack": self._stack,
            "blocking": None
            if blocking is None
            else {
                "verb": blocking.verb,
                "kind": blocking.kind.value,
                "hook": blocking.hook,
                "hook_sent": blocking.hook_msgid is not None,
            },
            "bargein_hook": self._bargein_hook,
            "bargein_sticky": self._bargein_sticky,
            "play_hook": self._play_hook,
            "hung_up": self._hung_up,
        }

    @classmethod
    def restore(
        cls,
        data: Mapping[str, Any],
        now: float,
        *,
        msgid_factory: Callable[[], str] | None = None,
        serves: Callable[[dict[str, Any]], bool] | None = None,
    ) -> CallProtocol:
        """The call `snapshot` described, disconnected: the driver opens a socket and calls
        `reconnected`. A blocking verb whose hook was in flight completes as on a dropped
        socket: the stack goes on. ValueError if `data` is not a snapshot."""
        try:
            protocol = cls(
                str(data["call_sid"]),
                input_hook=str(data["input_hook"]),
                now=now,
                msgid_factory=msgid_factory,
                serves=serves,
            )
            protocol._started_at = now - float(data["elapsed_s"])
            protocol._session_new_data = dict(data["session_new"])
            protocol._base = dict(data["base"])
            protocol._customer_data = dict(data["customer_data"])
            protocol._stack = [dict(v) for v in data["stack"]]
            blocking = data["blocking"]
            if blocking is not None and not blocking["hook_sent"]:
                protocol._tokens = 1
                protocol._blocking = _Blocking(
                    dict(blocking["verb"]),
                    HookKind(blocking["kind"]),
                    None if blocking["hook"] is None else str(blocking["hook"]),
                    1,
                )
            protocol._bargein_hook = _optional_str(data["bargein_hook"])
            protocol._bargein_sticky = bool(data["bargein_sticky"])
            protocol._play_hook = _optional_str(data["play_hook"])
            protocol._hung_up = bool(data["hung_up"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a call protocol snapshot: {exc}") from None
        protocol._phase = _Phase.ACTIVE
        protocol._disconnected = True
        protocol._held = []
        protocol._idle = protocol._blocking is None and not protocol._stack
        if protocol._blocking is None and protocol._stack:
            protocol._run()  # what the abandoned hook's verb left to do
        return protocol

    def closed_gracefully(self, now: float) -> None:
        """The app closed the socket with 1000: drop later frames, finish the stack, hang up."""
        self.tick(now)
        if self._phase is _Phase.ENDED:
            return
        if self._phase is not _Phase.ACTIVE:
            self._finish(CloseCode.GOING_AWAY)
            return
        self._graceful = True
        self._held = None
        self._disconnected = False
        self._reconnect_msgid = None
        self._outbox = []
        for msgid, pending in list(self._pending.items()):
            del self._pending[msgid]
            self._complete_hook(pending, [])
        self._run()

    def tick(self, now: float) -> None:
        """Handle every ack deadline at or before `now`."""
        self._now = now
        while self._phase is not _Phase.ENDED:
            due = [(p.deadline, m) for m, p in self._pending.items() if p.deadline <= now]
            if not due:
                return
            _, msgid = min(due)
            pending = self._pending.pop(msgid)
            self._events.append(AckTimedOut(str(pending.message_type), msgid))
            if pending.message_type is MessageType.SESSION_NEW:
                self._finish(CloseCode.GOING_AWAY)
            elif pending.message_type is MessageType.SESSION_RECONNECT:
                self._abandon_held()
            else:
                self._complete_hook(pending, [])

    # ------------------------------------------------------------- app frames

    def _dispatch(self, msg: dict[str, Any], raw: str, now: float) -> None:
        msg_type = msg.get("type")
        if msg_type == MessageType.ACK:
            self._on_ack(msg, raw, now)
        elif msg_type == MessageType.COMMAND:
            self._on_command(msg, raw)
        elif msg_type is None:
            self._reject_frame("message without type", raw)
        else:
            self._reject_frame(f"unknown message type {_short(msg_type)}", raw)

    def _on_ack(self, msg: dict[str, Any], raw: str, now: float) -> None:
        msgid = msg.get("msgid")
        if not isinstance(msgid, str) or not msgid:
            self._reject_frame("ack without msgid", raw)
            return
        pending = self._pending.pop(msgid, None)
        if pending is None:
            return  # ack to an unknown (or already timed out) msgid: ignored (§1.4)
        data = msg.get("data")
        if msgid == self._reconnect_msgid:
            self._reconnect_msgid = None
            if pending.message_type is MessageType.SESSION_NEW:
                self._on_session_ack(pending, data, now)
            # feature-server ignores verbs in a session:reconnect ack
            if self._phase is not _Phase.ENDED:
                self._release_held(now)
            return
        if pending.message_type is MessageType.SESSION_NEW:
            self._on_session_ack(pending, data, now)
            return
        self._events.append(Acked(pending.message_type.value, max(0.0, now - pending.sent_at)))
        verbs: list[dict[str, Any]] = []
        if isinstance(data, list):  # feature-server ignores a non-array ack payload
            try:
                verbs = normalize_verbs(data)
            except VoiceGatewayProtocolError as exc:
                self._reject_frame(f"invalid verbs in ack: {exc}", raw)
        self._complete_hook(pending, verbs)

    def _on_session_ack(self, pending: _PendingAck, data: object, now: float) -> None:
        try:
            verbs = normalize_verbs(data)
            if not verbs:
                raise VoiceGatewayProtocolError("no application provided")
        except VoiceGatewayProtocolError as exc:
            self._events.append(FrameRejected(f"session:new ack rejected: {exc}"))
            self._finish(CloseCode.GOING_AWAY)
            return
        self._phase = _Phase.ACTIVE
        self._events.append(SessionAccepted(max(0.0, now - pending.sent_at)))
        self._base["sip_status"] = 200
        self._base["sip_reason"] = "OK"
        self._queue_call_status(CallStatus.IN_PROGRESS, {})
        self._stack = verbs
        self._run()

    def _on_command(self, msg: dict[str, Any], raw: str) -> None:
        command = msg.get("command")
        if not isinstance(command, str) or not command:
            self._reject_frame("command without command name", raw)
            return
        data = msg.get("data")
        if data is None and command not in COMMANDS_WITHOUT_DATA:
            self._reject_frame(f"command {_short(command)} without data", raw)
            return
        target = msg.get("callSid")
        if self._phase is not _Phase.ACTIVE or self._hung_up:
            self._events.append(CommandIgnored(command, "call not active"))
            return
        if target not in (None, self.call_sid):
            self._events.append(CommandIgnored(command, "other call leg"))
            return
        try:
            self._execute_command(command, data, msg)
        except VoiceGatewayProtocolError as exc:
            self._reject_frame(f"command {_short(command)}: {exc}", raw)

    def _execute_command(self, command: str, data: Any, msg: dict[str, Any]) -> None:
        if command == Command.REDIRECT:
            if isinstance(data, dict):
                self._redirect_call(data)
                return
            verbs = normalize_verbs(data)
            if msg.get("queueCommand"):
                self._stack.extend(verbs)
            else:
                self._replace(verbs)
            self._run()
        elif command == Command.CALL_STATUS:
            status = _require_object(data).get("call_status")
            if status == CallStatus.COMPLETED:
                self._execute({"verb": Verb.HANGUP.value})
            else:
                # "no-answer" only affects unanswered calls; the bridge's calls are answered
                self._events.append(CommandIgnored(command, "no effect on an answered call"))
        elif command == Command.CONFIG:
            props = {k: v for k, v in _require_object(data).items() if k != "verb"}
            self._execute({"verb": Verb.CONFIG.value, **copy.deepcopy(props)})
        elif command == Command.RECORD:
            record = copy.deepcopy(_require_object(data))
            self._execute({"verb": Verb.CONFIG.value, "record": record})
        elif command == Command.SIP_REQUEST:
            self._execute(_sip_request_verb(_require_object(data)))
        elif command == Command.DTMF:
            self._execute(_dtmf_verb(_require_object(data)))
        elif command == Command.TAG:
            self._execute({"verb": Verb.TAG.value, "data": copy.deepcopy(_require_object(data))})
        else:
            self._events.append(CommandIgnored(command, UNSUPPORTED))

    def _redirect_call(self, data: dict[str, Any]) -> None:
        """Live call control (§1.4): `call_hook` asks the app for a new application with
        `session:redirect` (its ack's verbs replace the stack); `parent_call` is that application
        inline. Child legs (`child_call_hook`, `child_call`) do not exist on the bridge."""
        hook = hook_name(data.get("call_hook"))
        parent = data.get("parent_call")
        if hook is not None:
            self._send_acked(MessageType.SESSION_REDIRECT, self._payload({}), self._now, hook=hook)
        elif isinstance(parent, list):
            self._replace(normalize_verbs(parent))
            self._run()
        else:
            self._events.append(CommandIgnored(Command.REDIRECT.value, UNSUPPORTED))

    # -------------------------------------------------------------- verb stack

    def _run(self) -> None:
        if self._phase is not _Phase.ACTIVE:
            return
        while not self._hung_up and self._blocking is None and self._stack:
            self._idle = False
            self._execute(self._stack.pop(0))
        if self._hung_up or self._blocking is not None:
            self._idle = False
        elif self._graceful:
            self._execute({"verb": Verb.HANGUP.value})  # the stack ran dry on a closed socket
        elif not self._idle:
            self._idle = True
            self._events.append(StackIdle())

    def _execute(self, verb: dict[str, Any]) -> None:
        name = verb["verb"]
        self._events.append(VerbExecuted(verb))
        if name == Verb.GATHER:
            self._block(verb, HookKind.INPUT)
        elif name in _TRANSFER_VERBS:
            self._block(verb, HookKind.TRANSFER)
        elif name in _ENDING_VERBS:
            self._stack.clear()
            self._blocking = None
            self._hung_up = True
        elif name == Verb.REDIRECT:
            self._report_own_hook(verb, {})
        elif name in _OWN_HOOK_VERBS:
            table = HANDED_OFF_HOOK_RESULTS if self._serves(verb) else UNSERVED_HOOK_RESULTS
            result = table.get(name)
            if result is not None:
                self._report_own_hook(verb, result)
        elif name == Verb.CONFIG:
            self._apply_config(verb)
        elif name == Verb.TAG:
            data = verb.get("data")
            if isinstance(data, dict):  # tag replaces customerData (feature-server tag.js)
                self._customer_data = copy.deepcopy(data)
        elif name == Verb.PLAY:
            self._play_hook = hook_name(verb.get("actionHook"))

    def _block(self, verb: dict[str, Any], kind: HookKind) -> None:
        self._tokens += 1
        self._blocking = _Blocking(verb, kind, hook_name(verb.get("actionHook")), self._tokens)

    def _report_own_hook(self, verb: dict[str, Any], result: Mapping[str, Any]) -> None:
        """Send `verb`'s actionHook now, with `result`, and block the stack until its ack, whose
        verbs replace the stack (feature-server's `performAction`). No hook: the stack goes on."""
        hook = hook_name(verb.get("actionHook"))
        if hook is None or self._graceful:
            return
        self._block(verb, HookKind.VERB)
        blocking = self._blocking
        assert blocking is not None
        payload = self._payload(copy.deepcopy(dict(result)))
        blocking.hook_msgid = self._send_acked(
            MessageType.VERB_HOOK, payload, self._now, hook=hook, blocking_token=blocking.token
        )

    def _apply_config(self, verb: dict[str, Any]) -> None:
        barge = verb.get("bargeIn")
        if not isinstance(barge, dict):
            return
        enable = barge.get("enable")
        if enable is True:
            self._bargein_hook = hook_name(barge.get("actionHook")) or self.input_hook
            self._bargein_sticky = bool(barge.get("sticky"))
        elif enable is False:
            self._bargein_hook = None
            self._bargein_sticky = False

    def _replace(self, verbs: list[dict[str, Any]]) -> None:
        """Kill the current (blocking) verb and replace the remaining stack."""
        self._blocking = None
        self._stack = list(verbs)

    def _open_blocking(self, kind: HookKind) -> _Blocking | None:
        """The blocking verb still waiting for a result of `kind`, if any."""
        blocking = self._blocking
        if blocking is None or blocking.kind is not kind or blocking.hook_msgid is not None:
            return None
        return blocking

    def _complete_hook(self, pending: _PendingAck, verbs: list[dict[str, Any]]) -> None:
        if self._phase is not _Phase.ACTIVE or self._hung_up:
            return
        if verbs:
            self._replace(verbs)
        elif (
            pending.blocking_token is not None
            and self._blocking is not None
            and self._blocking.token == pending.blocking_token
        ):
            self._blocking = None
        self._run()

    # ------------------------------------------------------------------ output

    def _envelope(
        self, msg_type: MessageType, data: dict[str, Any], hook: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        msgid = self._new_msgid()
        msg: dict[str, Any] = {"type": msg_type.value, "msgid": msgid, "call_sid": self.call_sid}
        if hook is not None:
            msg["hook"] = hook
        msg["data"] = data
        # After the app closed the socket with 1000, Voice Gateway drops every later frame.
        if not self._graceful:
            (self._outbox if self._held is None else self._held).append(msg)
        return msgid, msg

    def _send_acked(
        self,
        msg_type: MessageType,
        data: dict[str, Any],
        now: float,
        *,
        hook: str | None = None,
        blocking_token: int | None = None,
    ) -> str:
        msgid, _ = self._envelope(msg_type, data, hook)
        if not self._graceful:
            # a held frame's budget starts when it is sent (`_release_held`)
            deadline = math.inf if self._held is not None else now + ACK_TIMEOUT_S
            self._pending[msgid] = _PendingAck(msg_type, now, deadline, blocking_token)
        return msgid

    def _abandon_held(self) -> None:
        """The reconnect was not acked: held frames are dropped (their hooks complete empty)."""
        held, self._held = self._held or [], None
        self._reconnect_msgid = None
        for msg in held:
            pending = self._pending.pop(msg["msgid"], None)
            if pending is not None:
                self._complete_hook(pending, [])

    def _release_held(self, now: float) -> None:
        """The reconnect was acked: the frames held meanwhile go out now, in order."""
        held, self._held = self._held or [], None
        for msg in held:
            pending = self._pending.get(msg["msgid"])
            if pending is not None and pending.deadline == math.inf:
                pending.sent_at = now
                pending.deadline = now + ACK_TIMEOUT_S
        self._outbox.extend(held)

    def _payload(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        # Shallow: a message shares nested values with `_base` and `_customer_data`, which are
        # only ever replaced, never changed in place, and with `extra`, which the caller built
        # for this message. Messages are serialized, never changed, by the driver.
        payload = dict(self._base)
        if self._customer_data:
            payload["customerData"] = self._customer_data
        payload.update(extra)
        return payload

    def _queue_call_status(self, status: str, extra: Mapping[str, Any]) -> None:
        self._base["call_status"] = status
        for key in ("sip_status", "sip_reason"):
            if key in extra:
                self._base[key] = extra[key]
        self._envelope(MessageType.CALL_STATUS, self._payload(extra))

    def _reject_frame(self, reason: str, raw: str) -> None:
        data = {
            "msg": ErrorMsg.INVALID_MESSAGE.value,
            "details": reason,
            "content": raw[:ERROR_CONTENT_MAX_CHARS],
        }
        self._envelope(MessageType.JAMBONZ_ERROR, data)
        self._events.append(FrameRejected(reason))

    def _finish(self, code: CloseCode) -> None:
        if self._held:  # ending while reconnecting: let the driver send what it can
            self._outbox.extend(self._held)
        self._held = None
        self._phase = _Phase.ENDED
        self._pending.clear()
        self._stack.clear()
        self._blocking = None
        self._events.append(CloseRequested(int(code)))


UNSUPPORTED = "unsupported"  # CommandIgnored.reason of a command the bridge cannot act on


def _serves_none(verb: dict[str, Any]) -> bool:
    return False


def _require_object(data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise VoiceGatewayProtocolError("data must be an object")
    return data


def _sip_request_verb(data: dict[str, Any]) -> dict[str, Any]:
    """`sip:request` command data, code shape `{sip_request:{...}}` or flat (§1.4) -> verb."""
    inner = data.get("sip_request", data)
    if not isinstance(inner, dict):
        raise VoiceGatewayProtocolError("sip_request must be an object")
    method = inner.get("method")
    if not isinstance(method, str) or not method:
        raise VoiceGatewayProtocolError("sip:request without method")
    verb: dict[str, Any] = {"verb": Verb.SIP_REQUEST.value}
    verb.update(
        (k, copy.deepcopy(v))
        for k, v in inner.items()
        if k not in ("verb", "content", "content_type", "headers")
    )
    if "body" not in verb and "content" in inner:
        verb["body"] = copy.deepcopy(inner["content"])
    headers = inner.get("headers")
    headers = copy.deepcopy(headers) if isinstance(headers, dict) else {}
    content_type = inner.get("content_type")
    if isinstance(content_type, str) and not any(h.lower() == "content-type" for h in headers):
        headers["Content-Type"] = content_type
    if headers:
        verb["headers"] = headers
    return verb


def _dtmf_verb(data: dict[str, Any]) -> dict[str, Any]:
    """`dtmf` command data, code shape `{dtmf:{digit,duration}}` or flat (§1.4) -> verb."""
    inner = data.get("dtmf", data)
    if not isinstance(inner, dict):
        raise VoiceGatewayProtocolError("dtmf must be an object")
    digit = inner.get("digit")
    if isinstance(digit, int) and not isinstance(digit, bool):
        digit = str(digit)
    if not isinstance(digit, str) or not digit:
        raise VoiceGatewayProtocolError("dtmf without digit")
    duration = inner.get("duration", _DTMF_COMMAND_DURATION_MS)
    return {"verb": Verb.DTMF.value, "dtmf": digit, "duration": duration}


def _optional_str(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("expected a string or null")
    return value


def _short(value: object) -> str:
    return repr(str(value)[:40])


def _dump(msg: object) -> str:
    try:
        return json.dumps(msg, default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(type(msg))
