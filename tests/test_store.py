"""bridge/store.py: the same contract from the in-memory store and from a real redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.sim.redis_server import RedisServer
from bridge.store import CallKey, CallStore, InstanceInfo, MemoryStore, RedisStore, StoreUnavailable

KEY = CallKey("support", "conv-1")
STATE: dict[str, Any] = {"turn": 3, "seen": ["a1", "a2"], "vg": {"call_sid": "x", "stack": []}}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CallStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis = RedisStore(server.url)
    yield redis
    await redis.close()


def _info(instance_id: str, calls: int = 0) -> InstanceInfo:
    return InstanceInfo(instance_id, f"http://127.0.0.1:1/{instance_id}", calls, 1.5)


async def test_save_load_delete_round_trip(store: CallStore) -> None:
    assert await store.load(KEY) is None
    await store.save(KEY, STATE, "a", ttl_s=60)
    assert await store.load(KEY) == (STATE, "a")
    loaded = await store.load(KEY)
    assert loaded is not None
    loaded[0]["turn"] = 99  # what a caller gets is its own copy
    assert await store.load(KEY) == (STATE, "a")
    await store.delete(KEY)
    assert await store.load(KEY) is None


async def test_claim_follows_the_owners_lease(store: CallStore) -> None:
    assert (await store.claim(KEY, "b")).outcome == "unknown"
    await store.save(KEY, STATE, "a", ttl_s=60)
    await store.heartbeat(_info("a", calls=1), lease_s=30)
    assert (await store.claim(KEY, "a")).outcome == "mine"
    owned = await store.claim(KEY, "b")
    assert owned.outcome == "owned"
    assert owned.owner == _info("a", calls=1)  # where to forward
    await store.leave("a")  # a's lease is gone: b takes the call over
    taken = await store.claim(KEY, "b")
    assert (taken.outcome, taken.previous) == ("claimed", "a")
    assert await store.load(KEY) == (STATE, "b")
    assert (await store.claim(KEY, "b")).outcome == "mine"


async def test_release_hands_the_call_to_whoever_asks_next(store: CallStore) -> None:
    await store.save(KEY, STATE, "a", ttl_s=60)
    await store.heartbeat(_info("a"), lease_s=30)
    assert not await store.release(KEY, "b")  # only the owner releases
    assert await store.release(KEY, "a")
    assert await store.load(KEY) == (STATE, "")
    taken = await store.claim(KEY, "c")
    assert (taken.outcome, taken.previous) == ("claimed", None)


async def test_instances_lists_the_live_ones(store: CallStore) -> None:
    await store.heartbeat(_info("b", 2), lease_s=30)
    await store.heartbeat(_info("a", 5), lease_s=30)
    assert await store.instances() == [_info("a", 5), _info("b", 2)]
    await store.leave("a")
    assert [i.id for i in await store.instances()] == ["b"]
    assert await store.ping()
    draining = dataclasses.replace(_info("b", 2), draining=True)
    await store.heartbeat(draining, lease_s=30)
    assert await store.instances() == [draining]  # announced, so peers send it nothing


async def test_heartbeat_says_whether_the_lease_was_still_there(store: CallStore) -> None:
    assert not await store.heartbeat(_info("a"), lease_s=30)  # the first announcement
    assert await store.heartbeat(_info("a"), lease_s=30)
    await store.leave("a")  # as a store restarted empty would have it
    assert not await store.heartbeat(_info("a"), lease_s=30)


async def test_save_if_ours_never_takes_a_call_back(store: CallStore) -> None:
    assert await store.save_if_ours(KEY, STATE, "a", ttl_s=60)  # no record: written
    assert await store.save_if_ours(KEY, STATE, "a", ttl_s=60)  # ours: written
    await store.save(KEY, STATE, "", ttl_s=60)
    assert await store.save_if_ours(KEY, {"turn": 9}, "a", ttl_s=60)  # released: ours again
    await store.save(KEY, STATE, "b", ttl_s=60)  # b took it over meanwhile
    assert not await store.save_if_ours(KEY, {"turn": 10}, "a", ttl_s=60)
    assert await store.load(KEY) == (STATE, "b")


async def test_memory_store_leases_and_records_expire() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    await store.save(KEY, STATE, "a", ttl_s=60)
    await store.heartbeat(_info("a"), lease_s=10)
    assert (await store.claim(KEY, "b")).outcome == "owned"
    clock.now += 10
    assert await store.instances() == []
    assert (await store.claim(KEY, "b")).outcome == "claimed"
    clock.now += 60
    assert await store.load(KEY) is None


async def test_redis_leases_expire_in_real_time(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    try:
        await store.save(KEY, STATE, "a", ttl_s=60)
        await store.heartbeat(_info("a"), lease_s=0.2)
        assert (await store.claim(KEY, "b")).outcome == "owned"
        await asyncio.sleep(0.3)
        assert (await store.claim(KEY, "b")).outcome == "claimed"
        await store.save(KEY, STATE, "b", ttl_s=0.2)
        await asyncio.sleep(0.3)
        assert await store.load(KEY) is None
    finally:
        await store.close()


async def test_concurrent_claims_of_an_orphan_give_it_to_one(redis_server: RedisServer) -> None:
    stores = [RedisStore(redis_server.url) for _ in range(5)]
    try:
        await stores[0].save(KEY, STATE, "dead", ttl_s=60)
        for n, s in enumerate(stores):  # every claimer is a live instance
            await s.heartbeat(_info(f"i{n}"), lease_s=30)
        results = await asyncio.gather(*(s.claim(KEY, f"i{n}") for n, s in enumerate(stores)))
        claimed = [f"i{n}" for n, r in enumerate(results) if r.outcome == "claimed"]
        assert len(claimed) == 1
        assert {r.owner.id for r in results if r.owner is not None} == set(claimed)
        assert await stores[0].load(KEY) == (STATE, claimed[0])
    finally:
        for s in stores:
            await s.close()


async def test_redis_down_raises_store_unavailable_and_counts(redis_server: RedisServer) -> None:
    errors: list[str] = []
    store = RedisStore(redis_server.url, on_error=errors.append, timeout_s=0.5)
    try:
        await store.save(KEY, STATE, "a", ttl_s=60)
        redis_server.stop()
        assert not await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.save(KEY, STATE, "a", ttl_s=60)
        with pytest.raises(StoreUnavailable):
            await store.claim(KEY, "b")
        assert errors == ["save", "claim"]
        redis_server.start()  # an empty Redis on the same port: the client reconnects
        assert await store.ping()
        assert await store.load(KEY) is None
    finally:
        await store.close()
