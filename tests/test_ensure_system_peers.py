"""tools/ensure_system_peers: what it finds, what it installs and how, and when it stops."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "ensure_system_peers"
BASH = shutil.which("bash") or "/bin/bash"
ALL = ("prometheus", "chromium", "redis-server", "nginx")
# what the script runs besides bash builtins; linked in, so nothing else of the machine is found
REAL_TOOLS = ("sh", "chmod", "rm", "env", "cat", "tail")


@dataclass
class Machine:
    """A fake machine: a PATH of shims, a log of what apt-get and sudo were asked to do."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def calls(self) -> Path:
        return self.root / "calls.log"

    @property
    def policy(self) -> Path:
        return self.root / "policy-rc.d"

    @property
    def chromium(self) -> Path:
        return self.root / "chromium"

    def shim(self, name: str, body: str = "exit 0") -> None:
        path = self.bin / name
        path.write_text(f"#!{BASH}\n{body}\n", encoding="utf-8")
        path.chmod(0o755)

    def have(self, *packages: str) -> None:
        for package in packages:
            if package == "prometheus":
                self.shim("promtool")
                self.shim("prometheus")
            elif package == "chromium":
                self.chromium.write_text("#!/bin/sh\n", encoding="utf-8")
                self.chromium.chmod(0o755)
            else:
                self.shim(package)

    def apt(self, exit_code: int = 0) -> None:
        # logs argv, DEBIAN_FRONTEND and the policy file as apt-get saw it
        self.shim(
            "apt-get",
            f'echo "apt-get $* | DF=${{DEBIAN_FRONTEND:-}} | policy=$(cat {self.policy} '
            f'2>/dev/null | tail -n 1)" >> {self.calls}\nexit {exit_code}',
        )

    def sudo(self, allowed: bool) -> None:
        body = f'echo "sudo $*" >> {self.calls}\n[ "$1" = "-n" ] || exit 1\nshift\n' + (
            '[ "$1" = "true" ] && exit 0\n"$@"' if allowed else "exit 1"
        )
        self.shim("sudo", body)

    def run(self, *args: str, uid: int = 0) -> subprocess.CompletedProcess[str]:
        self.shim("id", f'[ "$1" = "-u" ] && echo {uid}')
        env = {
            "PATH": str(self.bin),
            "ACVG_CHROMIUM": str(self.chromium),
            "ACVG_NGINX": str(self.root / "no-nginx"),
            "ACVG_POLICY_RC": str(self.policy),
        }
        return subprocess.run(
            [BASH, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30
        )

    def logged(self) -> list[str]:
        if not self.calls.exists():
            return []
        return self.calls.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    m = Machine(tmp_path)
    m.bin.mkdir()
    for tool in REAL_TOOLS:
        real = shutil.which(tool)
        assert real is not None, tool
        os.symlink(real, m.bin / tool)
    return m


def _advice(missing: str) -> str:
    return (
        f"ensure_system_peers: missing {missing}; "
        f"run: sudo apt-get update && sudo apt-get install -y {missing}\n"
    )


def test_all_present_is_silent(machine: Machine) -> None:
    machine.have(*ALL)
    machine.apt()
    done = machine.run()
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert machine.logged() == []


def test_root_installs_only_what_is_missing(machine: Machine) -> None:
    machine.have("redis-server", "nginx")
    machine.apt()
    done = machine.run(uid=0)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "ensure_system_peers: installing prometheus chromium\n"
    assert machine.logged() == [
        "apt-get update -qq | DF= | policy=exit 101",
        "apt-get install -y -qq --no-install-recommends prometheus chromium "
        "| DF=noninteractive | policy=exit 101",
    ]
    assert not machine.policy.exists()  # the temporary policy-rc.d is gone


def test_an_existing_policy_rc_is_left_alone(machine: Machine) -> None:
    machine.have("prometheus", "chromium", "redis-server")
    machine.policy.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    machine.apt()
    assert machine.run(uid=0).returncode == 0
    assert machine.policy.read_text(encoding="utf-8") == "#!/bin/sh\nexit 0\n"
    assert machine.logged()[-1].startswith("apt-get install -y -qq --no-install-recommends nginx")


def test_non_root_goes_through_sudo_n(machine: Machine) -> None:
    machine.have("prometheus", "chromium", "nginx")
    machine.apt()
    machine.sudo(allowed=True)
    done = machine.run(uid=1000)
    assert done.returncode == 0, done.stderr
    sudo = [line for line in machine.logged() if line.startswith("sudo")]
    assert sudo[0] == "sudo -n true"
    assert all(line.startswith("sudo -n ") for line in sudo)
    assert any("apt-get install" in line and "redis-server" in line for line in sudo)
    apt = [line for line in machine.logged() if line.startswith("apt-get install")]
    assert apt == [
        "apt-get install -y -qq --no-install-recommends redis-server "
        "| DF=noninteractive | policy=exit 101"
    ]
    assert not machine.policy.exists()


@pytest.mark.parametrize("sudo", ["absent", "needs a password"])
def test_non_root_without_sudo_stops_with_one_line(machine: Machine, sudo: str) -> None:
    machine.apt()
    if sudo != "absent":
        machine.sudo(allowed=False)
    done = machine.run(uid=1000)
    assert done.returncode == 1
    assert done.stderr == _advice("prometheus chromium redis-server nginx")
    assert not [line for line in machine.logged() if line.startswith("apt-get")]


def test_check_only_reports(machine: Machine) -> None:
    machine.have("prometheus", "redis-server", "nginx")
    machine.apt()
    done = machine.run("--check", uid=0)
    assert (done.returncode, done.stderr) == (1, _advice("chromium"))
    assert machine.logged() == []
    machine.have("chromium")
    assert machine.run("--check", uid=0).returncode == 0


def test_no_apt_get_stops_with_one_line(machine: Machine) -> None:
    machine.have("chromium", "nginx", "redis-server")
    done = machine.run(uid=0)
    assert (done.returncode, done.stderr) == (1, _advice("prometheus"))


def test_nginx_on_path_counts(machine: Machine) -> None:
    machine.have("prometheus", "chromium", "redis-server")
    machine.shim("nginx")
    assert machine.run("--check").returncode == 0


def test_a_failing_install_fails_and_cleans_up(machine: Machine) -> None:
    machine.have("prometheus", "chromium", "nginx")
    machine.apt(exit_code=100)
    done = machine.run(uid=0)
    assert done.returncode != 0
    assert not machine.policy.exists()
