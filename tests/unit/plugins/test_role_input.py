"""plugins/action/role_input.py: what it refuses in a role's input, and that every role's specification is readable."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ansible_collections.enclave.prefect.plugins.action.role_input import _argument_specs, range_problems, text_problems

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
OPTIONS = {
    "name": {"type": "str"},
    "count": {"type": "int"},
    "names": {"type": "list", "elements": "str"},
    "items": {"type": "list", "elements": "dict", "options": {"service": {"type": "str"}, "limit": {"type": "int"}}},
    "block": {"type": "dict", "options": {"url": {}}},  # no type: str, as ansible-core defaults it
}


def test_text_options_refuse_mappings_lists_and_booleans_naming_the_variable():
    values = {"name": {"a": 1}, "count": {"a": 1}, "names": ["ok", ["x"]], "items": [{"service": True}, "not-a-mapping"],
              "block": {"url": ["u"]}}
    assert text_problems(OPTIONS, values) == [
        "block.url must be text, not a list",
        "items[0].service must be text, not a boolean",
        "name must be text, not a mapping",
        "names[1] must be text, not a list",
    ]


def test_text_options_holding_text_numbers_or_nothing_pass():
    assert text_problems(OPTIONS, {"name": "svc", "names": ["a", 1], "items": [{"service": "W"}], "block": {"url": None}}) == []
    assert text_problems(OPTIONS, {"name": 17, "count": 3}) == []
    assert text_problems(OPTIONS, {}) == []


@pytest.mark.parametrize("value, problem", [
    (0, "count must be 1 to 10 (got 0)"),
    (11, "count must be 1 to 10 (got 11)"),
    ("12", "count must be 1 to 10 (got 12)"),
    ("many", "count must be a whole number (got 'many')"),
    (True, "count must be a whole number (got True)"),
    (2.5, "count must be a whole number (got 2.5)"),
])
def test_numbers_outside_their_range_are_refused(value, problem):
    assert range_problems({"count": [1, 10]}, {"count": value}) == [problem]


def test_ranges_reach_into_lists_and_may_have_no_upper_bound():
    values = {"items": [{"limit": 0}, {"limit": 5}, {"service": "W"}], "count": 10 ** 9}
    assert range_problems({"items[].limit": [1, 10], "count": [1, None]}, values) == ["items[0].limit must be 1 to 10 (got 0)"]
    assert range_problems({"count": [5, None]}, {"count": 4}) == ["count must be at least 5 (got 4)"]
    assert range_problems({"count": [1, 10], "items[].limit": [1, 2]}, {}) == []


@pytest.mark.parametrize("role", sorted(p.name for p in (REPO / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file()))
def test_every_role_calls_it_with_ranges_of_its_own_whole_number_options(role):
    """Each role's validation starts with role_input; a range names an int option of that role (or of common)."""
    specs = _argument_specs(str(REPO / "roles" / role))
    assert "main" in specs
    tasks = yaml.safe_load((REPO / "roles" / role / "tasks" / "validate.yml").read_text())
    first = tasks[0]
    assert "enclave.prefect.role_input" in first, first
    known = {**specs["main"]["options"], **_argument_specs(str(REPO / "roles" / "common"))["main"]["options"]}
    for name in (first["enclave.prefect.role_input"] or {}).get("ranges", {}):
        top, _sep, field = name.partition("[].")
        spec = known[top] if not field else known[top]["options"][field]
        assert spec.get("type") == "int", (role, name, spec)


@pytest.mark.parametrize("account", ["Administrator", "BUILTIN\\Administrators", "administrators", "CORP\\Domain Admins",
                                     "CORP\\Administrator ", "NT AUTHORITY\\SYSTEM", "NT AUTHORITY\\Local System",
                                     "CORP\\Administrator$", "S-1-5-18", "PREFECT01\\Guest", "Everyone"])
def test_privileged_principals_in_any_spelling_are_named(account):
    from ansible_collections.enclave.prefect.plugins.filter.input_errors import privileged_account
    assert privileged_account(account)


@pytest.mark.parametrize("account", ["svc_prefect", ".\\svc_prefect", "CORP\\svc_prefect", "CORP\\gmsa_prefect$", "CORP\\admin_tools"])
def test_dedicated_accounts_are_not(account):
    from ansible_collections.enclave.prefect.plugins.filter.input_errors import privileged_account
    assert not privileged_account(account)
