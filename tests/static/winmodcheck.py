"""Check every call of a Windows module against the module's own documentation.

ansible-lint cannot validate the options of PowerShell modules (it cannot import them), so a typo
such as `start_mod: auto` would only fail on the Windows host. This checker reads every task of the
roles, playbooks and molecule scenarios, and for each call of an ansible.windows, community.windows
or microsoft.iis module compares the options with `ansible-doc -j` of the installed module:
unknown options (with the nearest valid name), missing required options, values outside `choices`,
basic types, suboptions, deprecated or removed modules and options, plus module names written
without their FQCN. Option constraints (mutually_exclusive, required_one_of, required_together,
required_if, required_by), which ansible-doc does not publish, come from the module's PowerShell
`$spec` (psspec.py). Templated values (`{{ ... }}`) are not judged: they are only known on the host.

Usage: python tests/static/winmodcheck.py [PATH ...]   (default: roles/ playbooks/ molecule/)
Exit status 1 when a problem is found; each line names file, line, task and what to change.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

if __name__ == "__main__":  # run with the project's virtualenv whatever `python` was used
    _VENV = Path(__file__).resolve().parents[2] / ".venv"
    if (_VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != _VENV.resolve():
        os.execv(str(_VENV / "bin" / "python"), [str(_VENV / "bin" / "python"), *sys.argv])

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ansible_tasks  # noqa: E402
import psspec  # noqa: E402
from ansible_tasks import REPO, Task, is_templated  # noqa: E402

WINDOWS_COLLECTIONS = ("ansible.windows", "community.windows", "microsoft.iis")
BOOLEANS = {"yes", "no", "true", "false", "on", "off", "y", "n", "t", "f", "1", "0"}
# Keys ModuleArgsParser adds that are not options of the module.
PARSER_KEYS = {"_variable_params"}


def _ansible_doc() -> str:
    local = Path(sys.executable).parent / "ansible-doc"
    if local.exists():
        return str(local)
    for candidate in (REPO / ".venv" / "bin" / "ansible-doc", shutil.which("ansible-doc")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise SystemExit("ansible-doc not found: run `bash scripts/setup.sh` and use .venv/bin/python")


_DOCS: dict[str, dict | None] = {}
CACHE_DIR = REPO / "build" / ".cache" / "winmodcheck"


def _cache_key() -> str:
    """Changes whenever ansible-core or one of the Windows collections changes version or place."""
    import ansible

    parts = [ansible.__version__]
    for collection in WINDOWS_COLLECTIONS:
        root = _collection_root(collection)
        manifest = root / "MANIFEST.json" if root else None
        version = json.loads(manifest.read_text(encoding="utf-8"))["collection_info"]["version"] \
            if manifest and manifest.is_file() else "?"
        parts.append(f"{collection}={version}@{root}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _load_all_docs() -> None:
    """Docs of every module of the Windows collections: one ansible-doc call, kept under build/.cache."""
    cache = CACHE_DIR / f"{_cache_key()}.json"
    if cache.is_file():
        _DOCS.update(json.loads(cache.read_text(encoding="utf-8")))
        return
    names = [f"{c}.{m}" for c in WINDOWS_COLLECTIONS for m in _collection_modules(c)]
    env = dict(os.environ)
    env.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
    env["ANSIBLE_DEPRECATION_WARNINGS"] = "False"
    proc = subprocess.run([_ansible_doc(), "-t", "module", "-j", *names],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ansible-doc failed ({proc.returncode}):\n{proc.stderr}")
    found = json.loads(proc.stdout or "{}")
    docs = {name: (found[name].get("doc") if found.get(name) else None) for name in names}
    _DOCS.update(docs)
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(docs), encoding="utf-8")
        tmp.replace(cache)
    except OSError:
        pass  # a read-only checkout only loses the cache


def module_docs(names: Iterable[str]) -> dict[str, dict | None]:
    """Documentation of the given modules (None when the module is not installed)."""
    if not _DOCS:
        _load_all_docs()
    return {n: _DOCS.get(n) for n in names}


@lru_cache(maxsize=None)
def _collection_root(fqcn: str) -> Path | None:
    from ansible import constants as C

    namespace, name = fqcn.split(".")[:2]
    roots = [Path(p) for p in C.COLLECTIONS_PATHS] + [Path(p) for p in sys.path if p]
    for root in roots:
        candidate = root / "ansible_collections" / namespace / name
        if (candidate / "plugins").is_dir() or (candidate / "meta").is_dir():
            return candidate
    return None


@lru_cache(maxsize=None)
def _routing(collection: str) -> dict:
    """plugin_routing.modules of a collection's meta/runtime.yml (ansible.builtin: ansible-core's)."""
    import yaml

    if collection == "ansible.builtin":
        import ansible

        path = Path(ansible.__file__).parent / "config" / "ansible_builtin_runtime.yml"
    else:
        root = _collection_root(collection)
        path = root / "meta" / "runtime.yml" if root else None
    if not path or not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return (data.get("plugin_routing") or {}).get("modules") or {}


@lru_cache(maxsize=None)
def _collection_modules(collection: str) -> tuple[str, ...]:
    root = _collection_root(collection)
    if not root:
        return ()
    names = {p.stem for p in (root / "plugins" / "modules").glob("*") if p.suffix in (".py", ".ps1", ".yml", ".yaml")}
    return tuple(sorted(n for n in names if not n.startswith("_")))


def _suggest(word: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def resolve(action: str) -> tuple[str, list[str]]:
    """Final module name of an action and the problems met on the way (short name, deprecation, removal)."""
    problems: list[str] = []
    name = action
    if "." not in name:
        target = (_routing("ansible.builtin").get(name) or {}).get("redirect") or f"ansible.builtin.{name}"
        problems.append(f"'{name}' is not a fully qualified collection name: write '{target}'")
        name = target
    for _hop in range(5):  # a redirect may lead to another collection's redirect
        collection, _dot, short = name.rpartition(".")
        route = _routing(collection).get(short) or {}
        if "tombstone" in route:
            text = route["tombstone"].get("warning_text", "")
            problems.append(f"module '{name}' was removed from {collection} {route['tombstone'].get('removal_version', '')}. {text}".rstrip())
        elif "deprecation" in route:
            text = route["deprecation"].get("warning_text", "")
            problems.append(f"module '{name}' is deprecated (removed in {collection} "
                            f"{route['deprecation'].get('removal_version', '?')}). {text}".rstrip())
        if not route.get("redirect"):
            break
        name = route["redirect"]
    return name, problems


def is_windows_module(name: str) -> bool:
    return name.startswith(tuple(c + "." for c in WINDOWS_COLLECTIONS))


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)) or (
        isinstance(value, str) and value.lower() in BOOLEANS)


def _type_ok(kind: str | None, value: Any) -> bool:
    """Would Ansible's argument spec conversion accept this value for this type?"""
    if value is None or kind in (None, "raw", "any"):
        return True
    if kind == "bool":
        return _is_bool(value)
    if kind == "int":
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return True
        if isinstance(value, float):
            return value.is_integer()
        return isinstance(value, str) and value.strip().lstrip("+-").isdigit()
    if kind == "float":
        if isinstance(value, bool):
            return False
        if isinstance(value, (int, float)):
            return True
        try:
            float(value)
        except (TypeError, ValueError):
            return False
        return True
    if kind in ("str", "path", "sid"):
        return not isinstance(value, (dict, list))
    if kind == "list":
        return not isinstance(value, dict)
    if kind == "dict":
        return isinstance(value, dict) or (isinstance(value, str) and ("=" in value or value.strip().startswith("{")))
    if kind in ("bytes", "bits"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    if kind == "json":
        return isinstance(value, (str, dict, list))
    return True


def _says_comma_separated(spec: dict) -> bool:
    description = spec.get("description") or ""
    text = " ".join(description) if isinstance(description, list) else str(description)
    return "comma separated" in text.lower() or "comma-separated" in text.lower()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_options(args: dict, options: dict, where: str, free_form: bool = False) -> list[str]:
    """Problems of one argument dict against an `options` (or `suboptions`) documentation mapping."""
    problems: list[str] = []
    names: dict[str, str] = {}
    for option, spec in options.items():
        names[option] = option
        for alias in (spec or {}).get("aliases") or []:
            names[alias] = option
    given: dict[str, str] = {}
    for key in args:
        if key in PARSER_KEYS or str(key).startswith("_ansible_"):
            continue
        if key == "_raw_params":
            if free_form:
                given["free_form"] = key
                continue
            if "_raw_params" not in names:
                problems.append(f"{where}: this module takes no free-form text; give its options as a mapping")
                continue
        if key not in names:
            problems.append(f"{where}: unknown option '{key}'{_suggest(str(key), names)}")
            continue
        canonical = names[key]
        if canonical in given:
            problems.append(f"{where}: option '{canonical}' given twice ('{given[canonical]}' and '{key}')")
        given[canonical] = key
    # Options hidden in a template (`args: "{{ x }}"`) or in free-form text are not known here.
    templated_args = "_variable_params" in args or ("_raw_params" in args and not free_form)
    for option, spec in options.items():
        spec = spec or {}
        if spec.get("required") and option not in given and not templated_args:
            problems.append(f"{where}: missing required option '{option}'")
        if option not in given:
            continue
        key = given[option]
        value = args[given[option]] if given[option] in args else args.get("_raw_params")
        label = f"option '{key}'"
        if spec.get("deprecated"):
            why = spec["deprecated"]
            text = (why.get("why") or why.get("alternative") or "") if isinstance(why, dict) else str(why)
            problems.append(f"{where}: {label} is deprecated. {text}".rstrip())
        if is_templated(value):
            continue
        kind = spec.get("type", "str")
        if not _type_ok(kind, value):
            problems.append(f"{where}: {label} must be of type {kind}, got {_short(value)}")
            continue
        elements = spec.get("elements")
        items = value if isinstance(value, list) else None
        if kind == "list" and items is None and value is not None:
            # Ansible.Basic turns a string into a list by splitting on commas and trimming each part.
            items = [part.strip() for part in value.split(",")] if isinstance(value, str) else [value]
        if kind == "list" and items is not None and elements:
            for index, item in enumerate(items):
                if not is_templated(item) and not _type_ok(elements, item):
                    problems.append(f"{where}: {label}[{index}] must be of type {elements}, got {_short(item)}")
        choices = spec.get("choices")
        if choices:
            values = items if kind == "list" and items is not None else [value]
            if kind == "str" and isinstance(value, str) and "," in value and _says_comma_separated(spec):
                # e.g. win_acl `inherit: ContainerInherit, ObjectInherit`: flags documented as a
                # comma separated list of the choices, although the type is str.
                values = [part.strip() for part in value.split(",")]
            allowed = [str(c) for c in choices]
            for item in values:
                if is_templated(item):
                    continue
                shown = item
                if isinstance(item, bool) and kind in ("str", "list"):
                    # YAML reads `yes` as a boolean; Ansible would pass 'True', which no choice matches.
                    shown = str(item)
                if item not in choices and str(shown) not in allowed:
                    problems.append(f"{where}: {label} value {_short(item)} is not one of {choices}"
                                    f"{_suggest(str(item), allowed)}")
        suboptions = spec.get("suboptions")
        if suboptions:
            if kind == "dict" and isinstance(value, dict):
                problems += check_options(value, suboptions, f"{where}: {key}")
            elif kind == "list" and items is not None:
                for index, item in enumerate(items):
                    if isinstance(item, dict):
                        problems += check_options(item, suboptions, f"{where}: {key}[{index}]")
    return problems


def check_constraints(module: str, args: dict, options: dict) -> list[str]:
    """mutually_exclusive, required_one_of, required_together, required_if and required_by, read from
    the module's PowerShell `$spec` (ansible-doc does not publish them)."""
    collection, _dot, short = module.rpartition(".")
    root = _collection_root(collection)
    if root is None:
        return []
    constraints = psspec.module_constraints(root / "plugins" / "modules" / f"{short}.ps1")
    if not constraints:
        return []
    canonical = {option: option for option in options}
    for option, spec in options.items():
        for alias in (spec or {}).get("aliases") or []:
            canonical[alias] = option
    given = {canonical.get(key, key): value for key, value in args.items()}
    hidden_text = "_raw_params" in args and "_raw_params" not in options and "free_form" not in options
    complete = "_variable_params" not in args and not hidden_text
    return psspec.violations(constraints, given, complete=complete)


def check_tasks(tasks: Iterable[Task]) -> list[str]:
    """All problems of the given tasks, in file and line order (module docs fetched once for all)."""
    found: list[tuple[str, int, int, str]] = []
    resolved: list[tuple[Task, str, bool]] = []

    def report(task: Task, messages: Iterable[str]) -> None:
        found.extend((str(task.path), task.line, len(found), m) for m in messages)

    for task in tasks:
        if task.parse_error:
            report(task, [f"{task.where()}: {task.parse_error}"])
            continue
        if not task.action:
            continue
        name, route_problems = resolve(task.action)
        report(task, [f"{task.where()}: {p}" for p in route_problems])
        if is_windows_module(name):
            resolved.append((task, name, any("deprecated" in p for p in route_problems)))
    docs = module_docs(name for _task, name, _flag in resolved)
    for task, name, reported_deprecated in resolved:
        doc = docs.get(name)
        where = f"{task.where()}: {name}"
        if doc is None:
            collection, _dot, short = name.rpartition(".")
            report(task, [f"{where}: no such module in the installed {collection}"
                          f"{_suggest(short, _collection_modules(collection))}"])
            continue
        if doc.get("deprecated") and not reported_deprecated:
            dep = doc["deprecated"]
            hint = (dep.get("alternative") or dep.get("why") or "") if isinstance(dep, dict) else str(dep)
            report(task, [f"{where}: module is deprecated. {hint}".rstrip()])
        options = doc.get("options") or {}
        report(task, check_options(task.args, options, where, free_form="free_form" in options))
        report(task, [f"{where}: {message}" for message in check_constraints(name, task.args, options)])
    return [message for *_where, message in sorted(found)]


def check_paths(paths: list[Path] | None = None) -> list[str]:
    return check_tasks(ansible_tasks.all_tasks(paths))


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or None
    problems = check_paths(paths)
    for problem in problems:
        print(problem)
    checked = len(ansible_tasks.task_files(paths))
    print(f"{len(problems)} problem(s) in {checked} task file(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
