"""Passwords and auth strings never appear in any output, not even at -vvv with --diff, success or failure.

Secrets reach the tasks as variables (here an extra-vars file standing in for Ansible Vault), as they must in
real playbooks: ansible-core prints the source lines around a failed task, so a password written literally
into a playbook would be shown by ansible-core itself whatever the module does.
"""
from __future__ import annotations

import base64

import pytest

from playbooks import connection, module_task


def leaks(output: str, secret: str) -> list[str]:
    forms = {secret, base64.b64encode(secret.encode()).decode()}
    if ":" in secret:
        forms.add(secret.split(":", 1)[1])
    return [form for form in forms if form in output]


@pytest.mark.parametrize("callback", ["default", "ansible.posix.json"])
def test_auth_string_never_printed(playbook, auth_server, pool_name, callback):
    good = connection(auth_server, auth_string="{{ vault_prefect_auth_string }}")
    tasks = [
        module_task("health", "server_health", dict(good, timeout=30, expect_unauthenticated_status=401)),
        module_task("pool", "work_pool", dict(good, name=pool_name, queues=[{"name": "high"}])),
        module_task("info", "work_pool_info", dict(good, name=pool_name)),
        module_task("bad", "work_pool_info", dict(good, auth_string="{{ vault_wrong_auth_string }}"),
                    ignore_errors=True),
    ]
    secrets = {"vault_prefect_auth_string": auth_server.auth_string,
               "vault_wrong_auth_string": "admin:Wr0ng-" + pool_name}
    res = playbook.run(tasks, verbosity=3, diff=True, callback=callback, extra_vars=secrets)
    assert res.rc == 0, res.explain()
    assert "401" in res.output  # the failing task ran and reported
    for secret in (auth_server.auth_string, "admin:Wr0ng-" + pool_name):
        assert not leaks(res.output, secret), f"secret printed: {leaks(res.output, secret)}"


def test_ntlm_password_never_printed(playbook, ntlm_proxy, pool_name):
    domain, user, password = ntlm_proxy.users[0]
    base = {"api_url": f"{ntlm_proxy.url}/api", "auth": "ntlm", "username": f"{domain}\\{user}"}
    tasks = [
        module_task("pool", "work_pool", {**base, "password": "{{ vault_ntlm_password }}", "name": pool_name}),
        module_task("bad", "work_pool", {**base, "password": "{{ vault_ntlm_password }}-typo", "name": pool_name},
                    ignore_errors=True),
    ]
    res = playbook.run(tasks, verbosity=3, diff=True, callback="default",
                       extra_vars={"vault_ntlm_password": password})
    assert res.rc == 0, res.explain()
    assert not leaks(res.output, password), "NTLM password printed"
