"""The fleet's control plane: a change made on one instance applies on every instance.

With a shared store only (one instance without Redis has nothing to tell). Run-time migration
changes (the console's steering, the kill switch) are kept in Redis as one document,
`acvg:overrides` (the override file's content), and every change is announced on the pub/sub
channel `acvg:control`; `POST /admin/reload` is announced too. Each instance applies what it
hears through the same atomic reload as a local change: it writes the fleet's overrides to its own
override file (so a restart keeps them) and reloads. The audit log is one list for the fleet,
`acvg:audit` (newest last, bounded); each instance also appends what it hears to its own file.

At start-up an instance takes the fleet's overrides (a restarted or new instance follows the
fleet, not its stale file). Pub/sub is at-most-once: an instance that misses a message (Redis
restarted, the instance's subscription reconnecting) catches up on its next resubscription, which
re-reads the document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge import jsontext
from bridge.reload import Overrides

log = logging.getLogger("bridge.control")
CHANNEL = "acvg:control"
OVERRIDES_KEY = "acvg:overrides"
AUDIT_KEY = "acvg:audit"
AUDIT_KEPT = 1000
RESUBSCRIBE_S = 1.0

Apply = Callable[[str, dict[str, Any]], Awaitable[None]]


class ControlPlane:
    """Publishes this instance's changes and applies the others' (see the module doc)."""

    def __init__(self, redis: Redis, instance_id: str, on_error: Callable[[str], None]) -> None:
        self._redis = redis
        self._instance_id = instance_id
        self._on_error = on_error

    async def overrides(self) -> Overrides | None:
        """The fleet's overrides document; None when Redis has none or cannot be read."""
        try:
            raw = await self._redis.get(OVERRIDES_KEY)
        except (RedisError, OSError):
            self._on_error("control")
            return None
        if raw is None:
            return None
        try:
            doc = jsontext.loads(raw)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    async def publish_overrides(self, overrides: Overrides, audit: list[dict[str, Any]]) -> None:
        """Store the fleet's overrides and the audit lines of the change, then announce it."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(OVERRIDES_KEY, jsontext.dumps(overrides))
                for entry in audit:
                    pipe.rpush(AUDIT_KEY, jsontext.dumps(entry))
                pipe.ltrim(AUDIT_KEY, -AUDIT_KEPT, -1)
                pipe.publish(CHANNEL, self._message("overrides", audit=audit))
                await pipe.execute()
        except (RedisError, OSError):
            self._on_error("control")
            log.warning("the change could not be sent to the fleet; it applies here only")

    async def publish_reload(self) -> None:
        try:
            await self._redis.publish(CHANNEL, self._message("reload"))
        except (RedisError, OSError):
            self._on_error("control")

    def _message(self, op: str, **extra: Any) -> str:
        return jsontext.dumps({"op": op, "from": self._instance_id, **extra})

    async def listen(self, apply: Apply) -> None:
        """Apply the other instances' announcements until cancelled; `apply(op, message)` is
        called with op `sync` after every (re)subscription, so nothing missed stays missed."""
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(CHANNEL)
                try:
                    await apply("sync", {})
                    async for message in pubsub.listen():
                        await self._dispatch(message, apply)
                finally:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()
            except (RedisError, OSError):
                self._on_error("subscribe")
            await asyncio.sleep(RESUBSCRIBE_S)

    async def _dispatch(self, message: dict[str, Any], apply: Apply) -> None:
        if message.get("type") != "message":
            return
        try:
            body = jsontext.loads(message["data"])
        except (ValueError, KeyError):
            return
        if not isinstance(body, dict) or body.get("from") == self._instance_id:
            return
        op = body.get("op")
        if op in ("overrides", "reload"):
            await apply(str(op), body)
