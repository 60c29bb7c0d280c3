"""Hypothesis strategies for hostile input on every surface the bridge exposes.

Each surface's case is a plain value (dicts, lists, str, bytes, numbers) so a case that broke
something can be saved to `tests/fuzz/corpus/<surface>/` and replayed (`corpus.py`). Markers in
rendered text are filled in by the harness at run time: `{{own}}` the conversation id of the
case's own call, `{{msgid}}` the msgid of the jambonz message being answered, `{{call_sid}}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from bridge.mapping.loader import SHIPPED_DIR
from bridge.voicegateway.wire import Command, Verb

OWN = "{{own}}"
MSGID = "{{msgid}}"
CALL_SID = "{{call_sid}}"

# ---- building blocks -------------------------------------------------------------------------

SPECIAL_STRINGS = [
    "",
    " ",
    "\x00",
    "null",
    "NaN",
    "undefined",
    "__proto__",
    "${HOME}",
    "${X:-${Y}}",
    "%s%n%x",
    "../../etc/passwd",
    "\u202e\u200b\ufeff",
    "\U0001f642" * 3,
    "a\r\nX-Injected: 1",
    "<speak>x</speak>",
    "{{own}}",
    "\\",
    '"',
    "\ud800",
    "\udfff",
    "\ud83d",
]
surrogates = st.integers(0xD800, 0xDFFF).map(chr)
any_chars = st.characters() | surrogates
short_text = st.text(any_chars, max_size=20) | st.sampled_from(SPECIAL_STRINGS)
huge_text = st.builds(
    lambda unit, n: unit * n,
    st.sampled_from(["x", "\u00e9", "\U0001f642", "\ud800", "[", '"', "\\"]),
    st.integers(1_000, 120_000),
)
hostile_text = short_text | huge_text
numbers = (
    st.integers()
    | st.integers(2**63, 2**90)
    | st.integers(-(2**90), -(2**63))
    | st.floats()
    | st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 1e308, 5e-324])
)
# A scalar that `render` replaces by nesting deep enough to hurt recursive code (deepcopy,
# json.dumps, validators) yet shallow enough for json.loads to accept.
DEEP = "\x00deep\x00"
scalars = st.none() | st.booleans() | numbers | short_text | st.just(DEEP)

FIELD_NAMES = [
    "id",
    "type",
    "name",
    "text",
    "value",
    "parameters",
    "activityParams",
    "conversation",
    "conversationId",
    "activities",
    "msgid",
    "data",
    "verb",
    "command",
    "actionHook",
    "caller",
    "callee",
    "reasonCode",
    "reason",
]
keys = st.sampled_from(FIELD_NAMES) | short_text


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON-ish value (NaN, Infinity, huge ints, surrogates included), moderately nested."""
    return st.recursive(
        scalars | huge_text,
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5)
        ),
        max_leaves=max_leaves,
    )


