"""Where the state a call needs to continue on another instance lives: one interface, two stores.

`MemoryStore` is the single-instance default (nothing leaves the process). `RedisStore` shares
state between instances through Redis (`cluster.redis_url`, design §2.5).

What is stored, per call (`CallKey` = route + conversation id), as one Redis hash:
- `state`: the call's snapshot at its last turn boundary, a JSON object the session builds;
- `owner`: the id of the instance serving the call ("" once released by a handoff).
Per instance, `acvg:instance:<id>`: its advertise URL and call count, with a time-to-live of
`lease_s`, refreshed by `heartbeat`. An instance whose key has expired is presumed dead, and its
calls may be claimed by any instance: ownership is one lease per instance covering all its
calls, so a turn never pays for renewing a lease, only for writing its snapshot.

Every Redis operation that fails raises `StoreUnavailable` after counting the failure on
`on_error(op)`; callers continue from their local state (a call in flight does not need Redis).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from bridge import jsontext
from bridge.groupcommit import GroupCommit

Claim = Literal["claimed", "mine", "owned", "unknown"]
PREFIX = "acvg"


class StoreUnavailable(Exception):
    """The shared store could not be reached; the operation did not happen."""


@dataclass(frozen=True, slots=True)
class CallKey:
    route: str
    conversation_id: str

    def redis_key(self) -> str:
        return f"{PREFIX}:call:{self.route}:{self.conversation_id}"


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    id: str
    advertise_url: str
    calls: int
    last_seen: float  # wall-clock seconds (time.time) of the last heartbeat
    draining: bool = False  # handing its calls off: serves none, takes none on

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "advertise_url": self.advertise_url,
            "calls": self.calls,
            "last_seen": self.last_seen,
            "draining": self.draining,
        }


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What `claim` found: `claimed` (it was unowned or its owner dead, now ours; `previous`
    names the owner it had), `mine` (already ours), `owned` (a live peer has it: forward to
    `owner`), `unknown` (no such call in the store)."""

    outcome: Claim
    owner: InstanceInfo | None = None
    previous: str | None = None


class CallStore(Protocol):
    """The operations a gateway needs from its state store."""

    @property
    def shared(self) -> bool:
        """Whether other instances see this store (False: in-memory, single instance)."""
        ...

    async def save(self, key: CallKey, state: Mapping[str, Any], owner: str, ttl_s: float) -> None:
        """Write a call's snapshot and owner; the record expires after `ttl_s` untouched."""
        ...

    async def load(self, key: CallKey) -> tuple[dict[str, Any], str] | None:
        """A call's snapshot and owner ("" when released), or None."""
        ...

    async def delete(self, key: CallKey) -> None: ...

    async def claim(self, key: CallKey, instance_id: str) -> ClaimResult:
        """Take ownership of a call that is unowned or whose owner is dead, atomically."""
        ...

    async def release(self, key: CallKey, instance_id: str) -> bool:
        """Give up ownership (handoff) if we hold it; the snapshot stays for the next owner."""
        ...

    async def heartbeat(self, info: InstanceInfo, lease_s: float) -> bool:
        """Announce this instance alive for `lease_s` more seconds; False when its previous
        announcement was gone (first beat, a lapsed lease, or a store that lost its data)."""
        ...

    async def save_if_ours(
        self, key: CallKey, state: Mapping[str, Any], owner: str, ttl_s: float
    ) -> bool:
        """`save`, unless another instance owns the call now (it took it over): False then."""
        ...

    async def has_lease(self, instance_id: str) -> bool:
        """Whether the store still holds `instance_id`'s lease."""
        ...

    async def leave(self, instance_id: str) -> None:
        """Withdraw this instance's heartbeat at once (its calls are claimable)."""
        ...

    async def instances(self) -> list[InstanceInfo]:
        """The live instances, by id."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers (never raises)."""
        ...

    async def close(self) -> None: ...


