"""Wire names and constants of the jambonz WebSocket API (voicegateway-ws.md §1).

Only names live here: message types, commands, verb names, hook kinds, close codes and timing
constants. Performs no I/O.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

SUBPROTOCOL = "ws.jambonz.org"
ACK_TIMEOUT_S = 5.0
# jambonz:error echoes the offending frame; keep the echo bounded (jambonz caps frames at 24 KiB).
ERROR_CONTENT_MAX_CHARS = 2048


class MessageType(StrEnum):
    """`type` of a frame, both directions (§1.3, §1.4)."""

    # Voice Gateway -> app
    SESSION_NEW = "session:new"
    SESSION_RECONNECT = "session:reconnect"
    SESSION_REDIRECT = "session:redirect"
    SESSION_ADULTING = "session:adulting"
    VERB_HOOK = "verb:hook"
    DIAL_CONFIRM = "dial:confirm"
    CALL_STATUS = "call:status"
    VERB_STATUS = "verb:status"
    JAMBONZ_ERROR = "jambonz:error"
    QUEUE_STATUS = "queue:status"
    LLM_EVENT = "llm:event"
    LLM_TOOL_CALL = "llm:tool-call"
    TTS_STREAMING_EVENT = "tts:streaming-event"
    TTS_TOKENS_RESULT = "tts:tokens-result"
    # app -> Voice Gateway
    ACK = "ack"
    COMMAND = "command"


# VG -> app messages the app must ack within ACK_TIMEOUT_S (§0).
ACKED_TYPES = frozenset(
    {
        MessageType.SESSION_NEW,
        MessageType.SESSION_RECONNECT,
        MessageType.SESSION_REDIRECT,
        MessageType.SESSION_ADULTING,
        MessageType.VERB_HOOK,
        MessageType.DIAL_CONFIRM,
        MessageType.QUEUE_STATUS,
    }
)


class Command(StrEnum):
    """`command` values of app -> VG `command` frames (§1.4)."""

    REDIRECT = "redirect"
    CALL_STATUS = "call:status"
    CONFIG = "config"
    DUB = "dub"
    RECORD = "record"
    MUTE_STATUS = "mute:status"
    LISTEN_STATUS = "listen:status"
    STREAM_STATUS = "stream:status"
    TRANSCRIBE_STATUS = "transcribe:status"
    WHISPER = "whisper"
    SIP_REQUEST = "sip:request"
    DTMF = "dtmf"
    MEDIA_PATH = "media:path"
    CONF_MUTE_STATUS = "conf:mute-status"
    CONF_HOLD_STATUS = "conf:hold-status"
    CONF_PARTICIPANT_ACTION = "conf:participant-action"
    BOOST_AUDIO_SIGNAL = "boostAudioSignal"
    DIAL = "dial"
    LLM_TOOL_OUTPUT = "llm:tool-output"
    LLM_UPDATE = "llm:update"
    TTS_TOKENS = "tts:tokens"
    TTS_FLUSH = "tts:flush"
    TTS_CLEAR = "tts:clear"
    TAG = "tag"  # @jambonz/sdk injectTag; feature-server's WS switch lacks it (§1.4)


# The only commands whose `data` may be absent (§1.4).
COMMANDS_WITHOUT_DATA = frozenset({Command.LLM_TOOL_OUTPUT, Command.TTS_FLUSH, Command.TTS_CLEAR})


class Verb(StrEnum):
    """Canonical verb names (voicegateway-ws.md §3)."""

    AGENT = "agent"
    ALERT = "alert"
    ANSWER = "answer"
    CONFERENCE = "conference"
    CONFIG = "config"
    DEQUEUE = "dequeue"
    DIAL = "dial"
    DIALOGFLOW = "dialogflow"
    DTMF = "dtmf"
    DUB = "dub"
    ENQUEUE = "enqueue"
    GATHER = "gather"
    HANGUP = "hangup"
    LEAVE = "leave"
    LISTEN = "listen"
    LLM = "llm"
    MESSAGE = "message"
    PAUSE = "pause"
    PLAY = "play"
    REDIRECT = "redirect"
    REST_DIAL = "rest:dial"
    ROOM = "room"  # @jambonz/schema: a synonym of conference
    SAY = "say"
    SIP_DECLINE = "sip:decline"
    SIP_REFER = "sip:refer"
    SIP_REQUEST = "sip:request"
    TAG = "tag"
    TRANSCRIBE = "transcribe"
    TRANSFER = "transfer"


# Verbs that, on a real Voice Gateway, run until their `actionHook` reports how they ended, whose
# next verbs come in that hook's ack. When the bridge cannot serve one (no mapping file matches
# it), the hook is reported at once with the result feature-server reports when the verb fails
# (values from @jambonz/schema `callbacks/`), so the app decides what comes next instead of the
# call waiting for a hook that never comes.
UNSERVED_HOOK_RESULTS: dict[str, dict[str, object]] = {
    Verb.AGENT: {"completion_reason": "connection failure"},
    Verb.CONFERENCE: {},
    Verb.DEQUEUE: {"dequeue_result": "timeout"},
    Verb.DIALOGFLOW: {},
    Verb.ENQUEUE: {"queue_sid": "", "queue_time": 0, "queue_result": "error"},
    Verb.LISTEN: {},
    Verb.LLM: {"completion_reason": "connection failure"},
    Verb.MESSAGE: {
        "message_sid": "",
        "message_status": "failure",
        "message_failure_reason": "no messaging on an AudioCodes call",
    },
    Verb.ROOM: {},
    Verb.SIP_REQUEST: {"result": "failed", "err": "no AudioCodes equivalent"},
    Verb.TRANSFER: {"transfer_result": "failed", "transfer_reason": "error"},
}
# Served verbs that on Voice Gateway also wait for their actionHook, whose outcome is known once
# VAIC has the activity: `sip:request` INFO becomes sendMetaData, which VAIC never answers.
HANDED_OFF_HOOK_RESULTS: dict[str, dict[str, object]] = {
    Verb.SIP_REQUEST: {"result": "success"},
}


class HookKind(StrEnum):
    """Which pending hook a caller-side result is reported on (design.md §3.1)."""

    INPUT = "input"  # gather actionHook, else config.bargeIn actionHook, else the route default
    TRANSFER = "transfer"  # dial / sip:refer actionHook
    PLAY = "play"  # play actionHook
    VERB = "verb"  # a hook the bridge reports itself (redirect, an unserved verb): takes no input


class CallStatus(StrEnum):
    """`call_status` values (§2.2)."""

    TRYING = "trying"
    RINGING = "ringing"
    EARLY_MEDIA = "early-media"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    FAILED = "failed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    QUEUED = "queued"


class CloseCode(IntEnum):
    """WebSocket close codes Voice Gateway uses (§1.6)."""

    NORMAL = 1000  # end of call
    GOING_AWAY = 1001  # failure while retrieving the application (session:new rejected)


class ErrorMsg(StrEnum):
    """`data.msg` of the `jambonz:error` frames we send (§1.6)."""

    INVALID_MESSAGE = "InvalidMessage"
