"""Events `CallProtocol` hands to the session (the jambonz app's side of the call, as seen by VG).

Frozen dataclasses only; performs no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SessionAccepted:
    """The app acked `session:new` with a usable verb array, `ack_seconds` after it was sent."""

    ack_seconds: float


@dataclass(frozen=True)
class Acked:
    """The app acked a message other than `session:new` (`verb:hook`, `call:status`...),
    `ack_seconds` after it was sent."""

    message_type: str
    ack_seconds: float


@dataclass(frozen=True)
class VerbExecuted:
    """A verb ran (normalized `{"verb": name, ...}`), in execution order.

    Commands `config`, `record`, `sip:request`, `dtmf` and `call:status` completed arrive as the
    equivalent verb.
    """

    verb: dict[str, Any]


@dataclass(frozen=True)
class StackIdle:
    """The verb stack ran empty with nothing blocking; VG now waits for commands."""


@dataclass(frozen=True)
class AckTimedOut:
    """A message needing an ack got none within ACK_TIMEOUT_S."""

    message_type: str
    msgid: str


@dataclass(frozen=True)
class CloseRequested:
    """The transport should close the socket with `code` (1000 end of call, 1001 rejected)."""

    code: int


@dataclass(frozen=True)
class FrameRejected:
    """A frame from the app was not acceptable; `reason` says why (no content, no digits)."""

    reason: str


@dataclass(frozen=True)
class CommandIgnored:
    """A well-formed `command` the bridge does not act on. `reason` is "unsupported" for a
    command the bridge cannot carry out (unknown, or with no AudioCodes counterpart); otherwise
    why it does not apply now (the call is not active, another leg is targeted, ...)."""

    command: str
    reason: str = "unsupported"


Event = (
    SessionAccepted
    | Acked
    | VerbExecuted
    | StackIdle
    | AckTimedOut
    | CloseRequested
    | FrameRejected
    | CommandIgnored
)
