"""Simulated caller traffic for progressive-rollout tests (design §2.7): many short VAIC calls
from distinct callers, with a caller patience that makes slow first prompts show up as
`early_hangup` outcomes in the bridge's voice KPIs (bridge/kpi.py).

`place_calls` plays the calls over VAIC's HTTP mode (sync routes) and tallies them; it never
raises for a failed call. `caller_numbers` gives the callers, `support_callee` the number to
call, `slow_vg` a Voice Gateway endpoint whose answers (the first prompt too) come late.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp
import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

from bridge.sim.flow import ReplyMode, load_flows
from bridge.sim.scenario import Scenario, Step, StepKind, bot_url_for, step_activity
from bridge.sim.vaic import BotReply, VaicClient
from bridge.sim.vg_endpoint import VGEndpointSim

__all__ = [
    "UTTERANCES",
    "CallTally",
    "caller_numbers",
    "place_calls",
    "slow_vg",
    "support_callee",
]

# What callers say to the `support` flow: none contains a branch word of its `ask` question
# ("pay", "bye"), so each takes the `echo` branch — "You said …" and the question again — and
# the call stays open until the caller hangs up.
UTTERANCES = (
    "What are your opening hours",
    "My internet connection is down",
    "I would like to change my address",
    "Where is my parcel",
)
SUPPORT_FLOW = "support"
_NATIONAL_DIGITS = 10  # a common length of German fixed-line national significant numbers


class _Ending(StrEnum):
    COMPLETED = "completed"
    IMPATIENT = "impatient"
    ERROR = "error"


@dataclass
class CallTally:
    """What `place_calls` saw. Every placed call is exactly one of completed, impatient
    (hung up waiting for the first prompt) or errored (`failures` says why, one line each).
    `first_prompt_waits`: seconds from sending `start` to the first prompt, per call that got
    one; `answered_turns`: caller utterances whose answer carried a prompt."""

    placed: int = 0
    completed: int = 0
    impatient: int = 0
    errors: int = 0
    answered_turns: int = 0
    first_prompt_waits: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def accounted(self) -> int:
        return self.completed + self.impatient + self.errors


@dataclass(frozen=True)
class _CallResult:
    ending: _Ending
    first_prompt_wait: float | None = None
    answered_turns: int = 0
    failure: str | None = None


class _CallFailed(Exception):
    """The bot answered a request with an HTTP error; the message says which."""


def _is_prompt(activity: Mapping[str, Any]) -> bool:
    """What bridge/kpi.py counts as a prompt: a `message` with text or a `playUrl` event."""
    kind = activity.get("type")
    name = activity.get("name")
    return (kind == "message" and bool(activity.get("text"))) or (
        kind == "event" and isinstance(name, str) and name.lower() == "playurl"
    )


def _bot_hung_up(activities: Sequence[Mapping[str, Any]]) -> bool:
    return any(
        a.get("type") == "event" and a.get("name") in ("hangup", "transfer", "handover")
        for a in activities
    )


def _checked(reply: BotReply, what: str) -> BotReply:
    if reply.status != 200:
        raise _CallFailed(f"{what} answered {reply.status} {reply.text[:120]}")
    return reply


async def _one_call(
    bot_url: str,
    token: str,
    scenario: Scenario,
    session: aiohttp.ClientSession,
    patience_s: float | None,
    turns: int,
) -> _CallResult:
    loop = asyncio.get_running_loop()
    client = VaicClient(bot_url, token, session=session)
    start: asyncio.Future[BotReply] | None = None
    disconnected = False
    try:
        created = _checked(await client.create(), "create")
        if client.urls is None:
            raise _CallFailed(f"create answered without conversation URLs: {created.text[:120]}")
        conversation_id = client.conversation_id or ""
        begun = loop.time()
        start_activity = step_activity(Step(StepKind.START), scenario, conversation_id)
        start = asyncio.ensure_future(client.send([start_activity]))
        await asyncio.wait({start}, timeout=patience_s)
        reply = _checked(start.result(), "start") if start.done() else None
        waited = loop.time() - begun
        prompted = reply is not None and any(_is_prompt(a) for a in reply.activities)
        if patience_s is not None and not prompted:
            # A sync start answered without a prompt brings nothing more until the caller
            # speaks: the caller waits out the rest of its patience in silence.
            await asyncio.sleep(max(0.0, patience_s - waited))
            disconnected = True
            _checked(await client.disconnect("client-disconnected", "caller impatient"), "hangup")
            return _CallResult(_Ending.IMPATIENT)
        first_wait = waited if prompted else None
        answered = 0
        activities = reply.activities if reply is not None else []
        for turn in range(turns):
            if _bot_hung_up(activities):
                break
            said = Step(StepKind.SAY, UTTERANCES[turn % len(UTTERANCES)])
            activities = _checked(
                await client.send([step_activity(said, scenario, conversation_id)]), "turn"
            ).activities
            if any(_is_prompt(a) for a in activities):
                answered += 1
                if first_wait is None:
                    first_wait = loop.time() - begun
        disconnected = True
        if _bot_hung_up(activities):
            _checked(await client.disconnect("bot-disconnected", "Bot Side"), "hangup")
        else:
            _checked(await client.disconnect("client-disconnected", "Client Side"), "hangup")
        return _CallResult(_Ending.COMPLETED, first_wait, answered)
    except (_CallFailed, aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        if client.urls is not None and not disconnected:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ConnectionError):
                await client.disconnect("error", "caller simulator error")
        return _CallResult(_Ending.ERROR, failure=f"{type(exc).__name__}: {exc}")
    finally:
        if start is not None and not start.done():
            # The caller is gone but the start request still waits for the path choice; its
            # answer is dropped, awaited only so the bridge has judged the call on return.
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ConnectionError):
                await start
        await client.close()


async def place_calls(
    base_url: str,
    token: str,
    route: str,
    callers: Sequence[str],
    *,
    callee: str,
    session: aiohttp.ClientSession,
    patience_s: float | None = None,
    turns: int = 1,
    concurrency: int = 20,
) -> CallTally:
    """One short call per caller to `callee` on `route` of the bridge at `base_url`, at most
    `concurrency` at a time, over VAIC's HTTP mode (sync route).

    Each call creates the conversation and sends `start`. With `patience_s`, a caller whose
    first prompt has not arrived `patience_s` after the start hangs up at once (disconnect);
    the others say `turns` utterances (UTTERANCES, meant for the `support` flow) and hang up,
    earlier if the bot hung up or transferred. HTTP and transport errors are counted per call,
    never raised. When this returns every call has ended at the bridge.
    """
    if concurrency < 1 or turns < 0:
        raise ValueError("concurrency must be at least 1 and turns not negative")
    bot_url = bot_url_for(base_url, route)
    gate = asyncio.Semaphore(concurrency)

    async def call(caller: str) -> _CallResult:
        scenario = Scenario("rollout", route, SUPPORT_FLOW, caller, callee, steps=())
        async with gate:
            return await _one_call(bot_url, token, scenario, session, patience_s, turns)

    results = await asyncio.gather(*(call(c) for c in callers), return_exceptions=True)
    tally = CallTally(placed=len(callers))
    for result in results:
        if isinstance(result, BaseException):
            tally.errors += 1
            tally.failures.append(f"{type(result).__name__}: {result}")
            continue
        if result.ending is _Ending.COMPLETED:
            tally.completed += 1
        elif result.ending is _Ending.IMPATIENT:
            tally.impatient += 1
        else:
            tally.errors += 1
            tally.failures.append(result.failure or "error")
        tally.answered_turns += result.answered_turns
        if result.first_prompt_wait is not None:
            tally.first_prompt_waits.append(result.first_prompt_wait)
    return tally


def caller_numbers(n: int, *, seed: int = 0, country: str = "+4930") -> list[str]:
    """`n` distinct German fixed-line numbers in E.164, the same for the same `seed`.

    `country` is the prefix every number starts with: `+49` and an area code (default Berlin).
    Each number is valid for DE by phonenumbers; subscriber numbers start with 2-9, so none is
    one of the flows' own `+4930111…` service numbers.
    """
    if n < 0:
        raise ValueError("n must not be negative")
    if not country.startswith("+49") or not country[1:].isdigit():
        raise ValueError(f"{country!r} is not a German prefix (+49 and an area code)")
    subscriber_digits = _NATIONAL_DIGITS - (len(country) - 3)
    if subscriber_digits < 3:
        raise ValueError(f"{country!r} leaves no room for a subscriber number")
    rng = random.Random(seed)
    found: dict[str, None] = {}  # insertion-ordered set
    attempts = 0
    while len(found) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"{country!r} yields too few valid German fixed-line numbers")
        subscriber = str(rng.randint(2, 9)) + "".join(
            str(rng.randint(0, 9)) for _ in range(subscriber_digits - 1)
        )
        number = country + subscriber
        if number not in found and _german_fixed_line(number):
            found[number] = None
    return list(found)


def _german_fixed_line(number: str) -> bool:
    try:
        parsed = phonenumbers.parse(number, None)
    except NumberParseException:
        return False
    return (
        phonenumbers.is_valid_number(parsed)
        and phonenumbers.region_code_for_number(parsed) == "DE"
        and phonenumbers.number_type(parsed)
        in (PhoneNumberType.FIXED_LINE, PhoneNumberType.FIXED_LINE_OR_MOBILE)
    )


def support_callee() -> str:
    """The number of the shipped `support` flow, which greets the caller on `start` ("Welcome
    to ACME support." and the question "How can I help you?")."""
    return load_flows()[SUPPORT_FLOW].numbers[0]


def slow_vg(delay_s: float, *, accept_at_once: bool = False) -> VGEndpointSim:
    """A Voice Gateway endpoint (not started) whose first prompt and replies come `delay_s` late.

    Default: `reply_delay`, which postpones every answer: the `session:new` ack that carries the
    greeting (the `support` flow answers in acks) and each `verb:hook` answer. The bridge is
    then still choosing the call's path while the caller waits; keep `delay_s` under its ack
    budget (ACK_TIMEOUT_S, 5 s), beyond it the call falls back to legacy.

    `accept_at_once=True`: every flow replies by command (`reply=command`); the acks come at
    once, so the call is up on voicegateway at once, and the verbs follow `delay_s` later in a
    `command redirect` (`command_delay`, which delays nothing in ack mode). On a sync route the
    bridge answers a turn once the flow has been idle for `turn_settle_ms`: with `delay_s`
    above it the greeting misses the start response and waits for the caller's next request.
    """
    if delay_s < 0:
        raise ValueError("delay_s must not be negative")
    if accept_at_once:
        return VGEndpointSim(reply=ReplyMode.COMMAND, command_delay=delay_s)
    return VGEndpointSim(reply_delay=delay_s)
