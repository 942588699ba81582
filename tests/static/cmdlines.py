"""Every process the roles and playbooks start on a Windows host, with what reaches its command line.

A command line is visible to anyone on the host who can list processes, and to process-creation auditing (event 4688
with command lines): no secret may be on one. This lists the process starts of the collection and traces what their
arguments are made of, back to the task variables that feed them:

- in the PowerShell scripts of roles/*/files and playbooks/files: `Invoke-Native -FilePath X -Arguments <expr>`,
  `ProcessStartInfo.Arguments = <expr>` and `& $program <args>` (the wrappers `& $FilePath @Arguments` are the
  calls above); the `$variables` of the argument expression, followed through the script's assignments, that are
  parameters of the script are the ones on the command line; the task that runs the script gives them their values;
- the modules that start a program with arguments: win_package `arguments`, win_command / win_shell, the scheduled
  task's `actions`, and the NSSM services' `AppParameters` (the plan in plugins/filter/nssm_services.py).

A value is a secret when its template names one (`password`, `secret`, `auth_string`, `database_url`, `token`,
`api_key`, `vault_`). This is a check of names, not of values: tests/roles check values on the simulated host.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ansible_tasks import REPO, all_tasks

SECRET = re.compile(r"password|secret|auth_string|database_url|token|api_key|vault_", re.I)
# A variable, or a splatted one (@Arguments) as a start passes a wrapper's arguments on.
VARIABLE = re.compile(r"(?:\$\{?|@)([A-Za-z_][A-Za-z0-9_]*)")
# Where a script starts a process, and the argument expression that follows.
STARTS = [
    ("ProcessStartInfo", re.compile(r"\.Arguments\s*=\s*(.*)", re.S)),
    # The program's own path is on its command line too.
    ("call operator", re.compile(r"&\s+(\$[A-Za-z_]\w*\s+.*)", re.S)),
]


@dataclass
class Start:
    """One process start of a script: where, how, and the script parameters on its command line."""

    script: Path
    line: int
    kind: str
    expression: str
    parameters: set[str]


def _statements(text: str) -> list[tuple[int, str]]:
    """Logical lines: a line with more opening than closing parentheses or brackets, or ending in `,`, `+` or a
    backtick, goes on on the next one. Braces are not counted: a script block's body is statements of its own.
    Comments are dropped."""
    out, buf, start, depth = [], [], 0, 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw)
        if not buf:
            start = number
        buf.append(line)
        depth += sum(line.count(c) for c in "([") - sum(line.count(c) for c in ")]")
        if depth <= 0 and not line.rstrip().endswith((",", "+", "`")):
            out.append((start, " ".join(buf)))
            buf, depth = [], 0
    if buf:
        out.append((start, " ".join(buf)))
    return out


def _params(text: str) -> set[str]:
    match = re.search(r"\bparam\s*\((.*?)\)\s*\n\s*\n", text, re.S | re.I)
    block = match.group(1) if match else ""
    return {m.lower() for m in re.findall(r"\]\s*\$([A-Za-z_]\w*)", block)}


def _functions(text: str) -> dict[str, str]:
    """Each function of the script with its text (up to the next function or the end of the script's functions)."""
    marks = [(m.start(), m.group(1)) for m in re.finditer(r"(?m)^\s*function\s+([A-Za-z][\w-]*)", text)]
    return {name: text[start:(marks[i + 1][0] if i + 1 < len(marks) else len(text))] for i, (start, name) in enumerate(marks)}


def script_starts(path: Path) -> list[Start]:
    """The process starts of a script: `.Arguments =` of a ProcessStartInfo and `& $program args`, and every call of a
    function of the script that starts one with what it is given (a launcher such as Invoke-Native or Invoke-Nssm:
    `& $FilePath @Arguments`). The script parameters each start's arguments are made of, through assignments."""
    text = path.read_text(encoding="utf-8-sig")
    params = _params(text)
    statements = _statements(text)
    assigned: dict[str, list[str]] = {}
    for _line, stmt in statements:
        m = re.match(r"\s*\$([A-Za-z_]\w*)\s*=\s*(.*)", stmt, re.S)
        if m:
            assigned.setdefault(m.group(1).lower(), []).append(m.group(2))
        for loop in re.finditer(r"foreach\s*\(\s*\$([A-Za-z_]\w*)\s+in\s+([^)]*)\)", stmt, re.I):
            assigned.setdefault(loop.group(1).lower(), []).append(loop.group(2))
    # Functions that start a process, and which of their own parameters reach its command line.
    launchers: dict[str, tuple[list[str], set[str]]] = {}
    for name, body in _functions(text).items():
        if not (re.search(r"&\s+\$\w+\s+@\w+", body) or ".Arguments" in body and "Process]::Start" in body):
            continue
        own = re.search(r"param\s*\((.*?)\)\s*$", body, re.S | re.M)
        own_params = [v.lower() for v in re.findall(r"\$([A-Za-z_]\w*)", own.group(1))] if own else []
        inner = [e for _l, st in _statements(body) for _k, pat in STARTS for e in [pat.search(st)] if e]
        used = {v.lower() for e in inner for v in VARIABLE.findall(e.group(1))}
        body_assigned = {m.group(1).lower(): m.group(2) for _l, st in _statements(body)
                         for m in [re.match(r"\s*\$([A-Za-z_]\w*)\s*=\s*(.*)", st, re.S)] if m}
        for _ in range(3):
            used |= {v.lower() for n in list(used) if n in body_assigned for v in VARIABLE.findall(body_assigned[n])}
        launchers[name] = (own_params, used & set(own_params))
    patterns = list(STARTS) + [("call of " + name, re.compile(r"(?<![\w-])" + re.escape(name) + r"\s+(.*)", re.S))
                               for name in launchers]
    found = []
    for line, stmt in statements:
        if re.match(r"\s*function\s", stmt):
            continue
        for kind, pattern in patterns:
            m = pattern.search(stmt)
            if not m or (kind == "call operator" and re.match(r"\$\w+\s+@\w+\s*(2>&1|\)|$)", m.group(1))):
                continue
            expression = m.group(1)
            if kind.startswith("call of "):
                own_params, on_line = launchers[kind[len("call of "):]]
                named = re.split(r"(?:^|\s)-([A-Za-z]\w*)\s+", " " + expression)
                if len(named) > 1:  # -Name value pairs: only the values of parameters that reach the command line
                    expression = " ".join(value for key, value in zip(named[1::2], named[2::2]) if key.lower() in on_line)
            seen, todo, reach = set(), [v.lower() for v in VARIABLE.findall(expression)], set()
            while todo:
                name = todo.pop()
                if name in seen:
                    continue
                seen.add(name)
                if name in params:
                    reach.add(name)
                for expression in assigned.get(name, []):
                    todo.extend(v.lower() for v in VARIABLE.findall(expression))
            found.append(Start(path, line, kind, " ".join(m.group(1).split())[:160], reach))
            break
    return found


def _script_path(task_path: Path, path: str) -> Path | None:
    """win_powershell's path as the action finds it: the role's files/ or the playbook directory."""
    parts = task_path.resolve().relative_to(REPO).parts
    candidates = []
    if parts[0] == "roles":
        candidates.append(REPO / "roles" / parts[1] / "files" / path)
    candidates += [REPO / "playbooks" / path, REPO / "playbooks" / "files" / path]
    return next((c for c in candidates if c.is_file()), None)


def findings() -> tuple[list[str], list[str]]:
    """(every process start with what reaches its command line, the ones that carry a secret)."""
    listing, problems = [], []
    starts_of: dict[Path, list[Start]] = {}
    for task in all_tasks([REPO / "roles", REPO / "playbooks"]):
        action = (task.action or "").rsplit(".", 1)[-1]
        args = task.args or {}
        if action == "win_powershell" and isinstance(args.get("path"), str):
            script = _script_path(task.path, args["path"])
            if script is None:
                continue
            starts = starts_of.setdefault(script, script_starts(script))
            given = {str(k).lower(): str(v) for k, v in (args.get("parameters") or {}).items()}
            for start in starts:
                values = {p: given.get(p, "(default)") for p in sorted(start.parameters)}
                listing.append(f"{task.where()}: {script.name}:{start.line} {start.kind} {start.expression} <- {values}")
                for name, value in values.items():
                    if SECRET.search(value):
                        problems.append(f"{task.where()}: {script.name}:{start.line} puts parameter {name} = {value} on "
                                        f"a command line ({start.kind})")
        elif action in ("win_package", "win_command", "win_shell"):
            text = str(args.get("arguments", "")) + " " + str(args.get("_raw_params", "")) + " " + str(args.get("cmd", ""))
            text = _expanded(task.path, text)
            listing.append(f"{task.where()}: {action} {' '.join(text.split())[:200]}")
            if SECRET.search(text):
                problems.append(f"{task.where()}: {action} arguments name a secret: {text.strip()[:200]}")
        elif action == "win_scheduled_task" and args.get("actions"):
            text = _expanded(task.path, str(args["actions"]))
            listing.append(f"{task.where()}: scheduled task action {' '.join(text.split())[:200]}")
            if SECRET.search(text):
                problems.append(f"{task.where()}: scheduled task action names a secret: {text[:200]}")
    return listing, problems


def _expanded(task_path: Path, text: str, depth: int = 3) -> str:
    """The text with the definitions of the role variables its templates name appended (to a depth of 3)."""
    parts = task_path.resolve().relative_to(REPO).parts
    if parts[0] != "roles":
        return text
    seen: set[str] = set()
    out = text
    for _ in range(depth):
        # The variables whose values are used; a subscript only chooses among them (backup_actions[backup_kind]).
        exprs = [re.sub(r"\[[^\]]*\]", "", e) for e in re.findall(r"\{\{(.*?)\}\}", out, re.S)]
        names = {n for expr in exprs for n in re.findall(r"[A-Za-z_]\w*", expr)} - seen
        seen |= names
        more = [var_text(parts[1], n) for n in sorted(names)]
        out += " " + " ".join(m for m in more if m)
    return out


def var_text(role: str, name: str) -> str:
    """A role variable's definition as written (vars/main.yml or defaults/main.yml), for the values a task names."""
    import yaml
    for where in ("vars", "defaults"):
        path = REPO / "roles" / role / where / "main.yml"
        data = yaml.safe_load(path.read_text()) if path.is_file() else None
        if isinstance(data, dict) and name in data:
            return str(data[name])
    return ""
