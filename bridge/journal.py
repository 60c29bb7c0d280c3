"""The call journal: sampled calls as redacted `acvg-journal/1` JSON Lines (design §2.6, §3.9).

One job: turn what a served call saw (its start parameters, and per turn the caller inputs and
the outputs VAIC got) into one journal line that holds no real phone number and no long digit
string, and append such lines to a file without ever holding up or failing a call.

- `JournalSettings`: a route's `record:` block.
- `CallRecord`: builds one call's line; pure, no I/O. Redaction happens in `finish`.
- `Redactor`: the synthetic number of each real one, stable within one journal file; the
  mapping stays in memory and is never written out.
- `JournalWriter`: a bounded queue and one background task that finishes records and appends
  their lines to a file opened 0600; a full queue, a full file (`max_bytes`, marked in the file
  by a `stopped` line) or a broken one drops records and counts them, never raises into a call.
- `sample`: the stable per-conversation sampling decision.

The format and every redaction rule are documented in docs/journal.md, with the JSON Schema in
docs/journal.schema.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import phonenumbers
from phonenumbers import PhoneNumber, PhoneNumberMatcher, PhoneNumberType
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge import jsontext
from bridge.numbers import number_metadata

__all__ = [
    "DEFAULT_KEEP_DIGITS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_QUEUE_SIZE",
    "MASK",
    "VERSION",
    "CallRecord",
    "DropReason",
    "JournalSettings",
    "JournalWriter",
    "Redactor",
    "sample",
]

VERSION = "acvg-journal/1"
DEFAULT_KEEP_DIGITS = 2
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_QUEUE_SIZE = 512
DEFAULT_MAX_TURNS = 2000
MASK = "X"  # replaces each masked digit: not a DTMF symbol, and no digit string can equal it

log = logging.getLogger("bridge.journal")

PathName = Literal["legacy", "voicegateway"]
Mode = Literal["sync", "async"]
Transport = Literal["http", "ws"]


class JournalSettings(BaseModel):
    """A route's `record:` block (design §2.6, §3.9)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)  # the JSON Lines file, appended to
    sample_rate: float = Field(default=1.0, ge=0, le=1)  # share of calls, stable per conversation
    keep_digits: int = Field(default=DEFAULT_KEEP_DIGITS, ge=0, le=64)  # longer DTMF is masked
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=1024)  # the file stops growing here
    # The contact centre's own numbers (what callers dial, what flows transfer to), written as
    # they are: flows that branch on them replay the same way, and a replay compares them
    # digit for digit. Never a caller's number.
    keep_numbers: tuple[str, ...] = ()

    @field_validator("keep_numbers")
    @classmethod
    def _e164(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        kept: list[str] = []
        for text in value:
            try:
                number = phonenumbers.parse(text, None)
            except phonenumbers.NumberParseException as exc:
                raise ValueError(f"{text!r} is not a phone number in E.164 (+49...)") from exc
            if not phonenumbers.is_possible_number(number):
                raise ValueError(f"{text!r} is not a possible phone number")
            kept.append(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
        return tuple(dict.fromkeys(kept))


def sample(conversation_id: str, rate: float) -> bool:
    """Whether the call `conversation_id` is recorded at `rate` (0..1): the same answer for the
    same id on every instance and after restarts.

    Keyed apart from routing's bucket (`routing.bucket`): a journal at 25 % must not record
    exactly the calls a 25 % migration sends to voicegateway.
    """
    if rate >= 1:
        return True
    if rate <= 0:
        return False
    digest = hashlib.blake2b(
        conversation_id.encode("utf-8", "surrogatepass"), digest_size=8, person=b"acvg-journal"
    ).digest()
    return int.from_bytes(digest, "big") < rate * 2.0**64


# ---- redaction --------------------------------------------------------------------------------

# Characters people and systems put between the digits of a written number (as numbers.py).
_SEP = r"[\s\-.()/]{0,2}"
# Between the digits of a masked digit string elsewhere: DTMF symbols too ("12*34").
_SECRET_SEP = r"[\s\-.()/*#]{0,2}"
_DIGIT_RUN = re.compile(r"\d(?:[\s\-.()/]{0,2}\d)*")
_DIGIT = re.compile(r"\d")
_NON_DIGIT = re.compile(r"\D")
# A string worth the phone-number matcher (it costs ~0.1 ms a string): five digits close together.
_CANDIDATE = re.compile(r"\d(?:[\s\-.()/+]{0,3}\d){4,}")
# Keys whose values name a party: parsed as a whole number (national forms with the route's
# region, URIs), not only searched in.
_PARTY_KEYS = frozenset({"caller", "callee"})
# Keys that hold DTMF digits, in inputs or outputs (sendDtmf's activityParams.dtmfDigits, ...).
_DIGIT_FIELDS = frozenset({"dtmfDigits", "digits", "dtmf"})
_DTMF_EVENTS = frozenset({"dtmf"})
# Generated by VAIC or the bridge, never said or typed: not searched for numbers or spoken digits
# (they are still rewritten wherever a known number or masked string occurs in them).
_NOT_SCANNED = frozenset({"id", "timestamp", "replyToId"})
# Globally masked strings shorter than this would mask every "1" of the line: a short DTMF
# string is masked in its own field only.
_MIN_GLOBAL_SECRET = 3
_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")

_TYPES = (
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.MOBILE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER,
    PhoneNumberType.UAN,
    PhoneNumberType.VOICEMAIL,
)
# Candidates tried per seed and allocation; each costs one parse (~40 µs).
_TRIES = 2000
_STEP = 7_340_033
_MAX_SEEDS = 3
_MAX_NUMBERS = 100_000


@dataclass(frozen=True)
class _Number:
    """A real phone number met in a call, with what its synthetic stand-in must share."""

    e164: str
    nsn: str  # national significant number: the digits every written form contains
    country_code: int
    region: str | None  # phonenumbers' region ("001" for non-geographic), None if ambiguous
    valid: bool
    kind: int  # PhoneNumberType

    @classmethod
    def of(cls, number: PhoneNumber) -> _Number:
        return _number_of(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))

    @classmethod
    def parsed(cls, e164: str) -> _Number:
        number = phonenumbers.parse(e164)
        return cls(
            e164=e164,
            nsn=phonenumbers.national_significant_number(number),
            country_code=int(number.country_code or 0),
            region=phonenumbers.region_code_for_number(number),
            valid=phonenumbers.is_valid_number(number),
            kind=phonenumbers.number_type(number),
        )

    @property
    def shape(self) -> tuple[int, str | None, bool, int]:
        return (self.country_code, self.region, self.valid, self.kind)


# Redaction runs on the serving process's loop (bench/replay.py: ~2 ms a call, mostly
# phonenumbers); parties and texts recur within and across calls, so their analyses are cached.
@lru_cache(maxsize=4096)
def _number_of(e164: str) -> _Number:
    return _Number.parsed(e164)


@lru_cache(maxsize=4096)
def _party(text: str, region: str | None) -> tuple[str | None, str | None]:
    """The E.164 number of a party's value and its extension; (None, None) if not a number."""
    info = number_metadata(text, region)
    if info.e164 is None or info.metadata is None:
        return None, None
    ext = info.metadata.get("ext")
    return info.e164, ext if isinstance(ext, str) else None


@lru_cache(maxsize=4096)
def _numbers_in(text: str, region: str | None) -> tuple[tuple[str, str], ...]:
    """(E.164, extension) of each valid number phonenumbers' matcher finds in `text`."""
    # Leniency VALID: dates, times and digits glued to letters are not taken for numbers.
    return tuple(
        (
            phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164),
            m.number.extension or "",
        )
        for m in PhoneNumberMatcher(text, region)
    )


