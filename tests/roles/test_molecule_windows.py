"""molecule/windows: site.yml on an existing all-in-one Windows VM, idempotence, verify, uninstall. Skipped without a VM."""
from __future__ import annotations

import os
import re
import secrets
import subprocess

import pytest

from rolerun import REPO

# What the user gives (the VM, its certificate, the bundle) ...
REQUIRED = ["MOLECULE_WINDOWS_HOST", "MOLECULE_WINDOWS_USER", "MOLECULE_WINDOWS_PASSWORD", "MOLECULE_WINDOWS_BUNDLE_DIR",
            "MOLECULE_WINDOWS_HOST_ADDRESS", "MOLECULE_WINDOWS_CONTROL_NODE_ADDRESS", "MOLECULE_WINDOWS_CERT_THUMBPRINT"]
# ... and the passwords of what the run creates, generated here when not given.
GENERATED = ["MOLECULE_WINDOWS_SERVICE_PASSWORD", "MOLECULE_WINDOWS_DB_PASSWORD", "MOLECULE_WINDOWS_DB_SUPERUSER_PASSWORD",
             "MOLECULE_WINDOWS_BACKUP_PASSWORD", "MOLECULE_WINDOWS_BACKUP_DB_PASSWORD"]


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
    # Fresh, distinct passwords unless given (Windows policy: 3 character classes).
    for name in GENERATED:
        env[name] = env.get(name) or f"Mol-{secrets.token_urlsafe(18)}9a"
    env.update(NO_COLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0")
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "molecule"), "test", "-s", "windows"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=4 * 3600, check=False)
    out = proc.stdout + proc.stderr
    leaked = [name for name in GENERATED if env[name] in out]
    assert not leaked, f"leaked into the output: {', '.join(leaked)}"
    assert proc.returncode == 0, out[-12000:]
    assert re.search(r"idempotence.*Successful|Idempotence completed successfully", out, re.S), out[-6000:]
    assert re.search(r"verify.*Successful", out, re.S), out[-6000:]
    assert re.search(r"destroy.*Successful", out, re.S), out[-6000:]


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
    assert sorted(missing.group(1).split(", ")) == sorted([*REQUIRED[1:], *GENERATED]), missing.group(1)
    assert "win_ping" not in out and "Failed to connect" not in out, out[-6000:]
