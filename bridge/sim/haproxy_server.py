"""Run the shipped deploy/haproxy/acvg-bridge.cfg, rendered, in a real HAProxy (Debian's,
installed by tools/ensure_system_peers) on 127.0.0.1 for the tests: its own directory, a free
port, in the foreground."""

from __future__ import annotations

import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bridge.sim.proxy_process import (
    LoopbackProxy,
    fill_template,
    find_binary,
    run_check,
    serving,
    start_foreground,
)
from bridge.sim.redis_server import free_port

SHIPPED_CONF = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "acvg-bridge.cfg"
BACKEND = "acvg_bridge"


def haproxy_binary() -> str:
    return find_binary("haproxy", "ACVG_HAPROXY")


def render_conf(
    upstreams: Sequence[str],
    listen: str,
    *,
    ids: Sequence[int] | None = None,
    template: str | None = None,
) -> str:
    """The shipped file (or `template`) with its listen address and `server` lines filled in.

    Each upstream (HOST:PORT, also the server's name) gets the id at its place in `ids`, by
    default 1, 2, 3...: the hash ring is built from the ids, so an instance keeps its id when
    others join or leave."""
    text = SHIPPED_CONF.read_text() if template is None else template
    if not upstreams:
        raise ValueError("at least one upstream is needed")
    numbers = list(range(1, len(upstreams) + 1)) if ids is None else list(ids)
    if len(numbers) != len(upstreams):
        raise ValueError(f"{len(upstreams)} upstreams but {len(numbers)} ids")
    if len(set(numbers)) != len(numbers) or min(numbers) < 1:
        raise ValueError(f"ids must be distinct positive integers: {numbers}")
    servers = "".join(
        f"    server {hp} {hp} id {n}\n" for hp, n in zip(upstreams, numbers, strict=True)
    )
    return fill_template(text, servers, listen)


def check_conf(text: str) -> None:
    """`haproxy -c` on `text`; raises with HAProxy's output when it fails."""
    with tempfile.TemporaryDirectory(prefix="acvg-haproxy-c-") as scratch:
        conf = Path(scratch) / "haproxy.cfg"
        conf.write_text(text)
        run_check([haproxy_binary(), "-c", "-f", str(conf)], "haproxy -c")


@dataclass
class HAProxy(LoopbackProxy):
    name: ClassVar[str] = "haproxy"
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    def error_log(self) -> str:
        """What HAProxy printed: alerts, warnings and server state changes."""
        path = self.directory / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def state_changes(self, upstream: str, state: str) -> int:
        """How often HAProxy said the server `upstream` (HOST:PORT) went `state` (UP, DOWN)."""
        return self.error_log().count(f"Server {BACKEND}/{upstream} is {state}")


@contextmanager
def running_haproxy(
    tmp_dir: Path,
    upstreams: Sequence[str],
    *,
    ids: Sequence[int] | None = None,
    template: str | None = None,
    timeout_s: float = 10.0,
    grace_s: float = 3.0,
) -> Iterator[HAProxy]:
    """HAProxy in the foreground (`-db`) in `tmp_dir`, proxying to `upstreams` (HOST:PORT),
    with the shipped file or `template` rendered."""
    port = free_port()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    conf = tmp_dir / "haproxy.cfg"
    conf.write_text(render_conf(upstreams, f"127.0.0.1:{port}", ids=ids, template=template))
    process = start_foreground(
        [haproxy_binary(), "-db", "-f", str(conf)],
        tmp_dir / "stderr.log",
        cwd=tmp_dir,
        stdout_to_log=True,
    )
    # SIGUSR1: soft stop, HAProxy finishes what is in flight
    server = HAProxy(port, tmp_dir, process)
    with serving(server, signal.SIGUSR1, timeout_s=timeout_s, grace_s=grace_s) as haproxy:
        yield haproxy