class Redactor:
    """The synthetic stand-in of each real number, stable within one journal (one writer).

    A stand-in is a number of the same country, validity and type, derived from phonenumbers'
    example number for that country and type with its trailing digits counted up, so distinct
    real numbers get distinct stand-ins. The mapping lives here only, is never written out,
    and keeps the `max_numbers` most recently used numbers. Not thread-safe: one task uses it.
    """

    def __init__(self, *, max_numbers: int = _MAX_NUMBERS) -> None:
        self._max_numbers = max(1, max_numbers)
        # real E.164 -> (country code, stand-in national significant number)
        self._stand_ins: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._issued: set[tuple[int, str]] = set()
        self._next: dict[tuple[tuple[int, str | None, bool, int], str, int], int] = {}
        self._seeds: dict[tuple[int, str | None, bool, int], tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._stand_ins)

    def stand_in(self, number: PhoneNumber, avoid: Collection[str] = ()) -> PhoneNumber | None:
        """The stand-in for `number` (its extension ignored), or None when phonenumbers knows
        no number of that shape. A stand-in never contains a string of `avoid`."""
        real = _Number.of(number)
        nsn = self._stand_in(real, avoid)
        return None if nsn is None else phonenumbers.parse(f"+{real.country_code}{nsn}")

    def _stand_in(self, number: _Number, avoid: Collection[str]) -> str | None:
        """The stand-in's national significant number; None: the number is to be masked."""
        known = self._stand_ins.get(number.e164)
        if known is not None and not _contains_any(known[1], avoid):
            self._stand_ins.move_to_end(number.e164)
            return known[1]
        found = self._allocate(number, avoid)
        if found is None:
            return None
        if known is not None:  # it contained one of this call's strings: a fresh one from now on
            self._issued.discard(known)
        entry = (number.country_code, found)
        self._stand_ins[number.e164] = entry
        self._stand_ins.move_to_end(number.e164)
        self._issued.add(entry)
        while len(self._stand_ins) > self._max_numbers:
            self._issued.discard(self._stand_ins.popitem(last=False)[1])
        return found

    def _allocate(self, number: _Number, avoid: Collection[str]) -> str | None:
        shape = number.shape
        seeds = self._seeds.get(shape)
        if seeds is None:
            seeds = self._seeds[shape] = _seeds(number)
        for tier in range(3):
            for seed in seeds:
                widths = _widths(seed)
                if tier >= len(widths):
                    continue
                width = widths[tier]
                key = (shape, seed, width)
                start = self._next.get(key, 0)
                for i in range(start, start + _TRIES):
                    nsn = _variant(seed, width, i)
                    if nsn == number.nsn or (number.country_code, nsn) in self._issued:
                        continue
                    if _contains_any(nsn, avoid):
                        continue
                    if f"+{number.country_code}{nsn}" in self._stand_ins:  # another real number
                        continue
                    if not _same_shape(number, nsn):
                        continue
                    self._next[key] = i + 1
                    return nsn
                self._next[key] = start + _TRIES
        return None


