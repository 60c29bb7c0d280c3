"""Render simulator flow nodes as Cognigy *AudioCodes* Nodes would: AudioCodes Bot API activities.

The flows are the ones the simulated VG endpoint runs (bridge/sim/flow.py); here each node is
rendered into the activity the equivalent AudioCodes Node emits (audiocodes-bot-api.md §5.2),
with this module's own code written from the node docs — never through `bridge.mapping`, so a
comparison between the legacy and the voicegateway path tests the mappings.

Param compiler rule of the AudioCodes Nodes (§5.2): booleans always copied, strings and numbers
only when non-empty, arrays only when non-empty. Activities come out unstamped (no `id`,
`timestamp`). Performs no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from bridge.sim.flow import Node, NodeType, substitute

Activity = dict[str, Any]

# Play URL node default format (its Media Format choice list starts with it).
PLAY_URL_MEDIA_FORMAT = "wav/lpcm16"


class AcEvent(StrEnum):
    """Bot → VAIC event names (audiocodes-bot-api.md §3.2)."""

    PLAY_URL = "playUrl"
    # The built-in Transfer Node's event name is unconfirmed (§5.2: the extension used
    # `handover`, an official synonym); this simulator emits `transfer`.
    TRANSFER = "transfer"
    HANGUP = "hangup"
    CONFIG = "config"
    SEND_METADATA = "sendMetaData"
    SEND_DTMF = "sendDtmf"
    START_CALL_RECORDING = "startCallRecording"
    STOP_CALL_RECORDING = "stopCallRecording"
    PAUSE_CALL_RECORDING = "pauseCallRecording"
    RESUME_CALL_RECORDING = "resumeCallRecording"


_RECORDING: dict[str, AcEvent] = {
    "start": AcEvent.START_CALL_RECORDING,
    "stop": AcEvent.STOP_CALL_RECORDING,
    "pause": AcEvent.PAUSE_CALL_RECORDING,
    "resume": AcEvent.RESUME_CALL_RECORDING,
}


def _put(params: dict[str, Any], key: str, value: Any) -> None:
    """The param compiler: booleans always, other values only when non-empty."""
    if isinstance(value, bool) or value not in (None, "", [], {}):
        params[key] = value


def _speech_text(p: Mapping[str, Any], text: str) -> str:
    if p.get("ssml") and not text.lstrip().startswith("<speak"):
        return f"<speak>{text}</speak>"
    return text


def _tts_params(p: Mapping[str, Any]) -> dict[str, Any]:
    """Send Message's TTS section: voice and language of the node's synthesizer."""
    params: dict[str, Any] = {}
    synthesizer = p.get("synthesizer")
    if isinstance(synthesizer, Mapping):
        voice = synthesizer.get("voice")
        if isinstance(voice, str) and voice != "default":
            _put(params, "voiceName", voice)
        language = synthesizer.get("language")
        if language != "default":
            _put(params, "language", language)
    return params


def _message(text: str, params: Mapping[str, Any]) -> Activity:
    activity: Activity = {"type": "message", "text": text}
    if params:
        activity["activityParams"] = dict(params)
    return activity


def _event(name: AcEvent, **fields: Any) -> Activity:
    activity: Activity = {"type": "event", "name": str(name)}
    activity.update({k: v for k, v in fields.items() if v})
    return activity


def _question(p: Mapping[str, Any], ctx: Mapping[str, str]) -> Activity:
    """A Question's prompt as a Send Message with the input settings as activity params."""
    params = _tts_params(p)
    timeout = p.get("timeout", 10)
    params["userNoInputTimeoutMS"] = round(float(timeout) * 1000)
    if "digits" in p.get("input", ["speech", "digits"]):
        params["sendDTMF"] = True
        if "num_digits" in p:
            params["dtmfCollect"] = True
            params["dtmfCollectMaxDigits"] = int(p["num_digits"])
    return _message(_speech_text(p, str(substitute(p["prompt"], ctx))), params)


def _tel(number: str) -> str:
    number = number.strip()
    if number.startswith("tel:"):
        return number
    return "tel:" + (number if number.startswith("+") else "+" + number)


def _sip_headers(headers: Any) -> list[dict[str, str]]:
    if not isinstance(headers, Mapping):
        return []
    return [{"name": str(k), "value": str(v)} for k, v in headers.items() if v is not None]


