"""Pick the path (legacy or voicegateway) of one call at its start (design §3.6).

Pure: no I/O, no clocks, no randomness. Order: a single upstream, then `migration.force`, then the
first matching rule, then the sticky percentage. The percentage bucket is a keyed hash that is the
same in every process, so a caller keeps its path across restarts and bridge instances.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from bridge.config import MatchRule, Route

__all__ = ["BUCKETS", "Decision", "PathName", "Reason", "bucket", "decide", "fallback_decision"]

PathName = Literal["legacy", "voicegateway"]
Reason = Literal["single", "forced", "rule", "percent", "fallback"]

BUCKETS = 10_000

# Caller ids that name no one: hashing them would pin every anonymous caller to one bucket.
_ANONYMOUS = frozenset({"anonymous", "restricted", "unavailable", "unknown", "private", "withheld"})


@dataclass(frozen=True)
class Decision:
    """The path of one call and why; `reason` is the label of `acvg_routing_decisions_total`."""

    path: PathName
    reason: Reason


def fallback_decision() -> Decision:
    """The decision once the voicegateway path could not start a call and legacy serves it.

    The caller checks that the route has a legacy upstream (`route.legacy is not None`).
    """
    return Decision(path="legacy", reason="fallback")


def bucket(route_name: str, key: str) -> int:
    """The stable bucket of `key` on `route_name`, in [0, BUCKETS).

    blake2b, not `hash()`: Python salts `hash()` per process.
    """
    digest = hashlib.blake2b(
        key.encode("utf-8"), digest_size=8, key=route_name.encode("utf-8")[:64]
    ).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def decide(
    route_name: str,
    route: Route,
    *,
    caller: str | None,
    callee: str | None,
    conversation_id: str,
    caller_country: str | None,
    caller_e164: str | None,
    callee_e164: str | None = None,
) -> Decision:
    """The path of a call starting on `route_name`.

    `caller_country` is ISO alpha-2 (from `number_metadata`); prefixes are compared against the
    E.164 form when known, else the raw number. The sticky key for the percentage is the caller
    (E.164 when known), the callee or the conversation id, per `migration.sticky_key`; a missing
    or anonymous key falls back to the conversation id.
    """
    single = route.single_path
    if single is not None:
        return Decision(path=single, reason="single")
    migration = route.migration
    if migration.force is not None:
        return Decision(path=migration.force, reason="forced")
    caller_number = caller_e164 or caller
    callee_number = callee_e164 or callee
    for rule in migration.rules:
        if _matches(rule.match, caller_country, caller_number, callee_number):
            return Decision(path=rule.path, reason="rule")
    key = {"caller": caller_number, "callee": callee_number, "conversation": conversation_id}[
        migration.sticky_key
    ]
    if not _usable_key(key):
        key = conversation_id
    threshold = round(migration.voicegateway_percent * 100)
    path: PathName = "voicegateway" if bucket(route_name, key or "") < threshold else "legacy"
    return Decision(path=path, reason="percent")


def _matches(match: MatchRule, country: str | None, caller: str | None, callee: str | None) -> bool:
    """Every key the rule sets must hold; a rule that sets none matches every call."""
    if match.caller_country is not None and (
        country is None or country.upper() not in {c.upper() for c in match.caller_country}
    ):
        return False
    if match.caller_prefix is not None and not _has_prefix(caller, match.caller_prefix):
        return False
    return match.callee_prefix is None or _has_prefix(callee, match.callee_prefix)


def _has_prefix(number: str | None, prefixes: list[str]) -> bool:
    if not number:
        return False
    return any(prefix and number.startswith(prefix) for prefix in prefixes)


def _usable_key(key: str | None) -> bool:
    if key is None:
        return False
    text = key.strip()
    return bool(text) and text.lower() not in _ANONYMOUS
