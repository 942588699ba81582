"""Fixtures shared by every test level. Fixtures that start servers live beside the tests that use them."""
from __future__ import annotations

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
