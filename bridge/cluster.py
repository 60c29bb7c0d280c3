"""This instance's membership of a fleet: its identity, its lease, and the store it shares.

Without `cluster.redis_url` the fleet is this one instance on a `MemoryStore`, and nothing here
does I/O. With it, a heartbeat keeps this instance's lease alive in Redis (every third of
`lease_s`) and `status()` answers `GET /admin/cluster` (design §2.5). While Redis is down the
heartbeat goes on trying, the store reads `down`, and calls carry on from local state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.config import ClusterSettings
from bridge.control import ControlPlane
from bridge.metrics import Metrics
from bridge.store import CallStore, InstanceInfo, MemoryStore, RedisStore, StoreUnavailable

log = logging.getLogger("bridge.cluster")


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Cluster:
    """Identity, store and lease of this instance."""

    def __init__(
        self,
        settings: ClusterSettings,
        metrics: Metrics,
        *,
        calls: Callable[[], int],
        store: CallStore | None = None,
        listen_url: str = "",
    ) -> None:
        self.settings = settings
        self.instance_id = settings.instance_id or default_instance_id()
        self.advertise_url = settings.advertise_url or listen_url
        self.lease_s = settings.lease_s
        self._metrics = metrics
        self._calls = calls
        self.store_up = True
        self.draining = False  # announced with every heartbeat once set
        # Called when the store is back after being down or losing this instance's data
        # (restarted empty): the gateway writes its calls' records again.
        self.on_store_back: Callable[[], None] | None = None
        self._announced = False
        # The other live instances taking calls, as of the last heartbeat that reached the store
        # (while it is down: whom to ask for a call this instance does not hold).
        self.peers: list[InstanceInfo] = []
        self._back_at = -float("inf")  # monotonic time the store was last seen back
        # The peers seen before the store came back (maybe empty): while it settles, they may
        # hold calls the store does not know yet, even if they have not heartbeated again.
        self._peers_before: list[InstanceInfo] = []
        # After each heartbeat that reached the store (the gateway's created conversations).
        self.on_beat: Callable[[], Awaitable[None]] | None = None
        if store is None:
            if settings.redis_url is None:
                store = MemoryStore()
            else:
                store = RedisStore(settings.redis_url, on_error=self._store_error)
        self.store = store
        self.control = (
            ControlPlane(store.client, self.instance_id, self._store_error)
            if isinstance(store, RedisStore)
            else None
        )
        metrics.cluster_instances.set(1)  # itself, until the store says more

    @property
    def shared(self) -> bool:
        return self.store.shared

    def _store_error(self, op: str) -> None:
        self._metrics.child(self._metrics.store_errors, op).inc()
        if self.store_up:
            log.warning("state store unreachable (%s); calls continue from local state", op)
        self.store_up = False

    def info(self) -> InstanceInfo:
        return InstanceInfo(
            self.instance_id, self.advertise_url, self._calls(), time.time(), self.draining
        )

    async def beat(self) -> None:
        """One heartbeat; marks the store up again when it answers."""
        try:
            present = await self.store.heartbeat(self.info(), self.lease_s)
            live = await self.store.instances()
        except StoreUnavailable:
            return
        self._metrics.cluster_instances.set(max(1, len(live)))
        lost = self._announced and not present
        if (not self.store_up or lost) and self.shared:
            self._peers_before = list(self.peers)
        peers = [i for i in live if i.id != self.instance_id and not i.draining]
        if peers or not (lost or not self.store_up):
            # a store that just came back empty lists nobody yet: keep asking the last seen
            self.peers = peers
        if not self.store_up:
            log.info("state store reachable again")
        elif lost:
            log.warning("the state store lost this instance's lease (restarted or evicted)")
        back = (not self.store_up or lost) and self.shared
        self.store_up = True
        self._announced = True
        if back:
            self._back_at = time.monotonic()
            if self.on_store_back is not None:
                self.on_store_back()

    async def check_lease(self) -> None:
        """A call the store does not know: if this instance's own lease is gone too, the store
        lost its data (restarted empty) before the next heartbeat could tell; act on it now."""
        if not self.shared or self.store_settling():
            return
        try:
            present = await self.store.has_lease(self.instance_id)
        except StoreUnavailable:
            return
        if not present:
            await self.beat()

    def store_settling(self) -> bool:
        """Whether the store may not know every live call yet: down, or back (maybe empty)
        for less than two heartbeats of every instance (each writes its records again)."""
        return self.shared and (
            not self.store_up or time.monotonic() - self._back_at < 2 * self.lease_s
        )

    def peers_to_ask(self) -> list[InstanceInfo]:
        """Whom to ask for a call the store does not know: the live peers, and while the store
        settles also those seen before it came back."""
        if not self.store_settling():
            return self.peers
        known = {p.id for p in self.peers}
        return self.peers + [p for p in self._peers_before if p.id not in known]

    async def run(self) -> None:
        """Heartbeat until cancelled."""
        while True:
            await self.beat()
            if self.on_beat is not None and self.store_up:
                try:
                    await self.on_beat()
                except StoreUnavailable:
                    pass
                except Exception:  # the heartbeat must go on whatever the hook does
                    log.exception("after-heartbeat work failed")
            await asyncio.sleep(self.lease_s / 3)

    async def leave(self) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.store.leave(self.instance_id)

    async def status(self) -> dict[str, Any]:
        """`GET /admin/cluster`: the store's state and the live instances (this one first seen
        from local figures when the store is down)."""
        up = await self.store.ping()
        instances: list[InstanceInfo] = []
        if up:
            with contextlib.suppress(StoreUnavailable):
                instances = await self.store.instances()
        if not self.shared or not up:
            instances = [i for i in instances if i.id != self.instance_id] + [self.info()]
        self._metrics.cluster_instances.set(len(instances))
        return {
            "store": "ok" if up else "down",
            "instance_id": self.instance_id,
            "instances": [i.as_json() for i in sorted(instances, key=lambda i: i.id)],
        }

    async def close(self) -> None:
        await self.store.close()
