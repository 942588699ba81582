"""Level 1: `ansible-playbook --syntax-check` of every playbook (playbooks/ and molecule scenarios)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ansible_tasks import is_playbook, load_yaml
from toolchain import REPO, tool

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


def _syntax_check(playbooks: list[Path], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("ansible-playbook"), "-i", "localhost,", "--syntax-check", *map(str, playbooks)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )


@pytest.fixture(scope="module")
def all_pass(ansible_env: dict[str, str]) -> bool:
    """One ansible-playbook run for every playbook; a playbook is checked alone only when it fails."""
    return bool(PLAYBOOKS) and _syntax_check(PLAYBOOKS, ansible_env).returncode == 0


@pytest.mark.parametrize(
    "playbook",
    [pytest.param(p, id=str(p.relative_to(REPO))) for p in PLAYBOOKS]
    or [pytest.param(None, id="none", marks=pytest.mark.skip(reason="no playbook under playbooks/ or molecule/*/ yet"))],
)
def test_syntax_check(playbook: Path, all_pass: bool, ansible_env: dict[str, str]) -> None:
    if all_pass:
        return
    proc = _syntax_check([playbook], ansible_env)
    assert proc.returncode == 0, f"{playbook.relative_to(REPO)}:\n{proc.stdout}\n{proc.stderr}"
