"""Bad input: each case fails with a message that names the problem, and nothing is written to the server.

The server sits behind a pass-through proxy that records every request, so "nothing written" is checked
on the wire, not by trusting the module.
"""
from __future__ import annotations

import time

import pytest

from ntlm_proxy import AuthProxy
from playbooks import literal, module_task
from servers import free_port

READS = {"GET", "HEAD"}


@pytest.fixture(scope="module")
def recorder(sqlite_server):
    proxy = AuthProxy(f"http://127.0.0.1:{sqlite_server.port}").start()
    yield proxy
    proxy.stop()


def writes(proxy) -> list:
    return [f for f in proxy.reset() if f.method not in READS and not f.path.rstrip("/").endswith("/filter")]


def run_pool(playbook, recorder, **args):
    recorder.reset()
    res = playbook.run([module_task("pool", "work_pool", {"api_url": f"{recorder.url}/api", **args})])
    assert res.rc != 0, res.explain()
    return res.task("pool")["msg"], writes(recorder)


@pytest.mark.parametrize("name, expected", [
    ("", "name"),
    ("etl/nightly", "/"),
    ("etl%nightly", "%"),
    ("a<b", "<"),
    ("prefect-etl", "prefect"),
    ("Prefect Pool", "prefect"),
])
def test_invalid_pool_names(playbook, recorder, sqlite_server, name, expected):
    msg, wrote = run_pool(playbook, recorder, name=name)
    assert expected in msg, msg
    assert not wrote, wrote
    if name:
        assert sqlite_server.pool(name) is None


@pytest.mark.parametrize("args, expected", [
    ({"concurrency_limit": -1}, "concurrency_limit"),
    ({"queues": [{"name": "high", "concurrency_limit": -3}]}, "concurrency_limit"),
    ({"queues": [{"name": "high", "priority": 0}]}, "priority"),
    ({"queues": [{"priority": 1}]}, "name"),
])
def test_negative_limits_and_bad_queues(playbook, recorder, sqlite_server, pool_name, args, expected):
    msg, wrote = run_pool(playbook, recorder, name=pool_name, **args)
    assert expected in msg, msg
    assert not wrote, wrote
    assert sqlite_server.pool(pool_name) is None


def test_unknown_type(playbook, recorder, sqlite_server, pool_name):
    msg, wrote = run_pool(playbook, recorder, name=pool_name, type="hyperv-vm")
    assert "hyperv-vm" in msg and "process" in msg, msg  # names the type and lists the known ones
    assert not wrote, wrote
    assert sqlite_server.pool(pool_name) is None


@pytest.mark.parametrize("template, expected", [
    ({"job_configuration": {"command": "{{ command }}"}}, "variables"),
    ({"variables": {"type": "object", "properties": {}}}, "job_configuration"),
    ("{not json", "base_job_template"),
])
def test_malformed_template(playbook, recorder, sqlite_server, pool_name, template, expected):
    msg, wrote = run_pool(playbook, recorder, name=pool_name, base_job_template=literal(template))
    assert expected in msg, msg
    assert not wrote, wrote
    assert sqlite_server.pool(pool_name) is None


def test_bad_api_url(playbook):
    res = playbook.run([module_task("pool", "work_pool", {"api_url": "ftp://127.0.0.1/api", "name": "etl"})])
    assert res.rc != 0
    assert "api_url" in res.task("pool")["msg"]


def test_unreachable_url_fails_fast_and_names_it(playbook):
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    started = time.monotonic()
    res = playbook.run([
        module_task("health", "server_health", {"api_url": url, "timeout": 3, "interval": 1}),
    ])
    assert res.rc != 0
    assert time.monotonic() - started < 60
    msg = res.task("health")["msg"]
    assert url.split("/api")[0] in msg or "127.0.0.1" in msg, msg
    res = playbook.run([module_task("pool", "work_pool", {"api_url": url, "name": "etl", "retries": 0})])
    assert res.rc != 0
    assert "127.0.0.1" in res.task("pool")["msg"]
