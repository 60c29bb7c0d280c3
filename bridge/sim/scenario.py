"""Scripted calls for the simulated VAIC: parse scenario files, run them, check the bot's answers.

A scenario is a caller's script (start, speech, DTMF, silence, transfer result, play failure,
hang-up); each step lists the activities the bot must answer with, matched in order. Running one
gives a readable transcript and pass/fail with the first failing expectation explained, over
VAIC's HTTP mode (sync, or async with the push socket) or its WebSocket mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import aiohttp
import yaml

from bridge.errors import ConfigError
from bridge.sim.vaic import BotReply, StreamingVaicClient, VaicClient

SCENARIOS_DIR = Path(__file__).parent / "scenarios"
_MATCHER_KEYS = frozenset(
    {"type", "name", "text", "text_contains", "activityParams", "sessionParams", "value"}
)


class StepKind(StrEnum):
    START = "start"
    SAY = "say"
    DTMF = "dtmf"
    SILENCE = "silence"
    TRANSFER_STATUS = "transfer_status"
    PLAY_FAILED = "play_failed"
    HANGUP = "hangup"


@dataclass(frozen=True)
class Matcher:
    """Expected fields of one activity; absent keys are not checked."""

    spec: Mapping[str, Any]

    def describe(self) -> str:
        return json.dumps(self.spec, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class Step:
    kind: StepKind
    arg: Any = None
    expect: tuple[Matcher, ...] = ()
    expect_more_ok: bool = False
    confidence: float = 0.92


@dataclass(frozen=True)
class Scenario:
    name: str
    route: str
    flow: str
    caller: str
    callee: str
    steps: tuple[Step, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<memory>"


# ---------------------------------------------------------------- parsing


def _fail(source: str, path: str, reason: str) -> ConfigError:
    return ConfigError(path, reason, file=source)


def _parse_matcher(raw: Any, source: str, path: str) -> Matcher:
    if not isinstance(raw, Mapping) or not raw:
        raise _fail(source, path, "an expectation is a non-empty mapping")
    for key in raw:
        if key not in _MATCHER_KEYS:
            raise _fail(source, f"{path}.{key}", "unknown expectation field")
    for key in ("activityParams", "sessionParams"):
        if key in raw and not isinstance(raw[key], Mapping):
            raise _fail(source, f"{path}.{key}", "must be a mapping")
    return Matcher(dict(raw))


def _check_arg(kind: StepKind, arg: Any, source: str, path: str) -> None:
    if kind in (StepKind.START, StepKind.SILENCE) and arg is not None:
        raise _fail(source, path, f"{kind} takes no value")
    if kind is StepKind.SAY and (not isinstance(arg, str) or not arg):
        raise _fail(source, path, "say needs the recognised text")
    if kind is StepKind.DTMF and (
        not isinstance(arg, str) or not arg or any(c not in "0123456789*#ABCD" for c in arg)
    ):
        raise _fail(source, path, "dtmf needs a string of digits")
    if kind is StepKind.TRANSFER_STATUS and (
        not isinstance(arg, Mapping) or not isinstance(arg.get("status"), str)
    ):
        raise _fail(source, path, "transfer_status needs {status, reasonCode}")
    if kind is StepKind.PLAY_FAILED and (
        not isinstance(arg, Mapping) or not isinstance(arg.get("url"), str)
    ):
        raise _fail(source, path, "play_failed needs {url}")
    if kind is StepKind.HANGUP and arg is not None and not isinstance(arg, Mapping):
        raise _fail(source, path, "hangup takes nothing or {reasonCode, reason}")


def _parse_step(raw: Any, source: str, path: str) -> Step:
    if isinstance(raw, str):
        raw = {raw: None}
    if not isinstance(raw, Mapping):
        raise _fail(source, path, "a step is a mapping or a step name")
    actions = [k for k in raw if k not in ("expect", "expect_more_ok", "confidence")]
    if len(actions) != 1:
        raise _fail(source, path, "a step has exactly one action")
    try:
        kind = StepKind(actions[0])
    except ValueError:
        raise _fail(source, f"{path}.{actions[0]}", "unknown step") from None
    arg = raw[actions[0]]
    _check_arg(kind, arg, source, f"{path}.{kind}")
    expect = raw.get("expect") or []
    if not isinstance(expect, list):
        raise _fail(source, f"{path}.expect", "must be a list")
    more_ok = raw.get("expect_more_ok", False)
    if not isinstance(more_ok, bool):
        raise _fail(source, f"{path}.expect_more_ok", "must be a boolean")
    confidence = raw.get("confidence", 0.92)
    if not isinstance(confidence, int | float) or isinstance(confidence, bool):
        raise _fail(source, f"{path}.confidence", "must be a number")
    matchers = tuple(_parse_matcher(m, source, f"{path}.expect[{i}]") for i, m in enumerate(expect))
    return Step(kind, arg, matchers, more_ok, float(confidence))


def parse_scenario(doc: Any, source: str = "<memory>") -> Scenario:
    """Build a `Scenario` from a parsed YAML document; raises `ConfigError` naming the field."""
    if not isinstance(doc, Mapping):
        raise _fail(source, "", "a scenario file is a mapping")
    allowed = {"name", "route", "flow", "caller", "callee", "parameters", "steps"}
    for key in doc:
        if key not in allowed:
            raise _fail(source, str(key), "unknown key")
    for key in ("name", "route", "flow", "caller", "callee"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise _fail(source, key, "required, a non-empty string")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise _fail(source, "parameters", "must be a mapping")
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise _fail(source, "steps", "required, a non-empty list")
    steps = tuple(_parse_step(s, source, f"steps[{i}]") for i, s in enumerate(raw_steps))
    if steps[0].kind is not StepKind.START:
        raise _fail(source, "steps[0]", "the first step is start")
    return Scenario(
        name=doc["name"],
        route=doc["route"],
        flow=doc["flow"],
        caller=doc["caller"],
        callee=doc["callee"],
        steps=steps,
        parameters=dict(parameters),
        source=source,
    )


def load_scenarios(directory: Path | str | None = None) -> list[Scenario]:
    """Every `*.yaml` scenario in `directory` (default: the ones shipped with the package)."""
    folder = Path(directory) if directory is not None else SCENARIOS_DIR
    scenarios = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError("", f"invalid YAML: {exc}", file=str(path)) from None
        scenarios.append(parse_scenario(doc, str(path)))
    return scenarios


# ---------------------------------------------------------------- what VAIC sends


def start_parameters(scenario: Scenario, conversation_id: str) -> dict[str, Any]:
    """The `start` event parameters (audiocodes-bot-api.md §4.1)."""
    return {
        "vaigConversationId": conversation_id,
        "caller": scenario.caller,
        "callee": scenario.callee,
        **scenario.parameters,
    }


def step_activity(
    step: Step, scenario: Scenario, conversation_id: str, no_input_count: int = 1
) -> dict[str, Any]:
    """The (unstamped) activity a non-hang-up step sends (audiocodes-bot-api.md §3.1)."""
    match step.kind:
        case StepKind.START:
            return {
                "type": "event",
                "name": "start",
                "parameters": start_parameters(scenario, conversation_id),
            }
        case StepKind.SAY:
            return {
                "type": "message",
                "text": step.arg,
                "parameters": {"confidence": step.confidence},
            }
        case StepKind.DTMF:
            return {"type": "event", "name": "DTMF", "value": step.arg}
        case StepKind.SILENCE:
            return {"type": "event", "name": "noUserInput", "value": no_input_count}
        case StepKind.TRANSFER_STATUS:
            return {"type": "event", "name": "transferStatus", "value": dict(step.arg)}
        case StepKind.PLAY_FAILED:
            return {
                "type": "event",
                "name": "playUrlFailed",
                "value": {
                    "reason": str(step.arg.get("reason", "HTTP 404")),
                    "playUrlUrl": step.arg["url"],
                    "selfGenerated": False,
                },
            }
        case StepKind.HANGUP:
            raise ValueError("hangup is a disconnect POST, not an activity")


# ---------------------------------------------------------------- transcript lines


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def describe_step(step: Step, scenario: Scenario) -> str:
    """`VAIC → …` line for a step."""
    match step.kind:
        case StepKind.START:
            return f"VAIC → start caller={scenario.caller} callee={scenario.callee}"
        case StepKind.SAY:
            return f'VAIC → say "{step.arg}"'
        case StepKind.DTMF:
            return f'VAIC → dtmf "{step.arg}"'
        case StepKind.SILENCE:
            return "VAIC → silence (noUserInput)"
        case StepKind.TRANSFER_STATUS:
            return (
                f"VAIC → transfer_status {step.arg.get('status')} {step.arg.get('reasonCode', '')}"
            ).rstrip()
        case StepKind.PLAY_FAILED:
            return f"VAIC → play_failed {step.arg['url']}"
        case StepKind.HANGUP:
            code = (step.arg or {}).get("reasonCode", "client-disconnected")
            return f"VAIC → hangup ({code})"


def describe_activity(activity: Mapping[str, Any]) -> str:
    """One human-readable line for an activity the bot returned (without the arrow)."""
    kind = activity.get("type")
    params = activity.get("activityParams")
    params = params if isinstance(params, Mapping) else {}
    if kind == "message":
        return f'message "{activity.get("text", "")}"'
    name = activity.get("name")
    detail: str
    if name == "playUrl":
        detail = str(params.get("playUrlUrl", ""))
    elif name == "hangup":
        detail = f'"{params.get("hangupReason", "")}"'
    elif name in ("transfer", "handover"):
        detail = str(params.get("transferTarget", ""))
        if params.get("transferSipHeaders"):
            detail += f" headers={_compact(params['transferSipHeaders'])}"
        if params.get("transferReferredByURL"):
            detail += f" referredBy={params['transferReferredByURL']}"
    elif name == "config":
        detail = _compact(activity.get("sessionParams", {}))
    elif name == "sendMetaData":
        detail = _compact(activity.get("value"))
    elif name == "sendDtmf":
        detail = str(params.get("dtmfDigits", ""))
    elif "value" in activity:
        detail = _compact(activity["value"])
    elif params:
        detail = _compact(params)
    else:
        detail = ""
    return f"{kind} {name} {detail}".rstrip()


# ---------------------------------------------------------------- matching


def _subset(expected: Any, actual: Any, path: str) -> str | None:
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return f"{path}: expected an object, got {_compact(actual)}"
        for key, value in expected.items():
            if key not in actual:
                return f"{path}.{key}: missing"
            reason = _subset(value, actual[key], f"{path}.{key}")
            if reason is not None:
                return reason
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{path}: expected {_compact(expected)}, got {_compact(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            reason = _subset(e, a, f"{path}[{i}]")
            if reason is not None:
                return reason
        return None
    same_kind = isinstance(expected, bool) == isinstance(actual, bool)
    if not same_kind or expected != actual:
        return f"{path}: expected {_compact(expected)}, got {_compact(actual)}"
    return None


def mismatch(matcher: Matcher, activity: Mapping[str, Any]) -> str | None:
    """Why `activity` does not satisfy `matcher`, or None when it does."""
    spec = matcher.spec
    for key in ("type", "name", "text"):
        if key in spec and activity.get(key) != spec[key]:
            return f"{key}: expected {_compact(spec[key])}, got {_compact(activity.get(key))}"
    if "text_contains" in spec and str(spec["text_contains"]) not in str(activity.get("text", "")):
        return f"text: expected to contain {_compact(spec['text_contains'])}, got " + _compact(
            activity.get("text")
        )
    for key in ("activityParams", "sessionParams", "value"):
        if key in spec:
            if key not in activity:
                return f"{key}: missing"
            reason = _subset(spec[key], activity[key], key)
            if reason is not None:
                return reason
    return None


def check_step(step: Step, activities: Sequence[Mapping[str, Any]]) -> str | None:
    """Check a step's expectations in order; None when they hold, else the first failure."""
    got = "; ".join(describe_activity(a) for a in activities) or "nothing"
    if not step.expect_more_ok:
        if len(activities) != len(step.expect):
            return f"expected {len(step.expect)} activities, got {len(activities)}: {got}"
        for i, (matcher, activity) in enumerate(zip(step.expect, activities, strict=True)):
            reason = mismatch(matcher, activity)
            if reason is not None:
                return (
                    f"activity {i + 1} ({describe_activity(activity)}) does not match "
                    f"{matcher.describe()}: {reason}"
                )
        return None
    position = 0
    for i, matcher in enumerate(step.expect):
        first_reason: str | None = None
        while position < len(activities):
            reason = mismatch(matcher, activities[position])
            position += 1
            if reason is None:
                break
            first_reason = first_reason or reason
        else:
            why = f" (closest: {first_reason})" if first_reason else ""
            return f"expectation {i + 1} {matcher.describe()} not found in order{why}; got: {got}"
    return None


