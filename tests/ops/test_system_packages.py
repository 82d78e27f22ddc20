"""bin/system-packages on machines that lack a package, simulated by a fake dpkg-query on PATH.

The fakes read and write a small state file (one installed package a line), so the root path
really goes from "missing" to "installed" through the script's own apt-get call.
"""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bin" / "system-packages"

FAKE_DPKG_QUERY = """#!/bin/sh
# dpkg-query -W -f='${Status}' PACKAGE
package="$3"
if grep -qx "$package" "$FAKE_STATE"; then printf 'install ok installed'; exit 0; fi
echo "dpkg-query: no packages found matching $package" >&2
exit 1
"""
FAKE_APT_GET = """#!/bin/sh
echo "apt-get $*" >> "$FAKE_LOG"
[ "$1" = update ] && exit 0
for arg in "$@"; do
  case "$arg" in -*|install) ;; *) echo "$arg" >> "$FAKE_STATE" ;; esac
done
"""


def listed(kind):
    out = subprocess.run([SCRIPT, "list", kind], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.fixture
def machine(tmp_path):
    """A PATH with fake dpkg-query, apt-get and id in front of the real tools."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    for name, body in (("dpkg-query", FAKE_DPKG_QUERY), ("apt-get", FAKE_APT_GET)):
        (fakebin / name).write_text(body)
        (fakebin / name).chmod(0o755)
    state = tmp_path / "installed"
    log = tmp_path / "apt.log"
    log.write_text("")

    def run(kind, *, installed, uid):
        state.write_text("".join(f"{p}\n" for p in installed))
        (fakebin / "id").write_text(f"#!/bin/sh\necho {uid}\n")
        (fakebin / "id").chmod(0o755)
        env = {
            **os.environ,
            "PATH": f"{fakebin}:{os.environ['PATH']}",
            "FAKE_STATE": str(state),
            "FAKE_LOG": str(log),
        }
        return subprocess.run([SCRIPT, kind], env=env, capture_output=True, text=True)

    run.log = log
    run.state = state
    return run


def test_all_present_is_quiet_success(machine):
    result = machine("test", installed=listed("test"), uid=1000)
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""
    assert machine.log.read_text() == ""


def test_non_root_gets_the_one_command_and_a_failure(machine):
    have = [p for p in listed("test") if p not in ("zbar-tools", "chromium")]
    result = machine("test", installed=have, uid=1000)
    assert result.returncode == 1
    assert "Missing system packages for 'test': zbar-tools chromium" in result.stderr
    assert (
        "sudo apt-get update && sudo apt-get install -y --no-install-recommends "
        "zbar-tools chromium" in result.stderr
    )
    assert machine.log.read_text() == ""  # nothing installed without root


def test_root_installs_what_is_missing_after_an_update(machine):
    have = [p for p in listed("test") if p != "poppler-utils"]
    result = machine("test", installed=have, uid=0)
    assert result.returncode == 0, result.stderr
    calls = machine.log.read_text().splitlines()
    assert calls[0] == "apt-get update -qq"
    assert calls[1].startswith("apt-get install") and calls[1].endswith(" poppler-utils")
    assert len(calls) == 2
    assert "poppler-utils" in machine.state.read_text().split()


def test_run_needs_only_what_running_needs(machine):
    result = machine("run", installed=listed("run"), uid=1000)
    assert result.returncode == 0, result.stderr
    assert "chromium" not in listed("run")
    assert set(listed("run")) < set(listed("test"))
    assert {
        "libpango-1.0-0",
        "libpangoft2-1.0-0",
        "libharfbuzz-subset0",
        "fonts-dejavu-core",
    } <= set(listed("run"))
    assert {"poppler-utils", "zbar-tools", "chromium"} <= set(listed("test"))


def test_unknown_kind_is_a_usage_error(machine):
    result = machine("everything", installed=[], uid=1000)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_make_test_stops_before_the_tests_when_a_package_is_missing(machine, tmp_path):
    """`make test` runs the check first; pytest never starts when it fails."""
    have = [p for p in listed("test") if p != "chromium"]
    machine.state.write_text("".join(f"{p}\n" for p in have))
    fakebin = tmp_path / "bin"
    (fakebin / "id").write_text("#!/bin/sh\necho 1000\n")
    (fakebin / "id").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{fakebin}:{os.environ['PATH']}",
        "FAKE_STATE": str(machine.state),
        "FAKE_LOG": str(machine.log),
        "PYTEST_ARGS": "--version",
    }
    result = subprocess.run(
        ["make", "-s", "test"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "Missing system packages for 'test': chromium" in result.stderr
    assert "pytest" not in result.stdout
