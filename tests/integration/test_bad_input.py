"""Bad input: each case fails with a message that names the problem, and nothing is written to the server.

The server sits behind a pass-through proxy that records every request, so "nothing written" is checked
on the wire, not by trusting the module. All validation cases run as tasks of one playbook (each with
ignore_errors) to spare a dozen ansible-playbook start-ups; every case is still its own test.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from ntlm_proxy import AuthProxy
from playbooks import Playbook, literal, module_task
from servers import free_port

READS = {"GET", "HEAD"}

CASES = {
    # id: (work_pool options, text the message must contain)
    "empty-name": ({"name": ""}, "name"),
    "slash-in-name": ({"name": "etl/nightly"}, "/"),
    "percent-in-name": ({"name": "etl%nightly"}, "%"),
    "angle-in-name": ({"name": "a<b"}, "<"),
    "reserved-prefix": ({"name": "prefect-etl"}, "prefect"),
    "reserved-prefix-any-case": ({"name": "Prefect Pool"}, "prefect"),
    "negative-pool-limit": ({"name": "itest-bad-limit", "concurrency_limit": -1}, "concurrency_limit"),
    "negative-queue-limit": ({"name": "itest-bad-qlimit", "queues": [{"name": "high", "concurrency_limit": -3}]},
                             "concurrency_limit"),
    "zero-queue-priority": ({"name": "itest-bad-prio", "queues": [{"name": "high", "priority": 0}]}, "priority"),
    "queue-without-name": ({"name": "itest-bad-qname", "queues": [{"priority": 1}]}, "name"),
    "unknown-type": ({"name": "itest-bad-type", "type": "hyperv-vm"}, "hyperv-vm"),
    "template-without-variables": ({"name": "itest-bad-tpl1",
                                    "base_job_template": {"job_configuration": {"command": "{{ command }}"}}},
                                   "variables"),
    "template-without-job-configuration": ({"name": "itest-bad-tpl2",
                                            "base_job_template": {"variables": {"type": "object",
                                                                                "properties": {}}}},
                                           "job_configuration"),
    "template-not-json": ({"name": "itest-bad-tpl3", "base_job_template": "{not json"}, "base_job_template"),
    "bad-api-url-scheme": ({"name": "itest-bad-url", "api_url": "ftp://127.0.0.1/api"}, "api_url"),
    "credentials-in-api-url": ({"name": "itest-bad-cred", "api_url": "http://admin:pw@127.0.0.1:9/api"}, "api_url"),
    "target-mode-on-local-connection": ({"name": "itest-bad-from", "api_from": "target"}, "api_from"),
}


@pytest.fixture(scope="module")
def recorder(sqlite_server):
    proxy = AuthProxy(f"http://127.0.0.1:{sqlite_server.port}").start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def bad_runs(recorder, tmp_path_factory, ansible_env):
    playbook = Playbook(tmp_path_factory.mktemp("bad-input"), ansible_env)
    tasks = [module_task(case, "work_pool", literal({"api_url": f"{recorder.url}/api", **args}),
                         ignore_errors=True)
             for case, (args, _) in CASES.items()]
    recorder.reset()
    res = playbook.run(tasks)
    wire = recorder.reset()
    assert res.rc == 0, res.explain()  # every task failed and was ignored; the play itself completed
    return res, [f for f in wire if f.method not in READS and not f.path.rstrip("/").endswith("/filter")]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_with_a_clear_message(bad_runs, sqlite_server, case):
    res, writes = bad_runs
    args, expected = CASES[case]
    task = res.task(case)
    assert task.get("failed") is True, task
    assert expected in task["msg"], task["msg"]
    if case == "unknown-type":
        assert "process" in task["msg"], "the message should list the known types: " + task["msg"]
    if case == "credentials-in-api-url":
        assert ":pw@" not in task["msg"], "the message repeats the password from the URL"
    assert not writes, f"requests that write were sent: {writes}"
    if args["name"]:
        assert sqlite_server.pool(args["name"]) is None


def test_unreachable_url_fails_fast_and_names_it(playbook):
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    started = time.monotonic()
    res = playbook.run([
        module_task("health", "server_health", {"api_url": url, "timeout": 3, "interval": 1}, ignore_errors=True),
        module_task("pool", "work_pool", {"api_url": url, "name": "etl", "retries": 0}, ignore_errors=True),
    ])
    assert res.rc == 0, res.explain()
    assert time.monotonic() - started < 60, "the timeouts were not honoured"
    for name in ("health", "pool"):
        task = res.task(name)
        assert task["failed"] is True
        assert url.split("/api")[0] in task["msg"], task["msg"]


def test_transient_503_is_retried(playbook, recorder, sqlite_server):
    recorder.reset()
    recorder.fail_next(2, 503)
    res = playbook.run([module_task("info", "work_pool_info", {"api_url": f"{recorder.url}/api", "retries": 3})])
    assert res.rc == 0, res.explain()
    statuses = [f.status for f in recorder.reset()]
    assert statuses[:3] == [503, 503, 200], statuses


def test_503_without_retries_names_the_status(playbook, recorder):
    recorder.fail_next(1, 503)
    res = playbook.run([module_task("info", "work_pool_info", {"api_url": f"{recorder.url}/api", "retries": 0})])
    recorder.fail_next(0)
    assert res.rc != 0
    assert "503" in res.task("info")["msg"], res.task("info")["msg"]


def test_server_that_never_answers_hits_request_timeout(playbook):
    """A hung front end (accepts the connection, never answers): the request timeout ends the task."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
        started = time.monotonic()
        res = playbook.run([module_task("info", "work_pool_info",
                                        {"api_url": url, "request_timeout": 2, "retries": 0})])
        assert res.rc != 0
        assert time.monotonic() - started < 45, "request_timeout was not honoured"
        msg = res.task("info")["msg"].lower()
        assert "timed out" in msg or "timeout" in msg, msg
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
