"""molecule/windows: site.yml on an existing Windows VM, idempotence, verify. Skipped without a VM."""
from __future__ import annotations

import os
import re
import secrets
import subprocess

import pytest

from rolerun import REPO

REQUIRED = ["MOLECULE_WINDOWS_HOST", "MOLECULE_WINDOWS_USER", "MOLECULE_WINDOWS_PASSWORD", "MOLECULE_WINDOWS_BUNDLE_DIR"]


@pytest.mark.molecule
@pytest.mark.windows
@pytest.mark.slow
def test_molecule_windows(ansible_env):
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        pytest.skip(f"molecule/windows needs an existing Windows Server VM and a built bundle; not set: "
                    f"{', '.join(missing)} (see molecule/windows/README.md)")
    env = {k: v for k, v in ansible_env.items() if not k.startswith("PREFECT_")}
    env.pop("ANSIBLE_CONFIG", None)  # molecule writes its own configuration for the scenario
    # A fresh password for the scenario's local service account unless one is given (policy: 3 character classes).
    env.setdefault("MOLECULE_WINDOWS_SERVICE_PASSWORD", f"Mol-{secrets.token_urlsafe(18)}9a")
    env.update(NO_COLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0")
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "molecule"), "test", "-s", "windows"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3600, check=False)
    out = proc.stdout + proc.stderr
    assert env["MOLECULE_WINDOWS_SERVICE_PASSWORD"] not in out, "the service password leaked into the output"
    assert proc.returncode == 0, out[-12000:]
    assert re.search(r"idempotence.*Successful|Idempotence completed successfully", out, re.S), out[-6000:]
    assert re.search(r"verify.*Successful", out, re.S), out[-6000:]


@pytest.mark.molecule
def test_molecule_windows_names_what_is_not_set(ansible_env):
    """Without a VM, `create` stops before any connection and names every variable that is missing.

    molecule writes an unset ${VAR} as an empty value, which arrives as null: it must count as not set."""
    env = {k: v for k, v in ansible_env.items() if not k.startswith(("PREFECT_", "MOLECULE_WINDOWS_"))}
    env.pop("ANSIBLE_CONFIG", None)
    env.update(NO_COLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", MOLECULE_WINDOWS_HOST="win-lab.invalid")
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "molecule"), "create", "-s", "windows"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-6000:]
    missing = re.search(r"Not set: ([A-Z_, ]+)\. See molecule/windows/README.md", out)
    assert missing, out[-6000:]
    assert sorted(missing.group(1).split(", ")) == sorted(
        [*REQUIRED[1:], "MOLECULE_WINDOWS_SERVICE_PASSWORD"]), missing.group(1)
    assert "win_ping" not in out and "Failed to connect" not in out, out[-6000:]
