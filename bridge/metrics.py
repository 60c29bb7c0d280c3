"""Prometheus metrics of design §2.4, on a registry owned by one app instance.

Names and label sets are the contract. Label values are bounded: route names from config, paths,
node names from mapping files, fixed reason words — never numbers, ids or free text.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

import bridge
from bridge.evidence import Evidence

# Voice turns take a few ms (translated, fast app) to seconds (slow flows); 10 s is VAIC's horizon.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Voice KPIs (design §2.7): the wait for the first prompt, turns and duration of a call.
FIRST_PROMPT_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
TURN_COUNT_BUCKETS = (1, 2, 3, 5, 8, 13, 21, 34, 55)
CALL_DURATION_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 1800)

_M = TypeVar("_M", Counter, Gauge, Histogram)


class Metrics:
    """Every metric the bridge exports, registered on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # what migration plans judge (bridge/evidence.py): read from these metrics, plus values
        self.evidence = Evidence(self)
        reg = self.registry
        self.build_info = Info("acvg_build", "Build information of acvg-bridge.", registry=reg)
        self.build_info.info({"version": bridge.__version__})
        self.calls_started = Counter(
            "acvg_calls_started_total",
            "Calls started, by route, path and role.",
            ["route", "path", "role"],
            registry=reg,
        )
        self.calls_ended = Counter(
            "acvg_calls_ended_total",
            "Calls ended, by route, path, role and reason.",
            ["route", "path", "role", "reason"],
            registry=reg,
        )
        self.call_outcomes = Counter(
            "acvg_call_outcomes_total",
            "Primary calls by how they ended for the caller (bridge/kpi.py): caller_hangup, "
            "bot_hangup, transferred, no_input_giveup, error, early_hangup.",
            ["route", "path", "outcome"],
            registry=reg,
        )
        self.time_to_first_prompt = Histogram(
            "acvg_time_to_first_prompt_seconds",
            "From the start event to VAIC getting the call's first prompt (primary calls).",
            ["route", "path"],
            buckets=FIRST_PROMPT_BUCKETS,
            registry=reg,
        )
        self.call_turns = Histogram(
            "acvg_call_turns",
            "Caller turns per primary call.",
            ["route", "path"],
            buckets=TURN_COUNT_BUCKETS,
            registry=reg,
        )
        self.call_duration = Histogram(
            "acvg_call_duration_seconds",
            "Duration of primary calls, from the start event to their end.",
            ["route", "path"],
            buckets=CALL_DURATION_BUCKETS,
            registry=reg,
        )
        self.rollout_step = Gauge(
            "acvg_rollout_step",
            "The migration plan's current step per route: its voicegateway_percent (design §2.7).",
            ["route"],
            registry=reg,
        )
        self.rollout_decisions = Counter(
            "acvg_rollout_decisions_total",
            "Migration plan verdicts per route: promote, hold, rollback (dry runs included).",
            ["route", "decision"],
            registry=reg,
        )
        self.no_input_events = Counter(
            "acvg_no_input_events_total",
            "noUserInput events callers' calls produced (primary calls).",
            ["route", "path"],
            registry=reg,
        )
        self.calls_active = Gauge(
            "acvg_calls_active",
            "Calls in progress, by route, path and role.",
            ["route", "path", "role"],
            registry=reg,
        )
        self.turn_duration = Histogram(
            "acvg_turn_duration_seconds",
            "Time from caller input received to that turn's outputs complete.",
            ["route", "path", "role"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.translations = Counter(
            "acvg_translations_total",
            "Translations between AudioCodes activities and jambonz messages, per node.",
            ["direction", "node", "result"],
            registry=reg,
        )
        self.shadow_comparisons = Counter(
            "acvg_shadow_comparisons_total",
            "Shadow comparisons of one activity, per node and result.",
            ["route", "node", "result"],
            registry=reg,
        )
        self.shadow_field_mismatches = Counter(
            "acvg_shadow_field_mismatches_total",
            "Fields that differed between the two paths, per node and field path.",
            ["route", "node", "field"],
            registry=reg,
        )
        self.number_metadata = Counter(
            "acvg_number_metadata_total",
            "numberMetaData derivations, per result.",
            ["route", "result"],
            registry=reg,
        )
        self.routing_decisions = Counter(
            "acvg_routing_decisions_total",
            "Path decisions taken at call start, per reason.",
            ["route", "path", "reason"],
            registry=reg,
        )
        self.upstream_errors = Counter(
            "acvg_upstream_errors_total",
            "Errors talking to an upstream, per path and kind.",
            ["route", "path", "kind"],
            registry=reg,
        )
        self.vg_ack = Histogram(
            "acvg_vg_ack_seconds",
            "Time the Voice Gateway app took to ack a message (budget 5 s).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.vg_ack_timeouts = Counter(
            "acvg_vg_ack_timeouts_total",
            "Messages the Voice Gateway app did not ack within 5 s.",
            ["route"],
            registry=reg,
        )
        self.rejected_requests = Counter(
            "acvg_rejected_requests_total",
            "VAIC requests rejected, per route and reason.",
            ["route", "reason"],
            registry=reg,
        )
        self.core_busy = Gauge(
            "acvg_core_busy_ratio",
            "Share of one core the bridge was busy over the last second (CPU time / wall time); "
            "shadows of routes with migration.shadow_max_cpu give way above it.",
            registry=reg,
        )

        self.takeovers = Counter(
            "acvg_takeovers_total",
            "Calls this instance continued from the shared store: its owner was lost or handed "
            "the call off.",
            ["route", "path", "reason"],
            registry=reg,
        )
        self.forwarded_requests = Counter(
            "acvg_forwarded_requests_total",
            "VAIC requests forwarded to the live instance that owns the call.",
            ["route"],
            registry=reg,
        )
        self.store_errors = Counter(
            "acvg_store_errors_total",
            "Operations on the shared state store (Redis) that failed, per operation.",
            ["op"],
            registry=reg,
        )
        self.journal_dropped = Counter(
            "acvg_journal_dropped_total",
            "Sampled calls the journal did not record, by reason (queue_full, max_bytes, ...).",
            ["reason"],
            registry=reg,
        )
        self.cluster_instances = Gauge(
            "acvg_cluster_instances",
            "Live instances this instance sees in the shared store (1 without a cluster).",
            registry=reg,
        )

    def child(self, metric: _M, *values: str) -> _M:
        """`metric.labels(*values)`, remembered: every turn asks for the same few children, and
        label values are bounded (module doc), so the memo is too."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def exposition(self) -> bytes:
        """The text exposition format for `/metrics`."""
        return generate_latest(self.registry)
