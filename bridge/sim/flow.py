"""Cognigy Voice Gateway flows for the simulated VG endpoint: parse, render to verbs, walk a call.

A flow is a list of Cognigy Voice Gateway nodes (voicegateway-ws.md §4.1). Each node is rendered
into jambonz verbs by this module's own code, written from the node docs — never through
`bridge.mapping`, so that comparing the simulators tests the mappings.

Performs no I/O except `load_flows`, which reads flow files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from bridge.errors import ConfigError

Verb = dict[str, Any]
# Renders one node into output objects (verbs here; the legacy simulator passes its own renderer
# that produces AudioCodes activities for the same flows).
Renderer = Callable[["Node", Mapping[str, str]], list[dict[str, Any]]]

FLOWS_DIR = Path(__file__).parent / "flows"
INPUT_TEXT = "{{input.text}}"


class NodeType(StrEnum):
    SAY = "say"
    QUESTION = "question"
    PLAY = "play"
    TRANSFER = "transfer"
    HANGUP = "hangup"
    SET_SESSION_CONFIG = "set_session_config"
    SEND_METADATA = "send_metadata"
    CALL_RECORDING = "call_recording"
    DTMF = "dtmf"
    GOTO = "goto"


class ReplyMode(StrEnum):
    ACK = "ack"
    COMMAND = "command"


class VerbForm(StrEnum):
    VERB = "verb"
    KEYED = "keyed"


class BranchKind(StrEnum):
    DIGITS = "digits"
    CONTAINS = "contains"
    TIMEOUT = "timeout"
    FAILED = "failed"
    DEFAULT = "default"


# Node parameters each node type accepts (besides id, type, next, branches).
_PARAMS: dict[NodeType, frozenset[str]] = {
    NodeType.SAY: frozenset({"text", "ssml", "synthesizer"}),
    NodeType.QUESTION: frozenset(
        {"prompt", "input", "timeout", "hook", "num_digits", "ssml", "synthesizer"}
    ),
    NodeType.PLAY: frozenset({"url", "loop", "hook"}),
    NodeType.TRANSFER: frozenset(
        {
            "mode",
            "number",
            "sipUri",
            "headers",
            "callerId",
            "timeout",
            "referTo",
            "referredBy",
            "hook",
        }
    ),
    NodeType.HANGUP: frozenset({"reason"}),
    NodeType.SET_SESSION_CONFIG: frozenset(
        {
            "synthesizer",
            "recognizer",
            "bargeIn",
            "fillerNoise",
            "notifyEvents",
            "disableTtsCache",
            "actionHookDelayAction",
            "reset",
        }
    ),
    NodeType.SEND_METADATA: frozenset({"data"}),
    NodeType.CALL_RECORDING: frozenset({"action", "recordingID", "siprecServerURL", "headers"}),
    NodeType.DTMF: frozenset({"digits", "duration"}),
    NodeType.GOTO: frozenset({"target"}),
}
_REQUIRED: dict[NodeType, tuple[str, ...]] = {
    NodeType.SAY: ("text",),
    NodeType.QUESTION: ("prompt",),
    NodeType.PLAY: ("url",),
    NodeType.TRANSFER: ("mode",),
    NodeType.SEND_METADATA: ("data",),
    NodeType.CALL_RECORDING: ("action",),
    NodeType.DTMF: ("digits",),
    NodeType.GOTO: ("target",),
}
_BRANCHING = frozenset({NodeType.QUESTION, NodeType.TRANSFER, NodeType.PLAY})
# Nodes whose verb ends a batch: the flow waits for the caller (or the call ends).
_BLOCKING = frozenset({NodeType.QUESTION, NodeType.TRANSFER, NodeType.HANGUP})
_RECORDING_ACTIONS = {
    "start": "startCallRecording",
    "stop": "stopCallRecording",
    "pause": "pauseCallRecording",
    "resume": "resumeCallRecording",
}
_DIAL_OK = frozenset({"completed", "answered", "in-progress"})
_DEFAULT_HOOKS = {NodeType.QUESTION: "voice"}


@dataclass(frozen=True)
class Branch:
    kind: BranchKind
    value: str
    next: str


@dataclass(frozen=True)
class Node:
    id: str
    type: NodeType
    params: Mapping[str, Any] = field(default_factory=dict)
    next: str | None = None
    branches: tuple[Branch, ...] = ()

    @property
    def hook(self) -> str | None:
        """The actionHook this node's verb carries, if any."""
        if self.type is NodeType.TRANSFER:
            default = "dial" if self.params.get("mode") == "dial" else "refer"
            return str(self.params.get("hook", default))
        hook = self.params.get("hook", _DEFAULT_HOOKS.get(self.type))
        return None if hook is None else str(hook)


