"""Process logging for the CLI: one line per record with the call context, numbers redacted.

`configure_logging(level)` installs one stderr handler on the root logger. Its format is
`time level logger message key=value…`, where the keys are the call context a session's
`logging.LoggerAdapter` carries (route, conversation, call_sid). A `RedactingFilter` on the
handler rewrites each record before it is formatted: the rendered message (after `%`-args),
exception text and stack text lose every digit run (`bridge.numbers.redact`; whole UUIDs and
the file and line of traceback frames are kept), DTMF values after a `digits`/`dtmf` key and
bearer tokens. Short digit runs elsewhere cannot be told apart from counts, so call sites must
still never log DTMF strings or activity text (style.md). A record logged with
`extra={SCRUBBED: True}` and no `%`-args, exception or stack passes the filter as it is: only
for messages built from closed sets and numbers the bridge formats (bridge/access_log.py).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

from bridge.numbers import REDACTED, redact

__all__ = [
    "CONTEXT_FIELDS",
    "SCRUBBED",
    "ContextFormatter",
    "RedactingFilter",
    "configure_logging",
    "scrub",
    "scrub_traceback",
]

CONTEXT_FIELDS = ("route", "conversation", "call_sid")
# The `extra` key of a record whose message cannot hold a number, digits or a token.
SCRUBBED = "scrubbed"
# websockets logs every frame at DEBUG: session:new carries the caller, verb:hook the transcript.
# The bridge's own jambonz socket is aiohttp's (no frame logging); websockets stays capped for
# embedders and tools that still use it (bench/loadgen.py).
_FRAME_LOGGERS = ("websockets",)

_KEYED_DTMF = re.compile(
    r"""((?i:dtmf_?digits|digits|dtmf)["']?\s*[:=]\s*["']?)[0-9A-D*#]+(?![\w*#])"""
)
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
_KEYED_TOKEN = re.compile(r"""((?i:token|password|secret)["']?\s*[:=]\s*["']?)[^\s"',;}]+""")


# Conversation ids and call sids are UUIDs, useless once redacted. Only a whole UUID with at
# least one hex letter is kept, so a digits-only string shaped like one is still redacted.
_UUID = re.compile(
    r"(?<![\w-])((?=[\d-]{0,35}[a-fA-F])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})(?![\w-])"
)


def is_uuid(text: str) -> bool:
    """Whether `text` is one whole UUID of the kind the scrub keeps."""
    return len(text) == 36 and _UUID.fullmatch(text) is not None


# A traceback frame's `  File "/path/x.py", line 123, in f`: code locations, never a caller's data
# (a frame's source line and the exception's message below it are scrubbed as usual).
_TRACEBACK_FRAME = re.compile(r'^(\s*File "[^"\n]*", line \d+)(?=, in )', re.MULTILINE)


def scrub_traceback(text: str) -> str:
    """`scrub`, keeping where each traceback frame is (file and line), nothing else."""
    parts = _TRACEBACK_FRAME.split(text)  # odd indexes are the frames' locations
    return "".join(part if i % 2 else scrub(part) for i, part in enumerate(parts))


def scrub(text: str) -> str:
    """`text` without phone numbers, digit runs, keyed DTMF values or tokens (UUIDs kept)."""
    text = _KEYED_DTMF.sub(rf"\g<1>{REDACTED}", text)
    text = _BEARER.sub(rf"\g<1>{REDACTED}", text)
    text = _KEYED_TOKEN.sub(rf"\g<1>{REDACTED}", text)
    parts = _UUID.split(text)  # odd indexes are the UUIDs
    return "".join(part if i % 2 else redact(part) for i, part in enumerate(parts))


class RedactingFilter(logging.Filter):
    """Rewrites a record's final message, exception and stack text through `scrub` (in place,
    so every handler after this one sees the redacted record too)."""

    _exceptions = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.__dict__.get(SCRUBBED) is True
            and not record.args
            and not record.exc_info
            and not record.exc_text
            and not record.stack_info
        ):
            return True
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = scrub_traceback(self._exceptions.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = scrub_traceback(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub_traceback(record.stack_info)
        return True


# A context value with one of these is quoted (str.isspace and `\s` are the same set).
_NEEDS_QUOTES = re.compile(r"[\s\"'=]")


def _context_value(value: object) -> str:
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


class ContextFormatter(logging.Formatter):
    """`2026-11-25T10:00:00.123Z INFO bridge.session message route=r conversation=… call_sid=…`."""

    # The time up to the second, formatted once per second (every access log line pays this).
    _second = -1
    _prefix = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # rounded to the microsecond first, as datetime.fromtimestamp does
        second, micros = divmod(round(record.created * 1_000_000), 1_000_000)
        if second != self._second:
            at = datetime.fromtimestamp(second, UTC)
            self._prefix, self._second = at.strftime("%Y-%m-%dT%H:%M:%S."), second
        return f"{self._prefix}{micros // 1000:03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        parts = [self.formatTime(record), record.levelname, record.name, record.message]
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                if key != "route":  # ids VAIC chose could be anything: scrubbed, UUIDs kept
                    value = scrub(str(value))
                parts.append(f"{key}={_context_value(value)}")
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class _StreamHandler(logging.Handler):
    """Writes to `stream`, or to whatever `sys.stderr` is at emit time when none is given."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = self._stream if self._stream is not None else sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def parse_level(level: str) -> int:
    """`DEBUG`, `info`, … → the logging level; ValueError naming the choices otherwise."""
    levels = logging.getLevelNamesMapping()
    value = levels.get(level.strip().upper())
    if value is None or value == logging.NOTSET:
        choices = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise ValueError(f"unknown log level {level!r} (one of {choices})")
    return value


def configure_logging(level: str, *, stream: TextIO | None = None) -> None:
    """Install the bridge's handler on the root logger (replacing one installed before)."""
    value = parse_level(level)
    handler = _StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(ContextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StreamHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(value)
    for name in _FRAME_LOGGERS:
        logging.getLogger(name).setLevel(max(value, logging.INFO))
