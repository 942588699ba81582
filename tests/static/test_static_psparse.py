"""Level 3: every PowerShell script (files, templates, inline win_powershell / win_shell scripts)
parses with tree-sitter-powershell without ERROR or MISSING nodes (see psparse.py)."""
from __future__ import annotations

import pytest

import psparse
from toolchain import REPO

pytestmark = pytest.mark.static

FIXTURES = REPO / "tests" / "fixtures" / "static" / "psparse"

# The grammar must reject these ...
INVALID = {
    "unclosed brace": "function Set-Root {\n    Write-Output 1\n",
    "unclosed string": '$a = "abc\nWrite-Output $a\n',
    "unclosed single-quoted string": "$a = 'abc\n",
    "if without condition": "if ( {\n    Write-Output 1\n}\n",
    "unclosed parenthesis": "Write-Output (1 + 2\n",
    "unclosed hashtable": "$h = @{ a = 1\n",
    "unclosed here-string": "$s = @'\nabc\n",
    "text after here-string opener": "$s = @'abc\n'@\n",
    "dangling operator": "$x = 1 +\n",
    "double operator": "$x = 1 + * 2\n",
    "trailing comma in param": "param([string]$a,)\n$a\n",
    "stray closing brace": "$a = 1 }\n",
    "foreach without in": "foreach ($a) { }\n",
    "function without name": "function { 1 }\n",
    "if without block": "if ($a) 1\n",
}

# ... and accept these (what the collection's scripts use).
VALID = {
    "param block and strict mode": "[CmdletBinding()]\nparam(\n    [Parameter(Mandatory = $true)][string]$Name,\n"
                                   "    [int]$Port = 4200\n)\nSet-StrictMode -Version 3.0\n$ErrorActionPreference = 'Stop'\n",
    "param block only": "param([string]$Path = 'C:\\Prefect')\n",
    "attribute and type on one parameter": "param([ValidateSet('a', 'b')][string]$Mode = 'a')\n",
    "here-strings": "$s = @'\nliteral $x\n'@\n$t = @\"\nvalue $($x.y)\n\"@\n",
    "try catch finally": "try { Get-Item C:\\x -ErrorAction Stop }\ncatch [System.IO.IOException] { throw }\n"
                         "catch { Write-Error $_ }\nfinally { $null = 1 }\n",
    "Ansible result": "$Ansible.Changed = $true\n$Ansible.Result = @{ a = 1; b = @(1, 2) }\n"
                      "if ($Ansible.CheckMode) { return }\n",
    "hashtable over lines": "$h = @{\n    A = 1\n    B = 'x'\n}\n",
    "splatting": "$params = @{ Name = 'x'; Force = $true }\nNew-Item @params | Out-Null\n",
    "script blocks": "$sb = { param($a) $a * 2 }\n& $sb 3\nInvoke-Command -ScriptBlock { Get-Service }\n",
    "switch over lines": "switch ($x) {\n    'a' { 1 }\n    default { 2 }\n}\n",
    "static members": "[System.IO.File]::WriteAllText($p, $c, [System.Text.UTF8Encoding]::new($false))\n",
    "pipeline": "Get-Service | Where-Object { $_.Status -eq 'Running' } | ForEach-Object { $_.Name }\n",
    "requires comments": "#Requires -Version 5.1\n#AnsibleRequires -CSharpUtil Ansible.Basic\n$x = 1\n",
    "comments only": "# nothing to do yet\n",
    "empty": "",
    "line continuation": "Get-Item `\n    -Path C:\\x\n",
    "native command": "& \"C:\\Program Files\\x.exe\" --arg 'v' 2>&1 | Out-Null\n",
    "class": "class Foo {\n    [string]$Name\n    Foo([string]$n) { $this.Name = $n }\n}\n",
}


@pytest.mark.parametrize("source", [pytest.param(s, id=k) for k, s in INVALID.items()])
def test_grammar_rejects_syntax_errors(source: str) -> None:
    assert psparse.parse_errors(source), f"not caught:\n{source}"


@pytest.mark.parametrize("source", [pytest.param(s, id=k) for k, s in VALID.items()])
def test_grammar_accepts_valid_powershell(source: str) -> None:
    assert psparse.parse_errors(source) == []


def test_jinja_is_stripped_keeping_lines() -> None:
    template = "{# c #}\n$a = {{ x }}\n{% if y %}\n$b = '{{ y }}'\n{% endif %}\n$c = {{\n  z }}\nbroken {\n"
    stripped = psparse.strip_jinja(template)
    assert "$a = __jinja__" in stripped and "$b = '__jinja__'" in stripped
    assert stripped.count("\n") == template.count("\n")
    assert [p.line for p in psparse.parse_errors(stripped)][:1] == [8]


@pytest.mark.parametrize(
    ("name", "line"),
    [("bad_unclosed_brace.ps1", 1), ("bad_unclosed_string.ps1", 2), ("bad_if_without_condition.ps1", None),
     ("bad_template.ps1.j2", None)],
)
def test_bad_script_files_are_reported(name: str, line: int | None) -> None:
    problems = psparse.check_file(FIXTURES / name)
    assert problems, f"{name}: syntax error not caught"
    assert all(p.startswith(f"tests/fixtures/static/psparse/{name}:") for p in problems), problems
    if line is not None:
        assert problems[0].startswith(f"tests/fixtures/static/psparse/{name}:{line}:"), problems


@pytest.mark.parametrize("name", ["good_module_style.ps1", "good_template.ps1.j2", "good_comment_only.ps1",
                                  "good_param_only.ps1"])
def test_good_script_files_pass(name: str) -> None:
    assert psparse.check_file(FIXTURES / name) == []


def test_bad_inline_scripts_are_reported() -> None:
    problems = psparse.check_inline([FIXTURES / "bad_inline.yml"])
    where = "tests/fixtures/static/psparse/bad_inline.yml"
    assert any(p.startswith(f"{where}:2: task 'Inline script with an unclosed hashtable': inline script line")
               for p in problems), problems
    assert any(p.startswith(f"{where}:9: task 'Free-form shell with an unclosed parenthesis': inline script line 1")
               for p in problems), problems
    assert not any("cmd shell" in p for p in problems), "cmd.exe text must not be parsed as PowerShell"


def test_good_inline_scripts_pass() -> None:
    good = REPO / "tests" / "fixtures" / "static" / "winmod" / "good_tasks.yml"
    scripts = list(psparse.inline_scripts([good]))
    assert len(scripts) == 2, "the fixture holds one win_powershell and one win_shell script"
    assert psparse.check_inline([good]) == []


def test_command_line_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert psparse.main([str(FIXTURES / "good_module_style.ps1")]) == 0
    assert psparse.main([str(FIXTURES / "bad_unclosed_brace.ps1")]) == 1
    assert "bad_unclosed_brace.ps1:1:1" in capsys.readouterr().out


def test_collection_script_files() -> None:
    files = psparse.script_files()
    if not files:
        pytest.skip("no .ps1/.psm1 files or .ps1.j2 templates in the collection yet")
    problems = [p for path in files for p in psparse.check_file(path)]
    assert problems == [], "PowerShell syntax errors:\n" + "\n".join(problems)


def test_collection_inline_scripts() -> None:
    scripts = list(psparse.inline_scripts())
    if not scripts:
        pytest.skip("no inline win_powershell / win_shell script in the collection's tasks yet")
    problems = psparse.check_inline()
    assert problems == [], "PowerShell syntax errors in inline scripts:\n" + "\n".join(problems)
