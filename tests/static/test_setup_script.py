"""scripts/setup.sh chooses a Python 3.11+ interpreter (find_python), tried with stand-in interpreters on PATH.

setup.sh is sourced, which defines its functions and runs nothing; the stand-ins are shell scripts that print a
version as `python -c 'print(major.minor)'` does.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from toolchain import REPO

pytestmark = pytest.mark.static

SETUP = REPO / "scripts" / "setup.sh"


def find_python(tmp_path: Path, versions: dict[str, str], python: str = "") -> subprocess.CompletedProcess[str]:
    """Run find_python with only the given interpreters on PATH (name -> version it prints; '' = broken)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, version in versions.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho {version}\n" if version else "#!/bin/sh\nexit 1\n")
        script.chmod(0o755)
    script = f'source "{SETUP}"; PATH="{bin_dir}"; PYTHON="$1"; find_python'
    return subprocess.run(["bash", "-c", script, "find_python", python], capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)


@pytest.mark.parametrize(("versions", "chosen"), [
    ({"python3": "3.11", "python3.12": "3.12"}, "python3"),
    ({"python3": "3.13"}, "python3"),
    ({"python3": "3.9", "python3.12": "3.12", "python3.11": "3.11"}, "python3.12"),
    ({"python3": "3.9", "python3.11": "3.11"}, "python3.11"),
    ({"python3.11": "3.11"}, "python3.11"),
    ({"python3": "", "python3.12": "3.12"}, "python3.12"),
], ids=["python3 new enough", "python3 3.13", "python3.12 before python3.11", "python3.11 on RHEL 9",
        "no python3", "broken python3"])
def test_chooses_the_first_new_enough_interpreter(tmp_path: Path, versions: dict[str, str], chosen: str) -> None:
    proc = find_python(tmp_path, versions)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{chosen}\n"
    assert proc.stderr == ""


@pytest.mark.parametrize("versions", [{"python3": "3.9"}, {"python3": "3.10", "python3.11": "3.9"}, {}],
                         ids=["RHEL 9 python3 only", "all too old", "no python at all"])
def test_stops_naming_the_python_override(tmp_path: Path, versions: dict[str, str]) -> None:
    proc = find_python(tmp_path, versions)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Python 3.11 or newer is needed" in proc.stderr
    assert "PYTHON=/path/to/python3.12 bash scripts/setup.sh" in proc.stderr
    for name, version in versions.items():
        assert f"{name} is {version}" in proc.stderr, proc.stderr
    if not versions:
        assert "found: no python3." in proc.stderr


def test_python_override_is_used_when_new_enough(tmp_path: Path) -> None:
    proc = find_python(tmp_path, {"python3": "3.9", "py-custom": "3.12"}, python="py-custom")
    assert (proc.returncode, proc.stdout) == (0, "py-custom\n"), proc.stderr


@pytest.mark.parametrize(("version", "shown"), [("3.10", "is 3.10"), ("", "is not a working interpreter")])
def test_python_override_that_is_too_old_is_refused(tmp_path: Path, version: str, shown: str) -> None:
    """An explicit PYTHON is never replaced by another interpreter: it is refused, named."""
    proc = find_python(tmp_path, {"python3": "3.12", "py-old": version}, python="py-old")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"PYTHON=py-old {shown}; Python 3.11 or newer is needed" in proc.stderr


def test_sourcing_runs_nothing(tmp_path: Path) -> None:
    """The tests above rely on it: sourcing defines the functions and installs or builds nothing."""
    proc = subprocess.run(["bash", "-c", f'source "{SETUP}"; declare -F find_python need_pkgs make_venv'],
                          capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["find_python", "need_pkgs", "make_venv"]
    assert "[setup]" not in proc.stdout + proc.stderr


def apt_install(tmp_path: Path, update_rc: int, install_rc: int) -> subprocess.CompletedProcess[str]:
    """apt_install with a stand-in apt-get that prints what apt prints on failure and exits as told."""
    bin_dir = tmp_path / "apt-bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "apt-get").write_text(
        '#!/bin/bash\necho "$@" >> "$(dirname "$0")/calls"\n'
        'case " $* " in *" update "*) echo "E: Failed to fetch http://deb.example/dists/bookworm/main/binary-i386/Packages";'
        f' exit {update_rc};; *" install "*) echo "E: Could not get lock /var/lib/dpkg/lock-frontend"; exit {install_rc};; esac\n')
    (bin_dir / "apt-get").chmod(0o755)
    script = f'source "{SETUP}"; PATH="{bin_dir}:$PATH"; apt_install --no-install-recommends wine64 wine; echo done'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)


def test_apt_failures_show_apt_and_say_what_to_do(tmp_path):
    update = apt_install(tmp_path / "update", update_rc=100, install_rc=0)
    assert update.returncode == 1 and "done" not in update.stdout
    assert "[setup] ERROR: apt-get update failed" in update.stderr
    assert "[setup]   E: Failed to fetch http://deb.example/dists/bookworm/main/binary-i386/Packages" in update.stderr
    assert "/etc/apt/sources.list.d" in update.stderr and "apt-get install --no-install-recommends wine64 wine" in update.stderr
    install = apt_install(tmp_path / "install", update_rc=0, install_rc=100)
    assert install.returncode == 1 and "[setup]   E: Could not get lock /var/lib/dpkg/lock-frontend" in install.stderr
    assert "held the lock for more than 5 minutes" in install.stderr
    calls = (tmp_path / "install" / "apt-bin" / "calls").read_text().splitlines()
    assert all("DPkg::Lock::Timeout=300" in call for call in calls), calls
    done = apt_install(tmp_path / "ok", update_rc=0, install_rc=0)
    assert done.returncode == 0 and done.stdout.strip() == "done" and done.stderr == ""


def test_toolchain_line_reads_the_whole_version_output(tmp_path):
    """A program that writes many lines and fails on a closed pipe, as ansible does: the first line is taken after it
    has written everything, so nothing is left on stderr."""
    loud = tmp_path / "ansible"
    loud.write_text("#!/usr/bin/env python3\nimport sys\ntry:\n    print('ansible [core 2.19.14]')\n"
                    "    for i in range(200000):\n        print('  config file = x' * 4)\n    sys.stdout.flush()\n"
                    "except BrokenPipeError:\n    sys.stderr.write('ERROR: Unexpected Exception: Broken pipe\\n')\n"
                    "    sys.exit(250)\n")
    loud.chmod(0o755)
    proc = subprocess.run(["bash", "-c", f'source "{SETUP}"; toolchain_line "{loud}"'], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout == "ansible [core 2.19.14]\n" and proc.stderr == "", proc
