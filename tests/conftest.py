"""Fixtures shared by every test level. Fixtures that start servers live beside the tests that use them."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from toolchain import REPO, VENV_BIN


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ansible_env() -> dict[str, str]:
    """Environment for ansible-* commands run from the checkout (ansible.cfg finds the collection)."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env.setdefault("ANSIBLE_NOCOLOR", "1")
    env.setdefault("ANSIBLE_FORCE_COLOR", "0")
    return env


# Parallel runs (pytest-xdist, `--dist loadgroup`, as scripts/test.sh runs the suite): one group per test module, so
# that a module's fixtures (a converged simulated host, a server) are set up once, on one worker; the bundle tests
# share one build and one download cache, so they are one group. Groups start longest first (tests/durations.json,
# seconds per group as measured by scripts/test.sh --durations-update), so that the last one to finish is short.
DURATIONS = REPO / "tests" / "durations.json"


def test_group(item) -> str:
    path = Path(str(item.fspath)).resolve().relative_to(REPO).as_posix()
    return "tests/bundle" if path.startswith("tests/bundle/") else path


def pytest_collection_modifyitems(config, items):
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(test_group(item)))
    # Stable sort: within a group the collection order stays.
    items.sort(key=lambda item: -known.get(test_group(item), 0.0))
