"""Parse every PowerShell script of the collection with a real PowerShell grammar.

A syntax error in a script that runs on a Windows host is otherwise found only on that host.
This checker parses with tree-sitter-powershell (no PowerShell needed on the control node):

- every *.ps1 / *.psm1 file, and *.ps1.j2 / *.psm1.j2 templates after Jinja is stripped;
- every inline script of ansible.windows.win_powershell (`script:`) and ansible.windows.win_shell
  (free-form text, unless `executable:` names another shell), after Jinja is stripped.

A script passes when its tree has no ERROR and no MISSING node. Jinja is stripped so the
surrounding PowerShell stays intact: `{{ expr }}` becomes the bareword `__jinja__` (valid both as
an argument and inside quotes) and `{% ... %}` / `{# ... #}` tags are removed, keeping line numbers.
Every branch of an `{% if %}` is therefore parsed, joined: write templates so that holds.

Known limits of the grammar (tree-sitter-powershell 0.26), handled or documented here:
- wrongly rejected, handled: a script without any statement (empty or comments only), and a
  script that is only a param() block;
- wrongly rejected, not handled: a one-line `switch` whose clauses are not separated by `;` or a
  line break (`switch ($x) { 'a' { 1 } default { 2 } }`): put each clause on its own line;
- wrongly accepted: `if () { }` (no condition), and a stray `catch` / `else` block, which the
  grammar reads as a command call. PowerShell itself rejects them.

Usage: python tests/static/psparse.py [PATH ...]   (default: roles/ plugins/ playbooks/ molecule/
files/ templates/). YAML files given or found are searched for inline scripts.
Exit status 1 when a script does not parse; each line gives file:line:col and the statement.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

if __name__ == "__main__":  # run with the project's virtualenv whatever `python` was used
    _VENV = Path(__file__).resolve().parents[2] / ".venv"
    if (_VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != _VENV.resolve():
        os.execv(str(_VENV / "bin" / "python"), [str(_VENV / "bin" / "python"), *sys.argv])

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ansible_tasks  # noqa: E402
from ansible_tasks import REPO, SKIP_DIRS, YAML_SUFFIXES  # noqa: E402

DEFAULT_ROOTS = ("roles", "plugins", "playbooks", "molecule", "files", "templates")
SCRIPT_SUFFIXES = (".ps1", ".psm1", ".ps1.j2", ".psm1.j2")
JINJA_TOKEN = "__jinja__"
POWERSHELL_EXECUTABLES = {"powershell", "powershell.exe", "pwsh", "pwsh.exe"}

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


@dataclass
class SyntaxProblem:
    line: int  # 1-based, in the script
    column: int  # 1-based
    message: str


@lru_cache(maxsize=1)
def _parser():
    import tree_sitter
    import tree_sitter_powershell

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


def strip_jinja(text: str) -> str:
    """Replace Jinja by neutral PowerShell: expressions by a bareword, tags and comments by nothing."""
    def replace(match: re.Match) -> str:
        token = match.group(0)
        newlines = "\n" * token.count("\n")  # keep line numbers of what follows
        return (JINJA_TOKEN if token.startswith("{{") else "") + newlines

    return _JINJA.sub(replace, text)


def _has_code(node) -> bool:
    """True when the tree holds anything but comments (ERROR wrappers do not count)."""
    if node.child_count == 0:
        return node.type != "comment" and not node.is_missing and node.end_byte > node.start_byte \
            and bool(node.text.strip())
    return any(_has_code(child) for child in node.children)


def _param_block_only(root) -> bool:
    """The grammar wants a statement after a script's param() block; PowerShell does not."""
    named = [c for c in root.named_children if c.type != "comment"]
    if len(named) != 2 or named[0].type != "param_block" or named[1].type != "statement_list":
        return False
    statements = [c for c in named[1].named_children if c.type != "comment"]
    return all(c.type == "empty_statement" and all(g.is_missing for g in c.children) for c in statements)


def parse_errors(source: str) -> list[SyntaxProblem]:
    """Syntax problems of a PowerShell script (empty list: it parses)."""
    source = source.lstrip("\ufeff")
    tree = _parser().parse(source.encode("utf-8"))
    root = tree.root_node
    if not root.has_error:
        return []
    if not _has_code(root) or _param_block_only(root):
        return []
    problems: list[SyntaxProblem] = []

    def walk(node, outer) -> None:
        if node.is_missing:
            row, col = node.start_point
            problems.append(SyntaxProblem(row + 1, col + 1, f"missing '{node.type}'"))
            return
        if node.is_error:
            inner_errors = [c for c in node.children if c.has_error or c.is_error or c.is_missing]
            if not inner_errors:
                # Start at the first token that is not a comment swallowed by the error.
                first = next((c for c in node.children if c.type != "comment"), node)
                row, col = first.start_point
                where = ""
                if outer is not None and outer is not node:
                    where = f" (in the statement starting at {outer.start_point[0] + 1}:{outer.start_point[1] + 1})"
                text = node.text.decode("utf-8", "replace")[first.start_byte - node.start_byte:].strip().splitlines()
                near = f" near '{text[0][:60]}'" if text else " at end of script"
                problems.append(SyntaxProblem(row + 1, col + 1, f"syntax error{near}{where}"))
                return
            outer = outer or node
        for child in node.children:
            if child.has_error or child.is_error or child.is_missing:
                walk(child, outer)

    walk(root, None)
    return problems


def script_files(paths: list[Path] | None = None) -> list[Path]:
    if not paths:
        paths = [REPO / root for root in DEFAULT_ROOTS]
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            if path.name.lower().endswith(SCRIPT_SUFFIXES):
                found.append(path)
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for filename in sorted(filenames):
                if filename.lower().endswith(SCRIPT_SUFFIXES):
                    found.append(Path(dirpath) / filename)
    return found


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def check_file(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8-sig")
    if path.name.lower().endswith(".j2"):
        text = strip_jinja(text)
    return [f"{_shown(path)}:{p.line}:{p.column}: {p.message}" for p in parse_errors(text)]


def inline_scripts(paths: list[Path] | None = None):
    """(task, script text, line of the script in its file or 0) of every inline PowerShell script."""
    for task in ansible_tasks.all_tasks(paths):
        if not task.action:
            continue
        action = task.action if "." in task.action else f"ansible.windows.{task.action}"
        if action == "ansible.windows.win_powershell":
            script = task.args.get("script")
        elif action == "ansible.windows.win_shell":
            executable = str(task.args.get("executable") or "powershell").lower()
            if os.path.basename(executable.replace("\\", "/")) not in POWERSHELL_EXECUTABLES:
                continue
            script = task.args.get("_raw_params")
        else:
            continue
        if isinstance(script, str) and script.strip():
            yield task, script


def check_inline(paths: list[Path] | None = None) -> list[str]:
    problems = []
    for task, script in inline_scripts(paths):
        for p in parse_errors(strip_jinja(script)):
            problems.append(f"{task.where()}: inline script line {p.line} col {p.column}: {p.message}")
    return problems


def check_paths(paths: list[Path] | None = None) -> list[str]:
    problems: list[str] = []
    for path in script_files(paths):
        problems += check_file(path)
    yaml_paths = None
    if paths:
        yaml_paths = [p for p in paths if p.is_dir() or p.suffix in YAML_SUFFIXES]
        if not yaml_paths:
            return problems
    problems += check_inline(yaml_paths)
    return problems


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or None
    problems = check_paths(paths)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} PowerShell syntax problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
