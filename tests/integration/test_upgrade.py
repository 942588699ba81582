"""A real database upgrade: the newest Prefect 3.6.x creates its schema and holds pools, queues, deployments, flow
runs, variables and concurrency limits; it stops; the pinned Prefect migrates the database with the upgrade
playbook's command (`prefect server database upgrade -y`) and serves the same objects with migrate-on-start off.
A second upgrade changes nothing; `prefect server database downgrade` back to the old head lets the old server
serve them again. On SQLite and PostgreSQL.

Also the version rule "servers before workers", on real processes: an old worker runs flows for the new server,
and the report of what a new worker does against the old server."""
from __future__ import annotations

import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from playbooks import connection, module_task
from servers import (
    OLD_PREFECT_VENV_BIN,
    PREFECT_VENV_BIN,
    PrefectServer,
    PrefectWorker,
    copy_flows,
    deploy_flow,
    prefect_bin,
)

pytestmark = pytest.mark.slow

NO_MIGRATION = {"PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false"}


def alembic_head(venv_bin: Path, dialect: str) -> str:
    """The newest migration a Prefect ships for a dialect: the revision no other one names as its predecessor."""
    versions = next(venv_bin.parent.glob("lib/python3*/site-packages/prefect/server/database/_migrations/versions"))
    revisions, parents = set(), set()
    for path in (versions / dialect).glob("*.py"):
        text = path.read_text()
        revisions.add(re.search(r'^revision = "(\w+)"', text, re.M).group(1))
        parent = re.search(r'^down_revision = "(\w+)"', text, re.M)
        if parent:
            parents.add(parent.group(1))
    [head] = revisions - parents
    return head


def prefect_version(venv_bin: Path) -> str:
    res = subprocess.run([prefect_bin("python", venv_bin), "-c", "import prefect; print(prefect.__version__)"],
                         capture_output=True, text=True, timeout=120, check=True)
    return res.stdout.strip()


def ok(server: PrefectServer, method: str, path: str, body=None):
    status, answer = server.api(method, path, body)
    assert status in (200, 201, 204), f"{method} {path}: HTTP {status} {answer}"
    return answer


def populate(server: PrefectServer) -> None:
    """Objects of every kind an operator cares about, created through the API of the old server."""
    ok(server, "POST", "/work_pools/", {"name": "upgrade-etl", "type": "process", "description": "ETL",
                                        "concurrency_limit": 3})
    ok(server, "POST", "/work_pools/upgrade-etl/queues", {"name": "high", "priority": 1})
    ok(server, "POST", "/work_pools/upgrade-etl/queues", {"name": "backfill", "concurrency_limit": 1})
    ok(server, "POST", "/work_pools/", {"name": "upgrade-reports", "type": "process", "is_paused": True})
    flow = ok(server, "POST", "/flows/", {"name": "upgrade-flow"})
    nightly = ok(server, "POST", "/deployments/", {
        "name": "nightly", "flow_id": flow["id"], "work_pool_name": "upgrade-etl", "work_queue_name": "high",
        "parameters": {"day": "monday"}, "tags": ["etl"]})
    weekly = ok(server, "POST", "/deployments/", {"name": "weekly", "flow_id": flow["id"],
                                                  "work_pool_name": "upgrade-reports"})
    done = ok(server, "POST", f"/deployments/{nightly['id']}/create_flow_run", {"name": "upgrade-done"})
    ok(server, "POST", f"/flow_runs/{done['id']}/set_state", {"state": {"type": "COMPLETED"}, "force": True})
    ok(server, "POST", f"/deployments/{nightly['id']}/create_flow_run", {"name": "upgrade-waiting"})
    failed = ok(server, "POST", f"/deployments/{weekly['id']}/create_flow_run", {"name": "upgrade-failed"})
    ok(server, "POST", f"/flow_runs/{failed['id']}/set_state", {"state": {"type": "FAILED"}, "force": True})
    ok(server, "POST", "/variables/", {"name": "upgrade_var", "value": {"region": "north", "ids": [1, 2]}})
    ok(server, "POST", "/v2/concurrency_limits/", {"name": "upgrade-limit", "limit": 2})


