"""The divergence log: a sample of shadow turns that did not match, as redacted JSON Lines.

One line per recorded turn (design §3.7): time (ISO-8601 UTC), route, conversation id, turn,
primary path, order flag, latencies, and per item its node, result, differing field paths and
both sides' activities, with phone numbers and digits redacted (`redact_activity`). The same
entries are kept in a small in-memory ring (`recent`) for a console.

`record` writes synchronously: one small append to a line-buffered file handle that stays open.
Callers on the event loop accept that cost (a few microseconds to a page-cache write) or call it
off the hot path; the shadow runner already runs off the primary's path. At `max_bytes` the file
stops growing (further turns are counted in `dropped`, and still reach the ring); a write error
stops file writing the same way. Never raises after construction.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bridge.compare import TurnComparison
from bridge.numbers import REDACTED, redact

__all__ = ["DEFAULT_MAX_BYTES", "DivergenceLog", "redact_activity"]

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
RECENT_SIZE = 200

# Fields that hold DTMF digits: masked whole, whatever their length or type.
_DIGIT_FIELDS = frozenset({"dtmfDigits", "digits", "dtmf"})
# Events whose `value` is the caller's DTMF input.
_DTMF_EVENTS = frozenset({"dtmf"})
# Numbers (not strings) with this many digits are masked: in an event's `value` (free data such as
# sendMetaData) from 3 like `redact`; elsewhere from 7, so timeouts and counts stay readable.
_VALUE_NUMBER_DIGITS = 3
_OTHER_NUMBER_DIGITS = 7


def redact_activity(activity: Any) -> Any:
    """A JSON-safe copy of an activity with phone numbers and digits masked.

    Every string (values and keys) has its digit runs of 3+ replaced by `<redacted>`; DTMF fields
    (`dtmfDigits`, `digits`, `dtmf`, and the `value` of a DTMF event) are replaced whole; numbers
    of 3+ digits inside an event's `value` (e.g. sendMetaData) and of 7+ digits elsewhere are
    replaced. Tuples become lists, non-finite floats and unknown objects their `str`.
    """
    if not isinstance(activity, Mapping):
        return _redact(activity, _OTHER_NUMBER_DIGITS)
    name = activity.get("name")
    dtmf_event = isinstance(name, str) and name.casefold() in _DTMF_EVENTS
    out: dict[str, Any] = {}
    for key, value in activity.items():
        label = redact(key) if isinstance(key, str) else redact(str(key))
        if key == "value":
            out[label] = REDACTED if dtmf_event else _redact(value, _VALUE_NUMBER_DIGITS)
        else:
            out[label] = _redact_field(key, value, _OTHER_NUMBER_DIGITS)
    return out


def _redact_field(key: object, value: Any, min_digits: int) -> Any:
    if key in _DIGIT_FIELDS and value is not None:
        return REDACTED
    return _redact(value, min_digits)


def _redact(value: Any, min_digits: int) -> Any:
    # Iterative: activities come from upstreams, so their depth is not ours to bound.
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while stack:
        current, parent, slot = stack.pop()
        if isinstance(current, Mapping):
            copy: dict[str, Any] = {}
            parent[slot] = copy
            for key, sub in current.items():
                label = redact(key if isinstance(key, str) else str(key))
                if key in _DIGIT_FIELDS and sub is not None:
                    copy[label] = REDACTED
                else:
                    copy[label] = None
                    stack.append((sub, copy, label))
        elif isinstance(current, list | tuple):
            items: list[Any] = [None] * len(current)
            parent[slot] = items
            stack.extend((sub, items, i) for i, sub in enumerate(current))
        else:
            parent[slot] = _scalar(current, min_digits)
    return root[0]


def _scalar(value: Any, min_digits: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int):
        return REDACTED if abs(value) >= 10 ** (min_digits - 1) else value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return REDACTED if abs(value) >= 10 ** (min_digits - 1) else value
    return redact(str(value))


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DivergenceLog:
    """Appends sampled, redacted non-matching turns to a JSON Lines file and a recent ring.

    `path=None` keeps divergences in memory only. Counters: `written` (lines in the file),
    `sampled_out`, `dropped` (file full or broken), `bytes_written` (including what the file held
    when opened, so a restart does not grow it past `max_bytes`).
    """

    def __init__(
        self,
        path: Path | None,
        sample_rate: float = 1.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        rng: random.Random | None = None,
        *,
        recent_size: int = RECENT_SIZE,
    ) -> None:
        self.path = path
        self.sample_rate = min(1.0, max(0.0, sample_rate))
        self.max_bytes = max_bytes
        self._rng = rng if rng is not None else random.Random()
        self._recent: deque[dict[str, Any]] = deque(maxlen=max(1, recent_size))
        # sees every entry taken (the console shares them with the fleet); must not raise
        self.on_record: Callable[[dict[str, Any]], None] | None = None
        self.written = 0
        self.sampled_out = 0
        self.dropped = 0
        self.bytes_written = 0
        self._file: IO[str] | None = None
        if path is not None:
            # Opening errors surface to the caller (start-up); later write errors do not.
            self._file = path.open("a", encoding="utf-8", buffering=1)
            self.bytes_written = self._file.tell()

    def record(
        self,
        route: str,
        conversation_id: str,
        turn: int,
        comparison: TurnComparison,
        *,
        now: datetime | None = None,
    ) -> bool:
        """Log this turn if it diverged and the sample takes it; True when it was taken."""
        if not comparison.diverged:
            return False
        if self.sample_rate < 1.0 and self._rng.random() >= self.sample_rate:
            self.sampled_out += 1
            return False
        entry = self._entry(route, conversation_id, turn, comparison, now or datetime.now(UTC))
        self._recent.append(entry)
        if self.on_record is not None:
            self.on_record(entry)
        self._write(entry)
        return True

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last `limit` recorded divergences, newest first (already redacted)."""
        if limit <= 0:
            return []
        return list(reversed(self._recent))[:limit]

    def close(self) -> None:
        """Close the file; later turns still reach the ring and count as `dropped`."""
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):  # lines were flushed on write (line-buffered)
                file.close()

    @property
    def stopped(self) -> bool:
        """The file no longer takes lines (full, broken or closed)."""
        return self.path is not None and self._file is None

    def _entry(
        self,
        route: str,
        conversation_id: str,
        turn: int,
        comparison: TurnComparison,
        at: datetime,
    ) -> dict[str, Any]:
        items = []
        for item in comparison.items:
            items.append(
                {
                    "node": item.node,
                    "result": str(item.result),
                    "fields": [redact(f) for f in item.fields],
                    "field_kinds": {redact(d.path): str(d.kind) for d in item.diffs},
                    "primary": None if item.primary is None else redact_activity(item.primary),
                    "shadow": None if item.shadow is None else redact_activity(item.shadow),
                }
            )
        return {
            "time": _timestamp(at),
            "route": route,
            "conversation_id": conversation_id,
            "turn": turn,
            "primary_path": comparison.primary_path,
            "order_matches": comparison.order_matches,
            # Milliseconds, whole: raw float seconds leak arbitrary digit runs into the log.
            "primary_latency_ms": _ms(comparison.primary_latency_s),
            "shadow_latency_ms": _ms(comparison.shadow_latency_s),
            "items": items,
        }

    def _write(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        if self._file is None:
            self.dropped += 1
            return
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
        size = len(line.encode("utf-8"))
        if self.bytes_written + size > self.max_bytes:
            self.dropped += 1
            self.close()
            return
        try:
            self._file.write(line)
        except OSError:
            self.dropped += 1
            self.close()
            return
        self.bytes_written += size
        self.written += 1


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)
