"""Paths of the checkout and its toolchain, importable from every test level (`from toolchain import ...`)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The toolchain of the running interpreter when it is one of the checkout's virtual environments (.venv, or
# .venv-core-<version>, where tests/static/test_core_versions.py runs tests against another ansible-core), else .venv.
VENV = Path(sys.prefix) if Path(sys.prefix).parent == REPO and Path(sys.prefix).name.startswith(".venv") else REPO / ".venv"
VENV_BIN = VENV / "bin"
PREFECT_VENV_BIN = REPO / ".venv-prefect" / "bin"


def tool(name: str) -> str:
    """Absolute path of a toolchain command: the project venv first, then PATH."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run `bash scripts/setup.sh`")
    return found
