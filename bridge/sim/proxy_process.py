"""Run a reverse proxy (nginx, HAProxy) from a shipped deploy file on 127.0.0.1 for the tests and
the demos: find the binary, fill the file's listen address and upstream `server` lines in, check
it, start the proxy in the foreground, wait until it listens, stop it gracefully.

What differs between the proxies (the `server` line, the command lines, the stop signal, where
the log goes) stays with each proxy's module; this one knows nothing of either."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, TypeVar

UPSTREAMS_LINE = "    # @upstreams@"
LISTEN_PLACEHOLDER = "@listen@"


def find_binary(name: str, env_var: str) -> str:
    """`$env_var` (by default /usr/sbin/`name`) when it is executable, else `name` on PATH."""
    configured = os.environ.get(env_var, f"/usr/sbin/{name}")
    if os.path.isfile(configured) and os.access(configured, os.X_OK):
        return configured
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is missing: run tools/ensure_system_peers")
    return found


def fill_template(text: str, servers: str, listen: str) -> str:
    """`text` with its one line UPSTREAMS_LINE replaced by `servers` and every LISTEN_PLACEHOLDER
    by `listen`; raises ValueError when either placeholder is missing."""
    lines = text.splitlines(keepends=True)
    marker = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == UPSTREAMS_LINE]
    if len(marker) != 1:
        raise ValueError(f"expected one line {UPSTREAMS_LINE.strip()!r}, found {len(marker)}")
    if LISTEN_PLACEHOLDER not in text:
        raise ValueError(f"placeholder {LISTEN_PLACEHOLDER!r} is missing")
    lines[marker[0]] = servers
    return "".join(lines).replace(LISTEN_PLACEHOLDER, listen)


def run_check(command: list[str], what: str) -> None:
    """Run a proxy's config check; raises with its output (`{what} failed: ...`) when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{result.stdout}{result.stderr}")


def start_foreground(
    command: list[str], log: Path, *, cwd: Path | None = None, stdout_to_log: bool = False
) -> subprocess.Popen[bytes]:
    """`command` started with its stderr (and its stdout when `stdout_to_log`) in the file `log`."""
    with log.open("wb") as stderr:
        return subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stderr if stdout_to_log else subprocess.DEVNULL,
            stderr=stderr,
        )


class LoopbackProxy(ABC):
    """A proxy process listening on 127.0.0.1:`port`; each proxy's handle (a dataclass) names
    the proxy and says where its log is."""

    name: ClassVar[str]
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @abstractmethod
    def error_log(self) -> str:
        """What the proxy printed about its failures (shown when it does not start)."""


Proxy = TypeVar("Proxy", bound=LoopbackProxy)


def _wait_listening(server: LoopbackProxy, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited ({server.process.returncode}): {server.error_log()}"
            )
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", server.port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(
        f"{server.name} did not listen on {server.port} within {timeout_s} s: {server.error_log()}"
    )


def _stop(process: subprocess.Popen[bytes], stop_signal: signal.Signals, grace_s: float) -> None:
    if process.poll() is None:
        process.send_signal(stop_signal)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(timeout=10)


@contextmanager
def serving(
    server: Proxy, stop_signal: signal.Signals, *, timeout_s: float, grace_s: float
) -> Iterator[Proxy]:
    """`server` once it listens (within `timeout_s`); afterwards `stop_signal`, then SIGKILL
    when it has not exited after `grace_s`."""
    try:
        _wait_listening(server, timeout_s)
        yield server
    finally:
        _stop(server.process, stop_signal, grace_s)
