"""Find the tasks of roles, playbooks and molecule scenarios and tell which module each one calls.

Shared by winmodcheck.py (module options) and psparse.py (inline PowerShell). Module and arguments
come from ansible-core's own parser (ModuleArgsParser), so `args:`, `action:`/`local_action:`,
`k=v` strings and free-form modules are read exactly the way ansible-playbook reads them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))

# Where task files live when a directory is searched.
DEFAULT_ROOTS = ("roles", "playbooks", "molecule")
SKIP_DIRS = {".venv", ".venv-prefect", ".venv-prefect-old", ".venv-core-2.16", ".git", "build", "dist", "__pycache__", ".ansible", "output"}
PLAY_TASK_SECTIONS = ("pre_tasks", "tasks", "post_tasks", "handlers")
BLOCK_SECTIONS = ("block", "rescue", "always")
PLAYBOOK_KEYS = {"hosts", "import_playbook", "ansible.builtin.import_playbook"}
YAML_SUFFIXES = (".yml", ".yaml")


class LineDict(dict):
    """A mapping that remembers the line it starts on and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    """SafeLoader that records line numbers and accepts Ansible's !vault and !unsafe tags."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_tagged_string(loader: _Loader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node)) if isinstance(node, yaml.ScalarNode) else "!tagged"


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor("!vault", _construct_tagged_string)
_Loader.add_constructor("!unsafe", _construct_tagged_string)


def load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


@dataclass
class Task:
    """One task (not a block) of a task list, with where it was found."""

    path: Path
    line: int
    name: str
    data: dict
    action: str | None = None
    args: dict = field(default_factory=dict)
    parse_error: str | None = None

    def where(self) -> str:
        try:
            shown = self.path.resolve().relative_to(REPO)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}: task '{self.name}'"


def is_templated(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _walk_task_list(path: Path, items: Any) -> Iterator[Task]:
    if not isinstance(items, list):
        return
    for item in items:
        if not isinstance(item, dict):
            continue
        if any(key in item for key in BLOCK_SECTIONS):
            for section in BLOCK_SECTIONS:
                yield from _walk_task_list(path, item.get(section))
            continue
        name = item.get("name")
        yield Task(path=path, line=getattr(item, "line", 0), name=str(name) if name else "(unnamed)", data=item)


def is_playbook(data: Any) -> bool:
    return isinstance(data, list) and any(isinstance(p, dict) and PLAYBOOK_KEYS & set(p) for p in data)


def tasks_in_file(path: Path) -> Iterator[Task]:
    """Tasks of a playbook or a task file (anything else yields nothing), with module and args parsed."""
    data = load_yaml(path)
    if is_playbook(data):
        raw = (task for play in data if isinstance(play, dict)
               for section in PLAY_TASK_SECTIONS for task in _walk_task_list(path, play.get(section)))
    else:
        raw = _walk_task_list(path, data)
    for task in raw:
        parse(task)
        yield task


def parse(task: Task) -> None:
    """Fill task.action and task.args the way ansible-playbook does."""
    from ansible.errors import AnsibleError
    from ansible.parsing.mod_args import ModuleArgsParser

    try:
        action, args, _delegate = ModuleArgsParser(dict(task.data)).parse(skip_action_validation=True)
    except AnsibleError as exc:
        task.parse_error = str(exc).splitlines()[0]
        if "conflicting action statements" in task.parse_error:
            task.parse_error += " (two modules in one task, or a misspelled task keyword)"
        return
    task.action = action
    task.args = dict(args or {})


def _in_role_task_dir(path: Path) -> bool:
    """Inside roles/, only tasks/ and handlers/ hold task lists (defaults, vars, meta, files do not)."""
    parts = path.parts
    if "roles" not in parts:
        return True
    rest = parts[len(parts) - parts[::-1].index("roles"):]
    return len(rest) >= 3 and rest[1] in ("tasks", "handlers")


def task_files(paths: list[Path] | None = None) -> list[Path]:
    """YAML files that may hold tasks. Files given explicitly are always read."""
    if not paths:
        paths = [REPO / root for root in DEFAULT_ROOTS]
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
            continue
        if not path.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for filename in sorted(filenames):
                candidate = Path(dirpath) / filename
                if candidate.suffix in YAML_SUFFIXES and _in_role_task_dir(candidate):
                    found.append(candidate)
    return found


def all_tasks(paths: list[Path] | None = None) -> Iterator[Task]:
    for path in task_files(paths):
        yield from tasks_in_file(path)