def _contains_any(text: str, parts: Collection[str]) -> bool:
    return any(part in text for part in parts)


def _seeds(number: _Number) -> tuple[str, ...]:
    """National significant numbers of example numbers with `number`'s shape."""
    found: list[str] = []

    def take(example: PhoneNumber | None) -> None:
        if example is None or len(found) >= _MAX_SEEDS:
            return
        nsn = phonenumbers.national_significant_number(example)
        if nsn not in found and _same_shape(number, nsn):
            found.append(nsn)

    region = number.region
    geographic = region is not None and region != "001"
    if number.valid:
        if geographic:
            assert region is not None
            for kind in (number.kind, *_TYPES):
                take(phonenumbers.example_number_for_type(region, kind))
        else:
            take(phonenumbers.example_number_for_non_geo_entity(number.country_code))
        return tuple(found)
    # Invalid (but of a possible length): phonenumbers' invalid example, else valid examples of
    # the country with their leading digit changed.
    regions: Sequence[str] = [region] if geographic and region is not None else []
    if not regions:
        regions = [
            code
            for code in phonenumbers.region_codes_for_country_code(number.country_code)
            if code != "001"
        ]
    for code in regions:
        take(phonenumbers.invalid_example_number(code))
    for code in regions:
        for kind in _TYPES:
            example = phonenumbers.example_number_for_type(code, kind)
            if example is None or len(found) >= _MAX_SEEDS:
                continue
            nsn = phonenumbers.national_significant_number(example)
            for digit in "0123456789":
                with contextlib.suppress(phonenumbers.NumberParseException):
                    take(phonenumbers.parse(f"+{number.country_code}{digit}{nsn[1:]}"))
    return tuple(found)


def _widths(nsn: str) -> tuple[int, ...]:
    """How many trailing digits of a seed to vary: few first (the stand-in keeps the example's
    area or operator code), more when all of those contain a string to avoid."""
    length = len(nsn)
    return tuple(sorted({max(1, min(6, length - 2)), max(1, length - 3), max(1, length - 1)}))


def _variant(seed: str, width: int, i: int) -> str:
    """The `i`-th candidate from `seed` (0: the seed): its last `width` digits stepped by a
    constant prime to 10, which visits every tail once and does not count through "1234"."""
    head, tail = seed[:-width], int(seed[-width:])
    return head + str((tail + i * _STEP) % 10**width).zfill(width)


