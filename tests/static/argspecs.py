"""Check that each role's meta/argument_specs.yml matches its defaults and the variables it uses.

Ansible validates role input against meta/argument_specs.yml before the first task runs, so bad
input fails on the control node instead of half-way through a Windows host. That only helps when
the spec is complete. For each role under roles/ this checker requires:

1. meta/argument_specs.yml exists, with a `main` entry point when tasks/main.yml exists, and no
   entry point without its tasks/<name>.yml;
2. every variable of defaults/main.yml (or defaults/main/*.yml) is an option of `main`;
3. every option of every entry point has a `type` and a `description`, and either a value in
   defaults or `required: true` -- never both (a default makes `required` meaningless). defaults/
   is the one place values live (Ansible never applies a spec `default:`), so a spec `default:`
   must repeat that value. One exception: an optional parameter of an entry point other than
   `main` (called through include_role `tasks_from` + `vars:`) may have no value in defaults when
   its spec `default:` documents the fallback its tasks apply with `| default(...)`;
4. each value in defaults fits its option's type and choices (templated values are skipped);
5. every variable the role's tasks, handlers and templates use whose name starts with the role's
   prefix is defined (defaults, vars, spec, register, set_fact, vars:, loop_var, or a dependency).

Prefixes: a role's variables start with its name (`nssm_services_*`). roles/common holds the
collection-wide facts, prefixed `prefect_`; every role may use those, and they must be defined in
roles/common or in the role itself. Names starting with another role's prefix are not checked.

Usage: python tests/static/argspecs.py [ROLE_DIR ...]   (default: every directory under roles/)
"""
from __future__ import annotations

import re

import os
import sys
from pathlib import Path
from typing import Any, Iterator

