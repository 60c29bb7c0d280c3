"""Helpers to run the real Node jambonz peers in tests/peers/ from Python tests.

`node` must be on PATH and tests/peers/node_modules installed (`make peers`, run by `make test`).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.jambonz_schema import validate_callback

# The official schemas require none of the base fields; the feature-server always sends these.
BASE_FIELDS = (
    "call_sid",
    "account_sid",
    "application_sid",
    "direction",
    "from",
    "to",
    "call_id",
    "call_status",
    "sip_status",
)
_MESSAGE_SCHEMAS = {
    "session:new": "session-new",
    "session:redirect": "session-redirect",
    "call:status": "call-status",
}

PEERS_DIR = Path(__file__).parent / "peers"
VG_APP = PEERS_DIR / "vg_app.js"
SDK_APP = PEERS_DIR / "sdk_app.js"
VALIDATE_VERBS = PEERS_DIR / "validate_verbs.js"


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("`node` is not on PATH: the Node test peers need Node 20+")
    if not (PEERS_DIR / "node_modules" / "@jambonz").is_dir():
        raise RuntimeError("tests/peers/node_modules is missing: run `make peers` (npm ci)")
    return node


def validate_verbs(verb_arrays: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run each verb array through @jambonz/verb-specifications `validate()`.

    Returns one `{"ok": True}` or `{"ok": False, "error": "..."}` per array, in order.
    """
    if not verb_arrays:
        return []
    lines = "".join(json.dumps(list(verbs)) + "\n" for verbs in verb_arrays)
    done = subprocess.run(
        [node_binary(), str(VALIDATE_VERBS)],
        input=lines,
        capture_output=True,
        text=True,
        cwd=PEERS_DIR,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"validate_verbs.js failed ({done.returncode}): {done.stderr}")
    results = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    if len(results) != len(verb_arrays):
        raise RuntimeError(f"validate_verbs.js answered {len(results)} of {len(verb_arrays)}")
    return results


@dataclass
class NodeApp:
    """A running vg_app.js: its port, its process and the frames it logged."""

    process: subprocess.Popen[str]
    port: int
    log_path: Path
    stdout_lines: list[str] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> list[dict[str, Any]]:
        """Every entry logged so far: `{"dir": "in"|"out", "msg": {...}}` or `{"dir": "close"}`."""
        if not self.log_path.exists():
            return []
        text = self.log_path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def received(self, message_type: str | None = None) -> list[dict[str, Any]]:
        """Frames the app received (what the bridge sent), optionally of one `type`."""
        frames = [e["msg"] for e in self.log() if e.get("dir") == "in"]
        if message_type is None:
            return frames
        return [f for f in frames if isinstance(f, dict) and f.get("type") == message_type]

    def sent(self) -> list[dict[str, Any]]:
        """Frames the app sent (acks and commands)."""
        return [e["msg"] for e in self.log() if e.get("dir") == "out"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def start_vg_app(
    log_path: Path, *, port: int = 0, timeout: float = 20.0, script: Path = VG_APP
) -> NodeApp:
    """Start a peer app (vg_app.js by default) on 127.0.0.1 and wait for `LISTENING <port>`."""
    env = dict(os.environ, PORT=str(port))
    process = subprocess.Popen(
        [node_binary(), str(script), "--port", str(port), "--log", str(log_path)],
        cwd=PEERS_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                raise RuntimeError(f"vg_app.js did not listen within {timeout} s") from None
            if line is None:
                raise RuntimeError(f"vg_app.js exited before listening: {seen}")
            seen.append(line)
            if line.startswith("LISTENING "):
                return NodeApp(process, int(line.split()[1]), log_path, seen)
    except BaseException:
        process.kill()
        process.wait(timeout=5)
        raise


@contextmanager
def running_vg_app(log_path: Path, *, port: int = 0, script: Path = VG_APP) -> Iterator[NodeApp]:
    """`with running_vg_app(tmp_path / "vg.jsonl") as app:` — stopped on exit."""
    app = start_vg_app(log_path, port=port, script=script)
    try:
        yield app
    finally:
        app.stop()


def message_problems(messages: Sequence[dict[str, Any]], hook_schemas: dict[str, str]) -> list[str]:
    """What is wrong with the messages a peer app received from the bridge: a strict envelope
    (`type`, `msgid`, `call_sid`, `data`), `data` valid against the callback schema of its type
    (for `verb:hook`, `hook_schemas[hook]`) in both schema sets, the base fields present."""
    problems: list[str] = []
    for index, msg in enumerate(messages):
        if "_raw" in msg:
            problems.append(f"#{index}: not JSON: {msg['_raw'][:80]}")
            continue
        missing = [k for k in ("type", "msgid", "call_sid", "data") if k not in msg]
        if missing:
            problems.append(f"#{index} {msg.get('type')}: missing {missing}")
            continue
        kind = msg["type"]
        if kind == "verb:hook":
            schema = hook_schemas.get(str(msg.get("hook")), "")
            if not schema:
                problems.append(f"#{index} verb:hook on unexpected hook {msg.get('hook')!r}")
                continue
        elif kind in _MESSAGE_SCHEMAS:
            schema = _MESSAGE_SCHEMAS[kind]
        else:
            problems.append(f"#{index}: unexpected message type {kind!r}")
            continue
        problems.extend(
            f"#{index} {kind} ({schema}): {e}" for e in validate_callback(schema, msg["data"])
        )
        absent = [k for k in BASE_FIELDS if k not in msg["data"]]
        if absent:
            problems.append(f"#{index} {kind}: base fields missing {absent}")
    return problems
