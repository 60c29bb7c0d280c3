"""Wire names and response bodies of the AudioCodes Bot API (HTTP and WebSocket mode), bot side.

Pure: no I/O, no clock (`stamp` takes the time). Names follow audiocodes-bot-api.md §1-§3;
event names are case-sensitive on the wire.
Bodies built here use plain `str` keys, not enum members, so any JSON encoder takes them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from urllib.parse import quote

__all__ = [
    "ActivityParam",
    "ActivityType",
    "BotEvent",
    "BotStreamMessage",
    "CallerEvent",
    "CloseCode",
    "DisconnectReason",
    "Field",
    "StreamField",
    "VaicStreamMessage",
    "activities_response",
    "conversation_path",
    "create_response",
    "format_timestamp",
    "new_activity_id",
    "probe_response",
    "stamp",
]


class ActivityType(StrEnum):
    MESSAGE = "message"
    EVENT = "event"


class CallerEvent(StrEnum):
    """Event names VAIC sends to the bot (§3.1)."""

    START = "start"
    DTMF = "DTMF"
    # Rasa's streaming channel matches lowercase; accepted as a synonym (§3.1).
    DTMF_LOWERCASE = "dtmf"
    NO_USER_INPUT = "noUserInput"
    SPEECH_HYPOTHESIS = "speechHypothesis"
    TRANSFER_STATUS = "transferStatus"
    PLAY_URL_FAILED = "playUrlFailed"
    DIALOUT_INITIATED = "dialoutInitiated"
    CONVERSATION_END = "conversationEnd"
    AGENT_CONNECTED = "agentConnected"
    PLAY_FINISHED = "playFinished"
    VOICE_DETECTED = "voiceDetected"
    SILENCE_DETECTED = "silenceDetected"


class BotEvent(StrEnum):
    """Event names the bot sends to VAIC (§3.2)."""

    HANGUP = "hangup"
    TRANSFER = "transfer"
    HANDOVER = "handover"
    PLAY_URL = "playUrl"
    CONFIG = "config"
    SEND_META_DATA = "sendMetaData"
    SEND_DTMF = "sendDtmf"
    START_RECOGNITION = "startRecognition"
    STOP_RECOGNITION = "stopRecognition"
    START_CALL_RECORDING = "startCallRecording"
    STOP_CALL_RECORDING = "stopCallRecording"
    PAUSE_CALL_RECORDING = "pauseCallRecording"
    RESUME_CALL_RECORDING = "resumeCallRecording"
    ABORT_PROMPTS = "abortPrompts"
    EXPECT_ANOTHER_BOT_MESSAGE = "expectAnotherBotMessage"


class Field(StrEnum):
    """Top-level field names of activities and of the HTTP-mode request/response bodies."""

    TYPE = "type"
    ID = "id"
    TIMESTAMP = "timestamp"
    TEXT = "text"
    NAME = "name"
    VALUE = "value"
    PARAMETERS = "parameters"
    ACTIVITY_PARAMS = "activityParams"
    SESSION_PARAMS = "sessionParams"
    PARTICIPANT = "participant"
    CONVERSATION = "conversation"
    ACTIVITIES = "activities"
    REASON_CODE = "reasonCode"
    REASON = "reason"
    EXPIRES_SECONDS = "expiresSeconds"
    ACTIVITIES_URL = "activitiesURL"
    REFRESH_URL = "refreshURL"
    DISCONNECT_URL = "disconnectURL"
    WEBSOCKET_URL = "websocketURL"


class ActivityParam(StrEnum):
    """`activityParams` keys of bot→VAIC events (§3.2)."""

    HANGUP_REASON = "hangupReason"
    TRANSFER_TARGET = "transferTarget"
    HANDOVER_REASON = "handoverReason"
    TRANSFER_SIP_HEADERS = "transferSipHeaders"
    TRANSFER_REFERRED_BY_URL = "transferReferredByURL"
    PLAY_URL_URL = "playUrlUrl"
    PLAY_URL_MEDIA_FORMAT = "playUrlMediaFormat"
    PLAY_URL_CACHING = "playUrlCaching"
    PLAY_URL_ALT_TEXT = "playUrlAltText"
    DTMF_DIGITS = "dtmfDigits"
    TARGET_PARTICIPANT = "targetParticipant"
    CALL_RECORDING_ID = "callRecordingId"
    CALL_RECORDING_DEST_USERNAME = "callRecordingDestUsername"
    CALL_RECORDING_SERVER = "callRecordingServer"


class DisconnectReason(StrEnum):
    """Documented `reasonCode` values of the disconnect POST (§1.5); others may arrive."""

    ERROR = "error"
    BOT_DISCONNECTED = "bot-disconnected"
    CLIENT_DISCONNECTED = "client-disconnected"
    TRANSFERRED = "transferred"
    MACHINE_DETECTED = "machine-detected"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    DECLINED = "declined"


class VaicStreamMessage(StrEnum):
    """WebSocket (streaming) mode message types VAIC sends to the bot (§2.1)."""

    SESSION_INITIATE = "session.initiate"
    SESSION_RESUME = "session.resume"
    SESSION_END = "session.end"
    ACTIVITIES = "activities"
    USER_STREAM_START = "userStream.start"
    USER_STREAM_CHUNK = "userStream.chunk"
    USER_STREAM_STOP = "userStream.stop"
    CONNECTION_VALIDATE = "connection.validate"


class BotStreamMessage(StrEnum):
    """WebSocket (streaming) mode message types the bot sends to VAIC (§2.2)."""

    SESSION_ACCEPTED = "session.accepted"
    SESSION_ERROR = "session.error"
    CONNECTION_VALIDATED = "connection.validated"
    ACTIVITIES = "activities"
    USER_STREAM_STARTED = "userStream.started"
    USER_STREAM_STOPPED = "userStream.stopped"
    USER_STREAM_SPEECH_STARTED = "userStream.speech.started"
    USER_STREAM_SPEECH_STOPPED = "userStream.speech.stopped"
    USER_STREAM_SPEECH_HYPOTHESIS = "userStream.speech.hypothesis"
    USER_STREAM_SPEECH_RECOGNITION = "userStream.speech.recognition"
    USER_STREAM_SPEECH_COMMITTED = "userStream.speech.committed"
    PLAY_STREAM_START = "playStream.start"
    PLAY_STREAM_CHUNK = "playStream.chunk"
    PLAY_STREAM_STOP = "playStream.stop"


class StreamField(StrEnum):
    """Top-level field names of WebSocket (streaming) mode messages (§2.1, §2.2)."""

    TYPE = "type"
    CONVERSATION_ID = "conversationId"
    EXPECT_AUDIO_MESSAGES = "expectAudioMessages"
    SUPPORTED_MEDIA_FORMATS = "supportedMediaFormats"
    MEDIA_FORMAT = "mediaFormat"
    CALLER = "caller"
    BOT_NAME = "botName"
    ACTIVITIES = "activities"
    REASON = "reason"
    REASON_CODE = "reasonCode"
    PARAMETERS = "parameters"
    SUCCESS = "success"
    PARTICIPANT = "participant"


class CloseCode(IntEnum):
    """WebSocket close codes the bot uses in streaming mode (RFC 6455 §7.4.1)."""

    NORMAL = 1000
    POLICY_VIOLATION = 1008


# Activity ids only need to be unique, not unpredictable: a seeded Mersenne Twister draws the
# 122 random bits of a uuid4 without the urandom syscall `uuid.uuid4()` makes for each one.
_ids = random.Random()
_UUID4_CLEAR = 0xF000 << 64 | 0xC000 << 48
_UUID4_SET = 0x4000 << 64 | 0x8000 << 48
# The outputs of one turn share their `at`: its text is kept for the next call.
_last_timestamp: tuple[datetime, str] = (datetime.min, "")


def new_activity_id() -> str:
    """A random (version 4, RFC 4122 variant) UUID in its canonical text form."""
    bits = _ids.getrandbits(128) & ~_UUID4_CLEAR | _UUID4_SET
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def format_timestamp(at: datetime) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, as every reference bot writes it.

    A naive `at` is taken to be UTC.
    """
    global _last_timestamp
    last, text = _last_timestamp
    if at == last and at.tzinfo is last.tzinfo:
        return text
    utc = at if at.tzinfo is None else at.astimezone(UTC).replace(tzinfo=None)
    text = utc.isoformat(timespec="milliseconds") + "Z"
    _last_timestamp = (at, text)
    return text