def _same_shape(number: _Number, nsn: str) -> bool:
    try:
        candidate = phonenumbers.parse(f"+{number.country_code}{nsn}")
    except phonenumbers.NumberParseException:
        return False
    if phonenumbers.national_significant_number(candidate) != nsn:
        return False
    if phonenumbers.region_code_for_number(candidate) != number.region:
        return False
    if number.valid:
        return (
            phonenumbers.is_valid_number(candidate)
            and phonenumbers.number_type(candidate) == number.kind
        )
    return phonenumbers.is_possible_number(candidate) and not phonenumbers.is_valid_number(
        candidate
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _digits(value: object) -> str:
    return _NON_DIGIT.sub("", _text(value))


def _pattern(digits: str, sep: str) -> str:
    return sep.join(digits)


def _is_dtmf_event(activity: Mapping[str, Any]) -> bool:
    name = activity.get("name")
    return (
        activity.get("type") == "event"
        and isinstance(name, str)
        and name.casefold() in _DTMF_EVENTS
    )


def _walk(value: Any) -> Iterator[tuple[object, Any]]:
    """Every (key, value) pair below `value`, keys included as values of their own (key None);
    iterative, as the depth of upstream JSON is not ours to bound."""
    stack: list[tuple[object, Any]] = [(None, value)]
    while stack:
        key, current = stack.pop()
        yield key, current
        if isinstance(current, Mapping):
            for sub_key, sub in current.items():
                yield None, sub_key
                stack.append((sub_key, sub))
        elif isinstance(current, list | tuple):
            stack.extend((key, sub) for sub in current)


@dataclass
class _Turn:
    offset_ms: int
    inputs: tuple[Mapping[str, Any], ...]
    outputs: tuple[Mapping[str, Any], ...]
    latency_ms: int | None = None


@dataclass
class _CallRedaction:
    """One call's redaction: collect its numbers and masked strings, then rewrite copies."""

    redactor: Redactor
    region: str | None
    keep_digits: int
    kept: frozenset[str] = frozenset()  # E.164 numbers written as they are
    numbers: dict[str, _Number] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)  # digit strings masked wherever they occur
    masked_events: set[int] = field(default_factory=set)  # id() of DTMF events masked whole
    _scanned: set[str] = field(default_factory=set, init=False)
    _rewrite: re.Pattern[str] | None = field(default=None, init=False)
    _replacements: list[str | None] = field(default_factory=list, init=False)

    # -- collect --

    def add_party(self, raw: object) -> None:
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            return
        text = str(raw)
        e164, ext = _party(text, self.region)
        if e164 is None:
            self._add_runs(text)
            return
        self._add_e164(e164)
        if ext is not None:
            self._add_secret(ext)

    def scan_text(self, text: str) -> None:
        if text in self._scanned or not _CANDIDATE.search(text):
            return
        self._scanned.add(text)
        # The call's own parties are found by their digits, wherever they are (`rewrite`).
        for e164, extension in _numbers_in(text, self.region):
            if extension:
                self._add_secret(extension)
            self._add_e164(e164)

    def add_dtmf(self, value: object) -> None:
        digits = _digits(value)
        if len(digits) > self.keep_digits:
            self._add_secret(digits)

    def add_speech(self, text: str) -> None:
        for run in _DIGIT_RUN.finditer(text):
            self._add_runs(run.group(), numbers_apart=True)

    def _add_e164(self, e164: str) -> None:
        if e164 not in self.kept and e164 not in self.numbers:
            self.numbers[e164] = _number_of(e164)

    def _add_runs(self, text: str, *, numbers_apart: bool = False) -> None:
        for run in _DIGIT_RUN.finditer(text):
            digits = _digits(run.group())
            if not numbers_apart:
                self._add_secret(digits)
                continue
            # A spoken phone number is replaced by its stand-in, not masked: only the digits
            # around it (not a country or trunk prefix) are masked.
            nsns = [n.nsn for n in self.numbers.values() if n.nsn in digits]
            if not nsns:
                self._add_secret(digits)
                continue
            prefixes = {"0", *(str(n.country_code) for n in self.numbers.values())}
            prefixes |= {"00" + p for p in prefixes if p != "0"}
            for part in re.split("|".join(map(re.escape, nsns)), digits):
                if part not in prefixes:
                    self._add_secret(part)

    def _add_secret(self, digits: str) -> None:
        if len(digits) > self.keep_digits:
            self.secrets.add(digits)

    def add_dtmf_runs(self, turns: Sequence[_Turn]) -> None:
        """DTMF typed without the bot answering in between is one string (VAIC sends one event
        per digit by default): masked whole when longer than `keep_digits`, however split."""
        run: list[Mapping[str, Any]] = []

        def close() -> None:
            typed = "".join(_text(event.get("value", "")) for event in run)
            digits = _digits(typed)
            if len(digits) > self.keep_digits:
                self.masked_events.update(id(event) for event in run)
                self._add_secret(digits)
                for part in _NON_DIGIT.split(typed):  # "98765#34": "98765" is echoed alone
                    self._add_secret(part)
            run.clear()

        for turn in turns:
            for activity in turn.inputs:
                if _is_dtmf_event(activity):
                    run.append(activity)
                    self.add_dtmf(activity.get("value", ""))
                else:
                    close()
            if turn.outputs:
                close()
        close()

    def collect(self, start: Mapping[str, Any], turns: Sequence[_Turn], extra: str) -> None:
        parts: list[Any] = [start, extra, *(t.inputs for t in turns), *(t.outputs for t in turns)]
        for key, value in _walk(parts):
            if key in _PARTY_KEYS:
                self.add_party(value)
        for key, value in _walk(parts):
            if isinstance(value, str) and key not in _NOT_SCANNED:
                self.scan_text(value)
            if key in _DIGIT_FIELDS and value is not None:
                self.add_dtmf(value)
        self.add_dtmf_runs(turns)
        for turn in turns:
            for activity in turn.inputs:
                if activity.get("type") != "message":
                    continue
                for key, value in _walk(activity):
                    if isinstance(value, str) and key not in _NOT_SCANNED:
                        self.add_speech(value)

    # -- rewrite --

    def prepare(self) -> None:
        """Pick each number's stand-in and compile the one pattern that rewrites them all."""
        # "4915112345678" with region DE parses as a national number of its own; it is the
        # E.164 digits of +49 151 12345678 without the "+", and rewritten as that one.
        international = {f"{n.country_code}{n.nsn}" for n in self.numbers.values()}
        international |= {"00" + digits for digits in international}
        for e164, number in list(self.numbers.items()):
            if number.nsn in international:
                del self.numbers[e164]
        masked = {s for s in self.secrets if len(s) >= _MIN_GLOBAL_SECRET}
        avoid = masked | {n.nsn for n in self.numbers.values()}
        entries: list[tuple[str, str, str | None]] = []  # (digits, pattern, stand-in or None)
        for number in self.numbers.values():
            stand_in = self.redactor._stand_in(number, avoid)
            entries.append((number.nsn, _pattern(number.nsn, _SEP), stand_in))
        entries.extend((s, _pattern(s, _SECRET_SEP), None) for s in masked)
        if not entries:
            return
        entries.sort(key=lambda entry: len(entry[0]), reverse=True)  # longest wins at a position
        self._rewrite = re.compile("|".join(f"({pattern})" for _, pattern, _ in entries))
        self._replacements = [stand_in for _, _, stand_in in entries]

    def text(self, value: str) -> str:
        if self._rewrite is None:
            return value
        return self._rewrite.sub(self._replace, value)

    def _replace(self, match: re.Match[str]) -> str:
        assert match.lastindex is not None
        stand_in = self._replacements[match.lastindex - 1]
        return stand_in if stand_in is not None else _DIGIT.sub(MASK, match.group())

    def leaks(self, text: str) -> bool:
        """Whether `text` (a number's digits, a timestamp) shows a real number or masked
        string."""
        return self._rewrite is not None and self._rewrite.search(text) is not None

    def value(self, value: Any) -> Any:
        """A JSON-safe rewritten copy of `value` (iterative: upstream depth is not ours)."""
        root: list[Any] = [None]
        stack: list[tuple[Any, Any, Any, bool]] = [(value, root, 0, False)]
        while stack:
            current, parent, slot, mask = stack.pop()
            if mask:
                parent[slot] = self._masked(current)
            elif isinstance(current, Mapping):
                copy: dict[str, Any] = {}
                parent[slot] = copy
                dtmf_event = id(current) in self.masked_events
                for key, sub in current.items():
                    label = self.text(key if isinstance(key, str) else str(key))
                    mask_sub = (dtmf_event and key == "value") or (
                        key in _DIGIT_FIELDS and len(_digits(sub)) > self.keep_digits
                    )
                    copy[label] = None
                    stack.append((sub, copy, label, mask_sub and sub is not None))
            elif isinstance(current, list | tuple):
                items: list[Any] = [None] * len(current)
                parent[slot] = items
                stack.extend((sub, items, i, False) for i, sub in enumerate(current))
            else:
                parent[slot] = self._scalar(current)
        return root[0]

    def _masked(self, value: Any) -> Any:
        if isinstance(value, Mapping | list | tuple):
            return self.value(value)  # a structured DTMF field: its strings are rewritten
        if value is None or isinstance(value, bool):
            return value
        return _DIGIT.sub(MASK, _text(value))

    def _scalar(self, value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, int | float):
            text = repr(value)
            if not self.leaks(_digits(text)) and not self.leaks(text):
                return value
            rewritten = self.text(text)
            if isinstance(value, int) and rewritten.isdigit() and rewritten[0] != "0":
                return int(rewritten)
            return _DIGIT.sub(MASK, rewritten) if self.leaks(_digits(rewritten)) else rewritten
        return self.text(str(value))

    def clean_ms(self, ms: int, floor: int) -> int:
        """`ms`, raised to `floor` and then by the fewest milliseconds that make it show no real
        number or masked string."""
        ms = max(ms, floor)
        for _ in range(10_000):
            if not self.leaks(str(ms)):
                return ms
            ms += 1
        return ms

    def clean_time(self, at: datetime | None) -> str | None:
        """`at` to the second (UTC; naive means UTC), moved on by the fewest seconds that make
        it show no real number or masked string; None when none of the next two minutes does
        (the masked string is in the date)."""
        if at is None:
            return None
        for shift in range(120):
            text = (at + timedelta(seconds=shift)).strftime("%Y-%m-%dT%H:%M:%SZ")
            if not self.leaks(_digits(text)) and not self.leaks(text):
                return text
        return None


