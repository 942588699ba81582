"""The `current` junction switch (roles/prefect_venv/files/venv_switch.ps1) on the simulated host (simhost.py).

The stand-in follows the script step by step (current.new made, current renamed to current.old, current.new renamed
to current, current.old deleted) and can stop the run after any step, as a lost connection or a crash would. The
next run of playbooks/prefect_venv.yml must find the switch unfinished and put it right. This checks the role's
control flow and the stand-in's model of the script; the script itself runs only on Windows.
"""
from __future__ import annotations

import copy
import json

import pytest

from simhost import LOCK, Sim, by_name, make_bundle, reached

pytestmark = pytest.mark.simulated

SWITCH = "Current junction points at the venv that reports the pinned Prefect"
LINK = "c:\\prefect\\venvs\\current"


def _switch(data: dict) -> dict:
    return by_name(reached(data))[SWITCH]


@pytest.fixture(scope="module")
def built(tmp_path_factory, ansible_env) -> dict:
    """A host whose venv was built and switched once by prefect_venv.yml (the state; each test goes on from a copy)."""
    root = tmp_path_factory.mktemp("venv_built")
    sim = Sim(root, ansible_env)
    sim.run({"prefect_bundle_dir": str(make_bundle(root))}, playbook="prefect_venv.yml")
    return sim.state


def _interrupted(built, tmp_path, ansible_env, step: str) -> tuple[Sim, dict, str]:
    """A host whose venv was built and switched once (a copy of `built`), then a new lock whose switch stops after
    `step`."""
    sim = Sim(tmp_path, ansible_env, copy.deepcopy(built))
    extra = {"prefect_bundle_dir": str(make_bundle(tmp_path))}
    first_venv = sim.state["junctions"][LINK]
    make_bundle(tmp_path, LOCK + b"extra==1.0 --hash=sha256:1111\n")
    extra["prefect_venv_check_committed_lock"] = False
    sim.update(interrupt_switch=step)
    sim.run(extra, playbook="prefect_venv.yml", expect_rc=2)
    return sim, extra, first_venv


@pytest.mark.parametrize("step", ["new", "old_aside"])
def test_interrupted_switch_is_finished_by_the_next_run(built, tmp_path, ansible_env, step):
    """Stopped before the new link was in place: `current` still leads to the old lock (after "old_aside" it is
    missing), so the next run reaches the switch, which restores or clears the leftovers and switches."""
    sim, extra, first_venv = _interrupted(built, tmp_path, ansible_env, step)
    assert {LINK + ".new", LINK + ".old"} & set(sim.state["junctions"]), sim.state["junctions"]
    data = sim.run(extra, playbook="prefect_venv.yml")[1]
    junctions = sim.state["junctions"]
    assert set(junctions) == {LINK} and junctions[LINK] != first_venv, junctions
    result = _switch(data)
    assert result["changed"] and result["result"]["recovered"], result
    again = sim.run(extra, playbook="prefect_venv.yml")[1]
    assert SWITCH not in by_name(reached(again))


def test_leftover_old_link_after_a_finished_switch_goes_with_the_next_switch(built, tmp_path, ansible_env):
    """Stopped after the new link was in place: `current` already leads to the new venv, so the next run has nothing
    to switch and leaves current.old (a link, never read); the next switch removes it, never the venv behind it."""
    sim, extra, first_venv = _interrupted(built, tmp_path, ansible_env, "new_in_place")
    assert sim.state["junctions"] == {LINK: sim.state["junctions"][LINK], LINK + ".old": first_venv}
    assert SWITCH not in by_name(reached(sim.run(extra, playbook="prefect_venv.yml")[1]))
    make_bundle(tmp_path, LOCK + b"extra==2.0 --hash=sha256:2222\n")
    result = _switch(sim.run(extra, playbook="prefect_venv.yml")[1])
    assert result["changed"] and result["result"]["recovered"] == ["removed leftover link " + LINK + ".old"], result
    assert set(sim.state["junctions"]) == {LINK}


def test_a_moved_base_interpreter_gets_a_new_venv_and_the_previous_release_venv_is_rebuilt_once(tmp_path, ansible_env):
    """A venv records its base's directory (pyvenv.cfg); the previous release built venvs from C:\\Python312, named
    without the base and marked with enclave-prefect.lock. The base is now in the marker's name and the venv's: a venv of
    the previous release is rebuilt once under the new name and the junction moves to it; the same lock on a base now
    in C:\\Program Files\\Python312 builds a new venv and switches to it; the run after each changes nothing."""
    sim = Sim(tmp_path, ansible_env)
    extra = {"prefect_bundle_dir": str(make_bundle(tmp_path)), "prefect_python_dir": "C:\\Python312"}
    sim.run(extra, playbook="prefect_venv.yml")
    old_venv = sim.state["junctions"][LINK]
    build = "Venv for this Prefect version and lock is built"
    # The previous release's layout: the venv named without the base, its marker enclave-prefect.lock.
    marker = next(path for path in sim.state["files"] if path.startswith(old_venv + "\\enclave-prefect-"))
    previous = old_venv.rsplit("-", 1)[0]
    text = json.dumps(sim.state).replace(json.dumps(marker)[1:-1], json.dumps(old_venv + "\\enclave-prefect.lock")[1:-1])
    sim.state_path.write_text(text.replace(json.dumps(old_venv)[1:-1], json.dumps(previous)[1:-1]))
    assert sim.state["junctions"][LINK] == previous
    data = sim.run(extra, playbook="prefect_venv.yml")[1]
    assert by_name(reached(data))[build]["changed"] and _switch(data)["changed"]
    assert sim.state["junctions"][LINK] == old_venv
    assert build not in by_name(reached(sim.run(extra, playbook="prefect_venv.yml")[1]))
    # The base reinstalled in Program Files (the python role's default now).
    moved = dict(extra, prefect_python_dir="C:\\Program Files\\Python312")
    data = sim.run(moved, playbook="prefect_venv.yml")[1]
    built = by_name(reached(data))[build]["invocation"]["module_args"]["parameters"]
    assert built["Python"] == "C:\\Program Files\\Python312\\python.exe", built
    new_venv = sim.state["junctions"][LINK]
    assert new_venv != old_venv and new_venv == built["VenvDir"].lower(), (old_venv, new_venv)
    assert new_venv.rsplit("-", 1)[0] == old_venv.rsplit("-", 1)[0], "only the base id differs"
    assert _switch(data)["changed"]
    assert build not in by_name(reached(sim.run(moved, playbook="prefect_venv.yml")[1]))
