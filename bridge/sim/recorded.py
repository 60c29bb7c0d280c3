"""Journals of simulated calls, and configs to replay them: the shipped scenarios played
through a recording bridge on either path (every VAIC way in of the demo), against the
simulated endpoints — for the demo, the tests and bench/.

`Endpoints` runs the simulators; `endpoint_config` is a config whose routes `support` (sync)
and `support_async` (async mode) have both upstreams, forced onto one path and recording when
asked, and `support_divergent` whose legacy upstream runs the divergent flows.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from bridge.app import create_app
from bridge.config import parse_config
from bridge.path import PathName
from bridge.sim.demo import DEMO_RUNS, DemoRun, demo_callers
from bridge.sim.legacy_endpoint import LegacyEndpointSim
from bridge.sim.scenario import ScenarioResult, load_scenarios, run_scenario
from bridge.sim.vg_endpoint import VGEndpointSim
from bridge.transport.http_errors import JsonErrorRunner

__all__ = ["TOKEN", "Endpoints", "endpoint_config", "record_calls", "service_numbers"]

TOKEN = "replay-demo-token"
LEGACY_TOKEN = "legacy-token"
SYNC, ASYNC, DIVERGENT = "support", "support_async", "support_divergent"
FLOWS = Path(__file__).parent / "flows"
_E164 = re.compile(r"\+[1-9][0-9]{5,14}")


@dataclass
class Endpoints:
    """The simulated Voice Gateway endpoint and legacy endpoints (sync, async, divergent)."""

    vg: VGEndpointSim = field(default_factory=VGEndpointSim)
    legacy: LegacyEndpointSim = field(default_factory=lambda: LegacyEndpointSim(token=LEGACY_TOKEN))
    legacy_async: LegacyEndpointSim = field(
        default_factory=lambda: LegacyEndpointSim(token=LEGACY_TOKEN, async_mode=True)
    )
    divergent: LegacyEndpointSim = field(
        default_factory=lambda: LegacyEndpointSim(token=LEGACY_TOKEN, divergent=True)
    )

    async def __aenter__(self) -> Endpoints:
        for sim in (self.vg, self.legacy, self.legacy_async, self.divergent):
            await sim.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sim in (self.vg, self.legacy, self.legacy_async, self.divergent):
            await sim.stop()


def service_numbers() -> list[str]:
    """The simulated contact centre's own numbers: what the flows serve and transfer to."""
    found: set[str] = set()
    for path in sorted(FLOWS.glob("*.yaml")):
        found.update(_E164.findall(path.read_text(encoding="utf-8")))
    return sorted(found)


def endpoint_config(
    endpoints: Endpoints, *, force: PathName | None = None, record: Path | None = None
) -> str:
    """The YAML config of the three routes (module doc); `record`: every call of `support`
    and `support_async` goes to this journal."""

    def route(legacy_url: str, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "token": TOKEN,
            "default_region": "DE",
            "turn_settle_ms": 300,
            "sip_headers": {"callIdentification": "X-Conversation-ID"},
            "voicegateway": {"url": endpoints.vg.url()},
            "legacy": {"url": legacy_url, "token": LEGACY_TOKEN},
            "migration": {"force": force} if force else {"voicegateway_percent": 100},
            **extra,
        }
        if record is not None:
            body["record"] = {
                "path": str(record),
                "sample_rate": 1.0,
                "keep_numbers": service_numbers(),
            }
        return body

    routes = {
        SYNC: route(endpoints.legacy.url()),
        ASYNC: route(endpoints.legacy_async.url(), async_mode=True),
        DIVERGENT: route(endpoints.divergent.url()),
    }
    return yaml.safe_dump({"listen": "127.0.0.1:0", "routes": routes}, sort_keys=False)


async def record_calls(
    endpoints: Endpoints,
    journal: Path,
    path: PathName,
    *,
    runs: Sequence[DemoRun] = DEMO_RUNS,
    names: Sequence[str] | None = None,
) -> list[ScenarioResult]:
    """Play the shipped scenarios (or those in `names`) over each of `runs` through a bridge
    that serves them on `path` and records them to `journal`; the journal is complete when
    this returns."""
    config = parse_config(endpoint_config(endpoints, force=path, record=journal), env={})
    app = create_app(config)
    runner = JsonErrorRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    scenarios = [s for s in demo_callers(load_scenarios()) if names is None or s.name in names]
    results: list[ScenarioResult] = []
    try:
        async with aiohttp.ClientSession() as http:
            for run in runs:
                results.extend(
                    await asyncio.gather(
                        *(
                            run_scenario(
                                s,
                                base,
                                TOKEN,
                                session=http,
                                transport=run.transport,
                                async_mode=run.async_mode,
                                route=run.route,
                                settle=0.05,
                            )
                            for s in scenarios
                        )
                    )
                )
    finally:
        await runner.cleanup()  # closes the journal: every call is written
    return results