# ---- one call -------------------------------------------------------------------------------


class CallRecord:
    """One call's journal line, built turn by turn. Pure: no I/O, no clock.

    The activities passed in are kept as they are (not copied) until `finish`: pass objects
    that do not change afterwards, as the session's inputs and outputs do not.
    """

    def __init__(
        self,
        *,
        route: str,
        path: PathName,
        mode: Mode,
        transport: Transport,
        conversation_id: str,
        start: Mapping[str, Any],
        started_at: datetime,
        default_region: str | None = None,
        keep_digits: int = DEFAULT_KEEP_DIGITS,
        keep_numbers: Collection[str] = (),
        max_turns: int = DEFAULT_MAX_TURNS,
    ) -> None:
        self.route = route
        self.path = path
        self.mode = mode
        self.transport = transport
        self.conversation_id = conversation_id
        self.start = start
        self.started_at = started_at.astimezone(UTC) if started_at.tzinfo else started_at
        self.default_region = default_region
        self.keep_digits = max(0, keep_digits)
        self.keep_numbers = tuple(keep_numbers)
        self.max_turns = max(0, max_turns)
        self.truncated = False
        self._turns: list[_Turn] = []

    @property
    def turns(self) -> int:
        """Turns recorded so far."""
        return len(self._turns)

    def turn(
        self,
        offset_s: float,
        inputs: Sequence[Mapping[str, Any]],
        outputs: Sequence[Mapping[str, Any]],
        latency_s: float | None = None,
    ) -> None:
        """A turn: when its caller input arrived (seconds since the call started), the
        AudioCodes activities VAIC sent, the outputs VAIC got for them, and (sync mode) how long
        VAIC waited for that answer."""
        if len(self._turns) >= self.max_turns:
            self.truncated = True
            return
        self._turns.append(
            _Turn(
                _ms(offset_s),
                tuple(a for a in inputs if isinstance(a, Mapping)),
                tuple(a for a in outputs if isinstance(a, Mapping)),
                None if latency_s is None else _ms(latency_s),
            )
        )

    def finish(
        self, offset_s: float, reason: str, *, redactor: Redactor | None = None
    ) -> dict[str, Any]:
        """The call ended `offset_s` after it started, for `reason` (a word such as
        `client_disconnected`; anything else becomes `other`): its `acvg-journal/1` object,
        redacted with `redactor` (the journal's; a fresh one when None)."""
        redaction = _CallRedaction(
            redactor if redactor is not None else Redactor(),
            self.default_region,
            self.keep_digits,
            frozenset(self.keep_numbers),
        )
        redaction.collect(self.start, self._turns, self.conversation_id)
        redaction.prepare()
        turns: list[dict[str, Any]] = []
        floor = 0
        for turn in self._turns:
            floor = redaction.clean_ms(turn.offset_ms, floor)
            line: dict[str, Any] = {
                "offset_ms": floor,
                "inputs": [redaction.value(a) for a in turn.inputs],
                "outputs": [redaction.value(a) for a in turn.outputs],
            }
            if turn.latency_ms is not None:
                line["latency_ms"] = redaction.clean_ms(turn.latency_ms, 0)
            turns.append(line)
        start = redaction.value(self.start)
        return {
            "version": VERSION,
            "kind": "call",
            "route": self.route,
            "path": self.path,
            "mode": self.mode,
            "transport": self.transport,
            "conversation": redaction.text(self.conversation_id),
            "started_at": redaction.clean_time(self.started_at),
            "start": start if isinstance(start, dict) else {},
            "turns": turns,
            "end": {
                "offset_ms": redaction.clean_ms(_ms(offset_s), floor),
                "reason": reason if _REASON.fullmatch(reason) else "other",
            },
            "truncated": self.truncated,
            "redaction": {"keep_digits": self.keep_digits, "keep_numbers": list(self.keep_numbers)},
        }


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000)) if math.isfinite(seconds) else 0


