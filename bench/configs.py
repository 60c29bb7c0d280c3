"""The benchmark's configurations: what sits between the load generator and the simulated bots,
the bridge config that serves them, and the nginx config of the reverse-proxy peer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

TOKEN = "bench"
# The `shadow_guarded` route's budget: shadows give way while the bridge's core is busier.
SHADOW_MAX_CPU = 0.6


class Hop(StrEnum):
    DIRECT = "direct"
    NGINX = "nginx"
    BRIDGE = "bridge"


@dataclass(frozen=True)
class Configuration:
    """One measured configuration. `baseline` names the configuration whose latency at the same
    load is subtracted to get the added latency (None: it is a baseline itself)."""

    name: str
    label: str
    hop: Hop
    route: str | None
    baseline: str | None
    description: str
    ws_mode: bool = False
    loop: str = "asyncio"  # the bridge's event loop (`serve --loop`)


CONFIGURATIONS: tuple[Configuration, ...] = (
    Configuration(
        "direct",
        "direct (no proxy)",
        Hop.DIRECT,
        None,
        None,
        "VAIC simulator → simulated legacy AudioCodes bot, nothing in between: the baseline of "
        "the pass-through path.",
    ),
    Configuration(
        "nginx",
        "nginx → legacy",
        Hop.NGINX,
        None,
        "direct",
        "nginx (one worker, pinned to the bridge's core, keep-alive upstream) as a reverse proxy "
        "on loopback in front of the simulated legacy bot: the peer for pass-through.",
    ),
    Configuration(
        "passthrough",
        "bridge pass-through",
        Hop.BRIDGE,
        "pass",
        "direct",
        "The bridge on the legacy path (`force: legacy`, shadow off): VAIC → bridge → simulated "
        "legacy bot.",
    ),
    Configuration(
        "translated",
        "bridge translated",
        Hop.BRIDGE,
        "vg",
        "vg_sim",
        "The bridge on the voicegateway path (`force: voicegateway`): each turn becomes a "
        "`verb:hook` to the simulated VG endpoint (answering in the ack at once) and its verbs are "
        "translated back. Baseline: the VG simulator's own time per hook, measured alone "
        "(`vg_sim`).",
    ),
    Configuration(
        "translated_uvloop",
        "bridge translated, uvloop",
        Hop.BRIDGE,
        "vg",
        "vg_sim",
        "As `translated`, with the bridge on uvloop (`serve --loop uvloop`) instead of the "
        "standard asyncio loop: what uvloop would be worth.",
        loop="uvloop",
    ),
    Configuration(
        "translated_ws",
        "bridge translated, VAIC WS mode",
        Hop.BRIDGE,
        "vg",
        "vg_sim",
        "As `translated`, with VAIC in WebSocket (streaming) mode: one socket per call.",
        ws_mode=True,
    ),
    Configuration(
        "shadow",
        "bridge pass-through + shadow",
        Hop.BRIDGE,
        "shadow",
        "direct",
        "As `passthrough` with `shadow: true`: every turn is mirrored to the voicegateway path "
        "and the two answers are compared.",
    ),
    Configuration(
        "shadow_guarded",
        f"bridge pass-through + shadow, shed above {SHADOW_MAX_CPU:.0%}",
        Hop.BRIDGE,
        "shadow_guarded",
        "direct",
        f"As `shadow` with `shadow_max_cpu: {SHADOW_MAX_CPU}`: while the bridge's core is busier "
        "than that, shadows are not started and running ones are shed (bridge/budget.py). The "
        "share of primary turns still compared is reported next to it.",
    ),
)
BY_NAME = {c.name: c for c in CONFIGURATIONS}


def bridge_config(vg_port: int, legacy_port: int) -> dict[str, Any]:
    """Routes `pass`, `vg`, `shadow` and `shadow_guarded` on one bridge; limits raised out of the
    way of the load."""
    upstreams = {
        # The memory phase opens calls in bursts onto a simulator sharing its core with the load
        # generator: handshakes can queue past the 1.5 s default, which would mean fallbacks.
        "voicegateway": {"url": f"ws://127.0.0.1:{vg_port}/", "connect_timeout_ms": 5000},
        "legacy": {"url": f"http://127.0.0.1:{legacy_port}/", "token": TOKEN},
    }
    base = {
        "token": TOKEN,
        "max_calls": 20_000,
        "max_requests_per_second": 10_000,
        "expires_seconds": 600,
        **upstreams,
    }
    return {
        "routes": {
            "pass": {**base, "migration": {"force": "legacy"}},
            "vg": {**base, "migration": {"force": "voicegateway"}},
            "shadow": {**base, "migration": {"force": "legacy", "shadow": True}},
            "shadow_guarded": {
                **base,
                "migration": {"force": "legacy", "shadow": True, "shadow_max_cpu": SHADOW_MAX_CPU},
            },
        }
    }


def nginx_config(prefix: str, port: int, legacy_port: int, cpu: int | None) -> str:
    """A foreground nginx on loopback proxying everything to the simulated legacy bot."""
    affinity = f"worker_cpu_affinity {1 << cpu:b};" if cpu is not None else ""
    return f"""
daemon off;
master_process on;
worker_processes 1;
{affinity}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream legacy {{
        server 127.0.0.1:{legacy_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 100000;
        location / {{
            proxy_pass http://legacy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
    }}
}}
"""