@st.composite
def _deep(draw: st.DrawFn) -> str:
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"b":[', "]}")]))
    depth = draw(st.integers(500, 60_000) | st.integers(2, 990))
    closed = draw(st.booleans())
    return opener * depth + (closer * depth if closed else "")


deep_text = _deep()


def dumps(value: Any) -> str:
    """JSON text as a sloppy peer would write it: NaN/Infinity literals, lone surrogates."""
    return json.dumps(value, allow_nan=True)


@st.composite
def duplicate_keys_text(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> str:
    """An object with repeated keys (`{"type":"message","type":"event"}`)."""
    names = draw(st.lists(st.sampled_from(FIELD_NAMES[:8]), min_size=2, max_size=6))
    pairs = [f"{dumps(name)}:{dumps(draw(values))}" for name in names + names[:1]]
    return "{" + ",".join(pairs) + "}"


@st.composite
def truncated(draw: st.DrawFn, text: st.SearchStrategy[str]) -> str:
    whole = draw(text)
    if not whole:
        return whole
    return whole[: draw(st.integers(0, len(whole) - 1))]


_DEEP_LITERAL = json.dumps(DEEP)


@st.composite
def dumps_deep(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> str:
    """JSON text of a value, each `DEEP` scalar in it replaced by deeply nested arrays."""
    text = dumps(draw(values))
    while _DEEP_LITERAL in text:
        depth = draw(st.integers(2, 990) | st.integers(300, 700) | st.integers(990, 5000))
        text = text.replace(_DEEP_LITERAL, "[" * depth + "]" * depth, 1)
    return text


def render(values: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """JSON text of `values`, or broken JSON text around them."""
    dumped = dumps_deep(values)
    return st.one_of(
        dumped,
        dumped,
        truncated(dumped),
        duplicate_keys_text(values),
        deep_text,
        short_text,
        st.sampled_from(["", "{", "}", "[]", "null", "NaN", "-Infinity", "1e99999", '"\\ud800"']),
    )


def encoded(texts: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Bytes on the wire: UTF-8 (with lone surrogates kept), other encodings, or plain binary."""
    return st.one_of(
        texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
        texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
        texts.map(lambda t: t.encode("utf-16", "surrogatepass")),
        st.binary(max_size=200),
        st.sampled_from([b"\xff\xfe", b"\xc0\x80", b"\xed\xa0\x80", b'{"a":"\xff"}']),
    )


# ---- AudioCodes activities -------------------------------------------------------------------

ids = st.uuids().map(str)
START_PARAMS = {"caller": "+4921154591991", "callee": "+4930111000"}


@st.composite
def valid_activity(draw: st.DrawFn) -> dict[str, Any]:
    template: dict[str, Any] = draw(
        st.sampled_from(
            [
                {"type": "message", "text": "hello"},
                {"type": "message", "text": "I want to pay my bill"},
                {"type": "event", "name": "DTMF", "value": "1"},
                {"type": "event", "name": "noUserInput"},
                {"type": "event", "name": "transferStatus", "value": {"status": "failed"}},
                {"type": "event", "name": "playUrlFailed"},
                {"type": "event", "name": "speechHypothesis", "value": "hel"},
                {"type": "event", "name": "start", "parameters": dict(START_PARAMS)},
            ]
        )
    )
    return {"id": draw(ids), **template}


@st.composite
def replaced_field(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A well-formed object with one field (possibly nested) replaced, added or removed."""
    obj = dict(draw(base))
    key = draw(st.sampled_from(sorted(obj)) | keys)
    action = draw(st.sampled_from(["set", "set", "delete", "nest"]))
    if action == "delete":
        obj.pop(key, None)
    elif action == "nest":
        obj[key] = {draw(keys): draw(json_values(6))}
    else:
        obj[key] = draw(json_values(6))
    return obj


ACTIVITY_FIELDS = [
    "id",
    "type",
    "name",
    "text",
    "value",
    "parameters",
    "activityParams",
    "timestamp",
    "language",
    "sessionParams",
]
hostile_activity = st.one_of(
    replaced_field(valid_activity()),
    replaced_field(valid_activity()),
    json_values(8),
    st.fixed_dictionaries({}, optional={f: json_values(4) for f in ACTIVITY_FIELDS}),
    st.builds(
        lambda a, n: {**a, "id": n},
        valid_activity(),
        numbers | st.none() | st.lists(st.integers(), max_size=3),
    ),
)
start_parameters = st.one_of(
    st.just(dict(START_PARAMS)),
    json_values(6),
    st.fixed_dictionaries(
        {},
        optional={
            "caller": hostile_text | json_values(3),
            "callee": hostile_text | json_values(3),
            "callerDisplayName": hostile_text,
            "sipHeaders": json_values(4),
        },
    ),
)
start_activity = st.builds(
    lambda i, p: {"id": i, "type": "event", "name": "start", "parameters": p},
    ids,
    start_parameters,
)
activity_lists = st.one_of(
    st.lists(valid_activity() | hostile_activity, max_size=6),
    st.lists(hostile_activity, min_size=1, max_size=3),
    st.integers(45, 120).map(lambda n: [{"type": "message", "text": "x"}] * n),
    st.builds(
        lambda n, i: [{"id": i, "type": "message", "text": "same id"}] * n,
        st.integers(2, 60),
        ids,
    ),
    st.builds(lambda n: [{"id": "x" * n, "type": "message", "text": "x"}], st.integers(150, 5000)),
)
activities_body = st.one_of(
    st.fixed_dictionaries(
        {"activities": activity_lists},
        optional={"conversation": st.just(OWN) | json_values(3)},
    ),
    st.fixed_dictionaries({}, optional={"activities": json_values(6), "conversation": scalars}),
    json_values(8),
)
small_body = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "conversation": st.just(OWN) | json_values(3),
            "reasonCode": scalars,
            "reason": scalars | huge_text,
        },
    ),
    json_values(8),
)
create_body = st.one_of(
    st.fixed_dictionaries(
        {"conversation": ids | hostile_text | json_values(3)}, optional={"bot": json_values(3)}
    ),
    json_values(8),
)

# ---- HTTP requests ---------------------------------------------------------------------------

header_chars = st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.characters(
    min_codepoint=0xA0, max_codepoint=0xFF
)
header_text = st.text(header_chars, max_size=40) | (
    st.integers(1_000, 9_000).map(lambda n: "a" * n)
)
OPERATIONS = ["create", "activities", "refresh", "disconnect", "websocket", "probe", "raw"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


def _body(operation: str) -> st.SearchStrategy[bytes | None]:
    structured = {
        "create": create_body,
        "activities": activities_body,
        "refresh": small_body,
        "disconnect": small_body,
    }.get(operation, json_values(6))
    return st.none() | encoded(render(structured))


@st.composite
def http_request(draw: st.DrawFn) -> dict[str, Any]:
    operation = draw(st.sampled_from(OPERATIONS))
    request: dict[str, Any] = {
        "op": operation,
        "method": draw(st.none() | st.sampled_from(METHODS)),  # None: the operation's own
        "route": draw(st.sampled_from(["own", "own", "own", "nope"]) | short_text),
        "conversation": draw(st.sampled_from(["own", "own", "own", "unknown"]) | short_text),
        "auth": draw(
            st.sampled_from(["good", "good", "good", "none", "wrong", "basic"]) | header_text
        ),
        "headers": draw(
            st.dictionaries(
                st.sampled_from(
                    [
                        "Content-Type",
                        "Content-Encoding",
                        "Accept",
                        "Accept-Encoding",
                        "Upgrade",
                        "Connection",
                        "X-Forwarded-For",
                        "Sec-WebSocket-Version",
                    ]
                ),
                st.sampled_from(
                    ["application/json", "text/plain", "gzip", "deflate", "br", "websocket"]
                )
                | header_text,
                max_size=2,
            )
        ),
        "body": draw(_body(operation)),
    }
    if operation == "raw":
        request["path"] = draw(
            st.lists(short_text | huge_text.map(lambda t: t[:3000]), min_size=0, max_size=5)
        )
    if operation == "websocket":
        request["frames"] = draw(st.lists(ws_frame, max_size=3))
    return request


# ---- AudioCodes WebSocket mode ---------------------------------------------------------------

VAIC_TYPES = [
    "session.initiate",
    "session.resume",
    "session.end",
    "activities",
    "connection.validate",
    "userStream.start",
    "userStream.chunk",
    "userStream.stop",
    "session.accepted",
    "session.error",
]
ws_message = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(VAIC_TYPES) | scalars},
        optional={
            "conversationId": st.just(OWN) | json_values(3),
            "activities": activity_lists | json_values(5),
            "expectAudioMessages": st.booleans() | scalars,
            "supportedMediaFormats": st.lists(short_text | numbers, max_size=4) | scalars,
            "reasonCode": scalars,
            "reason": scalars,
            "parameters": json_values(4),
            "caller": hostile_text,
            "audioChunk": short_text,
        },
    ),
    json_values(8),
)
ws_frame = st.one_of(
    render(ws_message).map(lambda t: {"text": t}),
    render(ws_message).map(lambda t: {"text": t}),
    encoded(render(ws_message)).map(lambda b: {"binary": b}),
    huge_text.map(lambda t: {"text": t}),
)
ac_ws_case = st.fixed_dictionaries(
    {
        "route": st.sampled_from(["r", "live"]),
        "prefix": st.sampled_from(["none", "initiate", "initiate", "start", "start"]),
        "frames": st.lists(ws_frame, max_size=6),
        "end": st.booleans(),
    }
)

