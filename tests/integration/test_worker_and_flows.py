"""work_pool_info, server_health and flow_run against a real server with a real process worker."""
from __future__ import annotations

import time

from playbooks import connection, module_task
from servers import PINNED_PREFECT


def test_server_health_reports_versions(playbook, sqlite_server):
    res = playbook.run([module_task("health", "server_health", connection(sqlite_server, timeout=30))])
    assert res.rc == 0, res.explain()
    health = res.task("health")
    assert health["changed"] is False
    assert health["healthy"] is True and health["ready"] is True
    assert health["prefect_version"] == PINNED_PREFECT
    status, api_version = sqlite_server.api("GET", "/version")
    assert health["api_version"] == api_version
    assert isinstance(health["latency_ms"], (int, float)) and health["latency_ms"] >= 0
    assert {c["name"] for c in health["checks"]} >= {"health", "ready"}
    assert all(c["ok"] for c in health["checks"])


def test_work_pool_info_shows_online_worker(playbook, sqlite_server, worker):
    res = playbook.run([
        module_task("one", "work_pool_info", connection(sqlite_server, name=worker.pool)),
        module_task("all", "work_pool_info", connection(sqlite_server)),
        module_task("missing", "work_pool_info", connection(sqlite_server, name="itest-no-such-pool")),
    ])
    assert res.rc == 0, res.explain()
    one = res.task("one")
    assert one["changed"] is False
    [pool] = one["work_pools"]
    assert pool["name"] == worker.pool and pool["status"] == "READY"
    assert "default" in {q["name"] for q in pool["queues"]}
    [seen] = [w for w in pool["workers"] if w["name"] == worker.name]
    assert seen["status"] == "ONLINE"
    assert seen["last_heartbeat_time"]
    assert worker.pool in {p["name"] for p in res.task("all")["work_pools"]}
    assert res.task("missing")["work_pools"] == []


def test_work_pools_ready_with_a_real_worker(playbook, sqlite_server, worker):
    res = playbook.run([module_task("health", "server_health",
                                    connection(sqlite_server, timeout=30, work_pools_ready=[worker.pool]))])
    assert res.rc == 0, res.explain()
    checks = {c["name"]: c for c in res.task("health")["checks"]}
    assert checks[f"work_pool:{worker.pool}"]["ok"] is True


def test_workers_online_by_name_with_a_recent_heartbeat(playbook, sqlite_server, worker):
    """The verify stage's question to a real server: this worker, by name, ONLINE, with a heartbeat newer than a
    given time (the start of its process). A time after the last heartbeat, or another name, fails and says why."""
    online = [{"pool": worker.pool, "name": worker.name, "heartbeat_after": "2000-01-01T00:00:00.0000000Z"}]
    future = [dict(online[0], heartbeat_after=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)))]
    unknown = [dict(online[0], name="itest-no-such-worker")]
    res = playbook.run([
        module_task("online", "server_health", connection(sqlite_server, timeout=30, workers_online=online)),
        module_task("future", "server_health", connection(sqlite_server, timeout=2, interval=1, workers_online=future),
                    ignore_errors=True),
        module_task("unknown", "server_health", connection(sqlite_server, timeout=2, interval=1, workers_online=unknown),
                    ignore_errors=True),
    ])
    checks = {c["name"]: c for c in res.task("online")["checks"]}
    assert checks[f"worker:{worker.pool}/{worker.name}"]["ok"], res.explain()
    assert "is ONLINE, last heartbeat" in checks[f"worker:{worker.pool}/{worker.name}"]["detail"]
    assert "not after its start" in res.task("future")["msg"], res.task("future")
    assert "itest-no-such-worker' is not listed" in res.task("unknown")["msg"], res.task("unknown")


def test_work_pools_ready_names_the_pool_without_worker(playbook, sqlite_server, pool_name):
    assert playbook.run([module_task("pool", "work_pool", connection(sqlite_server, name=pool_name))]).rc == 0
    started = time.monotonic()
    res = playbook.run([module_task("health", "server_health",
                                    connection(sqlite_server, timeout=4, interval=1, work_pools_ready=[pool_name]))])
    assert res.rc != 0, res.explain()
    assert time.monotonic() - started < 60, "the timeout was not honoured"
    msg = res.task("health")["msg"]
    assert f"work_pool:{pool_name}" in msg or pool_name in msg, msg
    assert "NOT_READY" in msg or "ONLINE" in msg or "worker" in msg.lower(), msg
    failed = [c for c in res.task("health")["checks"] if not c["ok"]]
    assert failed and failed[0]["name"] == f"work_pool:{pool_name}"


