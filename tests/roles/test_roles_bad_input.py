"""Bad input to the Windows roles fails on the control node, names the variable, and touches no host.

Each case applies one role to localhost (connection local). A Windows module cannot run there, so a case
that got past validation would fail on its first host task instead; every case asserts that the failing
task is a controller-side check and that no task reached the host.
"""
from __future__ import annotations

import pytest

from rolerun import VALIDATION_ACTIONS, run_cases

pytestmark = pytest.mark.static

SERVER = {"nssm_services_server_enabled": True, "nssm_services_account_password": "not-checked-here"}

CASES = [
    # role, vars, words the message must contain
    ("python", {"python_state": "latest"}, ["python_state", "present, absent", "latest"]),
    ("python", {"python_prepend_path": "sometimes"}, ["python_prepend_path", "bool"]),
    ("python", {"python_extra_arguments": {"Include_doc": 0}}, ["python_extra_arguments", "list"]),
    ("python", {"python_version": "3.11.9"}, ["python_version 3.11.9", "3.12"]),
    ("python", {"prefect_artifact_delivery": "ftp"}, ["prefect_artifact_delivery", "push, share, url", "ftp"]),
    ("python", {"prefect_artifact_delivery": "share"}, ["prefect_bundle_share"]),
    ("python", {"prefect_artifact_delivery": "url", "prefect_bundle_url": "nexus.corp.local/prefect"},
     ["prefect_bundle_url", "http"]),
    ("python", {"prefect_server_host": "0.0.0.0"}, ["prefect_server_host", "loopback", "0.0.0.0"]),
    ("python", {"prefect_server_port": "http"}, ["prefect_server_port", "int"]),
    ("prefect_venv", {"prefect_venv_keep": "all"}, ["prefect_venv_keep", "int"]),
    ("prefect_venv", {"prefect_venv_keep": -1}, ["prefect_venv_keep must be >= 0", "-1"]),
    ("prefect_venv", {"prefect_venv_name": "current"}, ["prefect_venv_name", "current"]),
    ("prefect_venv", {"prefect_venv_lock_sha256": "ab" * 32},
     ["ab" * 32, "requirements/windows/prefect-py312.lock", "prefect_venv_check_committed_lock=false"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W"}]},
     ["missing required arguments: pool", "nssm_services_workers"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"pool": "p"}]},
     ["missing required arguments: service", "nssm_services_workers"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "p", "queue": "high"}]},
     ["nssm_services_workers.queue", "queues"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "p", "start_mode": "boot"}]},
     ["start_mode", "auto, delayed, manual, disabled", "boot"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "p", "limit": "many"}]},
     ["limit", "int"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": "PrefectWorker"}, ["nssm_services_workers", "dict"]),
    ("nssm_services", {**SERVER, "nssm_services_server_start_mode": "boot"},
     ["nssm_services_server_start_mode", "boot"]),
    ("nssm_services", {**SERVER, "nssm_services_rotate_bytes": "10MB"}, ["nssm_services_rotate_bytes", "int"]),
    ("nssm_services", {**SERVER, "nssm_services_server_env": ["PREFECT_X=1"]}, ["nssm_services_server_env", "dict"]),
    ("nssm_services", {**SERVER, "nssm_services_pools": [{"type": "process"}]},
     ["missing required arguments: name", "nssm_services_pools"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "p"}, {"service": "W", "pool": "q"}]},
     ["service names must be unique"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "PrefectServer", "pool": "p"}]},
     ["differ from the server's (PrefectServer)"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "my pool"}]},
     ["no spaces or quotes", "my pool"]),
    ("nssm_services", {"nssm_services_account_password": "x", "nssm_services_workers": [{"service": "W", "pool": "p"}]},
     ["nssm_services_worker_api_url"]),
    ("nssm_services", {**SERVER, "nssm_services_account": "Administrator"}, ["not Administrator or LocalSystem"]),
    ("nssm_services", {**SERVER, "nssm_services_account": "LocalSystem"}, ["not Administrator or LocalSystem"]),
    ("nssm_services", {**SERVER, "nssm_services_account": "CORP\\Administrator"}, ["not Administrator or LocalSystem"]),
    ("python", {"prefect_server_host": "::1"}, ["prefect_server_host", "127.0.0.1 or localhost", "::1"]),
    ("nssm_services", {"nssm_services_server_enabled": True}, ["needs a password", "svc_prefect"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "p", "account": "CORP\\svc_w"}]},
     ["Accounts without a password: CORP\\svc_w"]),
    ("prefect_venv", {"prefect_venv_lock_sha256": "abc123"}, ["prefect_venv_lock_sha256", "64 hexadecimal", "abc123"]),
    ("prefect_venv", {"prefect_venv_wheelhouse_sha256": "g" * 64},
     ["prefect_venv_wheelhouse_sha256", "64 hexadecimal", "g" * 64]),
    ("nssm_services", {**SERVER, "nssm_services_server_failure_delays_ms": []},
     ["nssm_services_server_failure_delays_ms", "at least one", "server []"]),
    ("nssm_services", {**SERVER, "nssm_services_worker_failure_delays_ms": [15000, 0]},
     ["nssm_services_worker_failure_delays_ms", "greater than 0", "workers [15000, 0]"]),
]