# ---- jambonz frames (Voice Gateway app → bridge) ---------------------------------------------

VERB_NAMES = [v.value for v in Verb]
COMMAND_NAMES = [c.value for c in Command]
VERB_FIELDS = [
    "text",
    "actionHook",
    "input",
    "say",
    "play",
    "url",
    "target",
    "referTo",
    "headers",
    "bargeIn",
    "recognizer",
    "synthesizer",
    "data",
    "dtmf",
    "duration",
    "timeout",
    "loop",
    "record",
    "method",
    "sticky",
    "enable",
    "id",
]
GOOD_VERBS: list[dict[str, Any]] = [
    {"verb": "say", "text": "Welcome."},
    {"verb": "say", "text": ["one", "two"], "synthesizer": {"voice": "x", "language": "de-DE"}},
    {"verb": "gather", "input": ["speech", "digits"], "actionHook": "voice", "timeout": 5},
    {
        "verb": "gather",
        "input": ["speech"],
        "actionHook": "voice",
        "say": {"text": "Say something."},
    },
    {"verb": "hangup"},
    {"verb": "config", "bargeIn": {"enable": True, "actionHook": "voice", "sticky": True}},
    {"verb": "config", "recognizer": {"language": "en-US"}},
    {"verb": "tag", "data": {"k": "v"}},
    {"verb": "play", "url": "https://example.com/a.wav", "actionHook": "play"},
    {"verb": "dial", "target": [{"type": "phone", "number": "+4930111999"}], "actionHook": "dial"},
    {"verb": "sip:refer", "referTo": "sip:agent@example.com", "actionHook": "refer"},
    {"verb": "dtmf", "dtmf": "12", "duration": 500},
    {"verb": "pause", "length": 1},
]
good_verb = st.sampled_from(GOOD_VERBS).map(dict)
verb = st.one_of(
    good_verb,
    good_verb,
    replaced_field(good_verb),
    replaced_field(good_verb),
    st.fixed_dictionaries(
        {"verb": st.sampled_from(VERB_NAMES) | scalars},
        optional={f: json_values(4) for f in VERB_FIELDS},
    ),
    st.dictionaries(
        st.sampled_from(VERB_NAMES) | short_text, json_values(4), min_size=1, max_size=2
    ),
    json_values(4),
)
verb_lists = st.one_of(
    st.lists(verb, max_size=6),
    st.lists(verb, min_size=1, max_size=3),
    st.builds(lambda v, n: [v] * n, good_verb, st.integers(100, 2_000)),
    json_values(4),
)
command_data = st.one_of(
    verb_lists,
    st.fixed_dictionaries(
        {},
        optional={
            "call_status": st.sampled_from(["completed", "no-answer"]) | scalars,
            "sip_request": json_values(4),
            "method": st.sampled_from(["INFO", "NOTIFY"]) | scalars,
            "dtmf": st.fixed_dictionaries({}, optional={"digit": scalars, "duration": scalars})
            | scalars,
            "digit": scalars,
            "bargeIn": json_values(4),
            "headers": json_values(4),
            "content_type": scalars,
            "content": hostile_text,
            "verb": scalars,
        },
    ),
    json_values(6),
)
ack_frame = st.fixed_dictionaries(
    {"type": st.just("ack"), "msgid": st.sampled_from([MSGID, MSGID, MSGID, "wrong"]) | scalars},
    optional={"data": verb_lists, "callSid": st.just(CALL_SID) | scalars},
)
command_frame = st.fixed_dictionaries(
    {
        "type": st.just("command"),
        "command": st.sampled_from(COMMAND_NAMES) | scalars,
        "data": command_data,
    },
    optional={
        "queueCommand": st.booleans() | scalars,
        "callSid": st.just(CALL_SID) | scalars,
        "msgid": short_text,
    },
)
jambonz_object = st.one_of(
    ack_frame,
    ack_frame,
    command_frame,
    command_frame,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["verb:hook", "session:new", "ack ", "", "jambonz:error"])},
        optional={"msgid": st.just(MSGID), "data": json_values(4)},
    ),
    json_values(6),
)
jambonz_reply = st.one_of(
    render(jambonz_object).map(lambda t: {"text": t}),
    dumps_deep(jambonz_object).map(lambda t: {"text": t}),
    dumps_deep(jambonz_object).map(lambda t: {"text": t}),
    encoded(render(jambonz_object)).map(lambda b: {"binary": b}),
    st.sampled_from([1000, 1001, 1008, 1011, 3000, 4999]).map(lambda c: {"close": c}),
)
good_ack = st.builds(
    lambda verbs: {"text": dumps({"type": "ack", "msgid": MSGID, "data": verbs})},
    st.lists(good_verb, min_size=1, max_size=4),
)
EMPTY_ACK = {"text": dumps({"type": "ack", "msgid": MSGID})}
empty_ack = st.just(EMPTY_ACK)
reply_script = st.builds(
    lambda hostile, resolution: hostile + resolution,
    st.lists(jambonz_reply, max_size=4),
    # most scripts end in a real answer, so the call goes on to its hooks
    st.one_of(good_ack, good_ack, empty_ack, jambonz_reply).map(lambda r: [r]) | st.just([]),
)
jambonz_case = st.fixed_dictionaries(
    {
        "session_new": reply_script,
        "later": st.lists(jambonz_reply, max_size=8),
        "inputs": st.lists(st.sampled_from(["input", "transfer", "play"]), max_size=4),
    }
)
vg_path_case = st.fixed_dictionaries(
    {
        "session_new": reply_script,
        "hooks": st.lists(reply_script, max_size=3),
        "inputs": st.lists(
            st.lists(valid_activity() | hostile_activity, min_size=1, max_size=3), max_size=3
        ),
        "disconnect": st.booleans(),
    }
)