def flow_runs_of(server, deployment_id: str) -> int:
    status, runs = server.api("POST", "/flow_runs/filter",
                              {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}})
    assert status == 200, runs
    return len(runs)


def deployment_id(server, name: str) -> str:
    status, dep = server.api("GET", f"/deployments/name/{name}")
    assert status == 200, dep
    return dep["id"]


def test_flow_run_check_mode_creates_no_run(playbook, sqlite_server, deployments):
    dep = deployment_id(sqlite_server, deployments.hello)
    before = flow_runs_of(sqlite_server, dep)
    res = playbook.run([module_task("run", "flow_run", connection(sqlite_server, deployment=deployments.hello))],
                       check=True)
    assert res.rc == 0, res.explain()
    assert res.task("run")["changed"] is True
    assert flow_runs_of(sqlite_server, dep) == before


def test_flow_run_completes_with_logs(playbook, sqlite_server, deployments):
    res = playbook.run([module_task("run", "flow_run", connection(
        sqlite_server, deployment=deployments.hello, parameters={"name": "ansible"}, timeout=120,
        poll_interval=1))])
    assert res.rc == 0, res.explain()
    run = res.task("run")
    assert run["changed"] is True
    assert run["flow_run"]["state_type"] == "COMPLETED"
    assert run["flow_run"]["duration_s"] >= 0
    assert any("hello-flow greets ansible" in line for line in run["logs"]), run["logs"]
    status, server_run = sqlite_server.api("GET", f"/flow_runs/{run['flow_run']['id']}")
    assert server_run["state"]["type"] == "COMPLETED" and server_run["parameters"] == {"name": "ansible"}


def test_failing_flow_fails_the_task_with_its_logs(playbook, sqlite_server, deployments):
    res = playbook.run([module_task("run", "flow_run", connection(
        sqlite_server, deployment=deployments.failing, parameters={"reason": "quota exceeded"}, timeout=120,
        poll_interval=1))])
    assert res.rc != 0, res.explain()
    run = res.task("run")
    assert run["failed"] is True
    assert run["flow_run"]["state_type"] == "FAILED"
    assert "FAILED" in run["msg"]
    shown = run["msg"] + "\n".join(run.get("logs", []))
    assert "failing-flow is about to fail: quota exceeded" in shown, shown


def test_failed_state_can_be_expected(playbook, sqlite_server, deployments):
    res = playbook.run([module_task("run", "flow_run", connection(
        sqlite_server, deployment=deployments.failing, timeout=120, poll_interval=1,
        expected_states=["FAILED"]))])
    assert res.rc == 0, res.explain()
    assert res.task("run")["flow_run"]["state_type"] == "FAILED"


def test_idempotency_key_starts_one_run(playbook, sqlite_server, deployments, request):
    key = f"itest-{request.node.name}-{time.time_ns()}"
    args = connection(sqlite_server, deployment=deployments.hello, idempotency_key=key, wait=False)
    res = playbook.run([module_task("first", "flow_run", args), module_task("second", "flow_run", args)])
    assert res.rc == 0, res.explain()
    first, second = res.task("first"), res.task("second")
    assert (first["changed"], second["changed"]) == (True, False)
    assert first["flow_run"]["id"] == second["flow_run"]["id"]


def test_flow_run_without_worker_times_out_clearly(playbook, sqlite_server, pool_name):
    """A deployment whose pool has no worker: the run stays SCHEDULED and the task says so within its timeout."""
    assert playbook.run([module_task("pool", "work_pool", connection(sqlite_server, name=pool_name))]).rc == 0
    status, flow = sqlite_server.api("POST", "/flows/", {"name": "itest-orphan"})
    assert status in (200, 201), flow
    status, dep = sqlite_server.api("POST", "/deployments/", {"name": pool_name, "flow_id": flow["id"],
                                                               "work_pool_name": pool_name})
    assert status in (200, 201), dep
    started = time.monotonic()
    res = playbook.run([module_task("run", "flow_run", connection(
        sqlite_server, deployment=f"itest-orphan/{pool_name}", timeout=3, poll_interval=1))])
    assert res.rc != 0
    assert time.monotonic() - started < 60
    run = res.task("run")
    assert "SCHEDULED" in run["msg"] and "worker" in run["msg"], run["msg"]
    assert run["flow_run"]["id"]


def test_flow_run_unknown_deployment(playbook, sqlite_server):
    res = playbook.run([module_task("run", "flow_run", connection(sqlite_server, deployment="nope/missing"))])
    assert res.rc != 0
    assert "nope/missing" in res.task("run")["msg"]
