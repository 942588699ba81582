"""The roles' calls of the common role's helper entry points (dirs, artifact, signature): their arguments against the
entry point's argument spec, checked here because the calls turn ansible-core's own check off.

ansible-core inserts the argument check of an imported entry point as a task tagged `always`. Inside a block whose
condition reads a result registered by an earlier task (the proxy certificate's lookup, an installer's digest), that
task ran under any `--tags` and failed on the result the tags had skipped: `site.yml --tags nssm_services` stopped on
"'iis_proxy_certificate' is undefined". So every such call says `rolespec_validate: false`, and this test does what
that check did: every variable the call sets is an option of the entry point, and every required option is set.
tests/roles/test_noop_rerun.py::test_site_runs_by_tag runs site.yml with a stage tag and with a role tag.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from toolchain import REPO

pytestmark = pytest.mark.static

HELPERS = ("dirs", "artifact", "signature")
SPECS = yaml.safe_load((REPO / "roles" / "common" / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))["argument_specs"]


def _tasks(node):
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ("block", "rescue", "always"):
            if key in node:
                yield from _tasks(node[key])


def calls() -> list[tuple[str, str, dict]]:
    found = []
    for path in sorted([*REPO.glob("roles/*/tasks/*.yml"), *REPO.glob("playbooks/**/*.yml")]):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        plays = data if isinstance(data, list) else []
        for task in _tasks([t for play in plays for t in ([play] if "hosts" not in play else
                                                          play.get("tasks", []) + play.get("pre_tasks", []))]):
            for action in ("ansible.builtin.import_role", "ansible.builtin.include_role", "import_role", "include_role"):
                call = task.get(action)
                if isinstance(call, dict) and call.get("name") == "enclave.prefect.common" and call.get("tasks_from") in HELPERS:
                    found.append((f"{path.relative_to(REPO)}: {task.get('name')}", call, task))
    return found


CALLS = calls()


def test_the_roles_call_every_helper():
    assert {call["tasks_from"] for _where, call, _task in CALLS} == set(HELPERS), CALLS


def problems(where: str, call: dict, task: dict) -> list[str]:
    spec = SPECS[call["tasks_from"]]["options"]
    given = set(task.get("vars", {}))
    required = {name for name, option in spec.items() if option.get("required")}
    found = []
    if given - set(spec):
        found.append(f"{where}: not options of {call['tasks_from']}: {sorted(given - set(spec))}")
    if required - given:
        found.append(f"{where}: required options of {call['tasks_from']} not set: {sorted(required - given)}")
    if call.get("rolespec_validate") is not False:
        found.append(f"{where}: without rolespec_validate: false ansible-core inserts an argument check tagged always, "
                     "which runs under --tags with this block's conditions")
    return found


@pytest.mark.parametrize("where,call,task", CALLS, ids=[where for where, _c, _t in CALLS])
def test_call_sets_the_options_of_its_entry_point_and_no_always_check(where: str, call: dict, task: dict):
    assert problems(where, call, task) == []


def test_a_wrong_call_is_reported():
    """The check above can fail: an undeclared option, a required one left out, the always-tagged check left on."""
    call = {"name": "enclave.prefect.common", "tasks_from": "artifact"}
    task = {"ansible.builtin.import_role": call, "vars": {"common_artifact_colour": "red"}}
    found = problems("probe", call, task)
    assert len(found) == 3 and "common_artifact_colour" in found[0] and "common_artifact_path" in found[1], found
