"""Authentication end to end: NTLM through an IIS-like proxy, Basic auth (+ CSRF) on the server itself."""
from __future__ import annotations

from playbooks import connection, module_task
from servers import PINNED_PREFECT


def ntlm_opts(proxy, **extra) -> dict:
    domain, user, password = proxy.users[0]
    opts = {"api_url": f"{proxy.url}/api", "auth": "ntlm", "username": f"{domain}\\{user}", "password": password}
    opts.update(extra)
    return opts


def test_ntlm_end_to_end(playbook, ntlm_proxy, sqlite_server, pool_name):
    ntlm_proxy.reset()
    res = playbook.run([
        module_task("health", "server_health", ntlm_opts(ntlm_proxy, timeout=30,
                                                         expect_unauthenticated_status=401)),
        module_task("pool", "work_pool", ntlm_opts(ntlm_proxy, name=pool_name, queues=[{"name": "high"}])),
        module_task("again", "work_pool", ntlm_opts(ntlm_proxy, name=pool_name, queues=[{"name": "high"}])),
    ])
    assert res.rc == 0, res.explain()
    assert res.task("health")["prefect_version"] == PINNED_PREFECT
    assert res.task("pool")["changed"] is True and res.task("again")["changed"] is False
    assert sqlite_server.pool(pool_name) is not None
    seen = ntlm_proxy.reset()
    assert not [f for f in seen if f.user is None and f.status != 401], "a request reached the API without NTLM"
    assert {f.user for f in seen if f.user} == {"ENCLAVE\\" + ntlm_proxy.users[0][1]}


def test_health_proves_authorization_with_an_account_that_is_not_allowed(playbook, ntlm_proxy):
    """denied_username: an account that signs in but is not allowed must get 401 (as from IIS URL Authorization); the
    same check fails, naming the cause, when the proxy lets every account that signs in through."""
    domain, user, password = ntlm_proxy.users[1]
    denied = {"denied_username": f"{domain}\\{user}", "denied_password": password}
    ntlm_proxy.reset()
    res = playbook.run([module_task("health", "server_health", ntlm_opts(ntlm_proxy, timeout=30, **denied))])
    assert res.rc == 0, res.explain()
    check = [c for c in res.task("health")["checks"] if c["name"] == "not allowed"]
    assert check and check[0]["ok"] and f"as {domain}\\{user}: HTTP 401" in check[0]["detail"], check
    seen = ntlm_proxy.reset()
    assert not [f for f in seen if f.user == f"{domain}\\{user}" and f.status != 401], seen
    allowed, ntlm_proxy.allowed = ntlm_proxy.allowed, None
    try:
        res = playbook.run([module_task("health", "server_health", ntlm_opts(ntlm_proxy, timeout=30, **denied))])
    finally:
        ntlm_proxy.allowed = allowed
    assert res.rc != 0
    msg = res.task("health")["msg"]
    assert "check 'not allowed' failed" in msg and "authorization is not enforced" in msg, msg
    assert password not in res.output


def test_negotiate_falls_back_to_ntlm_inside_spnego(playbook, ntlm_proxy):
    """No Kerberos realm here: SPNEGO must still authenticate with NTLM, as against IIS from a non-domain node."""
    ntlm_proxy.reset()
    res = playbook.run([module_task("info", "work_pool_info", ntlm_opts(ntlm_proxy, auth="negotiate"))])
    assert res.rc == 0, res.explain()
    seen = ntlm_proxy.reset()
    assert any(f.user and f.status == 200 for f in seen), seen


def test_ntlm_proxy_without_credentials_is_a_clear_401(playbook, ntlm_proxy):
    res = playbook.run([module_task("info", "work_pool_info", {"api_url": f"{ntlm_proxy.url}/api"})])
    assert res.rc != 0
    msg = res.task("info")["msg"]
    assert "401" in msg, msg
    assert "ntlm" in msg.lower() or "auth" in msg.lower(), msg


def test_ntlm_wrong_password_is_a_clear_401(playbook, ntlm_proxy):
    res = playbook.run([module_task("info", "work_pool_info", ntlm_opts(ntlm_proxy, password="not-the-password"))])
    assert res.rc != 0
    msg = res.task("info")["msg"]
    assert "401" in msg, msg
    assert "not-the-password" not in res.output


def test_expect_unauthenticated_status_on_auth_server(playbook, auth_server):
    res = playbook.run([module_task("health", "server_health",
                                    connection(auth_server, timeout=30, expect_unauthenticated_status=401))])
    assert res.rc == 0, res.explain()
    checks = {c["name"]: c for c in res.task("health")["checks"]}
    assert checks["unauthenticated"]["ok"] is True


def test_expect_unauthenticated_status_fails_on_open_server(playbook, sqlite_server):
    res = playbook.run([module_task("health", "server_health",
                                    connection(sqlite_server, timeout=5, expect_unauthenticated_status=401))])
    assert res.rc != 0
    msg = res.task("health")["msg"]
    assert "unauthenticated" in msg and "401" in msg and "200" in msg, msg


def test_basic_wrong_auth_string(playbook, auth_server):
    res = playbook.run([module_task("info", "work_pool_info", connection(
        auth_server, auth_string="admin:wrong-auth-string"))])
    assert res.rc != 0
    msg = res.task("info")["msg"]
    assert "401" in msg, msg
    assert "wrong-auth-string" not in res.output


def test_basic_missing_credentials(playbook, auth_server):
    res = playbook.run([module_task("info", "work_pool_info", {"api_url": auth_server.api_url})])
    assert res.rc != 0
    assert "401" in res.task("info")["msg"]
