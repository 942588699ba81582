"""Level 2: every call of an ansible.windows / community.windows / microsoft.iis module is checked
against `ansible-doc -j` of the installed module and the constraints of its PowerShell `$spec`
(see winmodcheck.py, psspec.py); the negative fixtures prove each kind of mistake is caught with
file, line, task name and the nearest valid option."""
from __future__ import annotations

from pathlib import Path

import pytest

import ansible_tasks
import psspec
import winmodcheck
from toolchain import REPO

pytestmark = pytest.mark.static

FIXTURES = REPO / "tests" / "fixtures" / "static" / "winmod"
BAD_TASKS = "tests/fixtures/static/winmod/bad_tasks.yml"
BAD_PLAYBOOK = "tests/fixtures/static/winmod/bad_playbook.yml"


@pytest.fixture(scope="module")
def bad_problems() -> list[str]:
    return winmodcheck.check_paths([FIXTURES / "bad_tasks.yml", FIXTURES / "bad_playbook.yml"])


def _one(problems: list[str], *needles: str) -> str:
    hits = [p for p in problems if all(n in p for n in needles)]
    assert len(hits) == 1, f"expected exactly one problem with {needles}, got {hits}\nall problems:\n" + "\n".join(problems)
    return hits[0]


@pytest.mark.parametrize(
    ("where", "task", "needles"),
    [
        (f"{BAD_TASKS}:3:", "Misspelled option", ("unknown option 'start_mod'", "did you mean 'start_mode'?")),
        (f"{BAD_TASKS}:8:", "Bad choice", ("option 'state' value 'runing' is not one of", "'started'")),
        (f"{BAD_TASKS}:13:", "Missing required option", ("ansible.windows.win_copy", "missing required option 'dest'")),
        (f"{BAD_TASKS}:17:", "Deprecated module",
         ("community.windows.win_iis_website", "deprecated", "microsoft.iis.website")),
        (f"{BAD_TASKS}:22:", "Short module name", ("'win_service' is not a fully qualified", "ansible.windows.win_service")),
        (f"{BAD_TASKS}:26:", "Wrong type", ("option 'desktop_interact' must be of type bool", "'sometimes'")),
        (f"{BAD_TASKS}:31:", "Bad suboption", ("failure_actions[0]: unknown option 'delay_msec'", "did you mean 'delay_ms'?")),
        (f"{BAD_TASKS}:38:", "Bad choice in args", ("option 'state' value 'dir' is not one of",)),
        (f"{BAD_TASKS}:44:", "Bad key=value option", ("unknown option 'stat'", "did you mean 'state'?")),
        (f"{BAD_TASKS}:47:", "Unknown module", ("no such module", "did you mean 'win_service'?")),
        (f"{BAD_TASKS}:58:", "Misspelled option in rescue", ("unknown option 'stat'", "did you mean 'state'?")),
        (f"{BAD_TASKS}:63:", "Misspelled task keyword", ("conflicting action statements", "notfiy")),
        (f"{BAD_TASKS}:68:", "Mutually exclusive options", ("options 'path', 'script' are mutually exclusive",)),
        (f"{BAD_TASKS}:73:", "Neither of two options", ("one of the options 'path', 'script' is required",)),
        (f"{BAD_TASKS}:78:", "Password without username", ("option 'password' requires 'username'",)),
        (f"{BAD_TASKS}:84:", "Required when state is present", ("state=present requires all of 'username'",)),
        (f"{BAD_PLAYBOOK}:6:", "Misspelled option in pre_tasks", ("unknown option 'stat'", "did you mean 'state'?")),
        (f"{BAD_PLAYBOOK}:11:", "Missing required option in tasks", ("microsoft.iis.website", "missing required option 'name'")),
        (f"{BAD_PLAYBOOK}:15:", "Bad choice in handler", ("value 'restart' is not one of", "did you mean 'restarted'?")),
    ],
)
def test_mistake_is_reported(bad_problems: list[str], where: str, task: str, needles: tuple[str, ...]) -> None:
    _one(bad_problems, where, f"task '{task}'", *needles)


def test_nothing_else_is_reported(bad_problems: list[str]) -> None:
    """One mistake per fixture task: the checker reports each once and invents nothing."""
    assert len(bad_problems) == 19, "\n".join(bad_problems)


def test_valid_calls_pass() -> None:
    problems = winmodcheck.check_paths([FIXTURES / "good_tasks.yml"])
    assert problems == [], "valid calls were rejected:\n" + "\n".join(problems)


def test_docs_come_from_one_ansible_doc_call(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    calls: list[str] = []
    real_ansible_doc = winmodcheck._ansible_doc

    def counting_ansible_doc() -> str:
        calls.append("ansible-doc")
        return real_ansible_doc()

    monkeypatch.setattr(winmodcheck, "_DOCS", {})
    monkeypatch.setattr(winmodcheck, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(winmodcheck, "_ansible_doc", counting_ansible_doc)
    first = winmodcheck.check_paths([FIXTURES / "good_tasks.yml", FIXTURES / "bad_tasks.yml"])
    winmodcheck.check_paths([FIXTURES / "good_tasks.yml", FIXTURES / "bad_playbook.yml"])
    assert len(calls) == 1, calls
    assert list(tmp_path.glob("*.json")), "the docs were not cached"
    # A new session reads the cache written by the first one instead of calling ansible-doc again.
    monkeypatch.setattr(winmodcheck, "_DOCS", {})
    assert winmodcheck.check_paths([FIXTURES / "good_tasks.yml", FIXTURES / "bad_tasks.yml"]) == first
    assert len(calls) == 1, calls


def test_command_line_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert winmodcheck.main([str(FIXTURES / "good_tasks.yml")]) == 0
    assert winmodcheck.main([str(FIXTURES / "bad_tasks.yml")]) == 1
    assert "start_mod" in capsys.readouterr().out


def _repo_task_files() -> list[Path]:
    return ansible_tasks.task_files()


def test_collection_windows_module_calls() -> None:
    files = _repo_task_files()
    if not files:
        pytest.skip("no task files under roles/*/tasks, roles/*/handlers, playbooks/ or molecule/ yet")
    problems = winmodcheck.check_paths()
    assert problems == [], f"{len(problems)} problem(s) in Windows module calls:\n" + "\n".join(problems)


def test_constraints_are_read_from_the_module_code() -> None:
    """The PowerShell `$spec` reader understands the literal forms the upstream modules use."""
    root = winmodcheck._collection_root("ansible.windows") / "plugins" / "modules"
    assert psspec.module_constraints(root / "win_powershell.ps1") == {
        "required_one_of": [["path", "script"]], "mutually_exclusive": [["path", "script"]]}
    assert psspec.module_constraints(root / "win_service.ps1") == {"required_by": {"password": ["username"]}}
    assert psspec.module_constraints(root / "win_certificate_store.ps1")["required_if"][0] == [
        "state", "absent", ["path", "thumbprint"], True]
