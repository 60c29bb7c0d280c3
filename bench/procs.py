"""Process plumbing shared by the benchmarks: free ports, /proc readings, waiting for a server."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import aiohttp


def bridge_command(config: Path, port: int, loop: str = "asyncio") -> list[str]:
    """`python -m bridge serve` on `config`, listening on 127.0.0.1:`port`, warnings only."""
    return [
        sys.executable, "-m", "bridge", "--log-level", "WARNING", "serve",
        "--config", str(config), "--listen", f"127.0.0.1:{port}", "--loop", loop,
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def wait_http(
    url: str, timeout: float = 30.0, *, http: aiohttp.ClientSession | None = None
) -> None:
    """Until `url` answers below 500 (a server in another process came up)."""
    own = http is None
    session = aiohttp.ClientSession() if http is None else http
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            await asyncio.sleep(0.1)
    finally:
        if own:
            await session.close()
