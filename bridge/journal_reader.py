"""Read an `acvg-journal/1` file back: each line checked against the format of docs/journal.md
(the same rules as docs/journal.schema.json), good lines as `RecordedCall`s, bad ones as
`Problem`s naming file, line and reason — never an exception for what a file holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bridge.journal import VERSION

__all__ = ["Entry", "JournalError", "Problem", "RecordedCall", "RecordedTurn", "read_journal"]

_UTC_SECOND = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
Offset = Annotated[int, Field(ge=0, strict=True)]


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RecordedTurn(_Line):
    offset_ms: Offset
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    latency_ms: Offset | None = None  # sync mode: how long VAIC waited for the answer


class _End(_Line):
    offset_ms: Offset
    reason: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class _Redaction(_Line):
    keep_digits: Annotated[int, Field(ge=0, strict=True)]
    keep_numbers: list[Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{1,14}$")]] = []


class RecordedCall(_Line):
    """One `kind: call` line; `line` is its 1-based line number in the file (not in the file)."""

    version: Literal["acvg-journal/1"]
    kind: Literal["call"]
    route: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    path: Literal["legacy", "voicegateway"]
    mode: Literal["sync", "async"]
    transport: Literal["http", "ws"]
    conversation: str
    started_at: Annotated[str, StringConstraints(pattern=_UTC_SECOND)] | None
    start: dict[str, Any]
    turns: list[RecordedTurn]
    end: _End
    truncated: bool
    redaction: _Redaction

    @property
    def turn_count(self) -> int:
        return len(self.turns)


class _Stopped(_Line):
    version: Literal["acvg-journal/1"]
    kind: Literal["stopped"]
    reason: Literal["max_bytes"]
    at: Annotated[str, StringConstraints(pattern=_UTC_SECOND)]
    max_bytes: Annotated[int, Field(ge=1, strict=True)]


@dataclass(frozen=True, slots=True)
class Problem:
    """A line that is not a valid journal line, or a file that cannot be read."""

    file: str
    line: int  # 0: the file as a whole
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.reason}"
            if self.line
            else f"{self.file}: {self.reason}"
        )


class JournalError(Exception):
    """`--strict` met a bad line, or the file cannot be read at all."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Entry:
    line: int
    call: RecordedCall


def _reason(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "line"
    return f"{where}: {first['msg']}"


def _check(number: int, raw: bytes) -> RecordedCall | str | None:
    """The call on this line, None for a `stopped` line or a blank one, else the reason."""
    if not raw.strip():
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(doc, dict):
        return f"not a JSON object but {type(doc).__name__}"
    version = doc.get("version")
    if version != VERSION:
        return f"unknown version {_short(version)} (this bridge reads {VERSION})"
    kind = doc.get("kind")
    try:
        if kind == "stopped":
            _Stopped.model_validate(doc)
            return None
        if kind != "call":
            return f"unknown kind {_short(kind)} (call or stopped)"
        call = RecordedCall.model_validate(doc)
    except ValidationError as exc:
        return _reason(exc)
    for i, turn in enumerate(call.turns):
        if i and turn.offset_ms < call.turns[i - 1].offset_ms:
            return f"turns.{i}.offset_ms: {turn.offset_ms} is before the previous turn's"
        for j, activity in enumerate(turn.inputs):
            if not isinstance(activity.get("type"), str):
                return f"turns.{i}.inputs.{j}.type: an input needs a string type"
    return call


_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def _short(value: object) -> str:
    text = _PRINTABLE.sub("?", repr(value))
    return text if len(text) <= 40 else text[:37] + "..."


def read_journal(path: Path, *, strict: bool = False) -> tuple[list[Entry], list[Problem]]:
    """Every valid call of the file, in file order, and a `Problem` per bad line.

    `strict` raises `JournalError` at the first bad line instead. A file that cannot be read
    raises `JournalError` either way."""
    entries: list[Entry] = []
    problems: list[Problem] = []
    name = str(path)
    for number, raw in _lines(path):
        found = _check(number, raw)
        if isinstance(found, str):
            problem = Problem(name, number, found)
            if strict:
                raise JournalError(problem)
            problems.append(problem)
        elif found is not None:
            entries.append(Entry(number, found))
    return entries, problems


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise JournalError(Problem(str(path), 0, f"cannot read: {exc.strerror}")) from exc
    with handle:
        try:
            yield from enumerate(handle, start=1)
        except OSError as exc:
            raise JournalError(Problem(str(path), 0, f"cannot read: {exc.strerror}")) from exc
