"""Which calls go to the journal, and what a call's session tells it: one `CallJournal` per
recorded call, opened when the call's path is chosen, fed each turn, submitted when it ends.

The writers (one per `record.path`, shared by the routes that name it) belong to the gateway
(`Journals`); a call never waits on them (bridge/journal.py: a full queue drops and counts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.config import Route
from bridge.journal import CallRecord, JournalWriter, sample
from bridge.path import PathName

log = logging.getLogger("bridge.recording")


class CallJournal:
    """One recorded call. Times are loop-time readings (`now`, `started`)."""

    def __init__(self, writer: JournalWriter, record: CallRecord, started: float) -> None:
        self._writer = writer
        self._record = record
        self._t0 = started

    def turn(
        self,
        started: float,
        inputs: Sequence[Mapping[str, Any]],
        outputs: Sequence[Mapping[str, Any]],
        answered: float | None = None,
    ) -> None:
        latency = None if answered is None else answered - started
        self._record.turn(started - self._t0, inputs, outputs, latency)

    def end(self, now: float, reason: str) -> None:
        self._writer.submit(self._record, now - self._t0, reason)


class Journals:
    """The gateway's journal writers by file path, opened on first use, closed together."""

    def __init__(self, on_drop: Callable[[str], None]) -> None:
        self._on_drop = on_drop
        self._writers: dict[str, JournalWriter] = {}

    def open_call(
        self,
        route_name: str,
        route: Route,
        conversation_id: str,
        *,
        path: PathName,
        transport: str,
        start: Mapping[str, Any],
        now: float,
    ) -> CallJournal | None:
        """A `CallJournal` for this call if its route records and the call is sampled."""
        settings = route.record
        if settings is None or not sample(conversation_id, settings.sample_rate):
            return None
        writer = self._writers.get(settings.path)
        if writer is None:
            try:
                writer = JournalWriter.from_settings(settings, on_drop=self._on_drop)
            except OSError as exc:  # the call goes on, unrecorded
                log.error("journal %s cannot be opened: %s", settings.path, exc.strerror)
                self._on_drop("write_error")
                return None
            writer.start()
            self._writers[settings.path] = writer
        record = CallRecord(
            route=route_name,
            path=path,
            mode="async" if route.async_mode else "sync",
            transport="ws" if transport == "ws" else "http",
            conversation_id=conversation_id,
            start=start,
            started_at=datetime.now(UTC),
            default_region=route.default_region,
            keep_digits=settings.keep_digits,
            keep_numbers=settings.keep_numbers,
        )
        return CallJournal(writer, record, now)

    async def close(self) -> None:
        """Write what is queued and close every file."""
        writers, self._writers = list(self._writers.values()), {}
        for writer in writers:
            await writer.close()
