"""The level markers of tests/roles and tests/static say what their tests are: `-m static` selects no run on the
simulated host, `-m simulated` every one (tiers: tests/conftest.py tier_of). The other levels are marked by their
directory's conftest.py (integration) or by the tests themselves (molecule, windows)."""
from __future__ import annotations

import importlib.util
import re

import pytest

from toolchain import REPO

# tests/conftest.py by path: `import conftest` finds whichever conftest module was imported first.
_spec = importlib.util.spec_from_file_location("tests_conftest", REPO / "tests" / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
tier_of = _conftest.tier_of

pytestmark = pytest.mark.static

FILES = sorted(p.relative_to(REPO).as_posix() for d in ("roles", "static") for p in (REPO / "tests" / d).glob("test_*.py"))


@pytest.mark.parametrize("path", FILES)
def test_level_marker_matches_the_tier(path):
    tier = tier_of(path + "::x")
    markers = set(re.findall(r"pytest\.mark\.(\w+)", (REPO / path).read_text()))
    if tier == "simulated host":
        assert "simulated" in markers and "static" not in markers, f"{path} runs on the simulated host: mark it simulated"
    else:
        assert "simulated" not in markers and markers & {"static", "molecule"}, f"{path} ({tier}): mark it static"
