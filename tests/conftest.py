"""Fixtures shared by every test level. Fixtures that start servers live beside the tests that use them."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from toolchain import REPO, VENV_BIN


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ansible_env() -> dict[str, str]:
    """Environment for ansible-* commands run from the checkout (ansible.cfg finds the collection)."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env.setdefault("ANSIBLE_NOCOLOR", "1")
    env.setdefault("ANSIBLE_FORCE_COLOR", "0")
    # Compiled Jinja templates shared by the run's ansible-playbook processes (tests/jinja_cache/sitecustomize.py);
    # ENCLAVE_JINJA_CODE_CACHE= (empty) turns it off.
    env.setdefault("ENCLAVE_JINJA_CODE_CACHE", str(REPO / "build" / "jinja-code-cache"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "tests" / "jinja_cache"), env.get("PYTHONPATH", "")) if p)
    return env


# Parallel runs (pytest-xdist, as scripts/test.sh runs the suite): one group per test module, so that a module's
# fixtures (a converged simulated host, a server) are set up once, on one worker; the bundle tests share one build and
# one download cache, so they are one group, and integration modules sharing session servers are grouped below. Groups start longest first (tests/durations.json: seconds per group, as
# measured by `python tests/durations.py <junit xml>`), so that the last one to finish is short. A scheduler of our
# own: xdist's loadgroup marks do not reach the node ids under pytest 9.
DURATIONS = REPO / "tests" / "durations.json"


# Integration modules that start the same session servers (tests/integration/conftest.py: session fixtures live once
# per test process) run in one process: a Prefect server, its worker and deployments are started by two processes,
# not by every one. Two groups for the SQLite server and its worker, so that neither is the last to finish.
SHARED_SERVERS = {
    "tests/integration (SQLite server and worker, 1)": ["test_upgrade.py", "test_pause_wait.py", "test_bad_input.py",
                                                        "test_tls.py"],
    "tests/integration (SQLite server and worker, 2)": ["test_worker_and_flows.py", "test_verify_real.py",
                                                        "test_work_pool.py", "test_backup_restore.py"],
    "tests/integration (the roles' server)": ["test_header_contract.py", "test_ui_browser.py", "test_retention.py",
                                              "test_ship_a_flow.py"],
    "tests/integration (each backend, Basic auth)": ["test_backends.py", "test_auth.py", "test_secrets.py"],
}
_GROUP_OF_MODULE = {f"tests/integration/{module}": group for group, modules in SHARED_SERVERS.items() for module in modules}


def group_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "tests/bundle" if path.startswith("tests/bundle/") else _GROUP_OF_MODULE.get(path, path)


# Tiers (docs/testing.md): what a group proves and costs. The fast tier is what runs without a server, a simulated
# converge or a build: `bash scripts/test.sh -m fast`.
SLOW_STATIC = {"tests/static/test_static_lint.py", "tests/static/test_static_sanity.py",
               "tests/static/test_core_versions.py"}
FAST_ROLES = {"tests/roles/test_firewall_filter.py", "tests/roles/test_role_docs.py", "tests/roles/test_role_tags.py",
              "tests/roles/test_molecule_windows.py"}
TIERS = ["fast", "lint and sanity", "simulated host", "real servers", "offline bundle"]


def tier_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    if path.startswith("tests/unit/") or path in FAST_ROLES or (path.startswith("tests/static/") and path not in SLOW_STATIC):
        return "fast"
    if path in SLOW_STATIC:
        return "lint and sanity"
    return {"tests/roles/": "simulated host", "tests/integration/": "real servers",
            "tests/bundle/": "offline bundle"}.get(path[:path.index("/", 6) + 1], "fast")


def pytest_collection_modifyitems(config, items):
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    for item in items:
        if tier_of(item.nodeid) == "fast":
            item.add_marker(pytest.mark.fast)
    # Stable sort: within a group the collection order stays.
    items.sort(key=lambda item: -known.get(group_of(item.nodeid), 0.0))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """After the last test of a group in this process, everything it set up is torn down, session fixtures included:
    the servers, workers and clusters a group shares (tests/integration/conftest.py) stop when the group is done instead
    of when the process ends. An idle Prefect server still costs CPU (its Docket worker polls an in-memory Redis four
    times a second: about a seventh of a core each), and a process runs several groups one after the other; a later group
    that asks for one of those fixtures gets a new one."""
    if nextitem is not None and group_of(nextitem.nodeid) != group_of(item.nodeid):
        item.session._setupstate.teardown_exact(None)


_TIMES: dict[str, list[float]] = {}


def pytest_runtest_logreport(report):
    # On the controller under xdist too: every phase's report, with its start and stop.
    if report.start and report.stop:
        spans = _TIMES.setdefault(tier_of(report.nodeid), [float("inf"), 0.0, 0.0, 0])
        spans[0], spans[1] = min(spans[0], report.start), max(spans[1], report.stop)
        spans[2] += report.duration
        spans[3] += report.when == "call"


def pytest_terminal_summary(terminalreporter):
    if not _TIMES:
        return
    terminalreporter.section("time per tier")
    terminalreporter.write_line(f"{'tier':<16} {'tests':>6} {'test time':>10} {'wall span':>10}")
    for tier in TIERS:
        if tier in _TIMES:
            start, stop, summed, count = _TIMES[tier]
            terminalreporter.write_line(f"{tier:<16} {count:>6} {summed:>9.0f}s {stop - start:>9.0f}s")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    # The groups in collection order (longest first), not xdist's reordering by test count.
    config.option.loadscopereorder = False
    return GroupScheduling(config, log)


# CPU seconds per test (this process and the children it waited for), for finding what the suite spends its two
# cores on: ENCLAVE_TEST_CPU=/tmp/cpu.jsonl bash scripts/test.sh (the ansible-playbook runs of the simulated host log
# their own lines there too: tests/roles/rolerun.py run_cost; docs/testing.md).
_CPU_LOG = os.environ.get("ENCLAVE_TEST_CPU")


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _CPU_LOG:
        yield
        return
    before = _cpu_seconds()
    yield
    with open(_CPU_LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps({"nodeid": item.nodeid, "group": group_of(item.nodeid),
                              "cpu": round(_cpu_seconds() - before, 2)}) + "\n")