@dataclass(frozen=True)
class FlowOptions:
    reply: ReplyMode = ReplyMode.ACK
    verb_form: VerbForm = VerbForm.VERB
    floats: bool = False
    # command mode only: whether verb:hook messages are acked at all (some apps never do).
    ack_hooks: bool = True


@dataclass(frozen=True)
class Flow:
    name: str
    nodes: tuple[Node, ...]
    start: str
    numbers: tuple[str, ...] = ()
    options: FlowOptions = FlowOptions()
    source: str = "<memory>"

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def following(self, node: Node) -> str | None:
        """The node after `node`: its `next`, else the next one in file order."""
        if node.next is not None:
            return node.next
        index = self.nodes.index(node)
        return self.nodes[index + 1].id if index + 1 < len(self.nodes) else None

    def serves(self, number: str) -> bool:
        wanted = number.lstrip("+")
        return any(n.lstrip("+") == wanted for n in self.numbers)


# ---------------------------------------------------------------- parsing


def _fail(source: str, path: str, reason: str) -> ConfigError:
    return ConfigError(path, reason, file=source)


def parse_options(doc: Mapping[str, Any], source: str, path: str = "") -> FlowOptions:
    """Read `reply`, `verb_form`, `floats`, `ack_hooks` from a flow (or server) document."""
    try:
        reply = ReplyMode(doc.get("reply", ReplyMode.ACK))
    except ValueError:
        raise _fail(source, f"{path}reply", "must be ack or command") from None
    try:
        verb_form = VerbForm(doc.get("verb_form", VerbForm.VERB))
    except ValueError:
        raise _fail(source, f"{path}verb_form", "must be verb or keyed") from None
    floats = doc.get("floats", False)
    ack_hooks = doc.get("ack_hooks", True)
    if not isinstance(floats, bool):
        raise _fail(source, f"{path}floats", "must be a boolean")
    if not isinstance(ack_hooks, bool):
        raise _fail(source, f"{path}ack_hooks", "must be a boolean")
    return FlowOptions(reply=reply, verb_form=verb_form, floats=floats, ack_hooks=ack_hooks)


def _parse_branch(raw: Any, source: str, path: str) -> Branch:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("next"), str):
        raise _fail(source, path, "a branch is a mapping with a condition and `next`")
    conditions = [k for k in raw if k != "next"]
    if len(conditions) != 1:
        raise _fail(source, path, "a branch has exactly one condition")
    try:
        kind = BranchKind(conditions[0])
    except ValueError:
        raise _fail(source, f"{path}.{conditions[0]}", "unknown branch condition") from None
    value = raw[conditions[0]]
    if kind in (BranchKind.DIGITS, BranchKind.CONTAINS):
        if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
            raise _fail(source, f"{path}.{kind}", "must be a non-empty string")
        return Branch(kind, str(value), raw["next"])
    if value is not True:
        raise _fail(source, f"{path}.{kind}", "must be true")
    return Branch(kind, "", raw["next"])


