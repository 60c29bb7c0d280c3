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

Redis restarted empty (or flushed) has lost the document: the first instance to resubscribe with
overrides of its own (its override file) puts them back (`sync_overrides`: SET NX, the audit
lines and the announcement in one script), so exactly one restores and every other instance
adopts what it restored. An instance with no overrides restores nothing (an empty document would
wipe the others'). Where the instances' files differ (one missed a change while partitioned
from Redis), the first to resubscribe wins: it logs a warning and the fleet's audit list records
one line per restored setting, `who` naming the instance. The fleet's audit list was lost with
the rest and starts again with those lines; each instance's own audit file keeps its history.
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

# SET NX of the document; only when it went in, the audit lines and the announcement (one
# script: no instance can see the restored document before its audit lines). Else the document
# another instance put there first. ARGV: document, AUDIT_KEPT, channel, message, audit lines...
_RESTORE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  for i = 5, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return {1}
end
return {0, redis.call('GET', KEYS[1])}
"""

Apply = Callable[[str, dict[str, Any]], Awaitable[None]]


class ControlPlane:
    """Publishes this instance's changes and applies the others' (see the module doc)."""

    def __init__(self, redis: Redis, instance_id: str, on_error: Callable[[str], None]) -> None:
        self._redis = redis
        self._instance_id = instance_id
        self._on_error = on_error
        self._restore = redis.register_script(_RESTORE)

    async def overrides(self) -> Overrides | None:
        """The fleet's overrides document; None when Redis has none or cannot be read."""
        try:
            raw = await self._redis.get(OVERRIDES_KEY)
        except (RedisError, OSError):
            self._on_error("control")
            return None
        return _document(raw)

    async def sync_overrides(
        self, own: Overrides, audit: list[dict[str, Any]]
    ) -> tuple[Overrides | None, bool]:
        """The fleet's overrides after a (re)subscription, and whether this instance restored
        them: when Redis has no document and `own` (this instance's override file) is not
        empty, `own` becomes the fleet's, with `audit` in the fleet's list, announced to the
        others. None when Redis has no document or cannot be read."""
        if not own:
            return await self.overrides(), False
        try:
            reply = await self._restore(
                keys=[OVERRIDES_KEY, AUDIT_KEY],
                args=[
                    jsontext.dumps(own),
                    AUDIT_KEPT,
                    CHANNEL,
                    self._message("overrides", audit=audit, restored=True),
                    *(jsontext.dumps(entry) for entry in audit),
                ],
            )
        except (RedisError, OSError):
            self._on_error("control")
            return None, False
        if reply[0] == 1:
            return own, True
        return _document(reply[1] if len(reply) > 1 else None), False

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


def _document(raw: bytes | str | None) -> Overrides | None:
    if raw is None:
        return None
    try:
        doc = jsontext.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
