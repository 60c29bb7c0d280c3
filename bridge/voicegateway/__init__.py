"""Sans-I/O jambonz WebSocket API, Voice Gateway (feature-server) role: wire names, verb
normalization, events and the per-call protocol object. Performs no I/O."""

from __future__ import annotations

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
from bridge.voicegateway.protocol import CallProtocol, new_msgid
from bridge.voicegateway.verbs import normalize_verb, normalize_verbs
from bridge.voicegateway.wire import ACK_TIMEOUT_S, SUBPROTOCOL, CloseCode, HookKind

__all__ = [
    "ACK_TIMEOUT_S",
    "SUBPROTOCOL",
    "AckTimedOut",
    "Acked",
    "CallProtocol",
    "CloseCode",
    "CloseRequested",
    "CommandIgnored",
    "Event",
    "FrameRejected",
    "HookKind",
    "SessionAccepted",
    "StackIdle",
    "VerbExecuted",
    "new_msgid",
    "normalize_verb",
    "normalize_verbs",
]
