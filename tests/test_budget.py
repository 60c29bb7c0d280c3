"""The core budget: busy share per window, admission, and which shadows are shed."""

from __future__ import annotations

import asyncio

import pytest

from bridge.budget import CoreBudget, watch


class Shadow:
    def __init__(self, name: str) -> None:
        self.name = name
        self.shed_count = 0

    def shed(self) -> None:
        self.shed_count += 1

    def __repr__(self) -> str:
        return self.name


def budget_at(busy: float) -> CoreBudget:
    """A budget whose last window was `busy` busy (one second of wall time)."""
    budget = CoreBudget()
    budget.observe(10.0, 5.0)
    budget.observe(11.0, 5.0 + busy)
    return budget


def test_busy_is_cpu_time_over_wall_time_of_the_window() -> None:
    budget = CoreBudget()
    assert budget.observe(100.0, 20.0) == []  # the first reading only opens a window
    assert budget.busy == 0.0
    budget.observe(100.5, 20.4)
    assert budget.busy == pytest.approx(0.8)
    budget.observe(101.5, 20.6)
    assert budget.busy == pytest.approx(0.2)


def test_a_clock_that_did_not_move_changes_nothing() -> None:
    budget = budget_at(0.6)
    assert budget.observe(11.0, 9.0) == []
    assert budget.busy == pytest.approx(0.6)


def test_admission_is_by_the_route_limit() -> None:
    budget = budget_at(0.8)  # the window closed at wall 11.0, CPU 5.8
    assert budget.admits(None, 11.1, 5.9)  # no limit: always
    assert budget.admits(0.9, 11.1, 5.9)
    assert budget.admits(0.8, 11.1, 5.9)
    assert not budget.admits(0.75, 11.1, 5.9)


def test_admission_reads_the_window_under_way_once_it_is_long_enough() -> None:
    budget = budget_at(0.9)  # a burst just ended: the last whole window was 90 % busy
    assert not budget.admits(0.5, 11.1, 5.9)  # 0.1 s into the next: too short to tell
    assert budget.admits(0.5, 11.3, 5.92)  # 0.3 s of 10 %: idle again, the call gets a shadow
    assert not budget.admits(0.5, 11.3, 6.1)  # 0.3 s of 100 %: still busy


def test_the_excess_share_of_shadows_is_shed_newest_first() -> None:
    budget = CoreBudget()
    shadows = [Shadow(f"s{i}") for i in range(8)]
    for shadow in shadows:
        budget.add(shadow, 0.72)
    budget.observe(0.0, 0.0)
    shed = budget.observe(1.0, 0.9)  # busy 0.9 over a 0.72 limit: two fifths of them
    assert shed == shadows[-4:]  # 3.2, rounded up
    assert len(budget) == 4
    # saturated: how far demand is over cannot be seen, at least half of what is left goes
    assert budget.observe(2.0, 1.85) == shadows[2:4]  # busy 0.95: 48 %, so half
    assert len(budget) == 2


def test_at_least_one_goes_and_none_under_the_limit() -> None:
    budget = CoreBudget()
    first, second = Shadow("a"), Shadow("b")
    budget.add(first, 0.5)
    budget.add(second, 0.5)
    budget.observe(0.0, 0.0)
    assert budget.observe(1.0, 0.5) == []  # at the limit is within it
    assert budget.observe(2.0, 1.01) == [second]


def test_each_limit_sheds_its_own_share_and_unlimited_shadows_are_not_tracked() -> None:
    budget = CoreBudget()
    strict = [Shadow(f"strict{i}") for i in range(4)]
    lenient = [Shadow(f"lenient{i}") for i in range(4)]
    for a, b in zip(strict, lenient, strict=True):
        budget.add(a, 0.5)
        budget.add(b, 0.95)
    budget.add(Shadow("unlimited"), None)
    assert len(budget) == 8
    budget.observe(0.0, 0.0)
    shed = budget.observe(1.0, 0.7)  # over 0.5 (0.2 of 0.35 for shadows → 3 of 4), not 0.95
    assert shed == strict[-3:]


def test_discarded_shadows_are_never_shed() -> None:
    budget = CoreBudget()
    gone, kept = Shadow("gone"), Shadow("kept")
    budget.add(kept, 0.1)
    budget.add(gone, 0.1)
    budget.discard(gone)
    budget.discard(gone)  # twice is harmless
    budget.observe(0.0, 0.0)
    assert budget.observe(1.0, 1.0) == [kept]


async def test_watch_sheds_on_its_window() -> None:
    cpu = [0.0]

    def busy_cpu() -> float:
        cpu[0] += 0.05  # every reading: 50 ms more CPU than the last
        return cpu[0]

    budget = CoreBudget(window_s=0.01, cpu=busy_cpu)
    shadow = Shadow("s")
    budget.add(shadow, 0.1)
    task = asyncio.create_task(watch(budget))
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if shadow.shed_count:
                break
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert shadow.shed_count == 1
    assert budget.busy > 0.1
    assert len(budget) == 0