def _ids(cases):
    return [f"{c[0]}-{i}-{'-'.join(sorted(c[1].keys() - SERVER.keys())) or 'defaults'}" for i, c in enumerate(cases)]


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, ansible_env):
    """One ansible-playbook run per role for all bad-input cases."""
    runs = {}
    for role in sorted({c[0] for c in CASES}):
        cases = {f"case{i}": c[1] for i, c in enumerate(CASES) if c[0] == role}
        runs.update(run_cases(tmp_path_factory.mktemp(role), ansible_env, role, cases))
    return runs


@pytest.mark.parametrize("index", range(len(CASES)), ids=_ids(CASES))
def test_bad_input_is_rejected_before_the_host(bad_runs, index):
    role, role_vars, words = CASES[index]
    run = bad_runs[f"case{index}"]
    task, result = run.failed()
    assert result.get("action") in VALIDATION_ACTIONS, (task, result.get("msg"), run.summary)
    for word in words:
        assert word in result.get("msg", ""), (word, result.get("msg"))
    assert run.host_actions() == [], run.host_actions()


GOOD = [
    ("python", {}, "Installed Python version is known"),
    ("prefect_venv", {}, "Lock of the current venv is known"),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "p", "queues": ["a", "b"], "limit": 2}],
                       "nssm_services_pools": [{"name": "p", "queues": [{"name": "a", "priority": 1}]}]},
     "NSSM executable presence is known"),
    ("nssm_services", {"nssm_services_account": "CORP\\gmsa_prefect$", "nssm_services_worker_api_url": "https://prefect.corp.local/api",
                       "nssm_services_workers": [{"service": "W", "pool": "p"}]},
     "NSSM executable presence is known"),
]


@pytest.fixture(scope="module")
def good_runs(tmp_path_factory, ansible_env):
    runs = {}
    for role in sorted({c[0] for c in GOOD}):
        cases = {f"good{i}": c[1] for i, c in enumerate(GOOD) if c[0] == role}
        runs.update(run_cases(tmp_path_factory.mktemp(f"good-{role}"), ansible_env, role, cases))
    return runs


@pytest.mark.parametrize("index", range(len(GOOD)), ids=[f"{c[0]}-{i}" for i, c in enumerate(GOOD)])
def test_good_input_passes_validation(good_runs, index):
    """Good input gets through every controller-side check; the run then stops at the first host task,
    because the control node is not Windows."""
    run = good_runs[f"good{index}"]
    task = run.failed()[0]
    assert task.endswith(GOOD[index][2]), (task, run.summary)
    assert run.host_actions() == [task]


SECRETS = {
    "nssm_services_account_password": "PwSecret-8c1f",
    "prefect_api_auth_string": "prefect:AuthSecret-77ab",
    "prefect_database_url": "postgresql+asyncpg://prefect:DbSecret-5e2d@db/prefect",
}


def test_secrets_never_appear_in_output(tmp_path, ansible_env):
    """With -vvv, neither a failing validation nor a run that reaches the host prints a secret."""
    cases = {
        "failing": {"nssm_services_server_enabled": True, **SECRETS,
                    "nssm_services_workers": [{"service": "W", "pool": "p", "password": "WkSecret-1b9e", "start_mode": "boot"}]},
        "passing": {"nssm_services_server_enabled": True, **SECRETS,
                    "nssm_services_workers": [{"service": "W", "pool": "p", "account": "CORP\\w", "password": "WkSecret-1b9e"}]},
    }
    runs = run_cases(tmp_path, ansible_env, "nssm_services", cases, extra_args=["-vvv"])
    assert runs["failing"].failed()[1]["action"] in VALIDATION_ACTIONS
    assert runs["passing"].failed()[0].endswith("NSSM executable presence is known")
    output = runs["failing"].output
    for secret in ["PwSecret-8c1f", "AuthSecret-77ab", "DbSecret-5e2d", "WkSecret-1b9e"]:
        assert secret not in output, f"{secret} leaked"
