"""The compiled-template cache of the test runs (tests/jinja_cache/sitecustomize.py) changes nothing but time: the same
role runs, with and without it, give the same results, task by task."""
from __future__ import annotations

import hashlib
import json

import pytest

from rolerun import run_cases
from simhost import INSTALLER, Sim, make_bundle, reached

pytestmark = pytest.mark.simulated

CASES = {
    "good": {"nssm_services_server_enabled": True, "nssm_services_account_password": "x", "nssm_services_worker_account_password": "y",
             "nssm_services_workers": [{"service": "W", "pool": "p", "queues": ["a", "b"], "limit": 2}]},
    "bad": {"nssm_services_server_enabled": True, "nssm_services_account_password": "x",
            "nssm_services_workers": [{"service": "W", "pool": "my pool"}], "prefect_root": "C:\\\\Prefect\\\\.."},
}
# What differs between two runs whatever the cache: timings and temporary paths.
VOLATILE = {"start", "end", "delta", "duration", "invocation"}


def _clean(results):
    return [(name, {k: v for k, v in result.items() if k not in VOLATILE}) for name, result in results]


def test_results_are_the_same_with_and_without_the_cache(tmp_path, ansible_env):
    without = dict(ansible_env, ENCLAVE_JINJA_CODE_CACHE="")
    cached = dict(ansible_env, ENCLAVE_JINJA_CODE_CACHE=str(tmp_path / "cache"))
    runs = []
    for name, env in (("off", without), ("cold", cached), ("warm", cached)):
        (tmp_path / name).mkdir()
        runs.append(run_cases(tmp_path / name, env, "nssm_services", CASES))
    assert list((tmp_path / "cache").iterdir()), "the cache was not used"
    for case in CASES:
        off, cold, warm = (_clean(run[case].results) for run in runs)
        assert off == cold == warm, case
        assert off, case


def test_a_simulated_converge_is_the_same_with_and_without_the_cache(tmp_path, ansible_env):
    """The python layer on two fresh simulated hosts: the same tasks, results and host state."""
    outcomes = []
    for name, cache in (("off", ""), ("on", str(tmp_path / "cache"))):
        sim = Sim(tmp_path / name, dict(ansible_env, ENCLAVE_JINJA_CODE_CACHE=cache))
        extra = {"prefect_bundle_dir": str(make_bundle(sim.root)), "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest()}
        data = sim.run(extra, playbook="python.yml")[1]
        state = json.loads(json.dumps(sim.state).replace(str(tmp_path / name), "ROOT"))
        outcomes.append((_clean([(n, json.loads(json.dumps(r).replace(str(tmp_path / name), "ROOT")))
                                 for n, r in reached(data)]), state))
    assert outcomes[0] == outcomes[1]
