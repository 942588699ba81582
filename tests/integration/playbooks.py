"""Run small playbooks against localhost (connection local) and read their results.

Used by the integration tests and the benchmark: the plugins are exercised exactly as users run them.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from servers import PROXY_VARS, REPO, PrefectServer

VENV_PYTHON = REPO / ".venv" / "bin" / "python"


class Unsafe(str):
    """A string Ansible must not template (written with the `!unsafe` tag)."""


def literal(value):
    """`value` with every string marked Unsafe: job templates carry `{{ command }}` for the worker, not Ansible."""
    if isinstance(value, dict):
        return {k: literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [literal(v) for v in value]
    return Unsafe(value) if isinstance(value, str) else value


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", str(value)))


@dataclass
class PlaybookResult:
    rc: int
    stdout: str
    stderr: str
    argv: list[str]
    data: dict = field(default_factory=dict)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def tasks(self) -> list[dict]:
        return [t for play in self.data.get("plays", []) for t in play.get("tasks", [])]

    def task(self, name: str) -> dict:
        """The localhost result of the task called `name` (the last one if the name repeats)."""
        found = [t["hosts"]["localhost"] for t in self.tasks() if t["task"]["name"] == name]
        if not found:
            raise AssertionError(f"no result for task {name!r}; tasks: {[t['task']['name'] for t in self.tasks()]}"
                                 f"\n{self.explain()}")
        return found[-1]

    def explain(self) -> str:
        return (f"$ {' '.join(self.argv)}\nrc={self.rc}\n"
                f"--- stdout\n{self.stdout[-8000:]}\n--- stderr\n{self.stderr[-4000:]}")


class Playbook:
    """Writes a one-play playbook against localhost (connection local) and runs it with ansible-playbook."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.dir = tmp_path / "ansible"
        self.dir.mkdir(exist_ok=True)
        self.env = {k: v for k, v in env.items()
                    if not k.startswith(("PREFECT_", "NTLM_USER_FILE")) and k.lower() not in PROXY_VARS}
        self.env["NO_PROXY"] = "127.0.0.1,localhost"
        self.env.update(ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOCALHOST_WARNING="0",
                        ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_HOST_KEY_CHECKING="0")
        self.inventory = self.dir / "inventory.ini"
        self.inventory.write_text(
            f"localhost ansible_connection=local ansible_python_interpreter={VENV_PYTHON}\n")
        self.count = 0

    def run(self, tasks: list[dict], *, check: bool = False, diff: bool = False, verbosity: int = 0,
            callback: str = "ansible.posix.json", extra_vars: dict | None = None, timeout: int = 300,
            play_vars: dict | None = None) -> PlaybookResult:
        self.count += 1
        path = self.dir / f"play{self.count}.yml"
        play = {"name": "integration", "hosts": "localhost", "gather_facts": False, "tasks": tasks}
        if play_vars:
            play["vars"] = play_vars
        path.write_text(yaml.dump([play], Dumper=_Dumper, sort_keys=False))
        argv = [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(self.inventory), str(path)]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if verbosity:
            argv.append("-" + "v" * verbosity)
        if extra_vars:
            vars_file = self.dir / f"vars{self.count}.json"
            vars_file.write_text(json.dumps(extra_vars))
            argv += ["-e", f"@{vars_file}"]
        env = dict(self.env, ANSIBLE_STDOUT_CALLBACK=callback)
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        result = PlaybookResult(proc.returncode, proc.stdout, proc.stderr, argv)
        if callback == "ansible.posix.json":
            start = proc.stdout.find("{")
            try:
                result.data = json.loads(proc.stdout[start:]) if start >= 0 else {}
            except ValueError as exc:
                raise AssertionError(f"unparsable json callback output: {exc}\n{result.explain()}") from exc
        return result


def connection(server: PrefectServer, **extra) -> dict:
    """Common module options for a server fixture (Basic auth when the server demands it)."""
    opts = {"api_url": server.api_url}
    if server.auth_string:
        opts.update(auth="basic", auth_string=server.auth_string)
    opts.update(extra)
    return opts


def module_task(name: str, module: str, args: dict, **keywords) -> dict:
    task = {"name": name, f"enclave.prefect.{module}": args}
    task.update(keywords)
    return task
