"""One AudioCodes Bot API conversation in HTTP mode, bot side: validate, de-duplicate, expire.

Sans-I/O: request bodies (parsed JSON) and a monotonic `now` go in, events come out, and
`AudioCodesProtocolError(status, reason)` is raised for anything the API does not allow
(audiocodes-bot-api.md §1, design.md §3.4, §3.8). Validation is all-or-nothing: a rejected
request changes no state. Checks are plain dict/type tests because they run on every turn.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import TypeVar

from bridge.audiocodes.events import (
    ActivitiesReceived,
    ConversationEnded,
    DuplicateReceived,
    Event,
    Refreshed,
)
from bridge.audiocodes.wire import ActivityType, CallerEvent
from bridge.errors import AudioCodesProtocolError

__all__ = [
    "IDLE_FACTOR",
    "MAX_ID_LENGTH",
    "Conversation",
    "InputKind",
    "Request",
    "State",
    "classify",
    "parse_create",
]

MAX_ID_LENGTH = 200
_T = TypeVar("_T")
# Rasa expires a conversation after keep_alive * 1.5 without any request (§1.4).
IDLE_FACTOR = 1.5
# Bounds on per-conversation memory: activity ids remembered for de-duplication, and turns
# whose outputs are kept for VAIC's retries.
SEEN_IDS_KEPT = 1024
OUTPUT_TURNS_KEPT = 8


class State(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


class Request(StrEnum):
    """The VAIC requests addressed to an existing conversation."""

    ACTIVITIES = "activities"
    REFRESH = "refresh"
    DISCONNECT = "disconnect"


# Every legal transition; a pair missing here is answered 404 (the conversation is gone).
_TRANSITIONS: dict[tuple[State, Request], State] = {
    (State.ACTIVE, Request.ACTIVITIES): State.ACTIVE,
    (State.ACTIVE, Request.REFRESH): State.ACTIVE,
    (State.ACTIVE, Request.DISCONNECT): State.ENDED,
}


class InputKind(StrEnum):
    """What a caller activity means to the session (design.md §3.1)."""

    START = "start"
    SPEECH = "speech"
    DTMF = "dtmf"
    NO_INPUT = "no_input"
    TRANSFER_STATUS = "transfer_status"
    PLAY_FAILED = "play_failed"
    END = "end"
    OTHER = "other"


_EVENT_KINDS: dict[str, InputKind] = {
    CallerEvent.START: InputKind.START,
    CallerEvent.DTMF: InputKind.DTMF,
    CallerEvent.DTMF_LOWERCASE: InputKind.DTMF,
    CallerEvent.NO_USER_INPUT: InputKind.NO_INPUT,
    CallerEvent.TRANSFER_STATUS: InputKind.TRANSFER_STATUS,
    CallerEvent.PLAY_URL_FAILED: InputKind.PLAY_FAILED,
    CallerEvent.CONVERSATION_END: InputKind.END,
}


def classify(activity: Mapping[str, object]) -> InputKind:
    """The kind of a (validated) caller activity; unknown types and events are OTHER."""
    kind = activity.get("type")
    if kind == ActivityType.MESSAGE:
        return InputKind.SPEECH
    if kind != ActivityType.EVENT:
        return InputKind.OTHER
    name = activity.get("name")
    if not isinstance(name, str):
        return InputKind.OTHER
    return _EVENT_KINDS.get(name, InputKind.OTHER)


def _bad(message: str) -> AudioCodesProtocolError:
    return AudioCodesProtocolError(message, status=400, reason="bad_request")


def _require_object(body: object) -> dict[str, object]:
    if not isinstance(body, dict):
        raise _bad("body: must be a JSON object")
    return body


def _optional_string(body: Mapping[str, object], field: str) -> str | None:
    value = body.get(field)
    if value is None or isinstance(value, str):
        return value
    raise _bad(f"{field}: must be a string")


def parse_create(body: object) -> str:
    """The conversation id of a create-conversation body (§1.2); other fields are ignored."""
    obj = _require_object(body)
    conversation = obj.get("conversation")
    if not isinstance(conversation, str) or not conversation:
        raise _bad("conversation: must be a non-empty string")
    if len(conversation) > MAX_ID_LENGTH:
        raise _bad(f"conversation: longer than {MAX_ID_LENGTH} characters")
    if not _encodable(conversation):
        # the id goes into the URLs of the create response (UTF-8, percent-encoded)
        raise _bad("conversation: must be valid Unicode text (no lone surrogates)")
    return conversation


def _snap(data: Mapping[str, object], key: str, kind: type[_T]) -> _T:
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{key}: expected {kind.__name__}")
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, from "\ud800" escapes in the JSON body
        return False
    return True


def _validate_activity(index: int, activity: object) -> dict[str, object]:
    where = f"activities[{index}]"
    if not isinstance(activity, dict):
        raise _bad(f"{where}: must be a JSON object")
    kind = activity.get("type")
    if not isinstance(kind, str):
        raise _bad(f"{where}.type: must be a string")
    if kind == ActivityType.MESSAGE and not isinstance(activity.get("text"), str):
        raise _bad(f"{where}.text: must be a string")
    if kind == ActivityType.EVENT and not isinstance(activity.get("name"), str):
        raise _bad(f"{where}.name: must be a string")
    activity_id = activity.get("id")
    if activity_id is not None:
        if not isinstance(activity_id, str) or not activity_id:
            raise _bad(f"{where}.id: must be a non-empty string")
        if len(activity_id) > MAX_ID_LENGTH:
            raise _bad(f"{where}.id: longer than {MAX_ID_LENGTH} characters")
    return activity


class Conversation:
    """State of one VAIC conversation: turns, seen activity ids, recent outputs, idle timer."""

    def __init__(
        self, conversation_id: str, expires_seconds: int, now: float, max_activities: int = 50
    ) -> None:
        self.conversation_id = conversation_id
        self.expires_seconds = expires_seconds
        self.max_activities = max_activities
        self.state = State.ACTIVE
        self.turn = 0
        self.last_request_at = now
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._outputs: OrderedDict[int, tuple[dict[str, object], ...]] = OrderedDict()

    # -- requests -------------------------------------------------------------------------

    def receive_activities(self, body: object, now: float) -> list[Event]:
        """Validate an activities POST (§1.3) and drop activity ids seen before.

        Returns `[DuplicateReceived(turn)]` when the POST carried ids and every one was seen
        (VAIC's retry of `turn`), else `[ActivitiesReceived(turn, new activities)]`.
        Activities without an id are never treated as duplicates.
        """
        next_state = self._next_state(Request.ACTIVITIES)
        obj = self._require_own(body)
        activities = obj.get("activities")
        if not isinstance(activities, list):
            raise _bad("activities: must be a list")
        if len(activities) > self.max_activities:
            raise AudioCodesProtocolError(
                f"activities: more than {self.max_activities} activities",
                status=413,
                reason="too_large",
            )
        validated = [_validate_activity(i, a) for i, a in enumerate(activities)]

        fresh: list[dict[str, object]] = []
        fresh_ids: set[str] = set()
        had_id = False
        original_turn = 0
        for activity in validated:
            activity_id = activity.get("id")
            if not isinstance(activity_id, str):
                fresh.append(activity)
                continue
            had_id = True
            seen_turn = self._seen.get(activity_id)
            if seen_turn is not None:
                original_turn = max(original_turn, seen_turn)
            elif activity_id not in fresh_ids:  # the same id twice in one POST counts once
                fresh.append(activity)
                fresh_ids.add(activity_id)

        self.state = next_state
        self.last_request_at = now
        if had_id and not fresh:
            return [DuplicateReceived(turn=original_turn)]
        self.turn += 1
        for activity_id in fresh_ids:
            self._seen[activity_id] = self.turn
        while len(self._seen) > SEEN_IDS_KEPT:
            self._seen.popitem(last=False)
        return [ActivitiesReceived(turn=self.turn, activities=tuple(fresh))]

    def receive_refresh(self, body: object, now: float) -> list[Event]:
        """A keep-alive (§1.4); answer `{"expiresSeconds": ...}`."""
        next_state = self._next_state(Request.REFRESH)
        self._require_own(body)
        self.state = next_state
        self.last_request_at = now
        return [Refreshed(expires_seconds=self.expires_seconds)]

    def receive_disconnect(self, body: object, now: float) -> list[Event]:
        """VAIC ended the call (§1.5); afterwards every request is answered 404."""
        next_state = self._next_state(Request.DISCONNECT)
        obj = self._require_own(body)
        reason_code = _optional_string(obj, "reasonCode")
        reason = _optional_string(obj, "reason")
        self.state = next_state
        self.last_request_at = now
        return [ConversationEnded(reason_code=reason_code, reason=reason)]

    # -- outputs kept for retries ---------------------------------------------------------

    def record_outputs(self, turn: int, activities: Iterable[Mapping[str, object]]) -> None:
        """Remember what the response to `turn` carried (replacing any earlier record), so a
        retry of that turn gets the same answer. Only the last few turns are kept."""
        self._outputs[turn] = tuple(dict(a) for a in activities)
        self._outputs.move_to_end(turn)
        while len(self._outputs) > OUTPUT_TURNS_KEPT:
            self._outputs.popitem(last=False)

    def outputs_of(self, turn: int) -> list[dict[str, object]]:
        """The outputs recorded for `turn`; empty when none were recorded or they aged out."""
        return [dict(a) for a in self._outputs.get(turn, ())]

    # -- snapshots (cluster: another instance continues the conversation) -----------------

    def snapshot(self, now: float, wall: float) -> dict[str, object]:
        """JSON-ready state. Monotonic `now` readings mean nothing in another process, so the
        idle clock travels as the wall-clock time (`wall`, time.time) of the last request."""
        return {
            "conversation_id": self.conversation_id,
            "expires_seconds": self.expires_seconds,
            "max_activities": self.max_activities,
            "state": self.state.value,
            "turn": self.turn,
            "last_request_wall": wall - (now - self.last_request_at),
            "seen": [[activity_id, turn] for activity_id, turn in self._seen.items()],
            "outputs": [[turn, list(outputs)] for turn, outputs in self._outputs.items()],
        }

    @classmethod
    def restore(cls, data: Mapping[str, object], now: float, wall: float) -> Conversation:
        """The conversation `snapshot` described, on this process's clock; ValueError if
        `data` is not a snapshot."""
        try:
            conversation = cls(
                _snap(data, "conversation_id", str),
                _snap(data, "expires_seconds", int),
                now,
                max_activities=_snap(data, "max_activities", int),
            )
            conversation.state = State(_snap(data, "state", str))
            conversation.turn = _snap(data, "turn", int)
            last_wall = _snap(data, "last_request_wall", float)
            conversation.last_request_at = now - max(0.0, wall - last_wall)
            for activity_id, turn in _snap(data, "seen", list):
                conversation._seen[str(activity_id)] = int(turn)
            for turn, outputs in _snap(data, "outputs", list):
                conversation._outputs[int(turn)] = tuple(dict(a) for a in outputs)
        except (TypeError, KeyError) as exc:
            raise ValueError(f"not a conversation snapshot: {exc}") from None
        return conversation

    # -- time -----------------------------------------------------------------------------

    def deadline(self) -> float:
        """When the conversation expires unless another request arrives."""
        return self.last_request_at + IDLE_FACTOR * self.expires_seconds

    def expired(self, now: float) -> bool:
        """Idle for longer than 1.5 * expiresSeconds."""
        return now > self.deadline()

    @property
    def ended(self) -> bool:
        return self.state is State.ENDED

    # -- helpers --------------------------------------------------------------------------

    def _next_state(self, request: Request) -> State:
        next_state = _TRANSITIONS.get((self.state, request))
        if next_state is None:
            raise AudioCodesProtocolError("conversation ended", status=404, reason="not_found")
        return next_state

    def _require_own(self, body: object) -> dict[str, object]:
        obj = _require_object(body)
        if "conversation" in obj and obj["conversation"] != self.conversation_id:
            raise _bad("conversation: does not match the conversation in the URL")
        return obj
