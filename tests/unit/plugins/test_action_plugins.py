"""The real action plugins in an ansible-playbook run at -vvv against the fake API on 127.0.0.1.

Proves the plugin wiring (argument spec, connection-based mode selection, result) and that the
password and auth string appear nowhere in Ansible's output, in plain or base64 form, even though
the tasks do not set no_log.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from fake_prefect import AUTH_STRING, PASSWORD
from toolchain import VENV_BIN

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.unit


def test_playbook_at_vvv_never_shows_secrets(http_fake, tmp_path):
    fake, api_url = http_fake
    ansible_playbook = VENV_BIN / "ansible-playbook"
    if not ansible_playbook.exists():
        pytest.skip("ansible-playbook is not installed: run `bash scripts/setup.sh`")
    common = {"api_url": api_url, "auth": "basic", "auth_string": AUTH_STRING}
    wrong = {"api_url": api_url, "auth": "basic", "username": "admin", "password": "x" + PASSWORD}
    play = [{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [
            {"name": "pool", "enclave.prefect.work_pool": dict(common, name="etl", concurrency_limit=2),
             "register": "pool"},
            {"name": "pool again", "enclave.prefect.work_pool": dict(common, name="etl", concurrency_limit=2),
             "register": "again"},
            {"name": "info", "enclave.prefect.work_pool_info": dict(common, name="etl"), "register": "info"},
            {"name": "health", "enclave.prefect.server_health": dict(common, expect_unauthenticated_status=401),
             "register": "health"},
            {"name": "wrong password", "enclave.prefect.work_pool_info": wrong, "register": "denied",
             "ignore_errors": True},
            {"name": "results", "ansible.builtin.assert": {"that": [
                "pool is changed", "again is not changed", "info.work_pools[0].concurrency_limit == 2",
                "health.prefect_version == '3.8.8'", "denied is failed", "'HTTP 401' in denied.msg",
                "pool.api_from == 'controller'"]}},
        ],
    }]
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    proc = subprocess.run([str(ansible_playbook), "-vvv", "-i", "localhost,", str(playbook)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "ok=6" in output and "failed=0" in output
    for secret in (PASSWORD, AUTH_STRING, base64.b64encode(AUTH_STRING.encode()).decode(),
                   base64.b64encode(("admin:x" + PASSWORD).encode()).decode()):
        assert secret not in output
    assert json.dumps(fake.pools["etl"]["concurrency_limit"]) == "2"
