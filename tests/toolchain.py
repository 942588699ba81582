"""Paths of the checkout and its toolchain, importable from every test level (`from toolchain import ...`)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
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
