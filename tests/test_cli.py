"""The `acvg-bridge` command line: checks name file, field and reason; exit codes hold."""

from __future__ import annotations

import gc
import logging
import runpy
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli import freeze_startup_heap, main
from bridge.mapping.loader import check_mappings

SHIPPED_MAPPINGS = Path(__file__).parent.parent / "bridge" / "mappings"
GOOD_CONFIG = """\
listen: "127.0.0.1:0"
routes:
  support:
    token: "${SUPPORT_TOKEN:-t0k}"
    default_region: DE
    voicegateway:
      url: "ws://127.0.0.1:9/app"
"""
BAD_CONFIG = """\
routes:
  support:
    token: t0k
    expires_seconds: "soon"
    voicegateway:
      url: "ws://127.0.0.1:9/app"
"""


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    """main() configures root logging and ignores SIGHUP; undo both after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    frames = logging.getLogger("websockets")
    frames_level = frames.level
    sighup = signal.getsignal(signal.SIGHUP) if hasattr(signal, "SIGHUP") else None
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    frames.setLevel(frames_level)
    if sighup is not None:
        signal.signal(signal.SIGHUP, sighup)


def _mapping_copy(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    target.mkdir()
    for path in SHIPPED_MAPPINGS.glob("*.yaml"):
        shutil.copy(path, target / path.name)
    return target


def test_mappings_check_on_the_shipped_mappings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mappings", "check"]) == 0
    assert "mappings ok" in capsys.readouterr().out
    assert main(["mappings", "check", str(SHIPPED_MAPPINGS)]) == 0


def test_mappings_check_names_file_field_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _mapping_copy(tmp_path)
    broken = directory / "dtmf.yaml"
    broken.write_text(
        broken.read_text(encoding="utf-8").replace("$via: str", "$via: no_such_transform"),
        encoding="utf-8",
    )
    assert check_mappings(directory), "the broken copy must not pass"

    assert main(["mappings", "check", str(directory)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 1, lines
    file, field, reason = lines[0].split(": ", 2)
    assert file == str(broken)
    assert field == "output[0].emit.activityParams.dtmfDigits.$via"
    assert reason.startswith("unknown transform 'no_such_transform'")
    assert "1 error(s)" in captured.err


def test_mappings_check_reports_an_unknown_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _mapping_copy(tmp_path)
    broken = directory / "dtmf.yaml"
    broken.write_text(
        broken.read_text(encoding="utf-8") + "colour: blue\n",
        encoding="utf-8",
    )
    assert main(["mappings", "check", str(directory)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{broken}: colour: "), out


def test_config_check_ok_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD_CONFIG, encoding="utf-8")
    assert main(["config", "check", str(good)]) == 0
    assert "config ok: 1 route(s)" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_CONFIG, encoding="utf-8")
    assert main(["config", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{bad}: routes.support.expires_seconds: "), out
    assert "integer" in out


def test_config_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["config", "check", str(missing)]) == 1
    assert str(missing) in capsys.readouterr().out


def test_config_check_validates_the_configured_mappings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _mapping_copy(tmp_path)
    (directory / "dtmf.yaml").write_text("node: dtmf\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(f"mappings: {directory}\n{GOOD_CONFIG}", encoding="utf-8")
    assert main(["config", "check", str(config)]) == 1
    assert f"mappings: {directory / 'dtmf.yaml'}: " in capsys.readouterr().out


def test_serve_with_a_bad_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_CONFIG, encoding="utf-8")
    assert main(["serve", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: routes.support.expires_seconds: "), err

    assert main(["serve", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err

    good = tmp_path / "good.yaml"
    good.write_text(GOOD_CONFIG, encoding="utf-8")
    assert main(["serve", "--config", str(good), "--listen", "nowhere"]) == 2
    assert capsys.readouterr().err.startswith("error: --listen: ")


def test_unknown_log_level_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-level", "LOUD", "mappings", "check"]) == 2
    assert "unknown log level 'LOUD'" in capsys.readouterr().err


def test_python_dash_m_bridge_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["python -m bridge", "--help"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("bridge", run_name="__main__", alter_sys=True)
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: acvg-bridge")
    for command in ("serve", "demo", "mappings", "config"):
        assert command in out


def test_console_script_runs() -> None:
    script = Path(sys.executable).parent / "acvg-bridge"
    done = subprocess.run(
        [str(script), "mappings", "check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "mappings ok"), done.stderr


def test_serve_freezes_the_startup_heap() -> None:
    built_at_startup: list[object] = [object()]
    assert any(o is built_at_startup for o in gc.get_objects())
    freeze_startup_heap()
    assert gc.get_freeze_count() > 0
    # frozen objects are out of every collection's scan
    assert not any(o is built_at_startup for o in gc.get_objects())
