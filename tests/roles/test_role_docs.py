"""Each Windows role has a README whose variables table is generated from its argument_specs."""
from __future__ import annotations

import pytest

from roledocs import BEGIN, END, REPO, render

pytestmark = pytest.mark.static

ROLES = ["common", "python", "prefect_venv", "nssm_services"]


@pytest.mark.parametrize("role", ROLES)
def test_readme_matches_argument_specs(role):
    path = REPO / "roles" / role / "README.md"
    assert path.exists(), f"{path} is missing"
    readme = path.read_text()
    assert BEGIN in readme and END in readme, f"{path} has no generated section"
    assert render(readme, path.parent) == readme, (
        f"{path} is stale: run .venv/bin/python tests/roles/roledocs.py --write {role}")