class MemoryStore:
    """The single-instance store: plain dicts, no time-to-live bookkeeping beyond expiry on read.

    Time comes from `clock` (wall seconds) so tests can move it."""

    shared = False

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._calls: dict[CallKey, tuple[dict[str, Any], str, float]] = {}
        self._instances: dict[str, tuple[InstanceInfo, float]] = {}

    def _alive(self, instance_id: str) -> InstanceInfo | None:
        found = self._instances.get(instance_id)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    def _live_call(self, key: CallKey) -> tuple[dict[str, Any], str, float] | None:
        found = self._calls.get(key)
        if found is not None and found[2] <= self._clock():
            del self._calls[key]
            return None
        return found

    async def save(self, key: CallKey, state: Mapping[str, Any], owner: str, ttl_s: float) -> None:
        # a JSON round trip, as Redis would do: what is stored never aliases live state
        self._calls[key] = (jsontext.loads(jsontext.dumps(state)), owner, self._clock() + ttl_s)

    async def load(self, key: CallKey) -> tuple[dict[str, Any], str] | None:
        found = self._live_call(key)
        return None if found is None else (jsontext.loads(jsontext.dumps(found[0])), found[1])

    async def delete(self, key: CallKey) -> None:
        self._calls.pop(key, None)

    async def claim(self, key: CallKey, instance_id: str) -> ClaimResult:
        found = self._live_call(key)
        if found is None:
            return ClaimResult("unknown")
        state, owner, expires = found
        if owner == instance_id:
            return ClaimResult("mine")
        live = self._alive(owner) if owner else None
        if live is not None:
            return ClaimResult("owned", owner=live)
        self._calls[key] = (state, instance_id, expires)
        return ClaimResult("claimed", previous=owner or None)

    async def release(self, key: CallKey, instance_id: str) -> bool:
        found = self._live_call(key)
        if found is None or found[1] != instance_id:
            return False
        self._calls[key] = (found[0], "", found[2])
        return True

    async def heartbeat(self, info: InstanceInfo, lease_s: float) -> bool:
        present = self._alive(info.id) is not None
        self._instances[info.id] = (info, self._clock() + lease_s)
        return present

    async def save_if_ours(
        self, key: CallKey, state: Mapping[str, Any], owner: str, ttl_s: float
    ) -> bool:
        found = self._live_call(key)
        if found is not None and found[1] not in ("", owner):
            return False
        await self.save(key, state, owner, ttl_s)
        return True

    async def leave(self, instance_id: str) -> None:
        self._instances.pop(instance_id, None)

    async def has_lease(self, instance_id: str) -> bool:
        return self._alive(instance_id) is not None

    async def instances(self) -> list[InstanceInfo]:
        live = [self._alive(i) for i in sorted(self._instances)]
        return [info for info in live if info is not None]

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# KEYS[1] = the call's hash, ARGV[1] = the claimer, ARGV[2] = the instance key prefix.
# Atomic: two instances claiming the same orphaned call at once get one "claimed", one "owned".
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown', ''} end
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
if owner == ARGV[1] then return {'mine', owner} end
if owner ~= '' and redis.call('EXISTS', ARGV[2] .. owner) == 1 then return {'owned', owner} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return {'claimed', owner}
"""

# KEYS[1] = the call's hash, ARGV = state, owner, time-to-live in ms, guard. With a guard (an
# instance id), nothing is written when another instance owns the call: 0 then (it was taken
# over meanwhile). The owner check is inside the write: no extra round trip.
_SAVE = """
if ARGV[4] ~= '' then
  local owner = redis.call('HGET', KEYS[1], 'owner')
  if owner and owner ~= '' and owner ~= ARGV[4] then return 0 end
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'owner', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1] = the call's hash, ARGV[1] = the releaser.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'owner', '')
  return 1
