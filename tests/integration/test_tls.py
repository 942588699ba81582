"""HTTPS with a certificate the control node does not trust (an enclave CA): clear error, then ca_path."""
from __future__ import annotations

from playbooks import module_task
from servers import PINNED_PREFECT


def test_untrusted_certificate_is_a_clear_error(playbook, tls_front):
    res = playbook.run([module_task("health", "server_health", {"api_url": tls_front.api_url, "timeout": 5})])
    assert res.rc != 0
    msg = res.task("health")["msg"]
    assert "ca_path" in msg, msg
    assert "certificate" in msg.lower() or "tls" in msg.lower() or "ssl" in msg.lower(), msg


def test_ca_path_trusts_the_certificate(playbook, tls_front, pool_name, sqlite_server):
    res = playbook.run([
        module_task("health", "server_health", {"api_url": tls_front.api_url, "ca_path": str(tls_front.cert),
                                                "timeout": 30}),
        module_task("pool", "work_pool", {"api_url": tls_front.api_url, "ca_path": str(tls_front.cert),
                                          "name": pool_name}),
    ])
    assert res.rc == 0, res.explain()
    assert res.task("health")["prefect_version"] == PINNED_PREFECT
    assert res.task("pool")["changed"] is True
    assert sqlite_server.pool(pool_name) is not None


def test_validate_certs_false_skips_verification(playbook, tls_front):
    res = playbook.run([module_task("health", "server_health", {"api_url": tls_front.api_url,
                                                                "validate_certs": False, "timeout": 30})])
    assert res.rc == 0, res.explain()
