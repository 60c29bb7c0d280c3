"""The metrics contract (design §2.4): names, types, label sets, buckets, build info; label values
bounded under real traffic on both paths; `/metrics` clean under the real `promtool`."""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import bridge
from bridge.mapping import UNMAPPED_NODE, load_mappings
from bridge.metrics import LATENCY_BUCKETS, Metrics
from tools.migration_traffic import ROUTES, Traffic, running_traffic
from tools.promql import binary

# name as exposed -> (type in the text format, label names). Info is exposed as a gauge.
CLUSTER_COUNTERS = (
    "acvg_takeovers_total",
    "acvg_forwarded_requests_total",
    "acvg_store_errors_total",
)
CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    "acvg_calls_started_total": ("counter", frozenset({"route", "path", "role"})),
    "acvg_calls_ended_total": ("counter", frozenset({"route", "path", "role", "reason"})),
    "acvg_calls_active": ("gauge", frozenset({"route", "path", "role"})),
    "acvg_turn_duration_seconds": ("histogram", frozenset({"route", "path", "role"})),
    "acvg_call_outcomes_total": ("counter", frozenset({"route", "path", "outcome"})),
    "acvg_time_to_first_prompt_seconds": ("histogram", frozenset({"route", "path"})),
    "acvg_call_turns": ("histogram", frozenset({"route", "path"})),
    "acvg_call_duration_seconds": ("histogram", frozenset({"route", "path"})),
    "acvg_no_input_events_total": ("counter", frozenset({"route", "path"})),
    "acvg_rollout_step": ("gauge", frozenset({"route"})),
    "acvg_rollout_decisions_total": ("counter", frozenset({"route", "decision"})),
    "acvg_translations_total": ("counter", frozenset({"direction", "node", "result"})),
    "acvg_shadow_comparisons_total": ("counter", frozenset({"route", "node", "result"})),
    "acvg_shadow_field_mismatches_total": ("counter", frozenset({"route", "node", "field"})),
    "acvg_number_metadata_total": ("counter", frozenset({"route", "result"})),
    "acvg_routing_decisions_total": ("counter", frozenset({"route", "path", "reason"})),
    "acvg_upstream_errors_total": ("counter", frozenset({"route", "path", "kind"})),
    "acvg_vg_ack_seconds": ("histogram", frozenset({"route"})),
    "acvg_vg_ack_timeouts_total": ("counter", frozenset({"route"})),
    "acvg_rejected_requests_total": ("counter", frozenset({"route", "reason"})),
    "acvg_build_info": ("gauge", frozenset({"version"})),
    "acvg_core_busy_ratio": ("gauge", frozenset()),
    "acvg_takeovers_total": ("counter", frozenset({"route", "path", "reason"})),
    "acvg_forwarded_requests_total": ("counter", frozenset({"route"})),
    "acvg_store_errors_total": ("counter", frozenset({"op"})),
    "acvg_cluster_instances": ("gauge", frozenset()),
    "acvg_journal_dropped_total": ("counter", frozenset({"reason"})),
}

# Bounded label values: fixed words, config route names, mapping node names.
PATHS = {"legacy", "voicegateway"}
ROLES = {"primary", "shadow"}
DIRECTIONS = {"to_audiocodes", "to_voicegateway"}
RESULTS = {
    "acvg_translations_total": {"ok", "unmapped", "error"},
    "acvg_shadow_comparisons_total": {"match", "mismatch", "missing", "extra"},
    "acvg_number_metadata_total": {"preserved", "differs", "unparsable"},
}
REASONS = {
    "acvg_routing_decisions_total": {"percent", "rule", "forced", "fallback", "single"},
    "acvg_calls_ended_total": {
        "client_disconnected",
        "bot_disconnected",
        "transferred",
        "error",
        "expired",
        "other",
        "ended",
        "dropped",
        "drained",
    },
    "acvg_rejected_requests_total": {
        "auth",
        "bad_request",
        "not_found",
        "too_large",
        "conflict",
        "bad_method",
        "wrong_state",
        "not_json",
        "bad_message",
        "unknown_type",
        "ended",
        "conversation_mismatch",
        "audio_unsupported",
        "admin_disabled",
        "no_config_file",
        "invalid_config",
        "draining",
        "over_capacity",
        "rate_limited",
        "internal",
    },
}
KINDS = re.compile(
    r"(start_|refresh_)?(timeout|connect|bad_url|handshake|not_ready|bad_response|retries"
    r"|push_socket|bad_push|closed|bad_frame|ack_timeout|refused|translation|queue_full"
    r"|shadow_error|shed|bad_frames|tls|internal|reconnect_failed|reconnect_ack_timeout|http_[1-9]xx)"
)
# Routes the bridge counts requests for no configured route under.
SYNTHETIC_ROUTES = {"_unknown", "_admin"}


@pytest.fixture
def promtool() -> str:
    try:
        return binary("promtool")
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


