"""The lowest supported ansible-core (meta/runtime.yml requires_ansible), tested in its own virtual environment.

The suite runs on the pinned ansible-core of requirements/control-node.lock (.venv), the highest of the supported range.
Here `.venv-core-<version>` (scripts/setup.sh, from requirements/ansible-core-<version>.lock, with the same Windows
collections as .venv) runs, in a pytest process of its own, `ansible-test sanity` and the fast-tier tests whose result
depends on ansible-core (CORE_TESTS): the filters' and API plugins' unit tests (ansible-doc and ansible-playbook runs of
the plugins among them), argument specs, every playbook's syntax, the Windows module calls against ansible-doc, the
roles' XML templates rendered by ansible's Templar, the firewall plan and the example inventory rendered by
ansible-playbook and ansible-inventory, the command lines and tags of the roles; and the preflight of every role for the
two-host example inventory (tests/roles/test_preflight.py, on the simulated host). The rest of the fast tier (PowerShell
parsing, docs, markers, packaging) does not run ansible-core; the rest of the simulated host, the real servers and the
bundle stay on .venv (docs/testing.md: what it costs, measured).
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from toolchain import REPO, VENV

pytestmark = [pytest.mark.static, pytest.mark.slow]

RUNTIME = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text(encoding="utf-8"))
# The cores with a lock of their own: requirements/ansible-core-<version>.lock.
CORES = sorted(re.fullmatch(r"ansible-core-(.+)\.lock", p.name).group(1)
               for p in (REPO / "requirements").glob("ansible-core-*.lock"))
# The fast-tier modules that run ansible-core (its parser, Templar, plugin loader, ansible-doc, ansible-playbook,
# ansible-inventory), checked against the tier below so that a new one is not left out silently.
CORE_TESTS = ["tests/unit", "tests/static/test_example_inventory.py", "tests/static/test_static_argspecs.py",
              "tests/static/test_static_cmdlines.py", "tests/static/test_static_firewall.py",
              "tests/static/test_static_syntax.py", "tests/static/test_static_webconfig.py",
              "tests/static/test_static_winmodules.py", "tests/roles/test_firewall_filter.py", "tests/roles/test_role_tags.py"]
# Fast-tier modules that run ansible-core but test what .venv alone has: the release packaging (ansible-builder,
# antsibull-changelog, bindep of the dev toolchain).
NOT_CORE_TESTS = {"tests/static/test_release.py"}
# The preflight (playbooks/preflight.yml on the simulated host's inventory): the roles' input checks as plays run them,
# argument specs, the role_input action plugin and the filters in real templating, on the control node.
# Of the preflight, the two-host example's run of every role's checks (the suite's budget: the other preflight tests run
# the same plays with other input, on the default core).
SELECTION = {"fast tier": ["-m", "fast", *CORE_TESTS], "sanity": ["tests/static/test_static_sanity.py"],
             "preflight": ["tests/roles/test_preflight.py", "-k", "two_host_example"]}
# What a fast-tier module that runs ansible-core shows in its source (or in the checker it imports).
USES_CORE = re.compile(r"from ansible\b|import ansible\b|ansible-(playbook|doc|inventory)|\b(ansible_tasks|argspecs|winmodcheck|"
                       r"webconfig|firewallcheck|cmdlines)\b")


def _floor(spec: str) -> str:
    found = re.search(r">=\s*([0-9.]+)", spec)
    assert found, f"requires_ansible {spec!r} names no lowest version"
    return found.group(1)


def test_the_lowest_supported_core_has_its_own_lock():
    """requires_ansible's floor is what the extra venv holds: the range and the tests move together."""
    floor = ".".join(_floor(RUNTIME["requires_ansible"]).split(".")[:2])
    assert floor in CORES, f"requires_ansible starts at {floor}: add requirements/ansible-core-{floor}.in and its lock"
    lock = (REPO / "requirements" / f"ansible-core-{floor}.lock").read_text(encoding="utf-8")
    pinned = re.search(r"^ansible-core==([0-9.]+)", lock, re.M)
    assert pinned and pinned.group(1).startswith(floor + "."), f"ansible-core-{floor}.lock pins {pinned and pinned.group(1)}"


def test_every_fast_module_that_runs_ansible_core_is_selected():
    """A fast-tier test module using ansible-core that CORE_TESTS leaves out would be tested on one core only."""
    # tests/conftest.py by path (its tiers): `import conftest` finds whichever conftest module was imported first.
    spec = importlib.util.spec_from_file_location("tests_conftest", REPO / "tests" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    selected = {REPO / path for path in CORE_TESTS}
    missing = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        rel = path.relative_to(REPO).as_posix()
        if conftest.tier_of(rel + "::x") != "fast" or rel in NOT_CORE_TESTS or any(path == s or s in path.parents
                                                                                     for s in selected):
            continue
        if USES_CORE.search(path.read_text(encoding="utf-8")) and path.name != Path(__file__).name:
            missing.append(rel)
    assert not missing, f"fast-tier modules that run ansible-core, not in CORE_TESTS: {missing}"


def _inner_env() -> dict[str, str]:
    # The outer run's pytest-xdist and test variables must not reach the inner pytest.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    env.pop("VIRTUAL_ENV", None)
    # tests/jinja_cache speeds up ansible-core 2.19's internals: the other cores run as users run them.
    env["ENCLAVE_JINJA_CODE_CACHE"] = ""
    return env


def _failures(junit: Path) -> tuple[int, list[str]]:
    root = ET.parse(junit).getroot()
    cases = list(root.iter("testcase"))
    failed = []
    for case in cases:
        for kind in ("failure", "error"):
            element = case.find(kind)
            if element is not None:
                detail = (element.get("message") or element.text or "").strip().splitlines()
                failed.append(f"{case.get('classname')}::{case.get('name')}: {detail[0] if detail else kind}")
    return len(cases), failed


@pytest.mark.skipif(VENV.name != ".venv", reason="runs from the default toolchain only")
@pytest.mark.parametrize("part", sorted(SELECTION))
@pytest.mark.parametrize("core", CORES)
def test_on_other_core(core: str, part: str, tmp_path: Path):
    venv = REPO / f".venv-core-{core}"
    python = venv / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{venv.name} is missing: run `bash scripts/setup.sh`")
    version = subprocess.run([str(venv / "bin" / "ansible"), "--version"], capture_output=True, text=True,
                             check=False).stdout.split("\n", 1)[0]
    assert f"core {core}." in version, f"{venv.name} runs {version!r}: rebuild it with `bash scripts/setup.sh`"
    junit = tmp_path / "junit.xml"
    proc = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                           "--continue-on-collection-errors", "--ignore=tests/static/test_core_versions.py", *SELECTION[part]],
                          cwd=REPO, env=_inner_env(), capture_output=True, text=True, check=False)
    if not junit.exists():
        pytest.fail(f"pytest in {venv.name} reported nothing (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    count, failed = _failures(junit)
    assert count, f"pytest in {venv.name} selected no test for the {part}:\n{proc.stdout[-2000:]}"
    assert not failed, (f"{len(failed)} of {count} tests of the {part} fail on ansible-core {core} ({version}):\n"
                        + "\n".join(failed) + f"\n{proc.stdout[-3000:]}")
    assert proc.returncode == 0, f"pytest in {venv.name} exited {proc.returncode}:\n{proc.stdout[-3000:]}"
