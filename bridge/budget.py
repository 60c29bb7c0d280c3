"""The core budget: how busy the bridge's core is, and which shadows give way when it is too busy.

A shadow is a whole second call, so it roughly doubles what a call costs the core. A route
with `migration.shadow_max_cpu` set starts no shadow while the core's busy share (CPU time over
wall time in the current window, or the last one while the current is young) is above that
share, and each window it stays above, part of the route's running shadows are shed, newest
first, so the primaries get the core back within a few windows. Shed shadows are counted; the
comparisons they would have made are simply not made.

`CoreBudget` is sans-I/O: `observe` takes the clocks' readings and returns the shadows to shed;
`watch` is the small task that feeds it from the process's clocks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Protocol

DEFAULT_WINDOW_S = 1.0
# Admission reads the window under way once it is this long: after a burst ends, the last whole
# window still says busy while the core is idle again, and calls starting then (all of them, when
# callers arrive together) would go without a shadow for their whole length.
FRESH_S = 0.2
SATURATED = 0.95
# What a shadow costs of its shadowed call's CPU: a whole second call (bench: x1.9-2.4).
SHADOW_SHARE = 0.5


class Sheddable(Protocol):
    def shed(self) -> None:
        """Stop mirroring now; count it and release the shadow's upstream."""


class CoreBudget:
    """The busy share of the last window, and the running shadows that may be shed.

    `window_s` and `cpu` (the process's CPU clock) are what `watch` reads; tests pass their own.
    """

    def __init__(
        self, window_s: float = DEFAULT_WINDOW_S, cpu: Callable[[], float] = time.process_time
    ) -> None:
        self.window_s = window_s
        self.cpu = cpu
        self.busy = 0.0
        self._last: tuple[float, float] | None = None
        # insertion-ordered: the newest shadows are shed first (the least comparison lost)
        self._running: dict[Sheddable, float] = {}

    def admits(self, limit: float | None, wall_s: float, cpu_s: float) -> bool:
        """Whether a shadow under `limit` (None: no limit) may start at these clock readings:
        by the window under way when it is FRESH_S long, else by the last whole one."""
        if limit is None:
            return True
        busy = self.busy
        if self._last is not None and wall_s - self._last[0] >= FRESH_S:
            busy = max(0.0, cpu_s - self._last[1]) / (wall_s - self._last[0])
        return busy <= limit

    def add(self, shadow: Sheddable, limit: float | None) -> None:
        if limit is not None:
            self._running[shadow] = limit

    def discard(self, shadow: Sheddable) -> None:
        self._running.pop(shadow, None)

    def __len__(self) -> int:
        return len(self._running)

    def observe(self, wall_s: float, cpu_s: float) -> list[Sheddable]:
        """Close a window at these clock readings; the shadows to shed for it (already removed).

        Of the shadows under each limit the window's busy share exceeds, enough go to bring
        the core back under it, at least one. A shadow is about half of what its call costs
        (SHADOW_SHARE), so the share that goes is twice the excess share: e.g. two fifths of
        them at busy 0.9 under a limit of 0.72. A saturated core (busy from SATURATED up) hides
        how far demand is over, so then at least half of them go.
        """
        last, self._last = self._last, (wall_s, cpu_s)
        if last is None or wall_s <= last[0]:
            return []
        self.busy = busy = max(0.0, cpu_s - last[1]) / (wall_s - last[0])
        by_limit: dict[float, list[Sheddable]] = {}
        for shadow, limit in self._running.items():
            if limit < busy:
                by_limit.setdefault(limit, []).append(shadow)
        shed: list[Sheddable] = []
        for limit, shadows in by_limit.items():
            share = min(1.0, (busy - limit) / (busy * SHADOW_SHARE))
            if busy >= SATURATED:
                share = max(share, 0.5)
            count = max(1, math.ceil(len(shadows) * share))
            shed.extend(shadows[-count:])
        for shadow in shed:
            del self._running[shadow]
        return shed


async def watch(budget: CoreBudget) -> None:
    """Feed `budget` one window at a time, shedding what it says, until cancelled."""
    loop = asyncio.get_running_loop()
    budget.observe(loop.time(), budget.cpu())
    while True:
        await asyncio.sleep(budget.window_s)
        for shadow in budget.observe(loop.time(), budget.cpu()):
            shadow.shed()
