"""Each module's DOCUMENTATION (as ansible-doc renders it) matches the argument spec the action plugin enforces."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from toolchain import VENV_BIN

from ansible_collections.enclave.prefect.plugins.module_utils import flow_runs, flow_runs_query, health_checks, work_pools

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]

SPECS = {
    "work_pool": work_pools.argument_spec(),
    "work_pool_info": work_pools.info_argument_spec(),
    "server_health": health_checks.argument_spec(),
    "flow_run": flow_runs.argument_spec(),
    "flow_runs": flow_runs_query.argument_spec(),
}


@pytest.fixture(scope="module")
def docs():
    ansible_doc = VENV_BIN / "ansible-doc"
    if not ansible_doc.exists():
        pytest.skip("ansible-doc is not installed: run `bash scripts/setup.sh`")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    names = ["enclave.prefect.%s" % name for name in SPECS]
    proc = subprocess.run([str(ansible_doc), "-j", *names], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _compare(doc_options, spec, where):
    assert set(doc_options) == set(spec), "%s: documented %s, spec %s" % (where, sorted(doc_options), sorted(spec))
    for name, option in spec.items():
        doc = doc_options[name]
        what = "%s.%s" % (where, name)
        assert doc.get("type", "str") == option.get("type", "str"), what
        assert bool(doc.get("required", False)) == bool(option.get("required", False)), what
        assert doc.get("default") == option.get("default"), what
        assert doc.get("choices") == option.get("choices"), what
        assert doc.get("elements") == option.get("elements"), what
        if option.get("options"):
            _compare(doc["suboptions"], option["options"], what)


@pytest.mark.parametrize("module", sorted(SPECS))
def test_documentation_matches_argument_spec(docs, module):
    doc = docs["enclave.prefect.%s" % module]
    _compare(doc["doc"]["options"], SPECS[module], module)
    assert doc["examples"].strip() and doc["return"]
    assert "api_from" in doc["return"]


@pytest.mark.parametrize("module", sorted(SPECS))
def test_secrets_are_no_log(module):
    spec = SPECS[module]
    assert spec["password"]["no_log"] is True and spec["auth_string"]["no_log"] is True
