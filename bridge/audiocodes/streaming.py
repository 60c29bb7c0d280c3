"""One AudioCodes Bot API WebSocket (streaming mode) session, bot side, text only.

Sans-I/O: text frames and a monotonic `now` go in (`receive_text`), typed events come out
(`events_received()`), messages to send are queued (`messages_to_send()`), and
`close_requested` tells the transport which close code to use once the queue is sent
(audiocodes-bot-api.md §2, design.md §2.2, §3.4). Activities are validated and de-duplicated
by an `audiocodes.Conversation`, exactly as in HTTP mode. Bad input from VAIC never raises:
it is answered or ignored and reported as `MessageRejected`. Only misuse by the bot side
(`accept`, `refuse`, `send_activities` in the wrong state) raises `AudioCodesProtocolError`.

Decisions (the spec leaves them open):
- Refusing a session (`expectAudioMessages: true`, malformed `session.initiate`, resume of an
  unknown conversation) queues `session.error` and asks for close 1008: RFC 6455 §7.4.1
  "policy violation" is the code for a message the endpoint will not serve, and the code Rasa
  uses to refuse a VAIC socket (§2); 1000 would log a refusal as a normal end.
- While a call is live, nothing VAIC sends closes the socket except `session.end` (close 1000):
  a bad `activities` message, a stray audio message, a second initiate or a foreign
  conversationId is ignored (`MessageRejected`, plus `session.error` without close where the
  SDK answers one), so one bad frame never drops a caller.
- `session.accepted` carries `mediaFormat` = the first offered format (the SDK always sends
  one on initiate; no audio flows in text mode so any offered one is right); it is omitted
  when none was offered, and on resume (as the SDK does).
- `connection.validate` (portal check) is answered `connection.validated` and the socket is
  left open, as Rasa does; VAIC closes it, or it expires like any socket without a session.
- Resume arrives on a new socket: the transport reads the first frame with `parse_resume`;
  if it names a conversation it holds, it calls `reattach(now)` on that session, otherwise it
  feeds the frame to a fresh session, which answers "conversation not found" and closes.
  `detach(now)` marks the old socket gone; outputs sent while detached wait for the next
  socket, after its `session.accepted`.
- Expiry: a live call never expires while its socket is open (long holds are silent); a
  socket without a session, or a detached session, expires after 1.5 * expires_seconds idle.
- Duplicates (`DuplicateReceived`) are reported, not re-answered: the socket delivers in
  order, so a repeated activity means VAIC re-sent what was already answered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from bridge import jsontext
from bridge.audiocodes.conversation import IDLE_FACTOR, MAX_ID_LENGTH, Conversation
from bridge.audiocodes.events import (
    ActivitiesReceived,
    DuplicateReceived,
    MessageRejected,
    SessionEnded,
    SessionInitiated,
    StreamingEvent,
)
from bridge.audiocodes.wire import BotStreamMessage, CloseCode, StreamField, VaicStreamMessage
from bridge.errors import AudioCodesProtocolError

__all__ = [
    "AUDIO_REFUSAL",
    "NOT_FOUND",
    "Input",
    "RejectReason",
    "StreamState",
    "StreamingSession",
    "activities_message",
    "connection_validated",
    "parse_resume",
    "session_accepted",
    "session_error",
]

AUDIO_REFUSAL = (
    "this bot carries text only: set expectAudioMessages to false "
    "(VoiceAI Connect does speech-to-text and text-to-speech)"
)
NOT_FOUND = "conversation not found"


class StreamState(StrEnum):
    AWAITING_INITIATE = "awaiting_initiate"  # socket open, no session yet
    INITIATED = "initiated"  # SessionInitiated emitted, waiting for accept()/refuse()
    ACCEPTED = "accepted"  # live call on an open socket
    DETACHED = "detached"  # live call, socket gone, waiting for a resume
    ENDED = "ended"


class Input(StrEnum):
    """What can happen to a session: VAIC messages and the bot side's calls."""

    INITIATE = "initiate"
    REFUSE = "refuse"
    ACCEPT = "accept"
    RESUME = "resume"
    ACTIVITIES = "activities"
    END = "end"
    VALIDATE = "validate"
    SEND = "send"
    DETACH = "detach"
    REATTACH = "reattach"


