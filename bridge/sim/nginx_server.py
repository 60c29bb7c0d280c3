"""Run the shipped deploy/nginx/acvg-bridge.conf, rendered, in a real nginx (Debian's, installed by
tools/ensure_system_peers) on 127.0.0.1 for the tests and the cluster demo: its own prefix
directory, a free port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bridge.sim.redis_server import free_port

SHIPPED_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "acvg-bridge.conf"
UPSTREAMS_LINE = "    # @upstreams@"
LISTEN_PLACEHOLDER = "@listen@"


def nginx_binary() -> str:
    configured = os.environ.get("ACVG_NGINX", "/usr/sbin/nginx")
    if os.path.isfile(configured) and os.access(configured, os.X_OK):
        return configured
    found = shutil.which("nginx")
    if found is None:
        raise RuntimeError("nginx is missing: run tools/ensure_system_peers")
    return found


def render_conf(upstreams: list[str], listen: str, *, template: str | None = None) -> str:
    """The shipped conf (or `template`) with its listen address and `server` lines filled in."""
    text = SHIPPED_CONF.read_text() if template is None else template
    if not upstreams:
        raise ValueError("at least one upstream is needed")
    lines = text.splitlines(keepends=True)
    marker = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == UPSTREAMS_LINE]
    if len(marker) != 1:
        raise ValueError(f"expected one line {UPSTREAMS_LINE.strip()!r}, found {len(marker)}")
    if LISTEN_PLACEHOLDER not in text:
        raise ValueError(f"placeholder {LISTEN_PLACEHOLDER!r} is missing")
    servers = "".join(f"        server {hp} max_fails=1 fail_timeout=1s;\n" for hp in upstreams)
    lines[marker[0]] = servers
    return "".join(lines).replace(LISTEN_PLACEHOLDER, listen)


def _prepare_prefix(prefix: Path, conf_text: str) -> Path:
    # nginx creates its temp directories itself but not the directory of its logs and pid file.
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    return conf


def check_conf(text: str) -> None:
    """`nginx -t` on `text` in a scratch prefix; raises with nginx's output when it fails."""
    with tempfile.TemporaryDirectory(prefix="acvg-nginx-t-") as scratch:
        prefix = Path(scratch)
        conf = _prepare_prefix(prefix, text)
        result = subprocess.run(
            [nginx_binary(), "-t", "-p", str(prefix), "-c", str(conf)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{result.stdout}{result.stderr}")


@dataclass
class Nginx:
    port: int
    prefix: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        parts = [self.prefix / "logs" / "stderr.log", self.prefix / "logs" / "error.log"]
        return "".join(p.read_text(errors="replace") for p in parts if p.exists())


def _wait_listening(server: Nginx, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"nginx exited ({server.process.returncode}): {server.error_log()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", server.port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(
        f"nginx did not listen on {server.port} within {timeout_s} s: {server.error_log()}"
    )


def _stop(process: subprocess.Popen[bytes], grace_s: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(timeout=10)


@contextmanager
def running_nginx(
    tmp_dir: Path, upstreams: list[str], *, timeout_s: float = 10.0, grace_s: float = 3.0
) -> Iterator[Nginx]:
    """nginx in the foreground with prefix `tmp_dir`, proxying to `upstreams` (HOST:PORT)."""
    port = free_port()
    conf = _prepare_prefix(tmp_dir, render_conf(upstreams, f"127.0.0.1:{port}"))
    with (tmp_dir / "logs" / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [nginx_binary(), "-p", str(tmp_dir), "-c", str(conf), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    server = Nginx(port, tmp_dir, process)
    try:
        _wait_listening(server, timeout_s)
        yield server
    finally:
        _stop(process, grace_s)
