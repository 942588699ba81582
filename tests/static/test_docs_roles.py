"""docs/roles.md states the roles site.yml runs, in its order, how many there are, and the hosts of each layer
playbook as its play targets them."""
from __future__ import annotations

import re

import pytest
import yaml

from toolchain import REPO

pytestmark = pytest.mark.static

NUMBERS = {5: "Five", 6: "Six", 7: "Seven", 8: "Eight", 9: "Nine"}


def _site_roles() -> list[str]:
    order = []
    site = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())
    for entry in site:
        target = entry.get("ansible.builtin.import_playbook", "")
        if not target.startswith("layers/"):
            continue
        for play in yaml.safe_load((REPO / "playbooks" / target).read_text()):
            for role in play.get("roles", []):
                name = (role if isinstance(role, str) else role["role"]).split(".")[-1]
                if name not in order:
                    order.append(name)
    return order


def test_role_table_lists_the_site_roles_in_their_order():
    text = (REPO / "docs" / "roles.md").read_text()
    table = re.findall(r"^\| `([a-z_]+)` \|", text.split("## Playbooks")[0], re.M)
    roles = _site_roles()
    assert roles and table[:-1] == roles and table[-1] == "common", (table, roles)
    assert f"{NUMBERS[len(roles)]} roles deploy Prefect" in text
    assert "Three roles" not in text


def test_layer_playbooks_are_listed_with_their_hosts():
    text = (REPO / "docs" / "roles.md").read_text()
    rows = dict(re.findall(r"^\| `playbooks/([a-z_]+\.yml)` \| `([^`]+)`", text, re.M))
    for layer in ("python", "prefect_venv", "iis_proxy", "firewall", "postgresql", "backup"):
        play = yaml.safe_load((REPO / "playbooks" / "layers" / f"{layer}.yml").read_text())[0]
        assert rows.get(f"{layer}.yml") == play["hosts"], (layer, rows.get(f"{layer}.yml"), play["hosts"])
