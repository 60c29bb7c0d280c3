"""Shadow traffic for one call: the other path gets the same caller inputs, and each turn's
outputs of both paths are compared (design §3.7).

The shadow runs on its own task behind a bounded queue, so it never delays or fails the
primary: a full queue drops the shadow for this call and counts it. Under a route's
`shadow_max_cpu` the core budget (bridge/budget.py) keeps shadows from starting, and sheds
running ones, while the core is busier than that. Its outputs never reach
VAIC; hang-ups, transfers, recordings and metadata it produces are compared, not executed.
The shadow path is driven like a sync VAIC client: a turn is forwarded, its outputs are
collected by the sync-turn rules, then the next turn goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from bridge.budget import CoreBudget
from bridge.compare import compare_turn, record_metrics
from bridge.delivery import Channel, Outbox
from bridge.divergence import DivergenceLog
from bridge.mapping.loader import MappingSet
from bridge.path import CallInfo, CallPath, PathName, PathSink, PathStartError

log = logging.getLogger("bridge.shadow")
QUEUE_SIZE = 32
Outputs = tuple[dict[str, object], ...]
PathFactory = Callable[[PathName, CallInfo, PathSink], CallPath]
# Shadows finishing after their call ended: never awaited by a VAIC request, drained at shutdown.
_closing: set[asyncio.Task[None]] = set()


def close_in_background(runner: ShadowRunner) -> None:
    """Let the shadow finish its last turns and compare them without delaying the caller."""
    task = asyncio.get_running_loop().create_task(runner.close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def drain_closing(timeout_s: float = 5.0) -> None:
    """At shutdown: wait (bounded) for shadows that are still finishing."""
    if _closing:
        await asyncio.wait(set(_closing), timeout=timeout_s)


def shadow_admitted(name: PathName, info: CallInfo, budget: CoreBudget | None) -> bool:
    """Whether the core budget has room for a shadow of this call on path `name`; counted as
    shed when it has not."""
    if budget is None or budget.admits(
        info.route.migration.shadow_max_cpu, asyncio.get_running_loop().time(), budget.cpu()
    ):
        return True
    info.metrics.upstream_errors.labels(info.route_name, name, "shed").inc()
    return False


class ShadowRunner:
    """Mirrors one call onto the path that is not serving it."""

    def __init__(
        self,
        name: PathName,
        info: CallInfo,
        *,
        primary_path: PathName,
        make_path: PathFactory,
        mappings: MappingSet,
        divergence: DivergenceLog | None,
        budget: CoreBudget | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._budget = budget
        if budget is not None:
            budget.add(self, info.route.migration.shadow_max_cpu)
        self._info = info
        self._primary_path = primary_path
        self._mappings = mappings
        self._divergence = divergence
        self._metrics = info.metrics
        route = info.route
        self._outbox = Outbox(
            async_mode=False,
            settle_s=route.turn_settle_ms / 1000,
            timeout_s=route.turn_timeout_ms / 1000,
        )
        # resolved by whatever the path produces while a turn waits (see `_until_changed`)
        self._wake: asyncio.Future[None] | None = None
        self._queue: asyncio.Queue[tuple[str, int, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._path = make_path(name, info, self)
        self.name = name
        self._primary: dict[int, tuple[Outputs, float]] = {}
        self._shadow: dict[int, tuple[Outputs, float]] = {}
        self._started = False
        self._dropped = False
        self._closed = False
        self._task = asyncio.create_task(self._run())

    # ---- fed by the primary call (never blocks) ----------------------------------------------

    def submit_turn(self, turn: int, activities: Sequence[dict[str, Any]]) -> None:
        self._submit(("turn", turn, tuple(activities)))

    def submit_end(self, reason_code: str | None, reason: str | None) -> None:
        self._submit(("end", 0, (reason_code, reason)))

    def primary_turn(self, turn: int, outputs: Outputs, latency_s: float) -> None:
        """The primary's outputs for `turn` (its sync response, or what it produced until the
        next caller input in async mode)."""
        if self._dropped:
            return
        self._primary[turn] = (outputs, latency_s)
        self._compare_ready()

    def shed(self) -> None:
        """The core budget says give way: stop now, uncompared turns and all (counted)."""
        self._drop("shed")
        close_in_background(self)

    async def close(self) -> None:
        """End the shadow: compare what both paths finished, release its upstream."""
        if self._closed:
            return
        self._closed = True
        if self._budget is not None:
            self._budget.discard(self)
        if not self._task.done() and not self._dropped:
            self._submit(("close", 0, None))
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), 2.0)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._path.close()

    def _submit(self, item: tuple[str, int, Any]) -> None:
        if self._dropped:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._drop("queue_full")

    def _drop(self, kind: str) -> None:
        if not self._dropped:
            self._dropped = True
            self._metrics.upstream_errors.labels(self._info.route_name, self.name, kind).inc()
            log.info("shadow on route %s dropped (%s)", self._info.route_name, kind)

    # ---- PathSink: what the shadow path produces ------------------------------------------

    def emit(self, outputs: Sequence[dict[str, object]], *, turn_ending: bool = False) -> None:
        self._outbox.add_outputs(outputs, self._loop.time(), turn_ending=turn_ending)
        self._notify()

    def set_busy(self, busy: bool) -> None:
        self._outbox.set_busy(busy, self._loop.time())
        self._notify()

    def fail(self, reason: str) -> None:
        self._outbox.call_ended()
        self._notify()

    async def settle(self) -> None:
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _until_changed(self, deadline: float | None) -> None:
        """Until the path produces something or `deadline` (loop time) passes. A future and a
        timer handle: this runs on every shadow turn, where `wait_for` costs a task."""
        wake = self._wake = self._loop.create_future()
        timer = None if deadline is None else self._loop.call_at(deadline, _resolve, wake)
        try:
            await wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()

    # ---- the shadow's own task --------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                kind, turn, payload = await self._queue.get()
                if kind == "close" or self._dropped:
                    return
                if kind == "end":
                    await self._path.end(*payload)
                    continue
                await self._turn(turn, payload)
        except Exception:  # a failing shadow must never touch the primary
            log.exception("shadow failed on route %s", self._info.route_name)
            self._drop("shadow_error")
        finally:
            self._finish()

    async def _turn(self, turn: int, activities: tuple[dict[str, Any], ...]) -> None:
        started = self._loop.time()
        self._outbox.begin_turn(turn, started)
        if not self._started:
            try:
                await self._path.start(activities)
            except PathStartError as exc:
                self._drop(f"start_{exc.kind}")
                return
            self._started = True
            self._count_call("started")
        else:
            await self._path.forward(activities)
        while True:
            deliveries = self._outbox.poll(self._loop.time())
            if deliveries:
                break
            await self._until_changed(self._outbox.deadline())
        latency = self._loop.time() - started
        outputs = tuple(o for d in deliveries if d.channel is Channel.RESPONSE for o in d.outputs)
        metrics = self._metrics
        metrics.child(metrics.turn_duration, self._info.route_name, self.name, "shadow").observe(
            latency
        )
        self._shadow[turn] = (outputs, latency)
        self._compare_ready()

    def _compare_ready(self) -> None:
        for turn in sorted(set(self._primary) & set(self._shadow)):
            primary, primary_latency = self._primary.pop(turn)
            shadow, shadow_latency = self._shadow.pop(turn)
            comparison = compare_turn(
                primary,
                shadow,
                self._mappings,
                primary_path=self._primary_path,
                primary_latency_s=primary_latency,
                shadow_latency_s=shadow_latency,
            )
            record_metrics(comparison, self._metrics, self._info.route_name, self._mappings)
            if self._divergence is not None:
                self._divergence.record(
                    self._info.route_name, self._info.conversation_id, turn, comparison
                )

    def _count_call(self, what: str) -> None:
        labels = (self._info.route_name, self.name, "shadow")
        if what == "started":
            self._metrics.calls_started.labels(*labels).inc()
            self._metrics.calls_active.labels(*labels).inc()

    def _finish(self) -> None:
        if self._started:
            self._started = False
            labels = (self._info.route_name, self.name, "shadow")
            self._metrics.calls_active.labels(*labels).dec()
            reason = "dropped" if self._dropped else "ended"
            self._metrics.calls_ended.labels(*labels, reason).inc()


def _resolve(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)
