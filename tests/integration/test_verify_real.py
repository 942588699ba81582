"""The controller-side checks of playbooks/verify.yml against real servers: its own task files (tasks/verify_check.yml
with verify_proxy.yml and verify_pools.yml), included as verify.yml includes them, in a play on the control node with
the variables pointing at a real Prefect server, a real process worker polling its pool, and a real NTLM/Negotiate
proxy in front of the server. The Windows-host checks (machine path through win_uri, the port probe, the certificate
store, the smoke flow's deployment by win_powershell) need a Windows host and are not run here."""
from __future__ import annotations

import secrets

import pytest
from conftest import _start
from ntlm_proxy import AuthProxy
from servers import PrefectServer, PrefectWorker
from toolchain import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER = ("ENCLAVE", "svc-verify", "Verify-" + secrets.token_urlsafe(12))
POOL = "verify-process"
CHECK = str(REPO / "playbooks" / "tasks" / "verify_check.yml")


@pytest.fixture(scope="module")
def deployment(prefect_venv, tmp_path_factory):
    """A server of its own (every pool of it must be READY), its worker, and the proxy in front of it."""
    server = _start(PrefectServer(tmp_path_factory.mktemp("verify-server")))
    worker = PrefectWorker(server, POOL, tmp_path_factory.mktemp("verify-worker"), name="verify-worker")
    proxy = None
    try:
        worker.start()
        proxy = AuthProxy(f"http://127.0.0.1:{server.port}", auth="ntlm", users=[USER],
                          state_dir=tmp_path_factory.mktemp("verify-ntlm")).start()
        yield server, worker, proxy
    finally:
        if proxy is not None:
            proxy.stop()
        worker.stop()
        server.stop()


def _checks(playbook, server, proxy, password):
    check = {"verify_here": True, "verify_skip": ""}
    tasks = [
        {"name": "Proxy with and without Windows authentication", "ansible.builtin.include_tasks": CHECK,
         "vars": dict(check, verify_check="proxy", verify_order=1, verify_check_file="verify_proxy.yml")},
        {"name": "Pools and workers", "ansible.builtin.include_tasks": CHECK,
         "vars": dict(check, verify_check="pools", verify_order=4, verify_check_file="verify_pools.yml")},
        {"name": "Rows", "ansible.builtin.debug": {"var": "operate_steps"}},
    ]
    play_vars = {"prefect_public_url": proxy.url, "prefect_api_url": server.api_url, "prefect_api_auth_string": "",
                 "prefect_api_ca_cert": "", "verify_username": f"{USER[0]}\\{USER[1]}", "verify_password": password}
    res = playbook.run(tasks, play_vars=play_vars, verbosity=1, timeout=400)
    assert res.rc == 0, res.explain()
    assert password not in res.output and USER[2] not in res.output
    return {row["step"]: row["result"] for row in res.task("Rows")["operate_steps"]}, res


def test_proxy_and_pools_pass_against_real_servers(playbook, deployment):
    server, worker, proxy = deployment
    proxy.reset()
    rows, res = _checks(playbook, server, proxy, USER[2])
    assert rows["proxy"].startswith(f"ok: {proxy.url} Prefect 3."), rows
    assert rows["proxy"].endswith("anonymous 401"), rows
    assert rows["pools"] == f"ok: {POOL} READY, 1 worker(s) ONLINE", rows
    # The proxy forwarded the Windows-authenticated requests as the account.
    seen = proxy.reset()
    assert {f.user for f in seen if f.user} == {f"{USER[0]}\\{USER[1]}"}


def test_wrong_password_fails_the_proxy_check_naming_it(playbook, deployment):
    server, worker, proxy = deployment
    rows, res = _checks(playbook, server, proxy, "not-" + USER[2])
    assert rows["proxy"].startswith("FAILED: server_health: check 'health' failed"), rows
    assert "401" in rows["proxy"], rows
    assert rows["pools"].startswith("ok:"), rows
