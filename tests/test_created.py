"""The conversations an instance created and nobody served yet (bridge/created.py): kept until
adopted or expired, written again when the store lost them, served from here when asked."""

from __future__ import annotations

import asyncio

from bridge import handoff
from bridge.audiocodes.conversation import Conversation
from bridge.config import parse_config
from bridge.created import CreatedCalls
from bridge.store import CallKey, MemoryStore

ROUTE = parse_config("routes: {r: {token: t, legacy: {url: 'http://127.0.0.1:1'}}}", env={}).routes[
    "r"
]


def conversation(cid: str, now: float) -> Conversation:
    return Conversation(cid, ROUTE.expires_seconds, now)


async def test_a_lost_record_is_written_again_and_an_adopted_one_forgotten() -> None:
    store = MemoryStore()
    created = CreatedCalls()
    now = asyncio.get_running_loop().time()
    for cid in ("lost", "adopted", "waiting"):
        conv = conversation(cid, now)
        created.add("r", ROUTE, conv)
        if cid != "lost":  # the create wrote these; "lost" went with an emptied store
            await store.save(CallKey("r", cid), handoff.record("r", conv, "created"), "", 60)
    await store.claim(CallKey("r", "adopted"), "other")  # another instance took its first turn

    assert await created.check(store, now) == 1
    found = await store.load(CallKey("r", "lost"))
    assert found is not None and found[0]["phase"] == "created" and found[1] == ""
    assert len(created) == 2  # "adopted" is its owner's now
    assert created.take("r", "adopted", now) is None
    assert await created.check(store, now) == 0  # nothing lost twice


async def test_take_serves_it_once_and_expired_ones_go() -> None:
    store = MemoryStore()
    created = CreatedCalls()
    now = asyncio.get_running_loop().time()
    created.add("r", ROUTE, conversation("c", now))
    taken = created.take("r", "c", now)
    assert taken is not None and taken.conversation_id == "c"
    assert created.take("r", "c", now) is None

    created.add("r", ROUTE, conversation("old", now))
    later = now + ROUTE.expires_seconds * 10
    assert created.take("r", "old", later) is None
    created.add("r", ROUTE, conversation("old", now))
    assert await created.check(store, later) == 0 and len(created) == 0
    created.add("r", ROUTE, conversation("d", now))
    created.drop("r", "d")
    assert len(created) == 0


async def test_one_served_while_the_store_is_asked_is_neither_rewritten_nor_a_crash() -> None:
    created = CreatedCalls()
    now = asyncio.get_running_loop().time()
    created.add("r", ROUTE, conversation("busy", now))

    class Asked(MemoryStore):
        async def load(self, key: CallKey) -> tuple[dict[str, object], str] | None:
            created.take("r", "busy", now)  # a request serves it meanwhile
            return None

    store = Asked()
    assert await created.check(store, now) == 0
    assert await MemoryStore.load(store, CallKey("r", "busy")) is None