# ---------------------------------------------------------------- running

Transport = Literal["http", "ws"]


@dataclass
class ScenarioResult:
    name: str
    passed: bool
    transcript: list[str]
    failure: str | None = None
    conversation_id: str | None = None
    route: str | None = None
    transport: str | None = None
    mode: str | None = None

    @property
    def label(self) -> str:
        """`route R, transport, mode` as far as known, e.g. `route support_async, ws, async`."""
        route = f"route {self.route}" if self.route else None
        return ", ".join(part for part in (route, self.transport, self.mode) if part)

    def render(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        header = f"== {self.name}: {verdict}"
        if self.label:
            header += f" ({self.label})"
        if not self.passed:
            header += f": {self.failure}"
        return "\n".join([header, *(f"  {line}" for line in self.transcript)])


def bot_url_for(base_url: str, route: str) -> str:
    """The VAIC bot URL of a route on the bridge (design.md §2.2)."""
    return f"{base_url.rstrip('/')}/ac/{route}"


@dataclass(frozen=True)
class _Timing:
    wait: float  # budget for the expected answer of a step
    settle: float  # quiet time that ends the collection of extras


class _Failed(Exception):
    """A step failed before its answer could be checked; the message says why."""


class _HttpChannel:
    """HTTP mode: a POST per step; with the push socket, pushed activities count too."""

    def __init__(self, client: VaicClient, push: bool, timing: _Timing) -> None:
        self.client = client
        self._push = push
        self._timing = timing
        self.open = False

    @property
    def conversation_id(self) -> str | None:
        return self.client.conversation_id

    async def start(self, conversation_id: str | None, scenario: Scenario) -> None:
        created = await self.client.create(conversation_id)
        if created.status != 200 or self.client.urls is None:
            raise _Failed(f"create answered {created.status}")
        self.open = True
        if self._push:
            await self.client.open_push_socket()

    async def turn(self, activity: dict[str, Any], wanted: int) -> list[dict[str, Any]]:
        return await self._collect(await self.client.send([activity]), wanted)

    async def hang_up(self, reason_code: str, reason: str) -> list[dict[str, Any]]:
        self.open = False
        reply = await self.client.disconnect(reason_code, reason)
        self._check(reply)
        return reply.activities

    def _check(self, reply: BotReply) -> None:
        if reply.status != 200:
            raise _Failed(f"bot answered {reply.status} {reply.text[:200]}")

    async def _collect(self, reply: BotReply, wanted: int) -> list[dict[str, Any]]:
        self._check(reply)
        activities = list(reply.activities)
        if not self._push:
            return activities
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timing.wait
        while True:
            # wait for the expected number of outputs, then a short settle to catch extras
            remaining = deadline - loop.time() if len(activities) < wanted else self._timing.settle
            if remaining <= 0:
                return activities
            try:
                activities.append(await asyncio.wait_for(self.client.pushed.get(), remaining))
            except TimeoutError:
                return activities

    async def close(self) -> None:
        if self.open:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self.client.disconnect("client-disconnected", "scenario ended")
        await self.client.close()


class _WsChannel:
    """WebSocket mode: an `activities` message per step. Sync routes answer a turn with exactly
    one message (none when the answer is empty); async routes send one message per output."""

    def __init__(self, client: StreamingVaicClient, async_mode: bool, timing: _Timing) -> None:
        self.client = client
        self._async = async_mode
        self._timing = timing
        self.open = False

    @property
    def conversation_id(self) -> str | None:
        return self.client.conversation_id

    async def start(self, conversation_id: str | None, scenario: Scenario) -> None:
        reply = await self.client.initiate(conversation_id, scenario.caller)
        if reply.get("type") != "session.accepted":
            raise _Failed(f"session.initiate answered {_compact(reply)}")
        self.open = True

    async def turn(self, activity: dict[str, Any], wanted: int) -> list[dict[str, Any]]:
        # Messages that arrived since the last step (held or unsolicited outputs) come first,
        # as they would in the next HTTP response.
        activities = self._drain()
        await self.client.send([activity])
        if self._async:
            return await self._collect_outputs(activities, wanted)
        message = await self.client.next_activities(
            self._timing.wait if wanted else self._timing.settle
        )
        if message is not None:
            activities.extend(self._activities_of(message))
        return activities

    async def hang_up(self, reason_code: str, reason: str) -> list[dict[str, Any]]:
        self.open = False
        if not await self.client.end(reason_code, reason, wait=self._timing.wait):
            raise _Failed("the bot did not close the socket after session.end")
        return self._drain()

    def _drain(self) -> list[dict[str, Any]]:
        activities: list[dict[str, Any]] = []
        while not self.client.received.empty():
            activities.extend(self._activities_of(self.client.received.get_nowait()))
        return activities

    def _activities_of(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        raw = message.get("activities")
        activities = [a for a in raw if isinstance(a, dict)] if isinstance(raw, list) else []
        if self._async and len(activities) != 1:
            raise _Failed(
                f"async mode sends one activities message per output, got one with "
                f"{len(activities)}: {_compact(raw)}"
            )
        return activities

    async def _collect_outputs(
        self, activities: list[dict[str, Any]], wanted: int
    ) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timing.wait
        while True:
            remaining = deadline - loop.time() if len(activities) < wanted else self._timing.settle
            if remaining <= 0:
                return activities
            message = await self.client.next_activities(remaining)
            if message is None:
                return activities
            activities.extend(self._activities_of(message))

    async def close(self) -> None:
        if self.open and not self.client.closed.is_set():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ConnectionError):
                await self.client.end("client-disconnected", "scenario ended", wait=1.0)
        await self.client.close()


async def run_scenario(
    scenario: Scenario,
    base_url: str,
    token: str | None,
    *,
    session: aiohttp.ClientSession | None = None,
    conversation_id: str | None = None,
    push: bool = False,
    push_wait: float = 3.0,
    settle: float = 0.2,
    bot_url: str | None = None,
    transport: Transport = "http",
    async_mode: bool = False,
    route: str | None = None,
) -> ScenarioResult:
    """Play `scenario` as VAIC against the bot URL of its route on `base_url`.

    `transport` is VAIC's mode: `http` (a POST per step) or `ws` (the WebSocket mode, text only).
    `async_mode` says the route is async: over HTTP the push socket is opened (as with `push`)
    and pushed activities count as that step's answer; over WebSocket one message per output is
    expected instead of one per turn. Outputs are awaited for up to `push_wait` seconds until the
    step's expected count arrived, then for `settle` seconds of quiet to catch extras. `route`
    replaces the scenario's route; `bot_url` overrides the URL derived from the route.
    """
    route_name = route or scenario.route
    url = bot_url or bot_url_for(base_url, route_name)
    timing = _Timing(push_wait, settle)
    channel: _HttpChannel | _WsChannel
    if transport == "ws":
        channel = _WsChannel(StreamingVaicClient(url, token, session=session), async_mode, timing)
        label = "ws"
    else:
        pushing = push or async_mode
        channel = _HttpChannel(VaicClient(url, token, session=session), pushing, timing)
        label = "http+push" if pushing else "http"
    result = ScenarioResult(
        scenario.name,
        False,
        [],
        route=route_name,
        transport=label,
        mode="async" if async_mode else "sync",
    )
    no_input = 0
    index, step = 0, scenario.steps[0]
    try:
        for index, step in enumerate(scenario.steps):
            result.transcript.append(describe_step(step, scenario))
            if step.kind is StepKind.START:
                await channel.start(conversation_id, scenario)
                result.conversation_id = channel.conversation_id
            if step.kind is StepKind.HANGUP:
                arg = step.arg or {}
                activities = await channel.hang_up(
                    str(arg.get("reasonCode", "client-disconnected")),
                    str(arg.get("reason", "Client Side")),
                )
            else:
                no_input += step.kind is StepKind.SILENCE
                activity = step_activity(step, scenario, channel.conversation_id or "", no_input)
                activities = await channel.turn(activity, len(step.expect))
            result.transcript.extend(f"BOT ← {describe_activity(a)}" for a in activities)
            reason = check_step(step, activities)
            if reason is not None:
                result.failure = f"step {index + 1} ({describe_step(step, scenario)}): {reason}"
                return result
        result.passed = True
        return result
    except _Failed as failed:
        result.failure = f"step {index + 1} ({step.kind}): {failed}"
        return result
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        result.failure = f"transport error: {type(exc).__name__}: {exc}"
        return result
    finally:
        await channel.close()
