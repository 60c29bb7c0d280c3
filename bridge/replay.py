"""Play recorded calls against one path, as VAIC would, and compare every turn with what was
recorded (design §2.6, §3.7).

The bridge itself serves the replay: a gateway built from the user's config, with only the
replayed route, forced onto the chosen path (no routing, no shadow, no journal) and marked as a
replay (`customerData.acvg.replay`, SIP header `X-Acvg-Replay`, start parameter `acvgReplay`),
listens on an ephemeral loopback port. Each recorded call is played to it over its recorded
transport and mode with the simulated VAIC clients: the same inputs at the recorded offsets
divided by `speed` (0: as fast as the answers come). Each turn's outputs are compared with the
recorded ones by `compare_turn`, after both sides are put in the journal's terms
(`comparable`). A call that cannot be played is an error with its reason; the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import phonenumbers
from aiohttp import web

from bridge.app import GatewayKey, create_app
from bridge.compare import TurnComparison, compare_turn
from bridge.config import Config, Route
from bridge.errors import ConfigError
from bridge.journal import MASK
from bridge.journal_reader import Entry, RecordedCall
from bridge.mapping import MappingSet
from bridge.metrics import Metrics
from bridge.path import PathName
from bridge.sim.vaic import BotReply, StreamingVaicClient, VaicClient
from bridge.transport.http_errors import JsonErrorRunner

__all__ = [
    "REPLAY_HEADER",
    "REPLAY_PARAMETER",
    "ReplayOptions",
    "ReplayedCall",
    "ReplayedTurn",
    "Replayer",
    "choose_path",
    "comparable",
    "replay_config",
]

REPLAY_PARAMETER = "acvgReplay"
REPLAY_HEADER = "X-Acvg-Replay"
_REASON_CODES = {
    "client_disconnected": "client-disconnected",
    "expired": "client-disconnected",
}
_DTMF_KEYS = frozenset({"dtmfDigits", "digits", "dtmf"})
_AS_IS = frozenset({"id", "timestamp", "replyToId"})  # not compared, never scanned for numbers
_DIGITS = re.compile(r"\d")
_TYPES = {
    value: name.lower()
    for name, value in vars(phonenumbers.PhoneNumberType).items()
    if name.isupper() and isinstance(value, int)
}
_MAYBE_NUMBER = re.compile(r"\d[\d\s().\-/]{4,}\d")


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    speed: float = 1.0  # recorded offsets are divided by this; 0: no waiting between turns
    concurrency: int = 8
    # A turn's outputs are awaited this long at most (async mode, and sync over WebSocket).
    turn_wait_s: float = 5.0
    # After as many outputs as were recorded, this long without another ends an async turn.
    settle_s: float = 0.15
    request_timeout_s: float = 15.0


@dataclass(slots=True)
class ReplayedTurn:
    index: int
    offset_ms: int
    outputs: list[dict[str, Any]]
    latency_s: float | None  # inputs sent → first output (sync: the answer)
    sent_s: float | None = None  # when the inputs went, seconds after the call's first request
    comparison: TurnComparison | None = None


@dataclass(slots=True)
class ReplayedCall:
    line: int
    call: RecordedCall
    turns: list[ReplayedTurn] = field(default_factory=list)
    error: str | None = None

    @property
    def matched_turns(self) -> int:
        return sum(1 for t in self.turns if t.comparison is not None and not t.comparison.diverged)

    @property
    def diverged(self) -> bool:
        return self.error is None and self.matched_turns < len(self.call.turns)


def choose_path(route: Route, wanted: PathName | None) -> PathName:
    """The path to replay against: `wanted`, else voicegateway when the route has it."""
    path: PathName = wanted or ("voicegateway" if route.voicegateway is not None else "legacy")
    if path == "voicegateway" and route.voicegateway is None:
        raise ConfigError(
            "voicegateway", "the route has no voicegateway upstream to replay against"
        )
    if path == "legacy" and route.legacy is None:
        raise ConfigError("legacy", "the route has no legacy upstream to replay against")
    return path


def replay_config(config: Config, route_name: str, path: PathName, concurrency: int) -> Config:
    """`config` reduced to the replayed route with only `path`'s upstream, on an ephemeral
    port."""
    route = config.routes.get(route_name)
    if route is None:
        known = ", ".join(sorted(config.routes))
        raise ConfigError("routes", f"{route_name!r} is not in the config (routes: {known})")
    choose_path(route, path)
    body = route.model_dump()
    other = "legacy" if path == "voicegateway" else "voicegateway"
    body.update(
        {other: None},  # no fallback: a replay shows what this path answers, or that it failed
        migration={"force": path},
        record=None,
        replay=True,
        max_calls=max(route.max_calls, concurrency),
        max_requests_per_second=10_000,
        sip_headers={**route.sip_headers, REPLAY_PARAMETER: REPLAY_HEADER},
    )
    return Config.model_validate(
        {
            "listen": "127.0.0.1:0",
            "mappings": config.mappings,
            "max_body_bytes": config.max_body_bytes,
            "drain_timeout_s": 0,
            "tls": config.tls.model_dump(),
            "routes": {route_name: body},
        }
    )


# ---------------------------------------------------------------- comparing in journal terms


def comparable(
    value: Any, keep_digits: int, region: str | None, kept: frozenset[str] = frozenset()
) -> Any:
    """`value` in the terms of a journal line, for comparing a replayed output with a recorded
    one: each phone number becomes its shape (country, type, validity), since the journal holds
    stand-ins of the same shape rather than the numbers (docs/journal.md, "For replay"), except
    the numbers the journal `kept`, compared digit for digit; a DTMF string longer than
    `keep_digits` is masked as the journal masks it."""
    if isinstance(value, dict):
        return {
            k: v
            if k in _AS_IS
            else _masked(v, keep_digits)
            if k in _DTMF_KEYS
            else comparable(v, keep_digits, region, kept)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [comparable(v, keep_digits, region, kept) for v in value]
    if isinstance(value, str) and _MAYBE_NUMBER.search(value):
        return _shapes(value, region, kept)
    return value


def _masked(value: Any, keep_digits: int) -> Any:
    if isinstance(value, str) and len(_DIGITS.findall(value)) > keep_digits:
        return _DIGITS.sub(MASK, value)
    return value


def _shapes(text: str, region: str | None, kept: frozenset[str]) -> str:
    found = list(phonenumbers.PhoneNumberMatcher(text, region or "ZZ", phonenumbers.Leniency.VALID))
    if not found:
        return text
    out: list[str] = []
    last = 0
    for match in found:
        number = match.number
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        if e164 in kept:
            continue
        kind = _TYPES.get(phonenumbers.number_type(number), "unknown")
        out.append(text[last : match.start])
        out.append(f"<phone +{number.country_code} {kind}>")
        last = match.end
    out.append(text[last:])
    return "".join(out)


# ---------------------------------------------------------------- playing one call


class _CallEnded(Exception):
    """The bot ended the call before the recording did: later turns get no outputs."""


class _Refused(Exception):
    """The bridge refused a request of the call; the message says how."""


def _describe(reply: BotReply) -> str:
    body = reply.body
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return f"{reply.status} {body['error']}"
    return f"{reply.status} {reply.text[:120]}"


def _marked(inputs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The inputs, the start event's parameters carrying the replay marker."""
    out: list[dict[str, Any]] = []
    for activity in inputs:
        item = dict(activity)
        item.pop("id", None)
        item.pop("timestamp", None)
        if item.get("type") == "event" and item.get("name") == "start":
            params = item.get("parameters")
            item["parameters"] = {
                **(params if isinstance(params, dict) else {}),
                REPLAY_PARAMETER: True,
            }
        out.append(item)
    return out


