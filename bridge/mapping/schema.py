"""The shape of one mapping file (pydantic v2, unknown keys rejected).

Only the outer structure is modelled here; templates and conditions are free-form YAML that
`engine.compile_mapping` checks and compiles. Used at load time only, never per turn.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Direction(StrEnum):
    TO_AUDIOCODES = "to_audiocodes"
    TO_VOICEGATEWAY = "to_voicegateway"


class MessageKind(StrEnum):
    """Which jambonz message a to_voicegateway translation feeds (the protocol layer sends it)."""

    SESSION_NEW = "session_new"
    INPUT = "input"
    TRANSFER = "transfer"
    PLAY = "play"
    CALL_STATUS = "call_status"


class ActivityType(StrEnum):
    MESSAGE = "message"
    EVENT = "event"


CONTEXT_KEYS = frozenset(
    {
        "route",
        "call_sid",
        "conversation_id",
        "account_sid",
        "application_sid",
        "caller_e164",
        "number_metadata",
        "sip_headers",
        "language",
        "transfer_verb",
        "default_region",
        "replay",
    }
)

NODE_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    """to_audiocodes: `verb` (+ `when`); to_voicegateway: activity `type`, `name` (+ `when`)."""

    verb: str | None = None
    type: ActivityType | None = None
    name: str | list[str] | None = None
    when: dict[str, Any] | None = None


class OutputSpec(_Strict):
    emit: dict[str, Any]
    when: dict[str, Any] | None = None
    foreach: str | None = None
    require: list[str] = Field(default_factory=list)


class Nested(_Strict):
    verbs: list[str] = Field(min_length=1)
    attach_to: str = Field(min_length=1)
    attach: Any = None


class Compare(_Strict):
    noise: list[str] = Field(default_factory=list)
    normalize: dict[str, list[str]] = Field(default_factory=dict)
    identify: dict[str, Any] | None = None


class MappingFile(_Strict):
    node: str = Field(pattern=NODE_PATTERN)
    description: str = Field(min_length=1)
    direction: Direction
    match: Match
    message: MessageKind | None = None
    let: dict[str, Any] = Field(default_factory=dict)
    nested: Nested | None = None
    output: list[OutputSpec] = Field(default_factory=list)
    compare: Compare = Field(default_factory=Compare)
