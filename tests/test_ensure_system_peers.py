"""`tools/ensure_system_peers`: reports missing peers, installs them with apt-get or says how."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "ensure_system_peers"
ALL_PACKAGES = ("prometheus", "chromium", "redis-server", "nginx", "haproxy")
# Real tools the script runs besides bash builtins; everything else on its PATH is a shim.
REAL_TOOLS = ("sh", "chmod", "rm", "env")
POLICY_BODY = "#!/bin/sh\nexit 101\n"


def _which(name: str) -> str:
    found = shutil.which(name)
    assert found is not None, f"{name} is needed to run these tests"
    return str(Path(found).resolve())


BASH = _which("bash")


def advice(*packages: str) -> str:
    """The one line the script prints when it will not install `packages` itself."""
    names = " ".join(packages)
    return (
        f"ensure_system_peers: missing {names}; "
        f"run: sudo apt-get update && sudo apt-get install -y {names}\n"
    )


class Sandbox:
    """A PATH of shims only, a log of what apt-get and sudo were asked, and peer paths in tmp."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls.log"
        self.apt_log = root / "apt-get.log"
        self.chromium = root / "chromium"
        self.nginx = root / "nginx"
        self.haproxy = root / "haproxy"
        self.policy = root / "policy-rc.d"
        self.home = root / "home"
        self.home.mkdir()
        for tool in REAL_TOOLS:
            (self.bin / tool).symlink_to(_which(tool))
        self.set_uid(0)
        self.apt_get()

    def shim(self, name: str, body: str = "exit 0\n") -> None:
        path = self.bin / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)

    def remove(self, name: str) -> None:
        (self.bin / name).unlink()

    def set_uid(self, uid: int) -> None:
        self.shim("id", f'[ "$1" = -u ] || exit 2\necho {uid}\n')

    def apt_get(self, *, fail_on: str | None = None) -> None:
        """apt-get logs its argv, then DEBIAN_FRONTEND and the policy file as it found them."""
        fail = f'[ "$1" = {fail_on} ] && exit 100\n' if fail_on else ""
        self.shim(
            "apt-get",
            f"""printf 'apt-get %s\\n' "$*" >> '{self.log}'
policy='{self.policy}'
state=absent
if [ -e "$policy" ]; then
  state=present
  [ -x "$policy" ] && state=executable
  body=''
  while IFS= read -r line || [ -n "$line" ]; do body="$body$line|"; done < "$policy"
  state="$state:$body"
fi
printf 'DEBIAN_FRONTEND=%s policy=%s\\n' "${{DEBIAN_FRONTEND-<unset>}}" "$state" \\
  >> '{self.apt_log}'
{fail}exit 0
""",
        )

    def sudo(self, *, passwordless: bool) -> None:
        """sudo logs its argv; `-n true` answers per `passwordless`, else runs what follows -n."""
        self.shim(
            "sudo",
            f"""printf 'sudo %s\\n' "$*" >> '{self.log}'
[ "$1" = -n ] || exit 64
shift
if [ "$1" = true ] && [ $# -eq 1 ]; then exit {0 if passwordless else 1}; fi
exec "$@"
""",
        )

    def install(self, *packages: str) -> None:
        """Make the named Debian packages present, the way the script looks for them."""
        for package in packages:
            if package == "prometheus":
                self.shim("promtool")
                self.shim("prometheus")
            elif package == "chromium":
                self.chromium.write_text("#!/bin/sh\nexit 0\n")
                self.chromium.chmod(0o755)
            elif package == "redis-server":
                self.shim("redis-server")
            elif package == "nginx":
                self.shim("nginx")
            elif package == "haproxy":
                self.shim("haproxy")
            else:
                raise AssertionError(package)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": str(self.bin),
            "HOME": str(self.home),
            "LC_ALL": "C",
            "ACVG_CHROMIUM": str(self.chromium),
            "ACVG_NGINX": str(self.nginx),
            "ACVG_HAPROXY": str(self.haproxy),
            "ACVG_POLICY_RC": str(self.policy),
        }
        return subprocess.run(
            [BASH, str(SCRIPT), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def apt_states(self) -> list[str]:
        return self.apt_log.read_text().splitlines() if self.apt_log.exists() else []


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def install_calls(*packages: str, prefix: str = "") -> list[str]:
    return [
        f"{prefix}apt-get update -qq",
        f"{prefix}apt-get install -y -qq --no-install-recommends {' '.join(packages)}",
    ]


INSTALLED = f"DEBIAN_FRONTEND=<unset> policy=executable:{POLICY_BODY.replace(chr(10), '|')}"
INSTALLED_NONINTERACTIVE = INSTALLED.replace("<unset>", "noninteractive")


def test_the_sandbox_hides_the_machines_tools(box: Sandbox) -> None:
    """The shims are all the script sees: nothing of this machine's PATH leaks in."""
    box.remove("apt-get")
    result = box.run("--check")
    assert result.returncode == 1
    assert result.stderr == advice(*ALL_PACKAGES)


@pytest.mark.parametrize("proxies_at", ["path", "ACVG_NGINX and ACVG_HAPROXY"])
def test_everything_present_is_silent(box: Sandbox, proxies_at: str) -> None:
    box.sudo(passwordless=True)
    box.install("prometheus", "chromium", "redis-server")
    if proxies_at == "path":
        box.install("nginx", "haproxy")
    else:
        for binary in (box.nginx, box.haproxy):
            binary.write_text("#!/bin/sh\nexit 0\n")
            binary.chmod(0o755)
    result = box.run()
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert box.calls() == []
    assert not box.policy.exists()


def test_root_installs_what_is_missing(box: Sandbox) -> None:
    box.sudo(passwordless=True)
    box.install("redis-server", "nginx", "haproxy")
    result = box.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == "ensure_system_peers: installing prometheus chromium\n"
    # As root: apt-get directly, never through sudo.
    assert box.calls() == install_calls("prometheus", "chromium")
    # The install runs noninteractive, with services held back by a fresh policy-rc.d.
    assert box.apt_states() == [INSTALLED, INSTALLED_NONINTERACTIVE]
    assert not box.policy.exists()


@pytest.mark.parametrize("present", ["promtool", "prometheus"])
def test_prometheus_needs_both_binaries(box: Sandbox, present: str) -> None:
    box.install("chromium", "redis-server", "nginx", "haproxy")
    box.shim(present)
    result = box.run()
    assert result.returncode == 0, result.stderr
    assert box.calls() == install_calls("prometheus")


def test_existing_policy_file_is_left_alone(box: Sandbox) -> None:
    box.install("prometheus", "chromium", "nginx", "haproxy")
    box.policy.write_text("#!/bin/sh\nexit 0\n")
    box.policy.chmod(0o644)
    result = box.run()
    assert result.returncode == 0, result.stderr
    assert box.calls() == install_calls("redis-server")
    seen = "DEBIAN_FRONTEND={} policy=present:#!/bin/sh|exit 0|"
    assert box.apt_states() == [seen.format("<unset>"), seen.format("noninteractive")]
    assert box.policy.read_text() == "#!/bin/sh\nexit 0\n"
    assert stat.S_IMODE(box.policy.stat().st_mode) == 0o644


def test_non_root_installs_through_sudo(box: Sandbox) -> None:
    box.set_uid(1000)
    box.sudo(passwordless=True)
    box.install("prometheus", "chromium")
    result = box.run()
    assert result.returncode == 0, result.stderr
    assert result.stderr == "ensure_system_peers: installing redis-server nginx haproxy\n"
    calls = box.calls()
    assert calls[0] == "sudo -n true"
    assert calls[1].startswith("sudo -n sh -c ") and str(box.policy) in calls[1]
    assert calls[2:] == [
        "sudo -n apt-get update -qq",
        "apt-get update -qq",
        "sudo -n env DEBIAN_FRONTEND=noninteractive"
        " apt-get install -y -qq --no-install-recommends redis-server nginx haproxy",
        "apt-get install -y -qq --no-install-recommends redis-server nginx haproxy",
        f"sudo -n rm -f {box.policy}",
    ]
    assert box.apt_states() == [INSTALLED, INSTALLED_NONINTERACTIVE]
    assert not box.policy.exists()


@pytest.mark.parametrize("sudo", ["absent", "asks for a password"])
def test_non_root_without_sudo_says_what_to_run(box: Sandbox, sudo: str) -> None:
    box.set_uid(1000)
    if sudo != "absent":
        box.sudo(passwordless=False)
    result = box.run()
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == advice(*ALL_PACKAGES)
    assert box.calls() == ([] if sudo == "absent" else ["sudo -n true"])
    assert box.apt_states() == []
    assert not box.policy.exists()


@pytest.mark.parametrize("uid", [0, 1000])
def test_check_only_reports(box: Sandbox, uid: int) -> None:
    box.set_uid(uid)
    box.sudo(passwordless=True)
    box.install("prometheus", "redis-server")
    result = box.run("--check")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == advice("chromium", "nginx", "haproxy")
    assert box.calls() == []
    assert not box.policy.exists()


def test_check_with_everything_present_passes(box: Sandbox) -> None:
    box.install(*ALL_PACKAGES)
    result = box.run("--check")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert box.calls() == []


def test_root_without_apt_get_says_what_to_run(box: Sandbox) -> None:
    box.remove("apt-get")
    box.sudo(passwordless=True)
    box.install("prometheus", "chromium", "redis-server")
    result = box.run()
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == advice("nginx", "haproxy")
    assert box.calls() == []
    assert not box.policy.exists()


@pytest.mark.parametrize("step", ["update", "install"])
def test_apt_get_failure_fails_and_removes_policy(box: Sandbox, step: str) -> None:
    box.apt_get(fail_on=step)
    box.install("prometheus", "redis-server", "nginx", "haproxy")
    result = box.run()
    assert result.returncode == 100
    expected = install_calls("chromium")
    assert box.calls() == (expected[:1] if step == "update" else expected)
    assert box.apt_states()[0] == INSTALLED
    assert not box.policy.exists()


def test_an_unknown_argument_installs_nothing(box: Sandbox) -> None:
    box.apt_get()
    result = box.run("--chek")
    assert (result.returncode, result.stderr) == (2, "usage: tools/ensure_system_peers [--check]\n")
    assert box.calls() == []


def test_a_directory_is_no_chromium(box: Sandbox) -> None:
    box.install(*ALL_PACKAGES)
    box.chromium.unlink()
    box.chromium.mkdir()
    result = box.run("--check")
    assert (result.returncode, result.stderr) == (1, advice("chromium"))


def test_only_haproxy_missing_installs_haproxy(box: Sandbox) -> None:
    box.install("prometheus", "chromium", "redis-server", "nginx")
    result = box.run()
    assert result.returncode == 0, result.stderr
    assert result.stderr == "ensure_system_peers: installing haproxy\n"
    assert box.calls() == install_calls("haproxy")
    assert box.apt_states() == [INSTALLED, INSTALLED_NONINTERACTIVE]
    assert not box.policy.exists()


def test_a_directory_is_no_haproxy(box: Sandbox) -> None:
    box.install("prometheus", "chromium", "redis-server", "nginx")
    box.haproxy.mkdir()
    result = box.run("--check")
    assert (result.returncode, result.stderr) == (1, advice("haproxy"))
