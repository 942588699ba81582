"""Level 1: `ansible-playbook --syntax-check` of every playbook (playbooks/ and molecule scenarios)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ansible_tasks import is_playbook, load_yaml
from conftest import REPO, tool

pytestmark = pytest.mark.static


def _playbooks() -> list[Path]:
    candidates = sorted((REPO / "playbooks").glob("*.y*ml")) + sorted((REPO / "molecule").glob("*/*.y*ml"))
    found = []
    for path in candidates:
        try:
            if is_playbook(load_yaml(path)):
                found.append(path)
        except Exception:  # noqa: BLE001 - a file that does not load is reported by --syntax-check
            found.append(path)
    return found


PLAYBOOKS = _playbooks()


@pytest.mark.parametrize(
    "playbook",
    [pytest.param(p, id=str(p.relative_to(REPO))) for p in PLAYBOOKS]
    or [pytest.param(None, id="none", marks=pytest.mark.skip(reason="no playbook under playbooks/ or molecule/*/ yet"))],
)
def test_syntax_check(playbook: Path, ansible_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [tool("ansible-playbook"), "-i", "localhost,", "--syntax-check", str(playbook)],
        cwd=REPO, env=ansible_env, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, f"{playbook.relative_to(REPO)}:\n{proc.stdout}\n{proc.stderr}"
