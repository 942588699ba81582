"""Level 1: every role has a meta/argument_specs.yml that covers its defaults and the variables it
uses (see argspecs.py for the rules); fixture roles prove each rule catches its mistake."""
from __future__ import annotations

import pytest

import argspecs
from toolchain import REPO

pytestmark = pytest.mark.static

FIXTURE_ROLES = REPO / "tests" / "fixtures" / "static" / "roles"
ROLES = argspecs.roles()


@pytest.mark.parametrize(
    "role",
    [pytest.param(name, id=name) for name in ROLES]
    or [pytest.param(None, id="none", marks=pytest.mark.skip(reason="no role under roles/ yet"))],
)
def test_role_argument_specs(role: str) -> None:
    problems = argspecs.check_role(ROLES[role], ROLES)
    assert problems == [], f"roles/{role}:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def bad_problems() -> list[str]:
    return argspecs.check_role(FIXTURE_ROLES / "bad_spec", {**ROLES, "bad_spec": FIXTURE_ROLES / "bad_spec"})


SPEC = "tests/fixtures/static/roles/bad_spec/meta/argument_specs.yml"


@pytest.mark.parametrize(
    "expected",
    [
        f"{SPEC}: entry point 'cleanup' has no tasks/cleanup.yml",
        f"{SPEC}: defaults variable 'bad_spec_not_in_spec' is not an option of the `main` entry point",
        f"{SPEC}: main.bad_spec_port: defaults value 4200 is not of type bool",
        f"{SPEC}: main.bad_spec_mode: defaults value 'fast' is not one of ['slow', 'normal']",
        f"{SPEC}: main.bad_spec_untyped: no `type`",
        f"{SPEC}: main.bad_spec_required_with_default: `required: true` but defaults/main.yml gives it a value",
        f"{SPEC}: main.bad_spec_drift: spec `default:` 'b' differs from defaults/main.yml ('a')",
        f"{SPEC}: main.bad_spec_orphan: neither `required: true` nor a value in defaults/main.yml",
        "tests/fixtures/static/roles/bad_spec/tasks/main.yml: uses 'bad_spec_condition_undefined'",
        "tests/fixtures/static/roles/bad_spec/tasks/main.yml: uses 'bad_spec_undefined_var'",
        "tests/fixtures/static/roles/bad_spec/templates/config.j2: uses 'bad_spec_template_undefined'",
    ],
)
def test_spec_mistake_is_reported(bad_problems: list[str], expected: str) -> None:
    assert any(p.startswith(expected) for p in bad_problems), "\n".join(bad_problems)


def test_only_the_mistakes_are_reported(bad_problems: list[str]) -> None:
    """Registered results, set_fact names, loop_var, attributes and template loop variables are not reported."""
    assert len(bad_problems) == 11, "\n".join(bad_problems)


def test_missing_spec_is_reported() -> None:
    problems = argspecs.check_role(FIXTURE_ROLES / "no_spec", ROLES)
    assert problems == ["tests/fixtures/static/roles/no_spec/meta/argument_specs.yml: missing "
                        "(every role documents and types its input there)"]


def test_complete_spec_passes() -> None:
    problems = argspecs.check_role(FIXTURE_ROLES / "good_spec", {**ROLES, "good_spec": FIXTURE_ROLES / "good_spec"})
    assert problems == [], "\n".join(problems)