def _parse_node(raw: Any, source: str, path: str) -> Node:
    if not isinstance(raw, Mapping):
        raise _fail(source, path, "a node is a mapping")
    node_id = raw.get("id")
    if not isinstance(node_id, str) or not node_id:
        raise _fail(source, f"{path}.id", "required, a non-empty string")
    try:
        node_type = NodeType(str(raw.get("type")))
    except ValueError:
        raise _fail(source, f"{path}.type", f"unknown node type {raw.get('type')!r}") from None
    params = {k: v for k, v in raw.items() if k not in ("id", "type", "next", "branches")}
    for key in params:
        if key not in _PARAMS[node_type]:
            raise _fail(source, f"{path}.{key}", f"not a parameter of a {node_type} node")
    for key in _REQUIRED.get(node_type, ()):
        if params.get(key) in (None, "", [], {}):
            raise _fail(source, f"{path}.{key}", "required")
    _check_params(node_type, params, source, path)
    next_id = raw.get("next")
    if next_id is not None and not isinstance(next_id, str):
        raise _fail(source, f"{path}.next", "must be a node id")
    raw_branches = raw.get("branches", [])
    if raw_branches and node_type not in _BRANCHING:
        raise _fail(source, f"{path}.branches", f"a {node_type} node has no branches")
    if not isinstance(raw_branches, list):
        raise _fail(source, f"{path}.branches", "must be a list")
    branches = tuple(
        _parse_branch(b, source, f"{path}.branches[{i}]") for i, b in enumerate(raw_branches)
    )
    return Node(node_id, node_type, params, next_id, branches)


def _check_params(node_type: NodeType, params: Mapping[str, Any], source: str, path: str) -> None:
    if node_type is NodeType.TRANSFER:
        mode = params["mode"]
        if mode == "dial":
            if ("number" in params) == ("sipUri" in params):
                raise _fail(source, path, "a dial transfer needs exactly one of number, sipUri")
        elif mode == "refer":
            if "referTo" not in params:
                raise _fail(source, f"{path}.referTo", "required for a refer transfer")
        else:
            raise _fail(source, f"{path}.mode", "must be dial or refer")
    elif node_type is NodeType.CALL_RECORDING and params["action"] not in _RECORDING_ACTIONS:
        raise _fail(source, f"{path}.action", "must be start, stop, pause or resume")
    elif node_type is NodeType.QUESTION:
        kinds = params.get("input", ["speech", "digits"])
        if (
            not isinstance(kinds, list)
            or not kinds
            or any(k not in ("speech", "digits") for k in kinds)
        ):
            raise _fail(source, f"{path}.input", "a non-empty list of speech, digits")
        timeout = params.get("timeout", 10)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise _fail(source, f"{path}.timeout", "a positive number of seconds")
    elif node_type is NodeType.SEND_METADATA and not isinstance(params["data"], Mapping):
        raise _fail(source, f"{path}.data", "must be a mapping")
    elif node_type is NodeType.HANGUP and not isinstance(params.get("reason", ""), str):
        raise _fail(source, f"{path}.reason", "must be a string")


def parse_flow(doc: Any, source: str = "<memory>") -> Flow:
    """Build a `Flow` from a parsed YAML document; raises `ConfigError` naming the field."""
    if not isinstance(doc, Mapping):
        raise _fail(source, "", "a flow file is a mapping")
    allowed = {"name", "numbers", "start", "nodes", "reply", "verb_form", "floats", "ack_hooks"}
    for key in doc:
        if key not in allowed:
            raise _fail(source, str(key), "unknown key")
    name = doc.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise _fail(source, "name", "required, a non-empty string without '/'")
    numbers = doc.get("numbers", [])
    if not isinstance(numbers, list) or not all(isinstance(n, str) for n in numbers):
        raise _fail(source, "numbers", "must be a list of strings")
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise _fail(source, "nodes", "required, a non-empty list")
    nodes = tuple(_parse_node(n, source, f"nodes[{i}]") for i, n in enumerate(raw_nodes))
    ids = [n.id for n in nodes]
    for i, node_id in enumerate(ids):
        if node_id in ids[:i]:
            raise _fail(source, f"nodes[{i}].id", f"duplicate node id {node_id!r}")
    for i, node in enumerate(nodes):
        targets = [("next", node.next)] + [
            (f"branches[{j}].next", b.next) for j, b in enumerate(node.branches)
        ]
        if node.type is NodeType.GOTO:
            targets.append(("target", str(node.params["target"])))
        for where, target in targets:
            if target is not None and target not in ids:
                raise _fail(source, f"nodes[{i}].{where}", f"no node {target!r}")
    start = doc.get("start", ids[0])
    if start not in ids:
        raise _fail(source, "start", f"no node {start!r}")
    flow = Flow(
        name=name,
        nodes=nodes,
        start=start,
        numbers=tuple(numbers),
        options=parse_options(doc, source),
        source=source,
    )
    for entry in entry_points(flow):
        try:
            render_batch(flow, entry, {})
        except ValueError as exc:
            raise _fail(source, "nodes", str(exc)) from None
    if not render_batch(flow, flow.start, {}).verbs:
        raise _fail(source, "start", "the first batch must contain at least one verb")
    return flow


