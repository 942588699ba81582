"""enclave.prefect.server_health and flow_run logic against the fake Prefect API, with a fake clock."""
from __future__ import annotations

import pytest
from fake_prefect import API, FakePrefect, validated

from ansible_collections.enclave.prefect.plugins.module_utils import flow_runs, health_checks, work_pools
from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import (
    PrefectError,
    PrefectValidationError,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def health(make_client, make_ctx):
    def run(server, **args):
        raw = dict(api_url=API, **args)
        params = validated(health_checks.argument_spec(), raw)

        def client_factory(**overrides):
            return make_client(server, **dict(params, **overrides))

        return health_checks.check(client_factory(), params, make_ctx(raw_args=raw, make_client=client_factory))
    return run


def test_healthy_server(health, server):
    result = health(server)
    assert result["healthy"] and result["ready"] and not result["changed"]
    assert (result["prefect_version"], result["api_version"]) == ("3.8.8", "0.8.4")
    assert [c["name"] for c in result["checks"]] == ["health", "ready", "version"]
    assert all(c["ok"] for c in result["checks"]) and result["latency_ms"] == 4.0


def test_waits_for_the_server_to_come_up(health, server, clock):
    server.health_after = 3
    result = health(server, interval=2)
    assert result["healthy"] and clock.sleeps == [2, 2, 2] and result["elapsed_s"] == 6.0


def test_ready_failure_names_the_check_and_the_answer(health, server, clock):
    server.ready_status = 503
    with pytest.raises(PrefectError) as err:
        health(server, timeout=10, interval=2)
    message = err.value.message
    assert message.startswith("server_health: check 'ready' failed after")
    assert "HTTP 503" in message and "Database is not available" in message
    checks = err.value.result["checks"]
    assert [(c["name"], c["ok"]) for c in checks] == [("health", True), ("ready", False)]
    assert clock.now - 1000.0 <= 10


def test_unreachable_server_times_out_with_the_hint(health, clock):
    server = FakePrefect()
    server.health_after = 10 ** 6
    with pytest.raises(PrefectError) as err:
        health(server, timeout=6, interval=2)
    assert "check 'health' failed" in err.value.message and "Connection refused" in err.value.message
    assert "is the Prefect server running" in err.value.message


def test_wrong_credentials_fail_the_version_check(health):
    server = FakePrefect(auth_string="admin:Tr0ub4dor")
    with pytest.raises(PrefectError) as err:
        health(server, auth="basic", auth_string="admin:wrong")
    assert "check 'version' failed" in err.value.message and "HTTP 401" in err.value.message
    assert "wrong" not in err.value.message and "Tr0ub4dor" not in err.value.message


def test_refused_credentials_fail_at_once_without_waiting(health, clock):
    """A 401 to a request that carried credentials cannot turn into 200 by waiting (a starting server never answers
    so): the check fails on the first answer, where it used to wait out the timeout."""
    server = FakePrefect(windows_auth=True)
    with pytest.raises(PrefectError) as err:
        health(server, auth="basic", auth_string="svc:wrong", timeout=60, interval=2)
    assert "check 'health' failed" in err.value.message and "HTTP 401" in err.value.message
    assert "credentials were refused: not retried" in err.value.message
    assert clock.sleeps == [] and "wrong" not in err.value.message


def test_401_without_credentials_is_waited_for(health, clock):
    server = FakePrefect(windows_auth=True)
    with pytest.raises(PrefectError) as err:
        health(server, timeout=6, interval=2)
    assert "waited 6 s" in err.value.message and clock.sleeps == [2, 2, 2]


def test_unauthenticated_request_must_be_refused(health):
    server = FakePrefect(auth_string="admin:Tr0ub4dor")
    result = health(server, auth="basic", auth_string="admin:Tr0ub4dor", expect_unauthenticated_status=401)
    check = result["checks"][-1]
    assert check["name"] == "unauthenticated" and check["ok"] and "HTTP 401" in check["detail"]
    anonymous = [h for m, p, _b, h in server.calls if p == "admin/version" and "authorization" not in h]
    assert len(anonymous) == 1


def test_open_server_fails_the_unauthenticated_check(health, server):
    with pytest.raises(PrefectError) as err:
        health(server, expect_unauthenticated_status=401)
    assert "check 'unauthenticated' failed" in err.value.message
    assert "authentication is not enforced" in err.value.message


def test_work_pools_ready(health, server, make_client, make_ctx, clock):
    raw = dict(api_url=API, name="etl")
    work_pools.reconcile(make_client(server), validated(work_pools.argument_spec(), raw), make_ctx(raw_args=raw))
    with pytest.raises(PrefectError) as err:
        health(server, work_pools_ready=["etl"], timeout=10, interval=5)
    assert "check 'work_pool:etl' failed" in err.value.message
    assert "NOT_READY with 0 worker(s), 0 ONLINE" in err.value.message
    server.add_worker("etl", "w1", "ONLINE")
    result = health(server, work_pools_ready=["etl"])
    assert result["checks"][-1]["name"] == "work_pool:etl" and result["checks"][-1]["ok"]
    with pytest.raises(PrefectError) as err:
        health(server, work_pools_ready=["nope"], timeout=0)
    assert "'nope' does not exist" in err.value.message


def test_workers_online_by_name_with_a_heartbeat_after_their_start(health, server, make_client, make_ctx):
    """A worker counts only when listed by name, ONLINE, with a heartbeat newer than its process's start
    (an older heartbeat came from a process that has since died)."""
    raw = dict(api_url=API, name="etl")
    work_pools.reconcile(make_client(server), validated(work_pools.argument_spec(), raw), make_ctx(raw_args=raw))
    server.add_worker("etl", "PrefectWorker-wrk01", "ONLINE")   # heartbeat 2026-01-12T08:15:02.123456Z
    server.add_worker("etl", "PrefectWorker-wrk02", "OFFLINE")
    before = {"pool": "etl", "name": "PrefectWorker-wrk01", "heartbeat_after": "2026-01-12T08:14:40.0000000Z"}
    result = health(server, workers_online=[before])
    assert result["checks"][-1] == {"name": "worker:etl/PrefectWorker-wrk01", "ok": True,
                                    "detail": "worker 'PrefectWorker-wrk01' in pool 'etl' is ONLINE, last heartbeat "
                                              "2026-01-12T08:15:02.123456Z"}
    cases = [
        (dict(before, heartbeat_after="2026-01-12T09:15:02.123456+01:00"), "not after its start"),  # same instant
        (dict(before, heartbeat_after="2026-01-12T08:16:00Z"), "not after its start"),
        (dict(before, name="PrefectWorker-wrk02"), "is OFFLINE"),
        (dict(before, name="PrefectWorker-wrk03"), "is not listed in work pool 'etl'"),
    ]
    for wanted, words in cases:
        with pytest.raises(PrefectError) as err:
            health(server, workers_online=[wanted], timeout=0)
        assert "check 'worker:etl/%s' failed" % wanted["name"] in err.value.message and words in err.value.message


@pytest.mark.parametrize("args, words", [
    ({"workers_online": [{"pool": "etl", "name": "w", "heartbeat_after": "yesterday"}]}, "ISO 8601"),
    ({"workers_online": [{"pool": "", "name": "w"}]}, "need a pool and a worker name"),
    ({"interval": 0}, "interval"),
    ({"timeout": -1}, "timeout"),
    ({"expect_unauthenticated_status": 42}, "HTTP status"),
    ({"work_pools_ready": [""]}, "empty names"),
])
def test_health_bad_input(health, server, args, words):
    with pytest.raises(PrefectValidationError) as err:
        health(server, **args)
    assert words in err.value.message and server.calls == []


# --- flow_run --------------------------------------------------------------------------------------

@pytest.fixture
def flow(server, make_client, make_ctx):
    def run(check_mode=False, **args):
        raw = dict(api_url=API, **args)
        params = validated(flow_runs.argument_spec(), raw)
        return flow_runs.run(make_client(server), params, make_ctx(raw_args=raw, check_mode=check_mode))
    return run


def test_flow_run_completes_with_state_duration_and_logs(flow, server, clock):
    server.add_deployment("hello", "local", logs=["one", "two", "three"])
    result = flow(deployment="hello/local", parameters={"name": "x"}, poll_interval=1, log_lines=2)
    run = result["flow_run"]
    assert result["changed"] and run["state_type"] == "COMPLETED" and run["state_name"] == "Completed"
    assert run["duration_s"] == 2.5 and run["parameters"] == {"name": "x"}
    assert result["logs"] == ["2026-01-12T08:15:01.000000Z INFO two", "2026-01-12T08:15:02.000000Z INFO three"]
    body = [b for m, p, b, _h in server.calls if p == "logs/filter"][0]
    assert body == {"logs": {"flow_run_id": {"any_": [run["id"]]}}, "sort": "TIMESTAMP_DESC", "limit": 2,
                    "offset": 0}
    assert clock.sleeps[:3] == [1, 1, 1]


def test_logs_that_trail_the_final_state_are_waited_for(flow, server, clock):
    server.add_deployment("hello", "late", logs=["Beginning flow run"], late_after_reads=3,
                          late_logs=["hello-flow greets ansible", "Finished in state Completed()"])
    result = flow(deployment="hello/late", poll_interval=1)
    assert result["logs"][-2:] == ["2026-01-12T08:15:01.000000Z INFO hello-flow greets ansible",
                                   "2026-01-12T08:15:02.000000Z INFO Finished in state Completed()"]
    assert server.log_reads == 4


def test_log_wait_is_bounded(flow, server, clock):
    server.add_deployment("hello", "silent", logs=["no final line"])
    started = clock.now
    result = flow(deployment="hello/silent", poll_interval=1)
    assert result["logs"] == ["2026-01-12T08:15:00.000000Z INFO no final line"]
    assert clock.now - started <= 3 + flow_runs.LOG_SETTLE_SECONDS


def test_failed_run_fails_the_task_with_its_logs(flow, server):
    server.add_deployment("hello", "bad", states=["RUNNING", "FAILED"], logs=["Traceback: boom"])
    with pytest.raises(PrefectError) as err:
        flow(deployment="hello/bad", poll_interval=1)
    assert "ended FAILED" in err.value.message and "boom" in err.value.message and "expected COMPLETED" in \
        err.value.message
    assert err.value.result["logs"] == ["2026-01-12T08:15:00.000000Z INFO Traceback: boom"]
    assert err.value.result["flow_run"]["state_type"] == "FAILED"


def test_expected_states_make_a_failure_a_success(flow, server):
    server.add_deployment("hello", "bad", states=["FAILED"])
    assert flow(deployment="hello/bad", expected_states=["FAILED"], poll_interval=1)["flow_run"]["state_type"] == \
        "FAILED"


def test_timeout_names_the_state_it_saw(flow, server, clock):
    server.add_deployment("hello", "stuck", states=["SCHEDULED"] * 100)
    with pytest.raises(PrefectError) as err:
        flow(deployment="hello/stuck", timeout=10, poll_interval=5)
    assert "still SCHEDULED after 10 s" in err.value.message and "worker" in err.value.message
    assert clock.now - 1000.0 <= 10


def test_no_wait_returns_the_scheduled_run(flow, server):
    server.add_deployment("hello", "local")
    result = flow(deployment="hello/local", wait=False)
    assert result["changed"] and result["flow_run"]["state_type"] == "SCHEDULED"
    assert not [p for m, p, _b, _h in server.calls if p.startswith("flow_runs/")]


def test_idempotency_key_returns_the_same_run_unchanged(flow, server):
    server.add_deployment("hello", "local")
    first = flow(deployment="hello/local", idempotency_key="nightly-2026-01-12", poll_interval=1)
    second = flow(deployment="hello/local", idempotency_key="nightly-2026-01-12", poll_interval=1)
    assert first["changed"] and not second["changed"]
    assert first["flow_run"]["id"] == second["flow_run"]["id"] and len(server.runs) == 1


def test_check_mode_creates_no_run(flow, server):
    server.add_deployment("hello", "local")
    result = flow(check_mode=True, deployment="hello/local")
    assert result["changed"] and result["flow_run"] == {} and server.runs == {}


def test_unknown_deployment(flow, server):
    with pytest.raises(PrefectError) as err:
        flow(deployment="hello/missing")
    assert "Deployment 'hello/missing' not found" in err.value.message


@pytest.mark.parametrize("args, words", [
    ({"deployment": "no-slash"}, "flow-name/deployment-name"),
    ({"deployment": "a/b/c"}, "flow-name/deployment-name"),
    ({"deployment": "/b"}, "flow-name/deployment-name"),
    ({"deployment": "a/b", "log_lines": -1}, "log_lines"),
    ({"deployment": "a/b", "log_lines": 201}, "log_lines"),
    ({"deployment": "a/b", "poll_interval": 0}, "poll_interval"),
    ({"deployment": "a/b", "timeout": 0}, "timeout"),
])
def test_flow_run_bad_input(flow, server, args, words):
    with pytest.raises(PrefectValidationError) as err:
        flow(**args)
    assert words in err.value.message and server.calls == []
