"""firewallcheck.py: the rules the firewall role derives for the example inventory's topologies pass; each negative
fixture fails with its one problem; the check fails on the role's own output when the input opens a port to any
address."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from firewallcheck import REPO, check_file, check_rendered, render  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.static

FIXTURES = REPO / "tests" / "fixtures" / "static" / "firewall"
INVENTORY = REPO / "inventories" / "example" / "hosts.yml"


@pytest.fixture(scope="module")
def example():
    return render(INVENTORY)


def test_example_topologies_pass(example):
    assert check_rendered(example) == []
    names = {host: sorted(r["name"].rsplit(" - ", 1)[1] for r in item["plan"]["rules"]) for host, item in example.items()}
    # The rules are really there to be checked: people's HTTPS on both proxies, the machine path on the distributed one,
    # PostgreSQL on the distributed database host only (the all-in-one database is local).
    assert names == {"prefect-aio.corp.local": ["people HTTPS"],
                     "prefect-srv01.corp.local": ["people HTTPS", "worker machine path"],
                     "prefect-db01.corp.local": ["PostgreSQL"],
                     "prefect-wrk01.corp.local": [], "prefect-wrk02.corp.local": []}
    ports = {r["localport"] for item in example.values() for r in item["plan"]["rules"]}
    assert ports == {"443", "8443", "5432"}


def test_role_output_opening_a_port_to_any_address_fails():
    rendered = render(INVENTORY, limit="all_in_one", extra={"firewall_allow_any_client": True, "firewall_client_ranges": ["any"]})
    assert check_rendered(rendered) == [
        "prefect-aio.corp.local: rule 'enclave.prefect.firewall - people HTTPS': allows TCP 443 from any address (any)"]


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.yml")))
def test_fixtures(fixture):
    path = FIXTURES / fixture
    expect = yaml.safe_load(path.read_text())["expect"]
    problems = check_file(path)
    if fixture.startswith("good_"):
        assert problems == []
    else:
        assert len(problems) == 1 and expect in problems[0], problems


def test_command_line_exit_status():
    cli = [sys.executable, str(REPO / "tests/static/firewallcheck.py")]
    bad = subprocess.run(cli + [str(FIXTURES / "bad_block_rule.yml")], capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "a block rule" in bad.stdout
    good = subprocess.run(cli + [str(FIXTURES / "good_rules.yml")], capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stdout