def snapshot(server: PrefectServer) -> dict:
    """What the server holds, read over plain HTTP, without the fields the server computes on its own."""
    pools = ok(server, "POST", "/work_pools/filter", {})
    return {
        "pools": {p["name"]: (p["id"], p["type"], p["is_paused"], p["concurrency_limit"], p["description"])
                  for p in pools},
        "queues": {p["name"]: {q["name"]: (q["id"], q["priority"], q["concurrency_limit"])
                               for q in ok(server, "POST", f"/work_pools/{p['name']}/queues/filter", {})}
                   for p in pools},
        "deployments": {d["name"]: (d["id"], d["flow_id"], d["work_pool_name"], d["work_queue_name"], d["parameters"],
                                    d["tags"])
                        for d in ok(server, "POST", "/deployments/filter", {})},
        "flow_runs": {r["id"]: (r["name"], r["deployment_id"], r["state"]["type"])
                      for r in ok(server, "POST", "/flow_runs/filter", {})},
        "flow_run_count": ok(server, "POST", "/flow_runs/count", {}),
        "variables": {v["name"]: v["value"] for v in ok(server, "POST", "/variables/filter", {})},
        "limits": {c["name"]: c["limit"] for c in ok(server, "POST", "/v2/concurrency_limits/filter", {})},
    }


def revision(server: PrefectServer, pg_cluster=None) -> str:
    if server.database == "sqlite":
        with sqlite3.connect(server.root / "home" / "prefect.db") as db:
            return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    return pg_cluster.psql(server.database_url.rsplit("/", 1)[1], "SELECT version_num FROM alembic_version")


def database_command(server: PrefectServer, *args: str, venv_bin: Path = PREFECT_VENV_BIN) -> str:
    res = server.database_command(*args, venv_bin=venv_bin)
    assert res.returncode == 0, f"prefect server database {' '.join(args)} failed ({res.returncode}):\n" \
                                f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_keeps_the_data_and_downgrade_returns(backend, request, old_prefect_venv, prefect_venv,
                                                      tmp_path_factory, playbook):
    pg = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None
    dialect = "postgresql" if pg else "sqlite"
    old_head, new_head = alembic_head(OLD_PREFECT_VENV_BIN, dialect), alembic_head(PREFECT_VENV_BIN, dialect)
    old_version, new_version = prefect_version(OLD_PREFECT_VENV_BIN), prefect_version(PREFECT_VENV_BIN)
    assert old_version.startswith("3.6.") and new_version == "3.8.8" and old_head != new_head

    root = tmp_path_factory.mktemp(f"upgrade-{backend}")
    url = pg.create_database("prefect_upgrade") if pg else None
    old = PrefectServer(root, database_url=url, venv_bin=OLD_PREFECT_VENV_BIN)
    new = PrefectServer(root, database_url=url, extra_env=NO_MIGRATION)
    try:
        old.start()
        assert ok(old, "GET", "/admin/version") == old_version
        assert revision(old, pg) == old_head
        populate(old)
        before = snapshot(old)
        assert before["flow_run_count"] == 3 and len(before["pools"]) == 2
        # A new client against the old server: the modules (and the 3.8.8 CLI below) read it.
        res = playbook.run([module_task("old", "server_health", connection(old, timeout=30))])
        assert res.rc == 0 and res.task("old")["prefect_version"] == old_version, res.explain()
        old.stop()

        output = database_command(new, "upgrade", "-y")
        assert revision(new, pg) == new_head, output
        new.start()
        assert ok(new, "GET", "/admin/version") == new_version
        assert snapshot(new) == before
        res = playbook.run([module_task("info", "work_pool_info", connection(new, name="upgrade-etl")),
                            module_task("runs", "flow_runs", connection(new, states=["COMPLETED", "FAILED"]))])
        assert res.rc == 0, res.explain()
        assert {q["name"] for q in res.task("info")["work_pools"][0]["queues"]} == {"default", "high", "backfill"}
        assert sorted(r["name"] for r in res.task("runs")["flow_runs"]) == ["upgrade-done", "upgrade-failed"]
        new.stop()

        database_command(new, "upgrade", "-y")  # run twice by mistake: nothing to do
        assert revision(new, pg) == new_head

        database_command(new, "downgrade", "-y", "-r", old_head)
        assert revision(new, pg) == old_head
        old.extra_env = dict(NO_MIGRATION)
        old.start()
        assert snapshot(old) == before
    finally:
        old.stop()
        new.stop()


