"""Run the Windows roles on the control node (connection local) and read the json callback's results.

Role input is validated on the control node (meta/argument_specs.yml, then the controller-side asserts at
the start of each role) before any task reaches a host, so bad input can be tested here without Windows.
Many cases share one ansible-playbook run: each case is an inventory host (connection local) with its own
host variables, and hosts fail independently.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# The Prefect version the roles deploy by default (roles/common/defaults/main.yml).
PINNED_PREFECT = str(yaml.safe_load((REPO / "roles" / "common" / "defaults" / "main.yml").read_text())["prefect_version"])
PLAYBOOK_BIN = REPO / ".venv" / "bin" / "ansible-playbook"
# Actions that run on the control node only: a task with any other action would reach the host. Dynamic includes
# (the preflight's, playbooks/preflight.yml) only load tasks on the control node; what they load is counted itself.
CONTROLLER_ACTIONS = {
    "ansible.builtin.validate_argument_spec", "validate_argument_spec",
    "ansible.builtin.assert", "assert", "ansible.builtin.fail", "fail", "ansible.builtin.set_fact", "set_fact",
    "ansible.builtin.debug", "debug", "ansible.builtin.meta", "meta",
    "ansible.builtin.include_tasks", "include_tasks", "ansible.builtin.include_role", "include_role",
    "enclave.prefect.role_input", "enclave.prefect.redis_info",
}
VALIDATION_ACTIONS = {"ansible.builtin.validate_argument_spec", "validate_argument_spec",
                      "ansible.builtin.assert", "assert", "enclave.prefect.role_input"}


@contextlib.contextmanager
def run_cost(playbook: str, limit: str, args) -> Iterator[None]:
    """With ENCLAVE_TEST_CPU set (tests/conftest.py), one line per ansible-playbook run: the test, what ran, its seconds
    and CPU seconds (the run and its children), for finding what the suite spends its cores on."""
    log = os.environ.get("ENCLAVE_TEST_CPU")
    if not log:
        yield
        return
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    try:
        yield
    finally:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"run": playbook, "limit": limit, "args": list(args or []),
                                     "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0],
                                     "seconds": round(time.monotonic() - start, 2), "cpu": round(cpu, 2)}) + "\n")


@dataclass
class HostRun:
    host: str
    results: list[tuple[str, dict]]  # (task name, result) in order
    output: str
    summary: str

    def failed(self) -> tuple[str, dict]:
        failed = [(n, r) for n, r in self.results if r.get("failed")]
        assert failed, f"{self.host}: no task failed\n{self.summary}"
        return failed[0]

    def host_actions(self) -> list[str]:
        """Tasks that reached the host: ran (not skipped) with an action that is not controller-only."""
        return [n for n, r in self.results if not r.get("skipped") and r.get("action") not in CONTROLLER_ACTIONS]


def run_cases(tmp_path: Path, env: dict, role: str, cases: dict[str, dict], extra_args: list[str] | None = None,
              groups: dict[str, list[str]] | None = None) -> dict[str, HostRun]:
    """Apply enclave.prefect.<role> once to every case host; host variables are the case's input."""
    base = {"ansible_connection": "local", "ansible_python_interpreter": str(REPO / ".venv/bin/python")}
    inventory = {"all": {"hosts": {name: {**base, **case} for name, case in cases.items()},
                         "children": {g: {"hosts": {h: None for h in hosts}} for g, hosts in (groups or {}).items()}}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    play = [{"name": f"{role} with test input", "hosts": "all", "gather_facts": False,
             "roles": [{"role": f"enclave.prefect.{role}"}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    argv = [str(PLAYBOOK_BIN), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml"),
            "--forks", "1", *(extra_args or [])]
    with run_cost(f"role {role}", f"{len(cases)} hosts", extra_args):
        proc = subprocess.run(argv, env=dict(env, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"), cwd=REPO,
                              capture_output=True, text=True, timeout=600, check=False)
    output = proc.stdout + proc.stderr
    start = proc.stdout.find("{")
    try:
        data = json.loads(proc.stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError as exc:
        raise AssertionError(f"unparsable json callback output: {exc}\n{output[-6000:]}") from exc
    summary = f"rc={proc.returncode}\n{output[-4000:]}"
    runs = {}
    for name in cases:
        results = [(t["task"]["name"], t["hosts"][name])
                   for play in data.get("plays", []) for t in play.get("tasks", []) if name in t.get("hosts", {})]
        runs[name] = HostRun(name, results, output, summary)
    return runs
