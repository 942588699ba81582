"""Level 1: `ansible-test sanity` on the collection placed in an ansible_collections/enclave/prefect tree.

ansible-test runs once per session (about two minutes the first time, when it builds one virtual
environment per sanity test from PyPI; less afterwards) and each sanity test is reported as its own
pytest result: passed, failed with ansible-test's messages, or skipped with ansible-test's reason
(for example pslint without PowerShell 7 `pwsh` on the control node).
The tree lives in build/sanity (see tests/static/sanity_tree.py for what it holds and why).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import sanity_tree
from toolchain import REPO, VENV, VENV_BIN, tool

pytestmark = [pytest.mark.static, pytest.mark.slow]

# One tree per toolchain: .venv-core-<version> (tests/static/test_core_versions.py) runs beside .venv's run.
BUILD = REPO / "build" / ("sanity" + VENV.name.removeprefix(".venv"))
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
SHIM = Path(__file__).with_name("sanity_get_pip.py")
# Programs some sanity tests need; ansible-test skips those tests without them.
PROGRAMS = {"pslint": "pwsh", "shellcheck": "shellcheck"}
# Variables the get-pip shim hands to uv: ansible-test passes few variables on to what it runs.
UV_ENV = re.compile(r"^(UV_\w+|SSL_CERT_(FILE|DIR)|(HTTPS?|NO|ALL)_PROXY|(https?|no|all)_proxy)$")


def _sanity_env() -> dict[str, str]:
    """ansible-test keeps HOME but drops most other variables; HOME is a private one under build/."""
    home = BUILD / "home"
    cache = home / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    # ansible-test downloads get-pip.py from a host outside PyPI; this offline stand-in replaces it.
    try:  # the pip version ansible-test bootstraps (an internal detail of ansible-test)
        from ansible_test._internal.host_configs import NativePythonConfig  # noqa: PLC0415
        from ansible_test._internal.python_requirements import get_venv_packages  # noqa: PLC0415

        pip_version = get_venv_packages(NativePythonConfig(version=PYTHON, path=sys.executable))["pip"]
    except (ImportError, AttributeError, KeyError, TypeError):
        pip_version = "24.2"  # ansible-core 2.19
    # The shim uses the toolchain's uv when it is there (a second per environment instead of five).
    uv = VENV_BIN / "uv"
    uv_env = {key: value for key, value in os.environ.items() if UV_ENV.match(key)}
    if uv.exists() and "UV_CACHE_DIR" not in uv_env:  # the toolchain's cache, not one under the private HOME
        cache_dir = subprocess.run([str(uv), "cache", "dir"], capture_output=True, text=True, check=False).stdout.strip()
        uv_env.update({"UV_CACHE_DIR": cache_dir} if cache_dir else {})
    shim = (SHIM.read_text(encoding="utf-8").replace('UV = ""', f"UV = {str(uv) if uv.exists() else ''!r}", 1)
            .replace("UV_ENV: dict = {}", f"UV_ENV: dict = {uv_env!r}", 1))
    (cache / f"get_pip_{pip_version.replace('.', '_')}.py").write_text(shim, encoding="utf-8")
    # Keep the user's pip configuration (index mirror, CA bundle) visible under the private HOME.
    for rel in (".config/pip/pip.conf", ".pip/pip.conf"):
        source = Path.home() / rel
        if source.is_file():
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, home / rel)
    env = dict(os.environ)
    env["HOME"] = str(home)
    return env


@contextlib.contextmanager
def _tree_lock():
    """One ansible-test run at a time per checkout: parallel pytest sessions share build/sanity."""
    BUILD.mkdir(parents=True, exist_ok=True)
    with open(BUILD.parent / f"{BUILD.name}.lock", "w", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _list_tests() -> list[str]:
    """Names of the sanity tests; fixed per ansible-core version, so cached under build/.cache."""
    import ansible  # noqa: PLC0415

    cache = REPO / "build" / ".cache" / f"sanity-tests-{ansible.__version__}-py{PYTHON}.txt"
    if cache.is_file():
        return cache.read_text(encoding="utf-8").split()
    try:
        with _tree_lock():
            root = sanity_tree.build(BUILD)
            env = dict(os.environ, ANSIBLE_TEST_CONTENT_ROOT=str(root))
            proc = subprocess.run([tool("ansible-test"), "sanity", "--list-tests", "--python", PYTHON],
                                  cwd=root, env=env, capture_output=True, text=True, check=False)
    except (OSError, subprocess.CalledProcessError) as exc:
        return [f"!cannot build the sanity tree: {exc}"]
    if proc.returncode != 0:
        return [f"!ansible-test sanity --list-tests failed: {proc.stderr.strip()[-500:]}"]
    names = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("\n".join(names) + "\n", encoding="utf-8")
    return names


SANITY_TESTS = _list_tests()


@pytest.fixture(scope="session")
def sanity_run() -> dict:
    """Run every sanity test once; return per-test results parsed from ansible-test's JUnit files."""
    with _tree_lock():
        root = sanity_tree.build(BUILD)
        junit = root / "tests" / "output" / "junit"
        shutil.rmtree(junit, ignore_errors=True)
        env = _sanity_env()
        env["ANSIBLE_TEST_CONTENT_ROOT"] = str(root)
        started = time.monotonic()
        proc = subprocess.run(
            [tool("ansible-test"), "sanity", "--venv", "--requirements", "--python", PYTHON, "--junit",
             "--color", "no"],
            cwd=root, env=env, capture_output=True, text=True, check=False,
        )
        reports = {path.name: path.read_text(encoding="utf-8") for path in sorted(junit.glob("*.xml"))}
    output = proc.stdout + proc.stderr
    results: dict[str, list[tuple[str, str]]] = {}
    for text in reports.values():
        for case in ET.fromstring(text).iter("testcase"):
            name = case.get("name", "")
            base = re.sub(r"-python-[0-9.]+$", "", name)
            status, detail = "passed", ""
            for kind in ("failure", "error", "skipped"):
                element = case.find(kind)
                if element is not None:
                    status = kind
                    detail = (element.get("message") or "") + "\n" + (element.text or "")
                    break
            results.setdefault(base, []).append((status, detail.strip()))
    return {"results": results, "output": output, "returncode": proc.returncode,
            "seconds": time.monotonic() - started}


@pytest.mark.parametrize("sanity_test", SANITY_TESTS or ["!no sanity tests listed"])
def test_ansible_test_sanity(sanity_test: str, sanity_run: dict) -> None:
    if sanity_test.startswith("!"):
        pytest.fail(sanity_test[1:])
    outcomes = sanity_run["results"].get(sanity_test)
    if not outcomes:
        pytest.fail(f"ansible-test reported nothing for {sanity_test} (exit {sanity_run['returncode']}):\n"
                    f"{sanity_run['output'][-4000:]}")
    failed = [detail for status, detail in outcomes if status in ("failure", "error")]
    if failed:
        pytest.fail(f"ansible-test sanity --test {sanity_test} failed:\n" + "\n".join(failed))
    if all(status == "skipped" for status, _detail in outcomes):
        program = PROGRAMS.get(sanity_test)
        if program and f'Required program "{program}" not found' in sanity_run["output"]:
            pytest.skip(f"{sanity_test}: `{program}` is not installed on this control node")
        pytest.skip(f"{sanity_test}: {outcomes[0][1] or 'skipped by ansible-test'}")
