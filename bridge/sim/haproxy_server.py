"""Run the shipped deploy/haproxy/acvg-bridge.cfg, rendered, in a real HAProxy (Debian's,
installed by tools/ensure_system_peers) on 127.0.0.1 for the tests: its own directory, a free
port, in the foreground."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bridge.sim.redis_server import free_port

SHIPPED_CONF = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "acvg-bridge.cfg"
UPSTREAMS_LINE = "    # @upstreams@"
LISTEN_PLACEHOLDER = "@listen@"
BACKEND = "acvg_bridge"


def haproxy_binary() -> str:
    configured = os.environ.get("ACVG_HAPROXY", "/usr/sbin/haproxy")
    if os.path.isfile(configured) and os.access(configured, os.X_OK):
        return configured
    found = shutil.which("haproxy")
    if found is None:
        raise RuntimeError("haproxy is missing: run tools/ensure_system_peers")
    return found


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
    lines = text.splitlines(keepends=True)
    marker = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == UPSTREAMS_LINE]
    if len(marker) != 1:
        raise ValueError(f"expected one line {UPSTREAMS_LINE.strip()!r}, found {len(marker)}")
    if LISTEN_PLACEHOLDER not in text:
        raise ValueError(f"placeholder {LISTEN_PLACEHOLDER!r} is missing")
    servers = "".join(
        f"    server {hp} {hp} id {n}\n" for hp, n in zip(upstreams, numbers, strict=True)
    )
    lines[marker[0]] = servers
    return "".join(lines).replace(LISTEN_PLACEHOLDER, listen)


def check_conf(text: str) -> None:
    """`haproxy -c` on `text`; raises with HAProxy's output when it fails."""
    with tempfile.TemporaryDirectory(prefix="acvg-haproxy-c-") as scratch:
        conf = Path(scratch) / "haproxy.cfg"
        conf.write_text(text)
        result = subprocess.run(
            [haproxy_binary(), "-c", "-f", str(conf)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"haproxy -c failed:\n{result.stdout}{result.stderr}")


@dataclass
class HAProxy:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        """What HAProxy printed: alerts, warnings and server state changes."""
        path = self.directory / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def state_changes(self, upstream: str, state: str) -> int:
        """How often HAProxy said the server `upstream` (HOST:PORT) went `state` (UP, DOWN)."""
        return self.error_log().count(f"Server {BACKEND}/{upstream} is {state}")


def _wait_listening(server: HAProxy, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"haproxy exited ({server.process.returncode}): {server.error_log()}"
            )
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", server.port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(
        f"haproxy did not listen on {server.port} within {timeout_s} s: {server.error_log()}"
    )


def _stop(process: subprocess.Popen[bytes], grace_s: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGUSR1)  # soft stop: finish what is in flight
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(timeout=10)


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
    with (tmp_dir / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", str(conf)],
            cwd=tmp_dir,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
        )
    server = HAProxy(port, tmp_dir, process)
    try:
        _wait_listening(server, timeout_s)
        yield server
    finally:
        _stop(process, grace_s)