def version_logged(server: PrefectServer, run_id: str) -> str:
    """The version the flow logged; logs reach the server in batches, after the final state."""
    for _ in range(40):
        logs = ok(server, "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}})
        found = [m.group(1) for log in logs
                 for m in [re.search(r"version-flow runs on Prefect (\S+)", log["message"])] if m]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no version line in the run's logs: {[log['message'] for log in logs]}")


def run_version_flow(server: PrefectServer, worker_venv: Path, root: Path, pool: str) -> tuple[dict, str, str]:
    """Deploy the version flow (pinned client) and run it on a worker from `worker_venv`.

    Returns the finished run, the version its engine logged and the worker's log. The worker stops only after the
    log line arrived: stopping it kills the flow process that still ships its logs."""
    worker = PrefectWorker(server, pool, root, name=f"{pool}-worker", venv_bin=worker_venv)
    try:
        worker.start()
        dep = deploy_flow(server, copy_flows(root / "flows"), "version.py:version", pool, pool, root / "home")
        run = ok(server, "POST", f"/deployments/{dep}/create_flow_run", {})
        for _ in range(240):
            run = ok(server, "GET", f"/flow_runs/{run['id']}")
            if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"run {run['name']} still {run['state']} after 120 s:\n"
                                 f"{worker.log_path.read_text()[-3000:]}")
        return run, version_logged(server, run["id"]), worker.log_path.read_text()
    finally:
        worker.stop()


def test_old_worker_runs_flows_for_the_new_server(sqlite_server, old_prefect_venv, tmp_path_factory):
    """Servers before workers: during an upgrade the workers still on 3.6.x keep working against the new server."""
    run, engine, log = run_version_flow(sqlite_server, OLD_PREFECT_VENV_BIN, tmp_path_factory.mktemp("old-worker"),
                                        "itest-old-worker")
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert engine == prefect_version(OLD_PREFECT_VENV_BIN) and engine.startswith("3.6.")
    assert ok(sqlite_server, "GET", "/admin/version") == "3.8.8"
    assert "older version of Prefect than your client" not in log


def test_new_worker_against_the_old_server(old_prefect_venv, prefect_venv, tmp_path_factory):
    """The reverse order (workers before the server), measured: the 3.8.8 worker ran this simple flow on a 3.6.x
    server, and every 3.8.8 client warns that the server is older. Not a supported order, only what it does."""
    root = tmp_path_factory.mktemp("new-worker")
    old = PrefectServer(root / "server", venv_bin=OLD_PREFECT_VENV_BIN)
    try:
        old.start()
        old_version = ok(old, "GET", "/admin/version")
        assert old_version == prefect_version(OLD_PREFECT_VENV_BIN)
        assert ok(old, "GET", "/version") == ok(old, "GET", "/version")  # the API version the clients compare
        run, engine, log = run_version_flow(old, PREFECT_VENV_BIN, root, "itest-new-worker")
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert engine == "3.8.8"
        assert (f"Your Prefect server is running an older version of Prefect than your client which may result in "
                f"unexpected behavior. Please upgrade your Prefect server from version {old_version} to version "
                f"3.8.8") in log
    finally:
        old.stop()