class _HttpCall:
    def __init__(self, client: VaicClient, async_mode: bool, options: ReplayOptions) -> None:
        self.client = client
        self.async_mode = async_mode
        self.options = options
        self.open = False

    async def start(self, call: RecordedCall) -> None:
        reply = await self.client.create(str(uuid.uuid4()))
        if reply.status != 200 or self.client.urls is None:
            raise _Refused(f"create answered {_describe(reply)}")
        self.open = True
        if self.async_mode and not await self.client.open_push_socket():
            raise _Refused("an async-mode call got no websocketURL")

    async def turn(
        self, inputs: list[dict[str, Any]], wanted: int, until: float | None
    ) -> tuple[list[dict[str, Any]], float | None]:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        reply = await self.client.send(inputs)
        if reply.status in (404, 410):
            raise _CallEnded
        if reply.status != 200:
            raise _Refused(f"activities answered {_describe(reply)}")
        outputs = reply.activities
        latency = loop.time() - sent if outputs or not self.async_mode else None
        if not self.async_mode:
            return outputs, latency
        pushed, first = await _collect(
            self.client.pushed, wanted - len(outputs), until, self.options
        )
        if latency is None and first is not None:
            latency = first - sent
        return outputs + pushed, latency

    def late(self) -> list[dict[str, Any]]:
        return _drain(self.client.pushed)

    async def hang_up(self, reason_code: str) -> None:
        if self.open:
            self.open = False
            await self.client.disconnect(reason_code, "replay ended")

    async def close(self) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            await self.hang_up("client-disconnected")
        await self.client.close()