end
return 0
"""


class RedisStore:
    """State shared through Redis (redis.asyncio); see the module docstring for the layout."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        on_error: Callable[[str], None] = lambda op: None,
        timeout_s: float = 1.0,
        max_connections: int = 64,
    ) -> None:
        # Short timeouts and no retries: a call must not wait on a Redis that is gone (the
        # caller goes on from local state and counts the error). A bounded pool that makes a
        # burst of calls queue for a connection (up to the same timeout) instead of failing
        # with "Too many connections" as the default pool does beyond its size.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
        )
        self._redis = Redis(connection_pool=pool)
        self._on_error = on_error
        self._claim = self._redis.register_script(_CLAIM)
        self._release = self._redis.register_script(_RELEASE)
        self._writes = GroupCommit(
            self._redis,
            self._redis.register_script(_SAVE),
            lambda exc: self._failed("save", exc),
        )

    @property
    def client(self) -> Redis:
        """The connection pool, for the control plane's pub/sub (bridge/control.py)."""
        return self._redis

    def _failed(self, op: str, exc: Exception) -> StoreUnavailable:
        self._on_error(op)
        return StoreUnavailable(f"redis {op}: {type(exc).__name__}: {exc}")

    @staticmethod
    def _instance_key(instance_id: str) -> str:
        return f"{PREFIX}:instance:{instance_id}"

    async def save(self, key: CallKey, state: Mapping[str, Any], owner: str, ttl_s: float) -> None:
        # one script call (the write and its expiry in one command), batched with the other
        # calls' writes that queue meanwhile (bridge/groupcommit.py)
        ttl_ms = max(1, int(ttl_s * 1000))
        await self._writes.write(key.redis_key(), (jsontext.dumps(state), owner, ttl_ms, ""))

    async def load(self, key: CallKey) -> tuple[dict[str, Any], str] | None:
        try:
            state, owner = await self._redis.hmget(key.redis_key(), ["state", "owner"])
        except (RedisError, OSError) as exc:
            raise self._failed("load", exc) from None
        if state is None:
            return None
        decoded = jsontext.loads(state)
        if not isinstance(decoded, dict):
            return None
        return decoded, _text(owner)

    async def delete(self, key: CallKey) -> None:
        try:
            await self._redis.delete(key.redis_key())
        except (RedisError, OSError) as exc:
            raise self._failed("delete", exc) from None

    async def claim(self, key: CallKey, instance_id: str) -> ClaimResult:
        try:
            raw = await self._claim(
                keys=[key.redis_key()], args=[instance_id, self._instance_key("")]
            )
            outcome, owner = (_text(part) for part in raw)
            if outcome == "claimed":
                return ClaimResult("claimed", previous=owner or None)
            if outcome in ("mine", "unknown"):
                return ClaimResult("mine" if outcome == "mine" else "unknown")
            info = await self._instance(owner)
        except (RedisError, OSError) as exc:
            raise self._failed("claim", exc) from None
        if info is None:  # its lease ran out between the two reads: claim again
            return await self.claim(key, instance_id)
        return ClaimResult("owned", owner=info)

    async def release(self, key: CallKey, instance_id: str) -> bool:
        try:
            return bool(await self._release(keys=[key.redis_key()], args=[instance_id]))
        except (RedisError, OSError) as exc:
            raise self._failed("release", exc) from None

    async def heartbeat(self, info: InstanceInfo, lease_s: float) -> bool:
        try:
            previous = await self._redis.set(
                self._instance_key(info.id),
                jsontext.dumps(info.as_json()),
                px=max(1, int(lease_s * 1000)),
                get=True,
            )
        except (RedisError, OSError) as exc:
            raise self._failed("heartbeat", exc) from None
        return previous is not None

    async def save_if_ours(
        self, key: CallKey, state: Mapping[str, Any], owner: str, ttl_s: float
    ) -> bool:
        # batched with the other writes like `save` (the guard is the writer itself)
        ttl_ms = max(1, int(ttl_s * 1000))
        written = await self._writes.write(
            key.redis_key(), (jsontext.dumps(state), owner, ttl_ms, owner)
        )
        return bool(written)

    async def leave(self, instance_id: str) -> None:
        try:
            await self._redis.delete(self._instance_key(instance_id))
        except (RedisError, OSError) as exc:
            raise self._failed("leave", exc) from None

    async def has_lease(self, instance_id: str) -> bool:
        try:
            return bool(await self._redis.exists(self._instance_key(instance_id)))
        except (RedisError, OSError) as exc:
            raise self._failed("lease", exc) from None

    async def _instance(self, instance_id: str) -> InstanceInfo | None:
        raw = await self._redis.get(self._instance_key(instance_id))
        return None if raw is None else _instance_from(raw)

    async def instances(self) -> list[InstanceInfo]:
        try:
            keys = [k async for k in self._redis.scan_iter(match=self._instance_key("*"))]
            values = await self._redis.mget(keys) if keys else []
        except (RedisError, OSError) as exc:
            raise self._failed("instances", exc) from None
        found = [_instance_from(v) for v in values if v is not None]
        return sorted((i for i in found if i is not None), key=lambda i: i.id)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._writes.close()
        await self._redis.aclose()


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _instance_from(raw: bytes | str) -> InstanceInfo | None:
    try:
        data = jsontext.loads(raw)
        return InstanceInfo(
            id=str(data["id"]),
            advertise_url=str(data["advertise_url"]),
            calls=int(data["calls"]),
            last_seen=float(data["last_seen"]),
            draining=bool(data.get("draining", False)),
        )
    except (ValueError, KeyError, TypeError):
        return None  # not ours or from an incompatible version: ignored, never fatal