if __name__ == "__main__":  # run with the project's virtualenv whatever `python` was used
    _VENV = Path(__file__).resolve().parents[2] / ".venv"
    if (_VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != _VENV.resolve():
        os.execv(str(_VENV / "bin" / "python"), [str(_VENV / "bin" / "python"), *sys.argv])

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ansible_tasks import REPO, is_templated  # noqa: E402
from winmodcheck import _type_ok  # noqa: E402

COMMON_ROLE = "common"
COLLECTION_PREFIX = "prefect_"
# Keys whose string values are bare Jinja expressions (no braces).
EXPRESSION_KEYS = {"when", "changed_when", "failed_when", "until", "that"}
# Options that hold a secret: their spec says no_log, so that a validation failure never prints the value.
SECRET_OPTION = re.compile(r"(?<!update)_password$|auth_string$|_secret$|database_url$|_token$")
SPEC_TYPES = {"str", "list", "dict", "bool", "int", "float", "path", "raw", "jsonarg", "json", "bytes", "bits"}


def _load(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _yaml_files(base: Path, stem: str = "main") -> list[Path]:
    """<base>/main.yml, <base>/main.yaml or every YAML file under <base>/main/."""
    files = [base / f"{stem}{suffix}" for suffix in (".yml", ".yaml") if (base / f"{stem}{suffix}").is_file()]
    if (base / stem).is_dir():
        files += sorted(p for p in (base / stem).rglob("*") if p.suffix in (".yml", ".yaml"))
    return files


def load_vars(base: Path) -> dict:
    merged: dict = {}
    for path in _yaml_files(base):
        data = _load(path) or {}
        if isinstance(data, dict):
            merged.update(data)
    return merged


def role_prefix(role: str) -> str:
    return COLLECTION_PREFIX if role == COMMON_ROLE else f"{role}_"


def _dependencies(role_dir: Path) -> list[str]:
    meta = _yaml_files(role_dir / "meta")
    deps: list[str] = []
    for path in meta:
        if path.name.startswith("argument_specs"):
            continue
        for dep in (_load(path) or {}).get("dependencies") or []:
            name = dep.get("role") or dep.get("name") if isinstance(dep, dict) else dep
            if isinstance(name, str):
                deps.append(name.split(".")[-1])
    return deps


def load_spec(role_dir: Path) -> tuple[Path | None, dict]:
    for name in ("argument_specs.yml", "argument_specs.yaml"):
        path = role_dir / "meta" / name
        if path.is_file():
            return path, ((_load(path) or {}).get("argument_specs") or {})
    return None, {}


# ---- variable references -------------------------------------------------------------------

def _jinja_names(source: str) -> tuple[set[str], set[str]]:
    """(names read, names assigned by set/for) in a Jinja template string."""
    from jinja2 import Environment
    from jinja2.exceptions import TemplateSyntaxError

    read: set[str] = set()
    assigned: set[str] = set()
    try:
        tokens = [(kind, value) for _line, kind, value in Environment().lex(source)
                  if kind not in ("whitespace", "comment_begin", "comment", "comment_end")]
    except TemplateSyntaxError as exc:
        raise ValueError(f"Jinja syntax error: {exc.message} (line {exc.lineno})") from exc
    collecting = False
    for index, (kind, value) in enumerate(tokens):
        previous = tokens[index - 1] if index else ("", "")
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        if kind == "name" and value in ("set", "for") and previous[0] in ("block_begin",):
            collecting = True
            continue
        if collecting:
            if kind == "name" and value not in ("in",):
                assigned.add(value)
                continue
            if kind == "operator" and value == ",":
                continue
            collecting = False
        if kind != "name":
            continue
        if previous == ("operator", ".") or following == ("operator", "="):
            continue  # attribute access, or a keyword argument
        read.add(value)
    return read, assigned


def _walk_yaml(data: Any, key: str | None = None) -> Iterator[tuple[str | None, Any]]:
    yield key, data
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _walk_yaml(v, str(k))
    elif isinstance(data, list):
        for item in data:
            yield from _walk_yaml(item, key)


def yaml_names(data: Any) -> tuple[set[str], set[str]]:
    """(names read, names defined) in a task file: Jinja in strings, bare expressions, definitions."""
    read: set[str] = set()
    defined: set[str] = set()
    for key, value in _walk_yaml(data):
        if isinstance(value, dict):
            if isinstance(value.get("register"), str):
                defined.add(value["register"])
            for fact_key in ("ansible.builtin.set_fact", "set_fact", "vars"):
                if isinstance(value.get(fact_key), dict):
                    defined.update(str(k) for k in value[fact_key])
            if isinstance(value.get("loop_var"), str):
                defined.add(value["loop_var"])
        if not isinstance(value, str):
            continue
        if key in EXPRESSION_KEYS and not is_templated(value):
            got = _jinja_names("{{ " + value + " }}")[0]
            read |= got
        elif is_templated(value):
            got, assigned = _jinja_names(value)
            read |= got
            defined |= assigned
    return read, defined


# ---- checks --------------------------------------------------------------------------------

def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def check_role(role_dir: Path, all_roles: dict[str, Path]) -> list[str]:
    try:
        return _check_role(role_dir, all_roles)
    except (yaml.YAMLError, OSError) as exc:
        return [f"roles/{role_dir.name}: a YAML file does not load: {exc}"]


def _check_role(role_dir: Path, all_roles: dict[str, Path]) -> list[str]:
    problems: list[str] = []
    spec_path, spec = load_spec(role_dir)
    defaults = load_vars(role_dir / "defaults")
    role_vars = load_vars(role_dir / "vars")
    shown = _rel(role_dir / "meta" / "argument_specs.yml")
    if spec_path is None:
        return [f"{shown}: missing (every role documents and types its input there)"]
    shown = _rel(spec_path)
    entry_points = {p.stem for p in (role_dir / "tasks").glob("*.y*ml")} if (role_dir / "tasks").is_dir() else set()
    if "main" in entry_points and "main" not in spec:
        problems.append(f"{shown}: no `main` entry point although tasks/main.yml exists")
    for entry in sorted(set(spec) - entry_points):
        problems.append(f"{shown}: entry point '{entry}' has no tasks/{entry}.yml")
    main_options = (spec.get("main") or {}).get("options") or {}
    for var in defaults:
        if var not in main_options:
            problems.append(f"{shown}: defaults variable '{var}' is not an option of the `main` entry point")
    for entry, entry_spec in spec.items():
        for option, option_spec in ((entry_spec or {}).get("options") or {}).items():
            problems += _check_option(shown, entry, option, option_spec or {}, defaults)
    problems += _check_references(role_dir, all_roles, defaults, role_vars, spec)
    return problems


def _check_option(shown: str, entry: str, option: str, spec: dict, defaults: dict) -> list[str]:
    where = f"{shown}: {entry}.{option}"
    problems = []
    kind = spec.get("type")
    if kind is None:
        problems.append(f"{where}: no `type`")
    elif kind not in SPEC_TYPES:
        problems.append(f"{where}: unknown type '{kind}'")
    if not spec.get("description"):
        problems.append(f"{where}: no `description`")
    if SECRET_OPTION.search(option) and kind == "str" and not spec.get("no_log"):
        problems.append(f"{where}: a secret without `no_log: true`")
    has_default = option in defaults
    required = bool(spec.get("required"))
    if required and has_default:
        problems.append(f"{where}: `required: true` but defaults/main.yml gives it a value")
    # Other entry points are called with include_role `vars:`; their optional parameters may live
    # outside defaults when the spec documents the fallback the tasks apply with `| default(...)`.
    parameter = entry != "main" and not has_default and "default" in spec
    if not required and not has_default and not parameter:
        problems.append(f"{where}: neither `required: true` nor a value in defaults/main.yml")
    if "default" in spec and not parameter and (not has_default or spec["default"] != defaults[option]):
        problems.append(f"{where}: spec `default:` {spec['default']!r} differs from defaults/main.yml "
                        f"({defaults.get(option, 'no value')!r}); keep the value in defaults only")
    if has_default and kind:
        value = defaults[option]
        if not is_templated(value) and value is not None:
            if not _type_ok(kind, value):
                problems.append(f"{where}: defaults value {value!r} is not of type {kind}")
            choices = spec.get("choices")
            values = value if isinstance(value, list) else [value]
            if choices and any(v not in choices for v in values if not is_templated(v)):
                problems.append(f"{where}: defaults value {value!r} is not one of {choices}")
    return problems


def _defined_by_role(role_dir: Path) -> set[str]:
    spec = load_spec(role_dir)[1]
    names = set(load_vars(role_dir / "defaults")) | set(load_vars(role_dir / "vars"))
    for entry_spec in spec.values():
        names |= set(((entry_spec or {}).get("options") or {}))
    return names


def _check_references(role_dir: Path, all_roles: dict[str, Path], defaults: dict, role_vars: dict,
                      spec: dict) -> list[str]:
    role = role_dir.name
    # roles/common's own entry-point parameters are named common_* beside the prefect_* facts.
    own = (role_prefix(role), f"{role}_")
    other_prefixes = tuple(role_prefix(r) for r in all_roles if r not in (role, COMMON_ROLE))
    defined = _defined_by_role(role_dir)
    seen_roles = {role}
    pending = _dependencies(role_dir) + ([COMMON_ROLE] if COMMON_ROLE in all_roles else [])
    while pending:
        dep = pending.pop()
        if dep in seen_roles or dep not in all_roles:
            continue
        seen_roles.add(dep)
        defined |= _defined_by_role(all_roles[dep])
        pending += _dependencies(all_roles[dep])

    reads: dict[str, Path] = {}
    problems: list[str] = []
    sources = []
    for sub in ("tasks", "handlers"):
        sources += [(p, "yaml") for p in sorted((role_dir / sub).rglob("*.y*ml"))]
    sources += [(p, "template") for p in sorted((role_dir / "templates").rglob("*")) if p.is_file()]
    for path, kind in sources:
        try:
            if kind == "yaml":
                got, assigned = yaml_names(_load(path))
            else:
                got, assigned = _jinja_names(path.read_text(encoding="utf-8"))
        except (ValueError, yaml.YAMLError, UnicodeDecodeError) as exc:
            problems.append(f"{_rel(path)}: cannot be read: {exc}")
            continue
        defined |= assigned
        for name in got:
            reads.setdefault(name, path)
    for name, path in sorted(reads.items(), key=lambda item: (str(item[1]), item[0])):
        checked = name.startswith(own) or (name.startswith(COLLECTION_PREFIX) and not name.startswith(other_prefixes))
        if checked and name not in defined:
            problems.append(f"{_rel(path)}: uses '{name}', which no default, var, argument spec, "
                            f"register or set_fact of the role (or its dependencies) defines")
    return problems


def roles(paths: list[Path] | None = None) -> dict[str, Path]:
    """Role name -> directory for the role directories under roles/ (or the ones given)."""
    everything = {p.name: p for p in sorted((REPO / "roles").iterdir()) if p.is_dir()} if (REPO / "roles").is_dir() else {}
    if paths:
        return {p.resolve().name: p.resolve() for p in paths if p.is_dir()}
    return everything


def check_paths(paths: list[Path] | None = None) -> list[str]:
    everything = roles()
    selected = roles(paths)
    known = {**everything, **selected}
    problems: list[str] = []
    for role_dir in selected.values():
        problems += check_role(role_dir, known)
    return problems


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or None
    problems = check_paths(paths)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s) in {len(roles(paths))} role(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