# ---- config and mapping files ----------------------------------------------------------------

yaml_values = st.recursive(
    st.none() | st.booleans() | numbers | short_text | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(keys | st.integers(), children, max_size=4)
    ),
    max_leaves=10,
)
VALID_CONFIGS: list[dict[str, Any]] = [
    {"routes": {"r": {"token": "tok", "voicegateway": {"url": "ws://127.0.0.1:1/x"}}}},
    {
        "listen": "0.0.0.0:8080",
        "public_url": "https://bridge.example.com/",
        "admin_token": "${ADMIN_TOKEN:-adm}",
        "max_body_bytes": 65536,
        "divergence_log": {"path": None, "sample_rate": 0.5},
        "routes": {
            "main": {
                "token": "${TOKEN}",
                "async_mode": True,
                "default_region": "de",
                "expires_seconds": 300,
                "turn_settle_ms": 100,
                "turn_timeout_ms": 3000,
                "sip_headers": {"X-Tenant": "acme"},
                "voicegateway": {"url": "wss://vg.example.com/app", "connect_timeout_ms": 2000},
                "legacy": {"url": "https://bot.example.com/ac", "token": "t"},
                "migration": {
                    "voicegateway_percent": 25,
                    "sticky_key": "callee",
                    "shadow": True,
                    "rules": [{"match": {"caller_country": ["DE"]}, "path": "voicegateway"}],
                },
            }
        },
    },
]
TEXT_SNIPPETS = [
    "\n  ",
    ": ",
    "- ",
    "&a ",
    "*a",
    "*nope",
    "!!python/object:os.system ",
    "!!binary ",
    "!!set ",
    "!!timestamp ",
    "? [a]\n: 1",
    "<<: *a",
    "\t",
    "%YAML 1.1\n---\n",
    "---\n",
    "...\n",
    '"',
    "'",
    "{",
    "[",
    "${",
    "${UNSET}",
    "${A:-}",
    "\x00",
    "\ufeff",
    "\ud800",
]