# Every legal transition. A VAIC message whose pair is missing is ignored (MessageRejected);
# a bot-side call whose pair is missing raises.
_TRANSITIONS: dict[tuple[StreamState, Input], StreamState] = {
    (StreamState.AWAITING_INITIATE, Input.INITIATE): StreamState.INITIATED,
    (StreamState.AWAITING_INITIATE, Input.REFUSE): StreamState.ENDED,
    (StreamState.AWAITING_INITIATE, Input.VALIDATE): StreamState.AWAITING_INITIATE,
    (StreamState.AWAITING_INITIATE, Input.DETACH): StreamState.ENDED,
    (StreamState.INITIATED, Input.ACCEPT): StreamState.ACCEPTED,
    (StreamState.INITIATED, Input.REFUSE): StreamState.ENDED,
    (StreamState.INITIATED, Input.VALIDATE): StreamState.INITIATED,
    (StreamState.INITIATED, Input.END): StreamState.ENDED,
    (StreamState.INITIATED, Input.DETACH): StreamState.ENDED,
    (StreamState.ACCEPTED, Input.ACTIVITIES): StreamState.ACCEPTED,
    (StreamState.ACCEPTED, Input.SEND): StreamState.ACCEPTED,
    (StreamState.ACCEPTED, Input.RESUME): StreamState.ACCEPTED,
    (StreamState.ACCEPTED, Input.VALIDATE): StreamState.ACCEPTED,
    (StreamState.ACCEPTED, Input.END): StreamState.ENDED,
    (StreamState.ACCEPTED, Input.DETACH): StreamState.DETACHED,
    # A resume may arrive before the transport noticed that the old socket died.
    (StreamState.ACCEPTED, Input.REATTACH): StreamState.ACCEPTED,
    (StreamState.DETACHED, Input.SEND): StreamState.DETACHED,
    (StreamState.DETACHED, Input.DETACH): StreamState.DETACHED,
    (StreamState.DETACHED, Input.REATTACH): StreamState.ACCEPTED,
    (StreamState.ENDED, Input.REFUSE): StreamState.ENDED,
    (StreamState.ENDED, Input.DETACH): StreamState.ENDED,
}

_INPUT_OF: dict[str, Input] = {
    VaicStreamMessage.SESSION_INITIATE: Input.INITIATE,
    VaicStreamMessage.SESSION_RESUME: Input.RESUME,
    VaicStreamMessage.SESSION_END: Input.END,
    VaicStreamMessage.ACTIVITIES: Input.ACTIVITIES,
    VaicStreamMessage.CONNECTION_VALIDATE: Input.VALIDATE,
}

_AUDIO_MESSAGES = frozenset(
    {
        VaicStreamMessage.USER_STREAM_START,
        VaicStreamMessage.USER_STREAM_CHUNK,
        VaicStreamMessage.USER_STREAM_STOP,
    }
)


class RejectReason(StrEnum):
    """Bounded `MessageRejected.reason` labels (plus `bad_request`/`too_large` passed through
    from `Conversation` for a bad `activities` message)."""

    NOT_JSON = "not_json"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    WRONG_STATE = "wrong_state"
    ENDED = "ended"
    CONVERSATION_MISMATCH = "conversation_mismatch"
    AUDIO_UNSUPPORTED = "audio_unsupported"
    NOT_FOUND = "not_found"


# -- messages to VAIC (§2.2); plain str keys so any JSON encoder takes them ------------------


def session_accepted(media_format: str | None = None) -> dict[str, object]:
    message: dict[str, object] = {"type": str(BotStreamMessage.SESSION_ACCEPTED)}
    if media_format is not None:
        message["mediaFormat"] = media_format
    return message


def session_error(reason: str, conversation_id: str | None = None) -> dict[str, object]:
    message: dict[str, object] = {"type": str(BotStreamMessage.SESSION_ERROR)}
    if conversation_id is not None:
        message["conversationId"] = conversation_id
    message["reason"] = reason
    return message


def connection_validated() -> dict[str, object]:
    return {"type": str(BotStreamMessage.CONNECTION_VALIDATED), "success": True}


def activities_message(
    conversation_id: str, activities: Iterable[Mapping[str, object]]
) -> dict[str, object]:
    return {
        "type": str(BotStreamMessage.ACTIVITIES),
        "conversationId": conversation_id,
        "activities": [dict(a) for a in activities],
    }


