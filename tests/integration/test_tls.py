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


def test_windows_authentication_passes_extended_protection(playbook, sqlite_server, tmp_path):
    """IIS Extended Protection (windowsAuthentication/extendedProtection tokenChecking Require, which iis_proxy writes by
    default) refuses a Negotiate or NTLM token without the TLS channel bindings. A front that requires them, as
    pyspnego's acceptor does when given the certificate's: server_health with auth ntlm (requests-ntlm) and auth
    negotiate (the collection's SpnegoAuth, NTLM inside SPNEGO here) both pass; the same SPNEGO token without the
    bindings is refused (the negative control for SpnegoAuth's _channel_bindings)."""
    import base64
    import http.client
    import ssl

    import spnego
    from ntlm_proxy import AuthProxy, self_signed_cert, tls_context

    cert, key = self_signed_cert(tmp_path)
    proxy = AuthProxy(f"http://127.0.0.1:{sqlite_server.port}", auth="ntlm", users=[("CORP", "epa_user", "Epa-Secret-7c1d")],
                      state_dir=tmp_path, tls=tls_context(cert, key), epa_cert=cert).start()
    try:
        base = {"api_url": f"https://127.0.0.1:{proxy.port}/api", "ca_path": str(cert), "username": "CORP\\epa_user",
                "password": "Epa-Secret-7c1d", "timeout": 20}
        res = playbook.run([module_task(f"health {auth}", "server_health", dict(base, auth=auth)) for auth in ("ntlm", "negotiate")])
        assert res.rc == 0, res.explain()
        assert all(res.task(f"health {auth}")["healthy"] for auth in ("ntlm", "negotiate"))
        # Without channel bindings: the handshake of the same client library ends in 401.
        context = ssl.create_default_context(cafile=str(cert))
        client = spnego.client("CORP\\epa_user", "Epa-Secret-7c1d", hostname="127.0.0.1", protocol="negotiate")
        conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=context)
        token, status = client.step(None), None
        for _ in range(3):
            conn.request("GET", "/api/health", headers={"Authorization": "Negotiate " + base64.b64encode(token).decode()})
            answer = conn.getresponse()
            answer.read()
            status = answer.status
            offered = answer.headers.get("WWW-Authenticate", "")
            if status != 401 or not offered.startswith("Negotiate ") or client.complete:
                break
            token = client.step(base64.b64decode(offered.split(" ", 1)[1]))
        assert status == 401, status
    finally:
        proxy.stop()