def _transfer(p: Mapping[str, Any]) -> Activity:
    """Transfer Node: Target (tel/sip URI), Referral URL, Transfer SIP Headers."""
    params: dict[str, Any] = {}
    if p["mode"] == "dial":
        target = _tel(str(p["number"])) if "number" in p else str(p["sipUri"]).strip()
    else:
        target = str(p["referTo"])
    params["transferTarget"] = target
    if p["mode"] == "refer":
        _put(params, "transferReferredByURL", p.get("referredBy"))
    _put(params, "transferSipHeaders", _sip_headers(p.get("headers")))
    return _event(AcEvent.TRANSFER, activityParams=params)


def _session_params(p: Mapping[str, Any]) -> dict[str, Any]:
    """Set Session Parameters: the TTS, STT and barge-in sections."""
    params: dict[str, Any] = {}
    synthesizer = p.get("synthesizer")
    recognizer = p.get("recognizer")
    synth = synthesizer if isinstance(synthesizer, Mapping) else {}
    recog = recognizer if isinstance(recognizer, Mapping) else {}
    # VAIC has one `language` for TTS and STT; the node's TTS language wins.
    language = synth.get("language") or recog.get("language")
    if language != "default":
        _put(params, "language", language)
    voice = synth.get("voice")
    if isinstance(voice, str) and voice != "default":
        _put(params, "voiceName", voice)
    hints = recog.get("hints")
    if isinstance(hints, list):
        phrases = [
            h if isinstance(h, str) else str(h.get("phrase"))
            for h in hints
            if isinstance(h, str) or (isinstance(h, Mapping) and "phrase" in h)
        ]
        _put(params, "sttContextPhrases", phrases)
    _put(params, "sttContextBoost", recog.get("hintsBoost"))
    barge = p.get("bargeIn")
    if isinstance(barge, Mapping):
        if "enable" in barge:
            _put(params, "bargeIn", bool(barge["enable"]))
        if "dtmfBargein" in barge:
            _put(params, "bargeInOnDTMF", bool(barge["dtmfBargein"]))
        _put(params, "bargeInMinWordCount", barge.get("minBargeinWordCount"))
    return params


def _recording(p: Mapping[str, Any]) -> Activity:
    """Call Recording Node: Activity, Call Recording ID, Call Recording Server."""
    params: dict[str, Any] = {}
    _put(params, "callRecordingId", p.get("recordingID"))
    server = p.get("siprecServerURL")
    _put(params, "callRecordingServer", server[0] if isinstance(server, list) else server)
    return _event(_RECORDING[str(p["action"])], activityParams=params)


def render_ac_node(node: Node, context: Mapping[str, str] | None = None) -> list[Activity]:
    """The activities (unstamped) one node produces as an AudioCodes Node; `goto` gives none.

    A `flow.Renderer`: pass it to `FlowRun(flow, render=render_ac_node)`.
    """
    ctx = context or {}
    p = node.params
    match node.type:
        case NodeType.SAY:
            text = _speech_text(p, str(substitute(p["text"], ctx)))
            return [_message(text, _tts_params(p))]
        case NodeType.QUESTION:
            return [_question(p, ctx)]
        case NodeType.PLAY:
            urls = p["url"] if isinstance(p["url"], list) else [p["url"]]
            return [
                _event(
                    AcEvent.PLAY_URL,
                    activityParams={
                        "playUrlUrl": str(url),
                        "playUrlMediaFormat": PLAY_URL_MEDIA_FORMAT,
                        "playUrlCaching": False,
                    },
                )
                for url in urls
            ]
        case NodeType.TRANSFER:
            return [_transfer(p)]
        case NodeType.HANGUP:
            reason = p.get("reason")
            return [
                _event(AcEvent.HANGUP, activityParams={"hangupReason": reason} if reason else {})
            ]
        case NodeType.SET_SESSION_CONFIG:
            session = _session_params(p)
            # Nothing VAIC understands (e.g. only fillerNoise) → the node sends no config event.
            return [_event(AcEvent.CONFIG, sessionParams=session)] if session else []
        case NodeType.SEND_METADATA:
            return [_event(AcEvent.SEND_METADATA, value=substitute(p["data"], ctx))]
        case NodeType.CALL_RECORDING:
            return [_recording(p)]
        case NodeType.DTMF:
            return [_event(AcEvent.SEND_DTMF, activityParams={"dtmfDigits": str(p["digits"])})]
        case NodeType.GOTO:
            return []