# -- parsing ---------------------------------------------------------------------------------


def _decode(frame: str | bytes) -> object:
    """The JSON value of a frame; raises ValueError (incl. UnicodeDecodeError) if it is none."""
    text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
    return jsontext.loads(text)


def _valid_id(value: object) -> str | None:
    if isinstance(value, str) and value and len(value) <= MAX_ID_LENGTH:
        return value
    return None


def parse_resume(frame: str | bytes | Mapping[str, object]) -> str | None:
    """The conversation id if `frame` (text, or an already decoded message) is a well-formed
    `session.resume`, else None. For the transport: the first frame of a new socket decides
    whether it belongs to an existing session (`reattach`) or a fresh one."""
    if isinstance(frame, Mapping):
        message: object = frame
    else:
        try:
            message = _decode(frame)
        except (ValueError, RecursionError):
            return None
    if not isinstance(message, Mapping):
        return None
    if message.get(StreamField.TYPE) != VaicStreamMessage.SESSION_RESUME:
        return None
    return _valid_id(message.get(StreamField.CONVERSATION_ID))


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _end_reason(message: Mapping[str, object]) -> tuple[str | None, str | None]:
    """`reasonCode`/`reason` of `session.end`: top level first, then `parameters` (§2.1: the
    shape is unconfirmed, §8.5). Non-string values are dropped, not refused."""
    parameters = message.get(StreamField.PARAMETERS)
    nested: Mapping[str, object] = parameters if isinstance(parameters, Mapping) else {}

    def pick(field: str) -> str | None:
        top = _optional_text(message.get(field))
        return top if top is not None else _optional_text(nested.get(field))

    return pick(StreamField.REASON_CODE), pick(StreamField.REASON)


def _first_format(offered: object) -> str | None:
    if isinstance(offered, list):
        for media_format in offered:
            if isinstance(media_format, str) and media_format:
                return media_format
    return None


# -- the session -----------------------------------------------------------------------------


