"""Run the shipped deploy/nginx/acvg-bridge.conf, rendered, in a real nginx (Debian's, installed by
tools/ensure_system_peers) on 127.0.0.1 for the tests and the cluster demo: its own prefix
directory, a free port."""

from __future__ import annotations

import signal
import subprocess
import tempfile
from collections.abc import Iterator
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

SHIPPED_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "acvg-bridge.conf"


def nginx_binary() -> str:
    return find_binary("nginx", "ACVG_NGINX")


def render_conf(upstreams: list[str], listen: str, *, template: str | None = None) -> str:
    """The shipped conf (or `template`) with its listen address and `server` lines filled in."""
    text = SHIPPED_CONF.read_text() if template is None else template
    if not upstreams:
        raise ValueError("at least one upstream is needed")
    servers = "".join(f"        server {hp} max_fails=1 fail_timeout=1s;\n" for hp in upstreams)
    return fill_template(text, servers, listen)


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
        run_check([nginx_binary(), "-t", "-p", str(prefix), "-c", str(conf)], "nginx -t")


@dataclass
class Nginx(LoopbackProxy):
    name: ClassVar[str] = "nginx"
    port: int
    prefix: Path
    process: subprocess.Popen[bytes]

    def error_log(self) -> str:
        parts = [self.prefix / "logs" / "stderr.log", self.prefix / "logs" / "error.log"]
        return "".join(p.read_text(errors="replace") for p in parts if p.exists())


@contextmanager
def running_nginx(
    tmp_dir: Path, upstreams: list[str], *, timeout_s: float = 10.0, grace_s: float = 3.0
) -> Iterator[Nginx]:
    """nginx in the foreground with prefix `tmp_dir`, proxying to `upstreams` (HOST:PORT)."""
    port = free_port()
    conf = _prepare_prefix(tmp_dir, render_conf(upstreams, f"127.0.0.1:{port}"))
    process = start_foreground(
        [nginx_binary(), "-p", str(tmp_dir), "-c", str(conf), "-g", "daemon off;"],
        tmp_dir / "logs" / "stderr.log",
    )
    # SIGQUIT: graceful, nginx finishes what is in flight
    server = Nginx(port, tmp_dir, process)
    with serving(server, signal.SIGQUIT, timeout_s=timeout_s, grace_s=grace_s) as nginx:
        yield nginx