class _WsCall:
    def __init__(
        self, client: StreamingVaicClient, async_mode: bool, options: ReplayOptions
    ) -> None:
        self.client = client
        self.async_mode = async_mode
        self.options = options
        self.open = False
        self._messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def start(self, call: RecordedCall) -> None:
        caller = call.start.get("caller")
        reply = await self.client.initiate(
            str(uuid.uuid4()), caller if isinstance(caller, str) else None
        )
        if reply.get("type") != "session.accepted":
            raise _Refused(f"session.initiate answered {reply.get('type')}")
        self.open = True

    async def turn(
        self, inputs: list[dict[str, Any]], wanted: int, until: float | None
    ) -> tuple[list[dict[str, Any]], float | None]:
        if self.client.closed.is_set():
            raise _CallEnded
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await self.client.send(inputs)
        if self.async_mode:
            return await self._collect(wanted, until, sent)
        wait = self.options.turn_wait_s if wanted else self.options.settle_s
        message = await self.client.next_activities(_bounded(wait, until))
        if message is None:
            return [], None
        return _activities_of(message), loop.time() - sent

    async def _collect(
        self, wanted: int, until: float | None, sent: float
    ) -> tuple[list[dict[str, Any]], float | None]:
        loop = asyncio.get_running_loop()
        outputs: list[dict[str, Any]] = []
        first: float | None = None
        deadline = loop.time() + self.options.turn_wait_s
        while True:
            wait = deadline - loop.time() if len(outputs) < wanted else self.options.settle_s
            wait = _bounded(wait, until)
            if wait <= 0:
                break
            message = await self.client.next_activities(wait)
            if message is None:
                break
            if first is None:
                first = loop.time()
            outputs.extend(_activities_of(message))
        return outputs, None if first is None else first - sent

    def late(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while not self.client.received.empty():
            out.extend(_activities_of(self.client.received.get_nowait()))
        return out

    async def hang_up(self, reason_code: str) -> None:
        if self.open and not self.client.closed.is_set():
            self.open = False
            await self.client.end(reason_code, "replay ended", wait=self.options.turn_wait_s)

    async def close(self) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ConnectionError):
            await self.hang_up("client-disconnected")
        await self.client.close()