def check_metrics(promtool: str, exposition: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def families(exposition: str) -> dict[str, Metric]:
    """Families by exposed name (counters with `_total`, as in the contract). prometheus_client's
    `_created` timestamps (one gauge family per counter and histogram) are left out."""
    out = {}
    for family in text_string_to_metric_families(exposition):
        if family.name.endswith("_created"):
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        out[name] = family
    return out


def samples(exposition: str) -> Iterator[tuple[str, Sample]]:
    for name, family in families(exposition).items():
        for sample in family.samples:
            yield name, sample


def populated() -> Metrics:
    """Fresh metrics with one child per labelled metric, labels from the contract."""
    metrics = Metrics()
    for metric in vars(metrics).values():
        describe = getattr(metric, "describe", None)
        if describe is None or not hasattr(metric, "labels"):
            continue
        family = describe()[0]
        name = family.name + ("_total" if family.type == "counter" else "")
        if name in CONTRACT and CONTRACT[name][1]:
            metric.labels(**dict.fromkeys(CONTRACT[name][1], "x"))
    return metrics


def test_every_contract_metric_is_exported_with_its_type_and_labels() -> None:
    exposed = families(populated().exposition().decode())
    assert set(exposed) == set(CONTRACT)
    for name, (kind, labels) in CONTRACT.items():
        family = exposed[name]
        assert family.type == kind, name
        assert family.documentation, f"{name} has no HELP text"
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, sample


def test_build_info_names_the_version() -> None:
    exposed = families(Metrics().exposition().decode())
    [sample] = exposed["acvg_build_info"].samples
    assert sample.labels == {"version": bridge.__version__}
    assert sample.value == 1


def test_histograms_have_voice_latency_buckets() -> None:
    # Milliseconds (a translated turn) to VAIC's 10 s horizon, with the 5 s VG ack budget a bound.
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))
    assert LATENCY_BUCKETS[0] <= 0.005
    assert 5.0 in LATENCY_BUCKETS
    assert LATENCY_BUCKETS[-1] == 10.0
    exposed = families(populated().exposition().decode())
    for name in ("acvg_turn_duration_seconds", "acvg_vg_ack_seconds"):
        bounds = {s.labels["le"] for s in exposed[name].samples if s.name.endswith("_bucket")}
        assert bounds == {*(str(b) for b in LATENCY_BUCKETS), "+Inf"}, name


def test_exposition_of_every_metric_passes_promtool(promtool: str) -> None:
    result = check_metrics(promtool, populated().exposition().decode())
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_promtool_check_finds_a_bad_exposition(promtool: str) -> None:
    # The check above can fail: a counter without `_total` is a finding.
    bad = "# HELP acvg_bad Bad.\n# TYPE acvg_bad counter\nacvg_bad 1\n"
    result = check_metrics(promtool, bad)
    assert result.returncode != 0
    assert "_total" in result.stdout + result.stderr


@pytest.fixture
async def traffic() -> AsyncIterator[Traffic]:
    async with running_traffic() as running:
        await running.calls()
        await running.calls(route="fallback")
        await running.calls(route="legacy_down", limit=1)
        await running.rejected()
        yield running


async def test_metrics_endpoint_under_traffic_passes_promtool(
    traffic: Traffic, promtool: str
) -> None:
    text = await traffic.metrics_text()
    result = check_metrics(promtool, text)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    seen = {name for name, sample in samples(text) if sample.name.endswith(("_total", "_count"))}
    # Every counter and histogram got samples, except timeouts the simulator never causes and
    # the cluster's counters, which one instance without Redis never moves (test_cluster.py),
    # and journal drops, with no journal here (test_recording.py), and plan decisions, with no
    # plan here (test_rollout.py).
    expected = {n for n, (kind, _) in CONTRACT.items() if kind in {"counter", "histogram"}}
    unmoved = {
        "acvg_vg_ack_timeouts_total",
        "acvg_journal_dropped_total",
        "acvg_rollout_decisions_total",
        *CLUSTER_COUNTERS,
    }
    assert seen == expected - unmoved


async def test_label_values_are_bounded_under_traffic(traffic: Traffic) -> None:
    nodes = {*load_mappings().nodes, UNMAPPED_NODE}
    text = await traffic.metrics_text()
    for name, sample in samples(text):
        labels = sample.labels
        for key, value in labels.items():
            if key in {"le", "version"}:
                continue
            assert "traffic-" not in value, f"conversation id in {name} {labels}"
            assert not re.search(r"\d{3}", value), f"number in {name} {labels}"
        if "route" in labels:
            assert labels["route"] in {*ROUTES, *SYNTHETIC_ROUTES}, (name, labels)
        if "path" in labels:
            assert labels["path"] in PATHS, (name, labels)
        if "role" in labels:
            assert labels["role"] in ROLES, (name, labels)
        if "direction" in labels:
            assert labels["direction"] in DIRECTIONS, (name, labels)
        if "node" in labels:
            assert labels["node"] in nodes, (name, labels)
        if "result" in labels:
            assert labels["result"] in RESULTS[name], (name, labels)
        if "reason" in labels:
            assert labels["reason"] in REASONS[name], (name, labels)
        if "kind" in labels:
            assert KINDS.fullmatch(labels["kind"]), (name, labels)
        if "field" in labels:
            field = labels["field"]
            assert len(field) <= 120 and field.count(".") <= 4, (name, labels)
            assert not re.search(r"\[\d+\]", field), (name, labels)


def test_child_is_the_labelled_child_remembered() -> None:
    metrics = Metrics()
    child = metrics.child(metrics.turn_duration, "r", "legacy", "primary")
    assert child is metrics.child(metrics.turn_duration, "r", "legacy", "primary")
    assert child is metrics.turn_duration.labels("r", "legacy", "primary")
    child.observe(0.01)
    metrics.child(metrics.translations, "to_audiocodes", "say", "ok").inc(2)
    text = metrics.exposition().decode()
    assert 'acvg_turn_duration_seconds_count{path="legacy",role="primary",route="r"} 1.0' in text
    assert 'acvg_translations_total{direction="to_audiocodes",node="say",result="ok"} 2.0' in text