def stamp(activity: Mapping[str, object], at: datetime) -> dict[str, object]:
    """A copy of `activity` with a fresh uuid4 `id` and `timestamp` (any existing ones replaced)."""
    stamped: dict[str, object] = {
        "id": new_activity_id(),
        "timestamp": format_timestamp(at),
    }
    for key, value in activity.items():
        if key not in stamped:
            stamped[key] = value
    return stamped


def probe_response() -> dict[str, object]:
    """Body of the answer to the portal's validation GET (§1.1)."""
    return {"type": "ac-bot-api", "success": True}


def conversation_path(base: str, conversation_id: str) -> str:
    """`{base}/conversation/{quoted id}`: the prefix of a conversation's URLs."""
    return f"{base.rstrip('/')}/conversation/{quote(conversation_id, safe='')}"


def _websocket_base(url: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url


def create_response(
    base: str, conversation_id: str, expires_seconds: int, websocket: bool
) -> dict[str, object]:
    """Body of the answer to create conversation (§1.2).

    `base` is the route's root-relative prefix (`/ac/<route>`) or an absolute URL
    (`https://host/ac/<route>`, from `public_url`); the returned URLs keep that form.
    `websocketURL` (ws/wss when absolute) is present only when `websocket` is true.
    """
    prefix = conversation_path(base, conversation_id)
    body: dict[str, object] = {
        "activitiesURL": f"{prefix}/activities",
        "refreshURL": f"{prefix}/refresh",
        "disconnectURL": f"{prefix}/disconnect",
        "expiresSeconds": expires_seconds,
    }
    if websocket:
        body["websocketURL"] = f"{_websocket_base(prefix)}/websocket"
    return body


def activities_response(
    conversation_id: str, activities: Iterable[Mapping[str, object]]
) -> dict[str, object]:
    """Body of the answer to an activities POST (§1.3), also the push-socket frame (§1.6)."""
    return {"conversation": conversation_id, "activities": [dict(a) for a in activities]}