def load_flows(directory: Path | str | None = None) -> dict[str, Flow]:
    """Read every `*.yaml` flow in `directory` (default: the flows shipped with the package)."""
    folder = Path(directory) if directory is not None else FLOWS_DIR
    flows: dict[str, Flow] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError("", f"invalid YAML: {exc}", file=str(path)) from None
        flow = parse_flow(doc, str(path))
        if flow.name in flows:
            raise ConfigError("name", f"duplicate flow name {flow.name!r}", file=str(path))
        flows[flow.name] = flow
    return flows


def override_flow(flow: Flow, changes: Mapping[str, Mapping[str, Any]]) -> Flow:
    """A variant of `flow` with node parameters changed: `{node id: {param: value}}`.

    A value of None removes the parameter. Only parameters change, never the graph; the result
    is validated like a parsed flow (raises `ConfigError` naming the node and parameter).
    """
    nodes = list(flow.nodes)
    ids = [n.id for n in nodes]
    for node_id, params in changes.items():
        if node_id not in ids:
            raise _fail(flow.source, f"overrides.{node_id}", f"no node {node_id!r} in {flow.name}")
        if not isinstance(params, Mapping):
            raise _fail(flow.source, f"overrides.{node_id}", "must be a mapping of parameters")
        index = ids.index(node_id)
        node = nodes[index]
        merged = dict(node.params)
        for key, value in params.items():
            if key not in _PARAMS[node.type]:
                raise _fail(
                    flow.source, f"overrides.{node_id}.{key}", f"not a parameter of a {node.type}"
                )
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        path = f"overrides.{node_id}"
        for key in _REQUIRED.get(node.type, ()):
            if merged.get(key) in (None, "", [], {}):
                raise _fail(flow.source, f"{path}.{key}", "required")
        _check_params(node.type, merged, flow.source, path)
        nodes[index] = replace(node, params=merged)
    return replace(flow, nodes=tuple(nodes))


