"""DeadlineTimer: fires once at the armed deadline, re-arms, disarms."""

from __future__ import annotations

import asyncio

from bridge.timer import DeadlineTimer


async def test_fires_at_the_latest_armed_deadline_only() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    timer = DeadlineTimer(loop, lambda: fired.append(loop.time()))
    timer.arm(loop.time() + 10)
    timer.arm(loop.time() + 0.01)  # re-armed earlier: the first deadline is gone
    await asyncio.sleep(0.05)
    assert len(fired) == 1
    timer.arm(loop.time() + 0.01)
    timer.arm(None)
    await asyncio.sleep(0.05)
    assert len(fired) == 1


async def test_same_deadline_is_not_rescheduled_and_cancel_stops_it() -> None:
    loop = asyncio.get_running_loop()
    fired: list[int] = []
    timer = DeadlineTimer(loop, lambda: fired.append(1))
    at = loop.time() + 0.01
    timer.arm(at)
    timer.arm(at)
    await asyncio.sleep(0.05)
    assert fired == [1]
    timer.arm(loop.time() + 0.01)
    timer.cancel()
    await asyncio.sleep(0.05)
    assert fired == [1]
