"""A real Prometheus (Debian's `prometheus`) scraping the bridge every second while the
simulators run calls on both paths with shadow on, with the shipped rules loaded: its HTTP API
shows both paths, shadow comparisons, the routing split, the recording rules and an answer to
every dashboard query."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

import bridge
from tools.grafana_dashboards import dashboards
from tools.migration_traffic import free_port, running_traffic
from tools.promql import binary, substitute_grafana_variables

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "prometheus" / "prometheus.yml"
JOB = "acvg-bridge"
# A guard against hanging forever, not a performance expectation.
DEADLINE_S = 90.0

Vector = list[dict[str, Any]]


@dataclass
class Prometheus:
    url: str
    http: aiohttp.ClientSession
    log: Path

    async def api(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.url}/api/v1/{path}", params=params) as resp:
            body = await resp.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    async def query(self, expr: str) -> Vector:
        data = await self.api("query", query=expr)
        result: Vector = data["result"]
        return result

    async def wait_for(self, expr: str, done: Callable[[Vector], bool]) -> Vector:
        """Query `expr` until `done` holds for the answer, or fail at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while True:
            result = await self.query(expr)
            if done(result):
                return result
            if loop.time() > deadline:
                log = self.log.read_text(errors="replace")[-3000:]
                pytest.fail(f"{expr} never satisfied the test; last answer {result}\n{log}")
            await asyncio.sleep(0.5)


def prometheus_config(target: str) -> str:
    """The shipped example config, scraping `target` every second, rules by absolute path."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(EXAMPLE_CONFIG.parent / f) for f in config["rule_files"]]
    [job] = config["scrape_configs"]
    assert job["job_name"] == JOB
    job["static_configs"] = [{"targets": [target]}]
    return yaml.safe_dump(config)


@contextlib.asynccontextmanager
async def running_prometheus(target: str, tmp_path: Path) -> AsyncIterator[Prometheus]:
    try:
        executable = binary("prometheus")
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config(target))
    listen = f"127.0.0.1:{free_port()}"
    log = tmp_path / "prometheus.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            executable,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={listen}",
            stdout=sink,
            stderr=sink,
        )
    try:
        async with aiohttp.ClientSession() as http:
            prometheus = Prometheus(f"http://{listen}", http, log)
            await _wait_ready(prometheus, process)
            yield prometheus
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_ready(prometheus: Prometheus, process: asyncio.subprocess.Process) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while True:
        if process.returncode is not None:
            pytest.fail(f"prometheus exited: {prometheus.log.read_text(errors='replace')}")
        with contextlib.suppress(aiohttp.ClientError):
            async with prometheus.http.get(f"{prometheus.url}/-/ready") as resp:
                if resp.status == 200:
                    return
        if loop.time() > deadline:
            pytest.fail(f"prometheus not ready: {prometheus.log.read_text(errors='replace')}")
        await asyncio.sleep(0.2)


def labels_of(result: Vector, *names: str) -> set[tuple[str, ...]]:
    return {tuple(series["metric"].get(name, "") for name in names) for series in result}


def positive(result: Vector) -> bool:
    return bool(result) and all(float(series["value"][1]) > 0 for series in result)


@pytest.fixture
async def scraped(tmp_path: Path) -> AsyncIterator[Prometheus]:
    """Prometheus scraping the bridge while calls keep running (series appear with their first
    call, so rates need calls across several scrapes)."""
    async with running_traffic() as traffic:
        target = traffic.base_url.removeprefix("http://")
        async with running_prometheus(target, tmp_path) as prometheus:
            await prometheus.wait_for(f'up{{job="{JOB}"}} == 1', bool)
            stop = asyncio.Event()
            calls = asyncio.create_task(traffic.run_until(stop))
            try:
                yield prometheus
            finally:
                stop.set()
                rounds = await calls
            assert rounds > 0


async def test_prometheus_scrapes_both_paths_comparisons_and_routing_split(
    scraped: Prometheus,
) -> None:
    prometheus = scraped
    both = {("legacy",), ("voicegateway",)}
    started = await prometheus.wait_for(
        'sum by (path) (acvg_calls_started_total{route="migration", role="primary"})',
        lambda r: labels_of(r, "path") == both,
    )
    assert positive(started)
    shadows = await prometheus.query(
        'sum by (path) (acvg_calls_started_total{route="migration", role="shadow"})'
    )
    assert labels_of(shadows, "path") == both
    await prometheus.wait_for(
        'sum by (path) (acvg_turn_duration_seconds_count{route="migration"})',
        lambda r: labels_of(r, "path") == both,
    )
    comparisons = await prometheus.wait_for("sum(acvg_shadow_comparisons_total)", positive)
    assert float(comparisons[0]["value"][1]) > 0
    split = await prometheus.wait_for(
        "sum by (route, path, reason) (acvg_routing_decisions_total)",
        lambda r: len(r) == 5,
    )
    assert labels_of(split, "route", "path", "reason") == {
        ("migration", "legacy", "percent"),
        ("migration", "voicegateway", "percent"),
        ("fallback", "legacy", "fallback"),
        ("legacy_down", "legacy", "single"),
        ("busy", "legacy", "forced"),
    }
    build = await prometheus.query(f'acvg_build_info{{job="{JOB}"}}')
    assert labels_of(build, "version") == {(bridge.__version__,)}


async def test_recording_rules_evaluate_on_real_data(scraped: Prometheus) -> None:
    prometheus = scraped
    p99 = await prometheus.wait_for(
        'route_path:acvg_turn_duration_seconds:p99_10m{route="migration"}',
        lambda r: labels_of(r, "path") == {("legacy",), ("voicegateway",)},
    )
    assert positive(p99)
    await prometheus.wait_for(
        'route:acvg_routing_fallbacks:ratio_rate10m{route="fallback"} == 1', bool
    )
    await prometheus.wait_for("route_node:acvg_shadow_comparisons:rate15m", positive)
    groups = (await prometheus.api("rules"))["groups"]
    health = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    assert health and set(health.values()) == {"ok"}, health


# Nothing the simulators do produces these series: no timeouts, nothing unmapped; and one
# instance without Redis never takes over, forwards or fails a store operation; the traffic
# records no journal, so none drops; no route has a migration plan, so no step or verdict.
NO_DATA = {
    "Unmapped activities in shadow comparisons",
    "Unmapped and failed translations",
    "Voice Gateway ack timeouts",
    "Takeovers and forwarded requests",
    "State store errors",
    "Journal records dropped",
    "Rollout step",
    "Rollout decisions",
}


async def test_every_dashboard_query_answers_on_real_data(scraped: Prometheus) -> None:
    prometheus = scraped
    for dashboard in dashboards().values():
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = substitute_grafana_variables(target["expr"])
                if panel["title"] in NO_DATA:
                    assert await prometheus.query(expr) == []
                else:
                    await prometheus.wait_for(expr, bool)