def override_flows(
    flows: Mapping[str, Flow], overrides: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> dict[str, Flow]:
    """`flows` with `override_flow` applied per flow name: `{flow: {node id: {param: value}}}`."""
    out = dict(flows)
    for name, changes in overrides.items():
        if name not in out:
            raise ConfigError(f"overrides.{name}", "no such flow")
        out[name] = override_flow(out[name], changes)
    return out


# ---------------------------------------------------------------- rendering


def substitute(value: Any, context: Mapping[str, str]) -> Any:
    """`value` with `{{input.text}}` replaced in every string (nested mappings and lists too)."""
    return _substitute(value, context)


def _text(value: Any, context: Mapping[str, str]) -> str:
    text = str(value)
    if INPUT_TEXT in text and "input.text" in context:
        text = text.replace(INPUT_TEXT, context["input.text"])
    return text


def _substitute(value: Any, context: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _text(value, context)
    if isinstance(value, Mapping):
        return {k: _substitute(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, context) for v in value]
    return value


def _speech(params: Mapping[str, Any], text: str) -> Verb:
    if params.get("ssml") and not text.lstrip().startswith("<speak"):
        text = f"<speak>{text}</speak>"
    say: Verb = {"text": text}
    if "synthesizer" in params:
        say["synthesizer"] = dict(params["synthesizer"])
    return say


def render_node(node: Node, context: Mapping[str, str] | None = None) -> list[Verb]:
    """The verbs (canonical `{"verb": name, ...}` form) one node produces; `goto` gives none."""
    ctx = context or {}
    p = node.params
    match node.type:
        case NodeType.SAY:
            return [{"verb": "say", **_speech(p, _text(p["text"], ctx))}]
        case NodeType.QUESTION:
            gather: Verb = {
                "verb": "gather",
                "input": list(p.get("input", ["speech", "digits"])),
                "actionHook": node.hook,
                "timeout": p.get("timeout", 10),
            }
            if "num_digits" in p:
                gather["numDigits"] = p["num_digits"]
            gather["say"] = _speech(p, _text(p["prompt"], ctx))
            return [gather]
        case NodeType.PLAY:
            play: Verb = {"verb": "play", "url": p["url"]}
            if "loop" in p:
                play["loop"] = p["loop"]
            if "hook" in p:
                play["actionHook"] = p["hook"]
            return [play]
        case NodeType.TRANSFER:
            return [_render_transfer(node)]
        case NodeType.HANGUP:
            reason = p.get("reason")
            return [
                {"verb": "hangup", "headers": {"X-Reason": reason}}
                if reason
                else {"verb": "hangup"}
            ]
        case NodeType.SET_SESSION_CONFIG:
            return [{"verb": "config", **{k: p[k] for k in p}}]
        case NodeType.SEND_METADATA:
            return [
                {
                    "verb": "sip:request",
                    "method": "INFO",
                    "headers": {"Content-Type": "application/json"},
                    "body": json.dumps(
                        _substitute(p["data"], ctx), separators=(",", ":"), ensure_ascii=False
                    ),
                }
            ]
        case NodeType.CALL_RECORDING:
            record: Verb = {"action": _RECORDING_ACTIONS[p["action"]]}
            if p["action"] == "start":
                record["type"] = "siprec"
            for key in ("recordingID", "siprecServerURL", "headers"):
                if key in p:
                    record[key] = p[key]
            return [{"verb": "config", "record": record}]
        case NodeType.DTMF:
            dtmf: Verb = {"verb": "dtmf", "dtmf": str(p["digits"])}
            if "duration" in p:
                dtmf["duration"] = p["duration"]
            return [dtmf]
        case NodeType.GOTO:
            return []


def _render_transfer(node: Node) -> Verb:
    p = node.params
    if p["mode"] == "dial":
        target = (
            {"type": "phone", "number": str(p["number"])}
            if "number" in p
            else {"type": "sip", "sipUri": str(p["sipUri"])}
        )
        dial: Verb = {"verb": "dial", "target": [target], "actionHook": node.hook}
        for key in ("callerId", "timeout", "headers"):
            if key in p:
                dial[key] = p[key]
        return dial
    refer: Verb = {"verb": "sip:refer", "referTo": str(p["referTo"]), "actionHook": node.hook}
    for key in ("referredBy", "headers"):
        if key in p:
            refer[key] = p[key]
    return refer


@dataclass(frozen=True)
class Batch:
    """Verbs from one entry node up to and including the first blocking verb."""

    verbs: list[Verb]
    blocking: Node | None
    hooked: tuple[Node, ...]


def render_batch(
    flow: Flow, entry: str | None, context: Mapping[str, str], render: Renderer = render_node
) -> Batch:
    """Walk from `entry` rendering nodes (with `render`) until a blocking node or the end.

    Raises `ValueError` when the walk loops without reaching a blocking node.
    """
    verbs: list[Verb] = []
    hooked: list[Node] = []
    seen: set[str] = set()
    current = entry
    while current is not None:
        if current in seen:
            raise ValueError(f"node {current!r} loops back without a question, transfer or hangup")
        seen.add(current)
        node = flow.node(current)
        verbs.extend(render(node, context))
        if node.hook is not None:
            hooked.append(node)
        if node.type in _BLOCKING:
            return Batch(verbs, node, tuple(hooked))
        current = str(node.params["target"]) if node.type is NodeType.GOTO else flow.following(node)
    return Batch(verbs, None, tuple(hooked))


def entry_points(flow: Flow) -> list[str]:
    """Every node a batch can start at: the start node and every hook continuation."""
    entries = [flow.start]
    for node in flow.nodes:
        if node.hook is None:
            continue
        targets = [b.next for b in node.branches]
        if node.type is not NodeType.PLAY:
            targets.append(flow.following(node) or "")
        entries.extend(t for t in targets if t)
    return list(dict.fromkeys(entries))


def reachable_batches(flow: Flow) -> list[list[Verb]]:
    """Every verb array (canonical form) the flow can emit, for validating the simulator."""
    return [render_batch(flow, entry, {}).verbs for entry in entry_points(flow)]


def format_verbs(verbs: Iterable[Verb], options: FlowOptions) -> list[dict[str, Any]]:
    """Write canonical verbs in the flow's wire style (`verb_form`, `floats`)."""
    out: list[dict[str, Any]] = []
    for verb in verbs:
        body = _floats(verb) if options.floats else verb
        if options.verb_form is VerbForm.KEYED:
            name = body["verb"]
            out.append({name: {k: v for k, v in body.items() if k != "verb"}})
        else:
            out.append(dict(body))
    return out


def _floats(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


# ---------------------------------------------------------------- one call


def _transcript(data: Mapping[str, Any]) -> str:
    speech = data.get("speech")
    if isinstance(speech, Mapping):
        alternatives = speech.get("alternatives")
        if isinstance(alternatives, list) and alternatives and isinstance(alternatives[0], Mapping):
            return str(alternatives[0].get("transcript", ""))
    return ""


def _transfer_failed(data: Mapping[str, Any]) -> bool:
    status = data.get("dial_call_status")
    if status is not None:
        return status not in _DIAL_OK
    for key in ("refer_status", "final_referred_call_status"):
        value = data.get(key)
        if isinstance(value, int | float | str) and str(value).isdigit() and int(value) >= 300:
            return True
    return False


class FlowRun:
    """One call walking through a flow: `start()` then `receive_hook()` per `verb:hook`."""

    def __init__(self, flow: Flow, render: Renderer = render_node) -> None:
        self.flow = flow
        self.render = render
        self.context: dict[str, str] = {}
        self.pending: Node | None = None
        self._hooked: dict[str, Node] = {}

    def start(self) -> list[Verb]:
        return self._emit(self.flow.start)

    def receive_hook(self, hook: str, data: Mapping[str, Any]) -> list[Verb]:
        """The next batch for a `verb:hook` on `hook`; empty when the hook changes nothing."""
        node = self._hooked.get(hook)
        if node is None:
            return []
        target = self._choose(node, data)
        if node.type is not NodeType.PLAY or target is not None:
            del self._hooked[hook]
        if node is self.pending:
            self.pending = None
        return self._emit(target) if target is not None else []

    def _choose(self, node: Node, data: Mapping[str, Any]) -> str | None:
        reason = data.get("reason")
        if node.type is NodeType.PLAY:
            failed = reason == "playFailed" or data.get("status") == "fail"
            if not failed:
                return None
            return next((b.next for b in node.branches if b.kind is BranchKind.FAILED), None)
        if node.type is NodeType.TRANSFER:
            failed = _transfer_failed(data)
            for branch in node.branches:
                if branch.kind is BranchKind.DEFAULT or (
                    branch.kind is BranchKind.FAILED and failed
                ):
                    return branch.next
            return self.flow.following(node)
        text = _transcript(data) if reason == "speechDetected" else ""
        digits = str(data.get("digits", "")) if reason == "dtmfDetected" else ""
        self.context["input.text"] = text or digits
        for branch in node.branches:
            if (
                branch.kind is BranchKind.DEFAULT
                or (branch.kind is BranchKind.DIGITS and digits and digits == branch.value)
                or (
                    branch.kind is BranchKind.CONTAINS
                    and text
                    and branch.value.casefold() in text.casefold()
                )
                or (branch.kind is BranchKind.TIMEOUT and reason == "timeout")
            ):
                return branch.next
        return self.flow.following(node)

    def _emit(self, entry: str) -> list[Verb]:
        batch = render_batch(self.flow, entry, self.context, self.render)
        for node in batch.hooked:
            hook = node.hook
            if hook is not None:
                self._hooked[hook] = node
        self.pending = batch.blocking
        return batch.verbs
