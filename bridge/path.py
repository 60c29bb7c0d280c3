"""What a call path is: the interface between a call and the upstream that serves it.

A path (`legacy` pass-through or `voicegateway` translated) takes the caller's activities and
reports AudioCodes activities back to a `PathSink`: the call itself when the path is primary,
the shadow runner when it is mirrored. Paths never talk to VAIC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bridge.config import Route
from bridge.metrics import Metrics
from bridge.numbers import NumberInfo

PathName = Literal["legacy", "voicegateway"]
Role = Literal["primary", "shadow"]
TURN_ENDING_VERBS = frozenset({"gather", "hangup", "sip:decline", "dial", "sip:refer"})


class PathStartError(Exception):
    """The path could not start the call; `kind` is a bounded metric label."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What every path of one call knows about it."""

    route_name: str
    route: Route
    conversation_id: str
    call_sid: str
    number: NumberInfo
    role: Role
    metrics: Metrics


class PathSink(Protocol):
    """Where a path reports to (all methods are cheap and synchronous except `settle`)."""

    def emit(self, outputs: Sequence[dict[str, object]], *, turn_ending: bool = False) -> None:
        """AudioCodes activities, stamped, in the order the flow produced them."""

    def set_busy(self, busy: bool) -> None:
        """Whether the upstream is still working on the last input."""

    def fail(self, reason: str) -> None:
        """The upstream cannot go on: the call must end cleanly."""

    async def settle(self) -> None:
        """Deliver whatever is complete now (called after every change)."""


class CallPath(Protocol):
    """One upstream serving (or shadowing) a call."""

    name: PathName

    async def start(self, activities: Sequence[dict[str, Any]]) -> None:
        """The first turn: `activities[0]` is the `start` event. Raises PathStartError."""

    async def forward(self, activities: Sequence[dict[str, Any]]) -> None:
        """A later turn's caller activities (de-duplicated, in order)."""

    async def end(self, reason_code: str | None, reason: str | None) -> None:
        """The caller ended the call."""

    async def close(self) -> None:
        """Release sockets and tasks."""

    def snapshot(self) -> dict[str, Any] | None:
        """JSON-ready state another instance can `resume` from; None: nothing to go on with."""

    async def detach(self) -> None:
        """Let go of the upstream without ending the call there (another instance resumes it)."""

    async def resume(self, data: dict[str, Any]) -> None:
        """Go on with a call another instance started, from its `snapshot`. Raises
        PathStartError."""
