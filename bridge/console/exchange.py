"""The console's figures and divergences shared through Redis, so that the console of any
instance shows the whole fleet's.

Only with a shared store (`cluster.redis_url`). Layout:
- `acvg:figures:<instance id>`: that instance's `Figures` (bridge/console/figures.py) as JSON,
  rewritten every `every_s` (1 s) and expiring after `FIGURES_LEASES` lease periods;
  `acvg:figures`, the set of the ids that wrote one (pruned of those whose document expired),
  so a reader needs no SCAN.
- `acvg:divergences`: the fleet's divergence entries (already redacted), newest first, the last
  `DIVERGENCES_KEPT`; `acvg:divergences:seq` counts the entries ever pushed, so a live stream
  sees new ones without reading the list.

Counts live in each instance's memory: the console sums the figures of the instances alive now,
so what a dead instance counted leaves the fleet's figures with its lease (as a restarted
instance's counts start from zero); the console's history keeps what it added while alive.

Nothing here is on a call's path and nothing raises: `offer(entry)`, the divergence log's
callback, only queues; one background task (`run`) writes the queue and this instance's figures
in one pipeline per tick, then reads the others' figures. A Redis error is counted through
`on_error(op)` (`acvg_store_errors_total{op}`: `figures`, `divergences`); readers then get None
and the console falls back to this instance's own figures and divergences, and says so. Entries
not pushed yet wait in a bounded queue for Redis to come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge import jsontext
from bridge.console.figures import Figures

__all__ = ["DIVERGENCES_KEPT", "FIGURES_LEASES", "PUBLISH_EVERY_S", "Exchange", "figures_key"]

log = logging.getLogger("bridge.console")

PREFIX = "acvg"
IDS_KEY = f"{PREFIX}:figures"  # not under `acvg:figures:`, whatever an instance is named
DIVERGENCES_KEY = f"{PREFIX}:divergences"
DIVERGENCES_SEQ_KEY = f"{PREFIX}:divergences:seq"
DIVERGENCES_KEPT = 500
FIGURES_LEASES = 3
PUBLISH_EVERY_S = 1.0


def figures_key(instance_id: str) -> str:
    return f"{PREFIX}:figures:{instance_id}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Exchange:
    """This instance's side of the sharing (see the module doc)."""

    def __init__(
        self,
        redis: Redis,
        instance_id: str,
        lease_s: float,
        on_error: Callable[[str], None],
        *,
        every_s: float = PUBLISH_EVERY_S,
    ) -> None:
        self._redis = redis
        self.instance_id = instance_id
        self.lease_s = lease_s
        self.every_s = every_s
        self._on_error = on_error
        self._pending: deque[dict[str, Any]] = deque(maxlen=DIVERGENCES_KEPT)
        self.others: dict[str, Figures] = {}  # the other instances' figures, as last read
        self.others_read = False  # whether the last read of them succeeded

    def offer(self, entry: Mapping[str, Any]) -> None:
        """Queue a divergence entry for the fleet's list: no I/O, never raises."""
        self._pending.append(dict(entry))

    async def publish(self, figures: Figures) -> bool:
        """Write this instance's figures and the queued divergence entries; False (counted) when
        Redis failed, the entries then stay queued."""
        entries = list(self._pending)
        self._pending.clear()
        ttl_ms = max(1, int(self.lease_s * FIGURES_LEASES * 1000))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(
                    figures_key(self.instance_id), jsontext.dumps(figures.to_json()), px=ttl_ms
                )
                pipe.sadd(IDS_KEY, self.instance_id)
                if entries:
                    # oldest first, so that the newest ends up at the head
                    pipe.lpush(DIVERGENCES_KEY, *(_entry_text(e) for e in entries))
                    pipe.ltrim(DIVERGENCES_KEY, 0, DIVERGENCES_KEPT - 1)
                    pipe.incrby(DIVERGENCES_SEQ_KEY, len(entries))
                await pipe.execute()
        except (RedisError, OSError):
            self._on_error("figures")
            # what was offered meanwhile is newer: on overflow the oldest go
            self._pending = deque([*entries, *self._pending], maxlen=DIVERGENCES_KEPT)
            return False
        return True

    async def read_others(self) -> dict[str, Figures] | None:
        """The other instances' figures by id (documents this version cannot read are left
        out); None (counted) when Redis failed."""
        try:
            ids = sorted(map(_text, await self._redis.smembers(IDS_KEY)))
            ids = [i for i in ids if i != self.instance_id]
            raws = await self._redis.mget([figures_key(i) for i in ids]) if ids else []
            gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
            if gone:
                await self._redis.srem(IDS_KEY, *gone)
        except (RedisError, OSError):
            self._on_error("figures")
            return None
        found: dict[str, Figures] = {}
        for instance_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                continue
            with contextlib.suppress(ValueError):
                found[instance_id] = Figures.from_json(jsontext.loads(raw))
        return found

    async def tick(self, figures: Figures) -> None:
        """One round: publish, then (if Redis answered) read the others."""
        others = await self.read_others() if await self.publish(figures) else None
        self.others_read = others is not None
        self.others = others or {}

    async def run(self, figures: Callable[[], Figures], stopping: asyncio.Event) -> None:
        """A tick every `every_s` until `stopping` is set (or cancelled)."""
        while not stopping.is_set():
            try:
                await self.tick(figures())
            except Exception:
                log.exception("sharing the console's figures failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.every_s)

    async def divergences(self, limit: int = DIVERGENCES_KEPT) -> list[dict[str, Any]] | None:
        """The fleet's last `limit` divergence entries, newest first; None (counted) when Redis
        failed."""
        try:
            raws = await self._redis.lrange(DIVERGENCES_KEY, 0, max(1, limit) - 1)
        except (RedisError, OSError):
            self._on_error("divergences")
            return None
        entries: list[dict[str, Any]] = []
        for raw in raws:
            with contextlib.suppress(ValueError):
                entry = jsontext.loads(raw)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries

    async def divergence_mark(self) -> str | None:
        """Changes whenever an entry joins the fleet's list; None (counted) when Redis failed."""
        try:
            raw = await self._redis.get(DIVERGENCES_SEQ_KEY)
        except (RedisError, OSError):
            self._on_error("divergences")
            return None
        return "0" if raw is None else _text(raw)


def _entry_text(entry: Mapping[str, Any]) -> str:
    # as the divergence log writes its file: entries are redacted copies, JSON-safe but for
    # values it writes with str()
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str)