class StreamingSession:
    """One VAIC conversation in WebSocket mode, across its socket(s)."""

    def __init__(self, expires_seconds: int, now: float, max_activities: int = 50) -> None:
        self.expires_seconds = expires_seconds
        self.max_activities = max_activities
        self.state = StreamState.AWAITING_INITIATE
        self.conversation: Conversation | None = None
        self.media_format: str | None = None
        # Per socket: the close code the transport must use after sending what is queued.
        self.close_requested: int | None = None
        self._idle_since = now
        self._events: list[StreamingEvent] = []
        self._outbox: list[dict[str, object]] = []

    @classmethod
    def restore(
        cls, conversation: Conversation, now: float, media_format: str | None = None
    ) -> StreamingSession:
        """A live session another instance served, waiting for VAIC's `session.resume` here
        (`reattach`): the state a socket drop leaves, on this process."""
        session = cls(conversation.expires_seconds, now, conversation.max_activities)
        session.conversation = conversation
        session.media_format = media_format
        session.state = StreamState.DETACHED
        return session

    # -- properties -------------------------------------------------------------------------

    @property
    def conversation_id(self) -> str | None:
        return None if self.conversation is None else self.conversation.conversation_id

    @property
    def ended(self) -> bool:
        return self.state is StreamState.ENDED

    # -- drained outputs --------------------------------------------------------------------

    def events_received(self) -> list[StreamingEvent]:
        events, self._events = self._events, []
        return events

    def messages_to_send(self) -> list[dict[str, object]]:
        messages, self._outbox = self._outbox, []
        return messages

    # -- VAIC → bot -------------------------------------------------------------------------

    def receive_text(self, text: str | bytes, now: float) -> None:
        """Handle one frame from VAIC. Never raises."""
        self._idle_since = now
        try:
            message = _decode(text)
        except (ValueError, RecursionError):
            self._reject(RejectReason.NOT_JSON, "frame is not JSON text")
            return
        if not isinstance(message, dict):
            self._reject(RejectReason.BAD_MESSAGE, "frame is not a JSON object")
            return
        kind = message.get(StreamField.TYPE)
        if not isinstance(kind, str):
            self._reject(RejectReason.BAD_MESSAGE, "type: must be a string")
            return
        if kind in _AUDIO_MESSAGES:
            # VAIC sends audio only when expectAudioMessages was true, which we refuse.
            self._reject(RejectReason.AUDIO_UNSUPPORTED, f"{kind}: this bot carries text only")
            return
        request = _INPUT_OF.get(kind)
        if request is None:
            self._reject(RejectReason.UNKNOWN_TYPE, "unknown message type")
            return
        if request is Input.INITIATE:
            self._receive_initiate(message, now)
        elif request is Input.RESUME:
            self._receive_resume(message)
        elif request is Input.VALIDATE:
            if self._allowed(request, kind):
                self._outbox.append(connection_validated())
        elif self._allowed(request, kind) and self._own(message):
            if request is Input.ACTIVITIES:
                self._receive_activities(message, now)
            else:
                self._receive_end(message, now)

    def _receive_initiate(self, message: dict[str, object], now: float) -> None:
        if self.state is not StreamState.AWAITING_INITIATE:
            if self.state is not StreamState.ENDED:
                self._outbox.append(
                    session_error("session already initiated", self.conversation_id)
                )
            self._reject_state(VaicStreamMessage.SESSION_INITIATE)
            return
        conversation_id = _valid_id(message.get(StreamField.CONVERSATION_ID))
        if conversation_id is None:
            self._refuse_message(
                RejectReason.BAD_MESSAGE,
                f"conversationId: must be a non-empty string of at most {MAX_ID_LENGTH} characters",
                None,
            )
            return
        expect_audio = message.get(StreamField.EXPECT_AUDIO_MESSAGES, False)
        if not isinstance(expect_audio, bool):
            self._refuse_message(
                RejectReason.BAD_MESSAGE, "expectAudioMessages: must be a boolean", conversation_id
            )
            return
        if expect_audio:
            self._refuse_message(RejectReason.AUDIO_UNSUPPORTED, AUDIO_REFUSAL, conversation_id)
            return
        self.state = _TRANSITIONS[(self.state, Input.INITIATE)]
        self.conversation = Conversation(
            conversation_id, self.expires_seconds, now, max_activities=self.max_activities
        )
        self.media_format = _first_format(message.get(StreamField.SUPPORTED_MEDIA_FORMATS))
        self._events.append(
            SessionInitiated(
                conversation_id=conversation_id,
                caller=_optional_text(message.get(StreamField.CALLER)),
                initiate=message,
            )
        )

    def _receive_resume(self, message: dict[str, object]) -> None:
        requested = _valid_id(message.get(StreamField.CONVERSATION_ID))
        if self.state is StreamState.AWAITING_INITIATE:
            # A fresh socket: the transport found no session for this id (§2.3 rule 5).
            self._refuse_message(RejectReason.NOT_FOUND, NOT_FOUND, requested)
            return
        if not self._allowed(Input.RESUME, VaicStreamMessage.SESSION_RESUME):
            return
        if requested is None or requested != self.conversation_id:
            # The SDK answers session.error here but keeps the socket; so do we (live call).
            self._outbox.append(session_error(NOT_FOUND, requested))
            self._reject(RejectReason.CONVERSATION_MISMATCH, "session.resume: " + NOT_FOUND)
            return
        self._outbox.append(session_accepted())

    def _receive_activities(self, message: dict[str, object], now: float) -> None:
        assert self.conversation is not None
        body = {StreamField.ACTIVITIES.value: message.get(StreamField.ACTIVITIES)}
        try:
            events = self.conversation.receive_activities(body, now)
        except AudioCodesProtocolError as error:
            self._reject(error.reason, error.message)
            return
        self._events.extend(
            e for e in events if isinstance(e, ActivitiesReceived | DuplicateReceived)
        )

    def _receive_end(self, message: dict[str, object], now: float) -> None:
        reason_code, reason = _end_reason(message)
        self.state = _TRANSITIONS[(self.state, Input.END)]
        if self.conversation is not None and not self.conversation.ended:
            self.conversation.receive_disconnect({}, now)
        self._events.append(SessionEnded(reason_code=reason_code, reason=reason))
        self.close_requested = CloseCode.NORMAL

    # -- bot → VAIC -------------------------------------------------------------------------

    def accept(self, now: float) -> None:
        """Answer the initiate with `session.accepted` (after the bot's start handling)."""
        self.state = self._bot_transition(Input.ACCEPT)
        self._idle_since = now
        self._outbox.append(session_accepted(self.media_format))

    def refuse(self, reason: str, now: float) -> None:
        """Answer the initiate with `session.error` and close 1008 (the bot cannot serve it)."""
        if self.state is not StreamState.INITIATED:
            raise _misuse(Input.REFUSE, self.state)
        self._idle_since = now
        self._refuse(reason, self.conversation_id)

    def send_activities(self, activities: Iterable[Mapping[str, object]]) -> None:
        """Queue one `activities` message (activities already stamped by the caller).

        An empty list queues nothing. After the session ended the outputs have nowhere to go
        and are dropped; while detached they wait for the next socket.
        """
        if self.state is StreamState.ENDED:
            return
        self._bot_transition(Input.SEND)
        batch = [dict(a) for a in activities]
        if batch:
            assert self.conversation is not None
            self._outbox.append(activities_message(self.conversation.conversation_id, batch))

    # -- socket lifecycle (called by the transport) -----------------------------------------

    def detach(self, now: float) -> None:
        """The current socket closed. A live call waits for a resume; anything else ends."""
        self.state = _TRANSITIONS[(self.state, Input.DETACH)]
        self._idle_since = now

    def reattach(self, now: float) -> None:
        """A new socket's first frame was `session.resume` for this conversation.

        Resets the per-socket state and queues `session.accepted` ahead of any outputs held
        while detached. If this session cannot be resumed (never accepted, or ended), queues
        `session.error` "conversation not found" and asks for close 1008 instead.
        """
        self.close_requested = None
        self._idle_since = now
        next_state = _TRANSITIONS.get((self.state, Input.REATTACH))
        if next_state is None:
            self._outbox.clear()
            self._refuse(NOT_FOUND, self.conversation_id)
            return
        self.state = next_state
        self._outbox.insert(0, session_accepted())

    # -- time -------------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When the session expires; None while a call holds an open socket."""
        if self.state in (StreamState.INITIATED, StreamState.ACCEPTED):
            return None
        if self.state is StreamState.ENDED:
            return self._idle_since
        return self._idle_since + IDLE_FACTOR * self.expires_seconds

    def expired(self, now: float) -> bool:
        """Ended, or (no session yet / detached) idle for more than 1.5 * expires_seconds."""
        if self.state is StreamState.ENDED:
            return True
        deadline = self.deadline()
        return deadline is not None and now > deadline

    # -- helpers ----------------------------------------------------------------------------

    def _reject(self, reason: str, detail: str) -> None:
        self._events.append(MessageRejected(reason=reason, detail=detail))

    def _reject_state(self, kind: str) -> None:
        if self.state is StreamState.ENDED:
            self._reject(RejectReason.ENDED, f"{kind}: session ended")
        else:
            self._reject(RejectReason.WRONG_STATE, f"{kind}: not allowed in state {self.state}")

    def _allowed(self, request: Input, kind: str) -> bool:
        if (self.state, request) in _TRANSITIONS:
            return True
        self._reject_state(kind)
        return False

    def _own(self, message: Mapping[str, object]) -> bool:
        """A present `conversationId` must be this session's (absent is tolerated)."""
        if StreamField.CONVERSATION_ID not in message:
            return True
        if message[StreamField.CONVERSATION_ID] == self.conversation_id:
            return True
        self._reject(RejectReason.CONVERSATION_MISMATCH, "conversationId: not this session's")
        return False

    def _refuse(self, reason: str, conversation_id: str | None) -> None:
        self.state = _TRANSITIONS[(self.state, Input.REFUSE)]
        self._outbox.append(session_error(reason, conversation_id))
        self.close_requested = CloseCode.POLICY_VIOLATION

    def _refuse_message(
        self, reject_reason: RejectReason, detail: str, conversation_id: str | None
    ) -> None:
        self._reject(reject_reason, detail)
        self._refuse(detail, conversation_id)

    def _bot_transition(self, request: Input) -> StreamState:
        next_state = _TRANSITIONS.get((self.state, request))
        if next_state is None:
            raise _misuse(request, self.state)
        return next_state


def _misuse(request: Input, state: StreamState) -> AudioCodesProtocolError:
    return AudioCodesProtocolError(
        f"{request} not allowed in state {state}", status=409, reason="wrong_state"
    )