@st.composite
def mutated_doc(draw: st.DrawFn, doc: Any) -> Any:
    """`doc` with one change at a random depth: set, delete, add, wrap or duplicate."""
    if isinstance(doc, dict) and doc and draw(st.integers(0, 3)) > 0:
        key = draw(st.sampled_from(sorted(doc, key=str)))
        return {**doc, key: draw(mutated_doc(doc[key]))}
    if isinstance(doc, list) and doc and draw(st.integers(0, 3)) > 0:
        index = draw(st.integers(0, len(doc) - 1))
        return [*doc[:index], draw(mutated_doc(doc[index])), *doc[index + 1 :]]
    action = draw(st.sampled_from(["set", "set", "delete", "add", "wrap", "dup"]))
    if action == "set":
        return draw(yaml_values | huge_text.map(lambda t: t[:5000]))
    if action == "wrap":
        return [doc] if draw(st.booleans()) else {draw(keys): doc}
    if isinstance(doc, dict) and doc:
        key = draw(st.sampled_from(sorted(doc, key=str)))
        if action == "delete":
            return {k: v for k, v in doc.items() if k != key}
        if action == "dup":
            return {**doc, draw(keys): doc[key]}
    if isinstance(doc, list) and doc:
        return doc[1:] if action == "delete" else [*doc, doc[0]]
    if action == "add" and isinstance(doc, dict):
        return {**doc, draw(keys): draw(yaml_values)}
    return draw(yaml_values)


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """YAML text with a few raw edits: cut, insert snippets, deep nesting."""
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["cut", "insert", "insert", "deep", "replace"]))
        at = draw(st.integers(0, len(text)))
        if action == "cut":
            text = text[:at]
        elif action == "insert":
            text = text[:at] + draw(st.sampled_from(TEXT_SNIPPETS) | short_text) + text[at:]
        elif action == "deep":
            text = text[:at] + draw(deep_text) + text[at:]
        else:
            end = draw(st.integers(at, min(len(text), at + 40)))
            text = text[:at] + draw(short_text) + text[end:]
    return text


