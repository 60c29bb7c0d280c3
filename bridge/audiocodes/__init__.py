"""Sans-I/O AudioCodes Bot API, bot side (HTTP mode): wire names, conversation state, events."""

from __future__ import annotations

from bridge.audiocodes.conversation import Conversation, InputKind, State, classify, parse_create
from bridge.audiocodes.events import (
    ActivitiesReceived,
    ConversationEnded,
    DuplicateReceived,
    Event,
    Refreshed,
)
from bridge.audiocodes.wire import (
    activities_response,
    create_response,
    probe_response,
    stamp,
)

__all__ = [
    "ActivitiesReceived",
    "Conversation",
    "ConversationEnded",
    "DuplicateReceived",
    "Event",
    "InputKind",
    "Refreshed",
    "State",
    "activities_response",
    "classify",
    "create_response",
    "parse_create",
    "probe_response",
    "stamp",
]
