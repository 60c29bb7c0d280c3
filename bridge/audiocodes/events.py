"""Events the AudioCodes conversation hands to the session; frozen values, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ActivitiesReceived", "ConversationEnded", "DuplicateReceived", "Event", "Refreshed"]


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
