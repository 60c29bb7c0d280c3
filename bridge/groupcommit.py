"""Group commit of call snapshots to Redis: the writes that queue while one is in flight go out
together, as one pipeline, when it returns.

A turn's snapshot must be in Redis before VAIC gets the turn's outputs, so each turn awaits its
write. Alone, a write is one script call (one round trip, ~0.16 ms of redis-py CPU). Under load
many turns finish while a write is in flight; sending them one by one costs each its own command
packing, pool checkout and socket write, while a pipeline of N costs about a third as much per
write from N = 4 (measured in bench/cluster_cost.py). Nothing waits for a batch to fill: an idle
writer sends at once, so at low load a write costs what it did alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

# The snapshot script's arguments after its key: state JSON, owner, time-to-live in ms, and the
# instance that must own the record for the write to happen ("": write whoever owns it).
Args = tuple[str, str, int, str]


@dataclass(slots=True)
class _Write:
    key: str
    args: Args
    done: asyncio.Future[object]


class GroupCommit:
    """Writes `script(key, *args)` calls, batching those that arrive while one is in flight.

    `failed(exc)` turns a Redis error into the exception each waiting writer gets (and counts
    it)."""

    def __init__(
        self, redis: Redis, script: AsyncScript, failed: Callable[[Exception], Exception]
    ) -> None:
        self._redis = redis
        self._script = script
        self._failed = failed
        self._queue: list[_Write] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  # pipelines of more than one write sent (for tests and benchmarks)

    async def write(self, key: str, args: Args) -> object:
        """The script's result for this write."""
        loop = asyncio.get_running_loop()
        write = _Write(key, args, loop.create_future())
        self._queue.append(write)
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return await write.done  # cancelled with its waiter; the write is made all the same

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._send(batch)
        finally:
            self._flusher = None

    async def _send(self, batch: list[_Write]) -> None:
        try:
            if len(batch) == 1:
                (one,) = batch
                # the script object reloads a flushed script itself
                results: list[object] = [await self._script(keys=[one.key], args=one.args)]
            else:
                self.batches += 1
                results = await self._pipeline(batch)
                missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
                if missing:  # Redis restarted and lost its script cache: load it, send again
                    await self._redis.script_load(self._script.script)
                    again = await self._pipeline([batch[i] for i in missing])
                    for i, result in zip(missing, again, strict=True):
                        results[i] = result
        except (RedisError, OSError) as exc:
            results = [exc] * len(batch)
        for write, result in zip(batch, results, strict=True):
            if write.done.done():
                continue
            if isinstance(result, Exception):
                write.done.set_exception(self._failed(result))
            else:
                write.done.set_result(result)

    async def _pipeline(self, batch: list[_Write]) -> list[object]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for write in batch:
                pipe.evalsha(self._script.sha, 1, write.key, *write.args)
            return list(await pipe.execute(raise_on_error=False))

    async def close(self) -> None:
        """Wait for the writes already queued."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
