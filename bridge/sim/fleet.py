"""Real bridge instances for the cluster tests and demo: `python -m bridge serve` processes on
127.0.0.1, each with its own config file and log, sharing one Redis; killable with SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.sim.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Instance:
    name: str
    port: int
    config_file: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "bridge", "--log-level", "INFO", "serve"),
                    *("--config", str(self.config_file)),
                    *("--listen", f"127.0.0.1:{self.port}"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=ROOT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer /healthz within {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye to Redis or the upstreams."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@dataclass
class Fleet:
    instances: list[Instance] = field(default_factory=list)

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()


def make_fleet(
    directory: Path,
    redis_url: str,
    routes: dict[str, Any],
    names: tuple[str, ...] = ("a", "b", "c"),
    *,
    lease_s: float = 1.5,
    drain_timeout_s: float = 2,
    **top: Any,
) -> Fleet:
    """Write a config per instance (same routes, its own id and advertise_url) and start them."""
    directory.mkdir(parents=True, exist_ok=True)
    fleet = Fleet()
    for name in names:
        port = free_port()
        doc = {
            "admin_token": "admin-tok",
            "drain_timeout_s": drain_timeout_s,
            "cluster": {
                "redis_url": redis_url,
                "instance_id": name,
                "advertise_url": f"http://127.0.0.1:{port}",
                "lease_s": lease_s,
            },
            "routes": routes,
            **top,
        }
        config_file = directory / f"{name}.yaml"
        config_file.write_text(yaml.safe_dump(doc))
        fleet.instances.append(Instance(name, port, config_file, directory / f"{name}.log"))
    try:
        for instance in fleet.instances:
            instance.start()
    except BaseException:
        fleet.stop()
        raise
    return fleet
