"""The migration plans across a fleet, in Redis: who decides, on what evidence, and what every
instance shows.

- `acvg:plan:leader`: the instance that ticks the plans (SET NX with a TTL, renewed by its
  holder every tick); when it dies another takes the lock within `LEADER_TTL_S`.
- `acvg:plan:evidence:<route>`: one field per instance, its window (bridge/evidence.py) with the
  step's start it belongs to; the leader sums the windows of the live instances on the same
  step, so a plan judges the fleet's calls, not its own share.
- `acvg:plan:state`: the leader's `describe` document per route; the others show it, open their
  windows when it names a new step, and a new leader goes on from it (history, rolled back...).

Every operation is best effort: Redis down means no leader (no plan moves) and each instance
shows what it last read; the serving path is never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge import jsontext
from bridge.evidence import Window, sum_windows

__all__ = ["EVIDENCE_KEY", "LEADER_KEY", "STATE_KEY", "PlanFleet"]

log = logging.getLogger("bridge.rollout")
LEADER_KEY = "acvg:plan:leader"
STATE_KEY = "acvg:plan:state"
EVIDENCE_KEY = "acvg:plan:evidence:{route}"
LEADER_TTL_S = 5.0
EVIDENCE_TTL_S = 60  # a route's evidence goes when no instance wrote it for this long


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


class PlanFleet:
    """This instance's side of the plans' Redis keys (module doc)."""

    def __init__(self, redis: Redis, instance_id: str, on_error: Callable[[str], None]) -> None:
        self._redis = redis
        self.instance_id = instance_id
        self._on_error = on_error
        self.leader_id: str | None = None  # as last read

    async def lead(self) -> bool:
        """Take or keep the leader lock; False when another holds it or Redis is away."""
        ttl_ms = int(LEADER_TTL_S * 1000)
        try:
            if await self._redis.set(LEADER_KEY, self.instance_id, nx=True, px=ttl_ms):
                log.info("this instance now runs the migration plans")
                self.leader_id = self.instance_id
                return True
            holder = _text(await self._redis.get(LEADER_KEY))
            self.leader_id = holder
            if holder == self.instance_id:
                await self._redis.pexpire(LEADER_KEY, ttl_ms)
                return True
        except (RedisError, OSError):
            self._on_error("plan")
            self.leader_id = None
        return False

    async def share(self, windows: dict[str, tuple[str, Window]]) -> None:
        """This instance's window per route, with the step start (`epoch`) it belongs to."""
        if not windows:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for route, (epoch, window) in windows.items():
                    key = EVIDENCE_KEY.format(route=route)
                    doc = {"epoch": epoch, "window": window.to_json()}
                    pipe.hset(key, self.instance_id, jsontext.dumps(doc))
                    pipe.expire(key, EVIDENCE_TTL_S)
                await pipe.execute()
        except (RedisError, OSError):
            self._on_error("plan")

    async def fleet_window(self, route: str, epoch: str, live: Iterable[str]) -> Window | None:
        """The sum of the live instances' windows on step `epoch`; None when Redis is away."""
        try:
            rows = await self._redis.hgetall(EVIDENCE_KEY.format(route=route))
        except (RedisError, OSError):
            self._on_error("plan")
            return None
        wanted = set(live) | {self.instance_id}
        windows = []
        for field, raw in rows.items():
            if _text(field) not in wanted:
                continue
            try:
                doc = jsontext.loads(raw)
                if not isinstance(doc, dict) or doc.get("epoch") != epoch:
                    continue
                windows.append(Window.from_json(doc.get("window")))
            except ValueError:
                continue  # another version's document, or a torn one: left out of the sum
        return sum_windows(windows)

    async def publish_states(self, docs: dict[str, dict[str, Any]]) -> None:
        if not docs:
            return
        try:
            await self._redis.hset(
                STATE_KEY, mapping={route: jsontext.dumps(doc) for route, doc in docs.items()}
            )
        except (RedisError, OSError):
            self._on_error("plan")

    async def states(self) -> dict[str, dict[str, Any]] | None:
        """The leader's documents per route; None when Redis is away."""
        try:
            rows = await self._redis.hgetall(STATE_KEY)
        except (RedisError, OSError):
            self._on_error("plan")
            return None
        out: dict[str, dict[str, Any]] = {}
        for field, raw in rows.items():
            route = _text(field)
            try:
                doc = jsontext.loads(raw)
            except ValueError:
                continue
            if route is not None and isinstance(doc, dict):
                out[route] = doc
        return out
