"""Conversations this instance created whose first turn nobody has served yet.

With a shared store a create only writes the conversation's record; the instance that gets its
first turn adopts it (bridge/handoff.py). Until then the record is the conversation's only copy,
so a Redis restarted empty in between would lose it. The creating instance keeps each one here
until it sees the record adopted (checked at every heartbeat), adopts it itself, or it expires:
when the store is back it writes the missing ones again, and while the store is down or settling
a request for one that no peer holds is served from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge import handoff
from bridge.audiocodes.conversation import Conversation
from bridge.config import Route
from bridge.store import CallKey, CallStore, StoreUnavailable

__all__ = ["CreatedCalls"]


@dataclass(frozen=True, slots=True)
class _Created:
    route_name: str
    route: Route
    conversation: Conversation


class CreatedCalls:
    """The not-yet-served conversations this instance created (module doc)."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], _Created] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, route_name: str, route: Route, conversation: Conversation) -> None:
        key = (route_name, conversation.conversation_id)
        self._waiting[key] = _Created(route_name, route, conversation)

    def take(self, route_name: str, conversation_id: str, now: float) -> Conversation | None:
        """The conversation, to be served here now; None if it is not (or no longer) here."""
        found = self._waiting.pop((route_name, conversation_id), None)
        if found is None or found.conversation.expired(now):
            return None
        return found.conversation

    def drop(self, route_name: str, conversation_id: str) -> None:
        self._waiting.pop((route_name, conversation_id), None)

    async def check(self, store: CallStore, now: float) -> int:
        """At a heartbeat: forget the expired ones and those another instance adopted, write
        again the records the store lost; returns how many were written again."""
        written = 0
        for key, created in list(self._waiting.items()):
            if created.conversation.expired(now):
                self._waiting.pop(key, None)
                continue
            call_key = CallKey(*key)
            try:
                found = await store.load(call_key)
                if key not in self._waiting:
                    continue  # served here (or dropped) while the store was asked
                if found is None:  # lost with the store's data: a create writes it again
                    record = handoff.record(created.route_name, created.conversation, "created")
                    await store.save(call_key, record, "", handoff.record_ttl_s(created.route))
                    written += 1
                elif found[1] or found[0].get("phase") != "created":
                    # adopted: its record is its owner's now (it may have gone from here
                    # meanwhile: taken or dropped while the store was asked)
                    self._waiting.pop(key, None)
            except StoreUnavailable:
                return written  # nothing to decide while the store cannot be asked
        return written
