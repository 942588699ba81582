"""The representative subset on every backend: SQLite, PostgreSQL, and Basic auth with CSRF protection."""
from __future__ import annotations

from playbooks import connection, module_task
from servers import PINNED_PREFECT


def test_health(playbook, any_server):
    res = playbook.run([module_task("health", "server_health", connection(any_server, timeout=30))])
    assert res.rc == 0, res.explain()
    assert res.task("health")["prefect_version"] == PINNED_PREFECT
    assert res.task("health")["ready"] is True


def test_create_idempotent_delete(playbook, any_server, pool_name):
    present = module_task("pool", "work_pool", connection(
        any_server, name=pool_name, description=f"on {any_server.database}", concurrency_limit=2,
        queues=[{"name": "high", "priority": 1, "concurrency_limit": 1}]))
    absent = module_task("pool", "work_pool", connection(any_server, name=pool_name, state="absent"))

    first = playbook.run([present])
    assert first.rc == 0, first.explain()
    assert first.task("pool")["changed"] is True
    pool = any_server.pool(pool_name)
    assert pool["concurrency_limit"] == 2 and pool["base_job_template"]
    assert any_server.queues(pool_name)["high"]["concurrency_limit"] == 1

    again = playbook.run([present])
    assert again.rc == 0, again.explain()
    assert again.task("pool")["changed"] is False, again.task("pool").get("actions")

    gone = playbook.run([absent])
    assert gone.rc == 0 and gone.task("pool")["changed"] is True, gone.explain()
    assert any_server.pool(pool_name) is None
    assert playbook.run([absent]).task("pool")["changed"] is False


def test_auth_server_really_demands_credentials(auth_server):
    """Guards the fixture itself: without this the auth tests could pass against an open server."""
    from servers import http

    status, _ = http("GET", f"{auth_server.api_url}/work_pools/x")
    assert status == 401
    status, body = http("POST", f"{auth_server.api_url}/work_pools/filter", {}, headers=auth_server.auth_headers)
    assert status == 403, f"CSRF protection is off: {status} {body}"
