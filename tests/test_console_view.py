"""The console's view (bridge/console/view.py), pure: the voice KPIs per route and path from
figures, with no bridge running. The rest of the view is tested over HTTP in test_console.py."""

from __future__ import annotations

import math

import pytest
import yaml

from bridge.config import Config, parse_config
from bridge.console.figures import Figures, Turns, read_figures
from bridge.console.view import kpi_view, route_views
from bridge.kpi import CallKpi, Outcome
from bridge.metrics import FIRST_PROMPT_BUCKETS, Metrics

OUTCOMES = [o.value for o in Outcome]


def _histogram(bounds: tuple[float, ...], *observations: float) -> Turns:
    return Turns(
        float(len(observations)),
        tuple((b, float(sum(1 for o in observations if o <= b))) for b in (*bounds, math.inf)),
        float(sum(observations)),
    )


def _config() -> Config:
    both = {
        "token": "t",
        "voicegateway": {"url": "ws://127.0.0.1:9/vg"},
        "legacy": {"url": "http://127.0.0.1:9/legacy"},
        "migration": {"voicegateway_percent": 50},
    }
    return parse_config(yaml.safe_dump({"routes": {"r": both}}), env={})


def test_the_kpis_of_a_path_count_share_estimate_and_average() -> None:
    figures = Figures(
        outcomes={
            ("r", "legacy", "caller_hangup"): 2.0,
            ("r", "legacy", "error"): 1.0,
            ("r", "legacy", "early_hangup"): 1.0,
            ("r", "voicegateway", "error"): 5.0,  # another path
            ("other", "legacy", "error"): 7.0,  # another route
        },
        first_prompt={("r", "legacy"): _histogram(FIRST_PROMPT_BUCKETS, 0.2, 0.3, 0.4, 0.6)},
        call_turns={("r", "legacy"): _histogram((1, 2, 3, 5), 2, 3, 7)},
        call_duration={("r", "legacy"): _histogram((5, 10, 30), 4.0, 20.0, 60.0)},
        no_inputs={("r", "legacy"): 2.0, ("r", "voicegateway"): 9.0},
    )
    kpis = kpi_view(figures, "r", "legacy")
    assert kpis["calls_ended"] == 4
    assert list(kpis["outcomes"]) == OUTCOMES
    assert kpis["outcomes"]["caller_hangup"] == {"count": 2, "share": 0.5}
    assert kpis["outcomes"]["error"] == {"count": 1, "share": 0.25}
    assert kpis["outcomes"]["bot_hangup"] == {"count": 0, "share": 0.0}
    # cumulative 0 / 1 / 3 / 4 at 0.1 / 0.25 / 0.5 / 0.75 s: the median (rank 2) is halfway
    # through the 0.25-0.5 bucket, p95 (rank 3.8) four fifths through 0.5-0.75
    first = kpis["first_prompt"]
    assert first["calls"] == 4
    assert first["p50_s"] == pytest.approx(0.375)
    assert first["p95_s"] == pytest.approx(0.7)
    assert kpis["turns_per_call"] == pytest.approx(4.0)  # the sum over the count, not buckets
    assert kpis["duration_mean_s"] == pytest.approx(28.0)
    assert kpis["no_input_per_call"] == pytest.approx(0.5)  # over the calls ended


def test_without_data_the_kpis_are_zero_counts_and_nulls() -> None:
    kpis = kpi_view(Figures(), "r", "voicegateway")
    assert kpis == {
        "calls_ended": 0,
        "outcomes": {name: {"count": 0, "share": None} for name in OUTCOMES},
        "first_prompt": {"calls": 0, "p50_s": None, "p95_s": None},
        "turns_per_call": None,
        "no_input_per_call": None,
        "duration_mean_s": None,
    }
    # calls that ended before their start was seen (a takeover): counted, nothing measured
    taken_over = Figures(
        outcomes={("r", "voicegateway", "caller_hangup"): 1.0},
        no_inputs={("r", "voicegateway"): 0.0},
    )
    kpis = kpi_view(taken_over, "r", "voicegateway")
    assert kpis["calls_ended"] == 1 and kpis["no_input_per_call"] == 0.0
    assert kpis["first_prompt"] == {"calls": 0, "p50_s": None, "p95_s": None}
    assert kpis["turns_per_call"] is None and kpis["duration_mean_s"] is None


def test_a_wait_beyond_the_last_bucket_is_estimated_at_the_largest_finite_bound() -> None:
    figures = Figures(first_prompt={("r", "legacy"): _histogram(FIRST_PROMPT_BUCKETS, 30.0)})
    first = kpi_view(figures, "r", "legacy")["first_prompt"]
    assert first == {"calls": 1, "p50_s": FIRST_PROMPT_BUCKETS[-1], "p95_s": 10.0}


def test_an_outcome_another_version_counts_is_listed_after_the_known_ones() -> None:
    figures = Figures(
        outcomes={("r", "legacy", "voicemail"): 1.0, ("r", "legacy", "bot_hangup"): 3.0}
    )
    kpis = kpi_view(figures, "r", "legacy")
    assert list(kpis["outcomes"]) == [*OUTCOMES, "voicemail"]
    assert kpis["calls_ended"] == 4 and kpis["outcomes"]["voicemail"]["share"] == 0.25


def test_route_views_show_the_kpis_calls_recorded_per_path() -> None:
    metrics = Metrics()
    for path, no_input in (("legacy", False), ("legacy", True), ("voicegateway", False)):
        kpi = CallKpi(early_hangup_s=5.0)
        kpi.inputs(0.0, [{"type": "event", "name": "start"}])
        kpi.delivered(0.4, [{"type": "message", "text": "Hello"}])
        kpi.inputs(3.0, [{"type": "event", "name": "noUserInput"}] if no_input else [])
        kpi.record(metrics, "r", path, 30.0, "client_disconnected")
    [view] = route_views(_config(), read_figures(metrics))
    legacy, vg = view["kpis"]["legacy"], view["kpis"]["voicegateway"]
    assert set(view["kpis"]) == {"legacy", "voicegateway"}
    assert legacy["calls_ended"] == 2 and vg["calls_ended"] == 1
    assert legacy["outcomes"]["caller_hangup"] == {"count": 2, "share": 1.0}
    assert legacy["turns_per_call"] == 2.0 and legacy["duration_mean_s"] == 30.0
    assert legacy["no_input_per_call"] == 0.5 and vg["no_input_per_call"] == 0.0
    assert legacy["first_prompt"]["calls"] == 2
    assert 0.25 <= legacy["first_prompt"]["p50_s"] <= 0.5
    # no calls at all on another route's view: the same shape, nulls
    assert route_views(_config(), Figures())[0]["kpis"]["legacy"]["turns_per_call"] is None