# ---- the file ---------------------------------------------------------------------------------


class DropReason(StrEnum):
    """Why a record did not reach the journal (the `reason` label of the drop counter)."""

    QUEUE_FULL = "queue_full"  # the writer is behind; the call went on unrecorded
    MAX_BYTES = "max_bytes"  # the file reached record.max_bytes and stopped
    WRITE_ERROR = "write_error"  # the file could not be written (disk full, ...); stopped
    CLOSED = "closed"  # submitted after close()
    INVALID = "invalid"  # the record could not be redacted or encoded (a bug; logged)


# Room kept below max_bytes for the line that says the file stopped.
_STOP_RESERVE = 256
_BATCH = 64


@dataclass(frozen=True)
class _Pending:
    record: CallRecord
    offset_s: float
    reason: str


class JournalWriter:
    """Appends finished calls to one journal file from a background task.

    `submit` never blocks and never raises: a full queue drops the call (`queue_full`); so do a
    file that reached `max_bytes` (after a last `stopped` line saying so) or failed to write.
    Every drop calls `on_drop(reason)` (e.g. a Prometheus counter's `inc`) and is counted in
    `dropped`. The records are finished (redacted) on the writer's task, off the call's
    requests, and written from a worker thread, so a slow disk stalls only the writer.
    The file is opened at construction (OSError then, at start-up, not later), created 0600,
    and set to 0600 if it existed; an existing file's size counts toward `max_bytes`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        on_drop: Callable[[str], None] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.queue_size = max(1, queue_size)
        self.redactor = redactor if redactor is not None else Redactor()
        self.written = 0
        self.dropped: dict[str, int] = {}
        self._on_drop = on_drop
        self._pending: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stopped: DropReason | None = None
        self._inflight: asyncio.Future[None] | None = None  # the worker thread's write
        self._fd: int | None = _open(self.path)
        self.bytes_written = os.fstat(self._fd).st_size
        # A file that already says it stopped is not told again after a restart.
        self._said_stopped = _ends_stopped(self.path, self.bytes_written)

    @classmethod
    def from_settings(
        cls, settings: JournalSettings, *, on_drop: Callable[[str], None] | None = None
    ) -> JournalWriter:
        return cls(settings.path, max_bytes=settings.max_bytes, on_drop=on_drop)

    @property
    def stopped(self) -> bool:
        """The file takes no more lines (full, broken or closed)."""
        return self._stopped is not None or self._fd is None

    @property
    def queued(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        """Start the background task (on the running loop); records submitted before wait."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"journal {self.path.name}"
            )

    def submit(self, record: CallRecord, offset_s: float, reason: str) -> bool:
        """Queue `record`, which ended `offset_s` after it started for `reason` (the arguments
        of `CallRecord.finish`); False when it was dropped instead."""
        if self._closing:
            return self._drop(DropReason.CLOSED)
        if self._stopped is not None:
            return self._drop(self._stopped)
        if len(self._pending) >= self.queue_size:
            return self._drop(DropReason.QUEUE_FULL)
        self._pending.append(_Pending(record, offset_s, reason))
        self._wakeup.set()
        return True

    async def close(self) -> None:
        """Write every record queued so far, then close the file; later submits are dropped."""
        self._closing = True
        self._wakeup.set()
        if self._task is None and self._pending:
            self.start()
        if self._task is not None:
            # Shielded: a cancelled close() leaves the task to finish and close the file.
            await asyncio.shield(self._task)
        self._close_file()

    async def __aenter__(self) -> JournalWriter:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _drop(self, reason: DropReason, count: int = 1) -> bool:
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        if self._on_drop is not None:
            for _ in range(count):
                try:
                    self._on_drop(str(reason))
                except Exception:  # a counter's failure must not reach the call
                    log.exception("journal drop callback failed")
        return False

    async def _run(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    await self._write_batch()
                if self._closing and not self._pending:
                    return
        finally:
            if self._closing:
                self._close_file()

    async def _write_batch(self) -> None:
        lines: list[bytes] = []
        while self._pending and len(lines) < _BATCH:
            item = self._pending.popleft()
            if self._stopped is not None:
                self._drop(self._stopped)
                continue
            line = self._line(item)
            if line is not None:
                lines.append(line)
            await asyncio.sleep(0)  # finishing a record is CPU work: let calls run between
        data, count = self._admit(lines)
        if not data or self._fd is None:
            return
        loop = asyncio.get_running_loop()
        self._inflight = loop.run_in_executor(None, _write_all, self._fd, data)
        try:
            await self._inflight
        except OSError as exc:
            log.warning("journal %s: write failed (%s); recording stopped", self.path, exc)
            self._stopped = DropReason.WRITE_ERROR
            self._drop(DropReason.WRITE_ERROR, count)
            self._close_file()
            return
        self.bytes_written += len(data)
        self.written += count
        self._said_stopped = self._stopped is not None

    def _line(self, item: _Pending) -> bytes | None:
        try:
            obj = item.record.finish(item.offset_s, item.reason, redactor=self.redactor)
            return (jsontext.dumps(obj) + "\n").encode("utf-8")
        except Exception:  # never seen; a record that cannot be written must not stop the rest
            log.exception("journal %s: a record could not be written", self.path)
            self._drop(DropReason.INVALID)
            return None

    def _admit(self, lines: list[bytes]) -> tuple[bytes, int]:
        """The lines that fit under `max_bytes`, joined, and their count; at the first that does
        not, the `stopped` line and the stop."""
        taken: list[bytes] = []
        size = self.bytes_written
        for i, line in enumerate(lines):
            if size + len(line) + _STOP_RESERVE <= self.max_bytes:
                taken.append(line)
                size += len(line)
                continue
            count = len(taken)
            marker = _stop_line(self.max_bytes)
            if (count or not self._said_stopped) and size + len(marker) <= self.max_bytes:
                taken.append(marker)
            self._stopped = DropReason.MAX_BYTES
            self._drop(DropReason.MAX_BYTES, len(lines) - i)
            log.warning(
                "journal %s reached max_bytes (%d); recording stopped", self.path, self.max_bytes
            )
            return b"".join(taken), count
        return b"".join(taken), len(taken)

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            # The task was cancelled mid-write: closing now could let the thread write into a
            # file that reuses the descriptor number.
            inflight.add_done_callback(lambda _: _close_fd(fd))
        else:
            _close_fd(fd)


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _open(path: Path) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a file that existed keeps no wider mode; umask never widens
    except OSError:
        os.close(fd)
        raise
    return fd


def _ends_stopped(path: Path, size: int) -> bool:
    """Whether the file's last line is a `stopped` line."""
    if size == 0:
        return False
    try:
        with path.open("rb") as file:
            file.seek(max(0, size - 2 * _STOP_RESERVE))
            last = file.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    except OSError:
        return False
    return last.startswith(b'{"version":"acvg-journal/1","kind":"stopped"')


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _stop_line(max_bytes: int) -> bytes:
    line: dict[str, object] = {
        "version": VERSION,
        "kind": "stopped",
        "reason": "max_bytes",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "max_bytes": max_bytes,
    }
    return (jsontext.dumps(line) + "\n").encode("utf-8")