def _yaml(doc: Any, flow: bool) -> str:
    return yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True, sort_keys=False)


@st.composite
def config_case(draw: st.DrawFn) -> dict[str, Any]:
    doc = draw(st.sampled_from(VALID_CONFIGS))
    for _ in range(draw(st.integers(0, 3))):
        doc = draw(mutated_doc(doc))
    text = _yaml(doc, draw(st.booleans()))
    text = draw(mutated_text(text))
    env = draw(
        st.dictionaries(
            st.sampled_from(["TOKEN", "ADMIN_TOKEN", "X", "Y", "UNSET"]), short_text, max_size=3
        )
    )
    return {"text": text, "env": env}


SHIPPED_MAPPINGS: dict[str, str] = {
    path.name: path.read_text(encoding="utf-8") for path in sorted(Path(SHIPPED_DIR).glob("*.yaml"))
}


@st.composite
def mapping_case(draw: st.DrawFn) -> dict[str, Any]:
    """Edits to a copy of the shipped mapping directory: {file name: new text, or None}."""
    files: dict[str, str | None] = {}
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(SHIPPED_MAPPINGS)))
        action = draw(st.sampled_from(["doc", "doc", "doc", "text", "both", "copy", "delete"]))
        text = SHIPPED_MAPPINGS[name]
        if action == "delete":
            files[name] = None
            continue
        if action == "copy":
            files[draw(st.sampled_from(["copy.yaml", "copy.yml"]))] = text
            continue
        if action in ("doc", "both"):
            doc = yaml.safe_load(text)
            for _ in range(draw(st.integers(1, 3))):
                doc = draw(mutated_doc(doc))
            text = _yaml(doc, draw(st.booleans()))
        if action in ("text", "both"):
            text = draw(mutated_text(text))
        files[name] = text
    return {"files": files}
