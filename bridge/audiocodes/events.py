"""Events the AudioCodes conversation (HTTP and WebSocket mode) hands to the session; frozen
values, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ActivitiesReceived",
    "ConversationEnded",
    "DuplicateReceived",
    "Event",
    "MessageRejected",
    "Refreshed",
    "SessionEnded",
    "SessionInitiated",
    "StreamingEvent",
]


@dataclass(frozen=True)
class ActivitiesReceived:
    """A turn: the activities of one POST not seen before, in wire order (possibly empty)."""

    turn: int
    activities: tuple[dict[str, object], ...]


@dataclass(frozen=True)
class DuplicateReceived:
    """Every activity id of the POST was already seen: VAIC retried turn `turn`.

    Answer with `Conversation.outputs_of(turn)`; never forward upstream.
    """

    turn: int


@dataclass(frozen=True)
class ConversationEnded:
    """VAIC posted disconnect (§1.5); the conversation is over."""

    reason_code: str | None
    reason: str | None


@dataclass(frozen=True)
class Refreshed:
    """VAIC kept the conversation alive; answer `{"expiresSeconds": expires_seconds}`."""

    expires_seconds: int


Event = ActivitiesReceived | DuplicateReceived | ConversationEnded | Refreshed


@dataclass(frozen=True)
class SessionInitiated:
    """VAIC opened a text-only streaming session (§2.1 `session.initiate`).

    Answer with `StreamingSession.accept(now)` (or `refuse(...)`); `initiate` is the whole
    message as received. `caller` is a phone number: never log it.
    """

    conversation_id: str
    caller: str | None
    initiate: dict[str, object]


@dataclass(frozen=True)
class SessionEnded:
    """VAIC sent `session.end` (§2.1); the conversation is over and the socket closes (1000)."""

    reason_code: str | None
    reason: str | None


@dataclass(frozen=True)
class MessageRejected:
    """A streaming-mode frame was ignored; the call (if any) goes on.

    `reason` is a bounded label (metrics), `detail` a human-readable explanation that never
    contains the frame's content.
    """

    reason: str
    detail: str


StreamingEvent = (
    ActivitiesReceived | DuplicateReceived | SessionInitiated | SessionEnded | MessageRejected
)
"""What `StreamingSession.events_received()` returns (WebSocket mode)."""
