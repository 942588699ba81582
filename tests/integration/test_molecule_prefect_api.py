"""The molecule scenario molecule/prefect_api: real server, converge, idempotence, verify through the API."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from servers import REPO, free_port


@pytest.mark.molecule
@pytest.mark.slow
def test_molecule_prefect_api(prefect_venv, ansible_env):
    env = {k: v for k, v in ansible_env.items() if not k.startswith("PREFECT_")}
    env.update(MOLECULE_PREFECT_PORT=str(free_port()), NO_COLOR="1", ANSIBLE_FORCE_COLOR="0",
               PY_COLORS="0", MOLECULE_NO_LOG="false")
    env.pop("ANSIBLE_CONFIG", None)  # molecule writes its own configuration for the scenario
    proc = subprocess.run([os.path.join(REPO, ".venv", "bin", "molecule"), "test", "-s", "prefect_api"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    assert proc.returncode == 0, out[-12000:]
    for step in ("converge", "idempotence", "verify"):
        assert re.search(rf"prefect_api \S+ {step}: Executed: Successful", out), f"{step} did not pass:\n{out[-6000:]}"