def _activities_of(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = message.get("activities")
    return [a for a in raw if isinstance(a, dict)] if isinstance(raw, list) else []


def _bounded(wait: float, until: float | None) -> float:
    if until is None:
        return wait
    return min(wait, until - asyncio.get_running_loop().time())


def _drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def _collect(
    queue: asyncio.Queue[dict[str, Any]], wanted: int, until: float | None, options: ReplayOptions
) -> tuple[list[dict[str, Any]], float | None]:
    loop = asyncio.get_running_loop()
    outputs: list[dict[str, Any]] = []
    first: float | None = None
    deadline = loop.time() + options.turn_wait_s
    while True:
        wait = deadline - loop.time() if len(outputs) < wanted else options.settle_s
        wait = _bounded(wait, until)
        if wait <= 0:
            return outputs, first
        try:
            outputs.append(await asyncio.wait_for(queue.get(), wait))
        except TimeoutError:
            return outputs, first
        if first is None:
            first = loop.time()


# ---------------------------------------------------------------- the replayer


class Replayer:
    """A bridge serving one route forced onto one path, and the calls played against it.

    Use as an async context manager; `play` replays one recorded call."""

    def __init__(
        self,
        config: Config,
        route_name: str,
        path: PathName,
        options: ReplayOptions | None = None,
    ) -> None:
        self.options = options or ReplayOptions()
        self.route_name = route_name
        self.path = path
        self.config = replay_config(config, route_name, path, self.options.concurrency)
        self.route = self.config.routes[route_name]
        self.metrics = Metrics()
        self._app = create_app(self.config, metrics=self.metrics)
        self.mappings: MappingSet = self._app[GatewayKey].engine.mappings
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.bot_url = ""

    async def __aenter__(self) -> Replayer:
        self._runner = JsonErrorRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.bot_url = f"http://127.0.0.1:{port}/ac/{self.route_name}"
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=self.options.request_timeout_s),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def play_all(
        self, entries: Sequence[Entry], on_call: Callable[[ReplayedCall], None] | None = None
    ) -> list[ReplayedCall]:
        """Every entry, `concurrency` at once; results in the entries' order."""
        results: list[ReplayedCall | None] = [None] * len(entries)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(entries)):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                result = await self.play(entries[i])
                results[i] = result
                if on_call is not None:
                    on_call(result)

        workers = max(1, min(self.options.concurrency, len(entries)))
        await asyncio.gather(*(worker() for _ in range(workers)))
        return [r for r in results if r is not None]

    async def play(self, entry: Entry) -> ReplayedCall:
        """Replay one call; never raises for what the upstream or the journal does."""
        result = ReplayedCall(entry.line, entry.call)
        try:
            await self._play(entry.call, result)
        except _Refused as exc:
            result.error = str(exc)
        except (aiohttp.ClientError, TimeoutError, ConnectionError, RuntimeError) as exc:
            result.error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if result.error is None:
            self._compare(result)
        return result

    def _channel(self, call: RecordedCall) -> _HttpCall | _WsCall:
        async_mode = call.mode == "async"
        token = self.route.token
        if call.transport == "ws":
            ws = StreamingVaicClient(
                self.bot_url, token, session=self._http, timeout=self.options.request_timeout_s
            )
            return _WsCall(ws, async_mode, self.options)
        client = VaicClient(
            self.bot_url, token, session=self._http, timeout=self.options.request_timeout_s
        )
        return _HttpCall(client, async_mode, self.options)

    async def _play(self, call: RecordedCall, result: ReplayedCall) -> None:
        loop = asyncio.get_running_loop()
        speed = self.options.speed
        t0 = loop.time()

        def at(offset_ms: int) -> float | None:
            return None if speed <= 0 else t0 + offset_ms / 1000 / speed

        channel = self._channel(call)
        ended = False
        try:
            await channel.start(call)
            for index, turn in enumerate(call.turns):
                when = at(turn.offset_ms)
                if when is not None:
                    await _sleep_until(when)
                if result.turns:
                    result.turns[-1].outputs.extend(channel.late())
                following = call.turns[index + 1].offset_ms if index + 1 < len(call.turns) else None
                until = at(following) if following is not None else None
                if ended:
                    result.turns.append(ReplayedTurn(index, turn.offset_ms, [], None))
                    continue
                sent = loop.time() - t0
                try:
                    outputs, latency = await channel.turn(
                        _marked(turn.inputs), len(turn.outputs), until
                    )
                except _CallEnded:
                    ended = True
                    outputs, latency = [], None
                result.turns.append(ReplayedTurn(index, turn.offset_ms, outputs, latency, sent))
            when = at(call.end.offset_ms)
            if when is not None and not ended:
                await _sleep_until(when)
            if result.turns:
                result.turns[-1].outputs.extend(channel.late())
            if not ended:
                await channel.hang_up(_REASON_CODES.get(call.end.reason, "client-disconnected"))
        finally:
            await channel.close()

    def _compare(self, result: ReplayedCall) -> None:
        call = result.call
        keep, region = call.redaction.keep_digits, self.route.default_region
        kept = frozenset(call.redaction.keep_numbers)
        for turn in result.turns:
            recorded = call.turns[turn.index].outputs
            turn.comparison = compare_turn(
                [comparable(a, keep, region, kept) for a in recorded],
                [comparable(a, keep, region, kept) for a in turn.outputs],
                self.mappings,
                primary_path=call.path,
                shadow_latency_s=turn.latency_s,
            )


async def _sleep_until(when: float) -> None:
    delay = when - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)
