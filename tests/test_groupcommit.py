"""bridge/groupcommit.py through RedisStore.save on a real redis-server: writes that queue while
one is in flight go out as one pipeline, each lands, failures reach every waiter and are counted,
and a Redis that lost its script cache is handled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge.sim.redis_server import RedisServer
from bridge.store import CallKey, RedisStore, StoreUnavailable

KEYS = [CallKey("r", f"conv-{n}") for n in range(40)]


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, list[str]]]:
    errors: list[str] = []
    store = RedisStore(redis_server.url, on_error=errors.append, timeout_s=0.5)
    try:
        yield store, errors
    finally:
        await store.close()


async def _save_all(store: RedisStore, turn: int) -> None:
    await asyncio.gather(
        *(store.save(key, {"turn": turn, "n": n}, "a", ttl_s=60) for n, key in enumerate(KEYS))
    )


async def test_an_idle_writer_sends_at_once_and_a_burst_is_batched(
    store: tuple[RedisStore, list[str]],
) -> None:
    redis, _ = store
    await redis.save(KEYS[0], {"turn": 0}, "a", ttl_s=60)
    assert redis._writes.batches == 0  # alone: one script call, no pipeline
    await _save_all(redis, 1)
    # the first write of the burst goes alone, the others queue behind it and go together
    assert 1 <= redis._writes.batches < len(KEYS)
    for n, key in enumerate(KEYS):
        assert await redis.load(key) == ({"turn": 1, "n": n}, "a")


async def test_later_writes_of_a_key_win(store: tuple[RedisStore, list[str]]) -> None:
    redis, _ = store
    await asyncio.gather(*(redis.save(KEYS[0], {"turn": t}, f"o{t}", ttl_s=60) for t in range(6)))
    assert await redis.load(KEYS[0]) == ({"turn": 5}, "o5")


async def test_a_redis_that_lost_its_scripts_still_takes_batches(
    store: tuple[RedisStore, list[str]], redis_server: RedisServer
) -> None:
    redis, errors = store
    await _save_all(redis, 1)
    redis_server.stop()
    redis_server.start()  # empty, without the cached snapshot script
    await redis.ping()
    await _save_all(redis, 2)
    assert errors == []
    for n, key in enumerate(KEYS):
        assert await redis.load(key) == ({"turn": 2, "n": n}, "a")


async def test_redis_down_fails_every_waiting_write_and_counts_each(
    store: tuple[RedisStore, list[str]], redis_server: RedisServer
) -> None:
    redis, errors = store
    await _save_all(redis, 1)
    redis_server.stop()
    results = await asyncio.gather(
        *(redis.save(key, {"turn": 2}, "a", ttl_s=60) for key in KEYS), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert errors == ["save"] * len(KEYS)
    redis_server.start()
    await redis.save(KEYS[0], {"turn": 3}, "a", ttl_s=60)  # the writer carries on
    assert await redis.load(KEYS[0]) == ({"turn": 3}, "a")


async def test_a_write_whose_waiter_was_cancelled_is_still_made(
    store: tuple[RedisStore, list[str]],
) -> None:
    redis, _ = store
    first = asyncio.create_task(redis.save(KEYS[0], {"turn": 1}, "a", ttl_s=60))
    queued = asyncio.create_task(redis.save(KEYS[1], {"turn": 1}, "a", ttl_s=60))
    await asyncio.sleep(0)
    queued.cancel()  # e.g. VAIC hung up mid-turn
    await first
    await redis._writes.close()
    assert await redis.load(KEYS[1]) == ({"turn": 1}, "a")
