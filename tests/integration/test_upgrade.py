"""A real database upgrade and its rollback: the previous release's Prefect (requirements/prefect-old-linux-py311.in)
creates its schema and holds pools, queues, deployments, flow and task runs, variables, concurrency limits and an
automation (the table a 3.9 migration references with a foreign key); the backup role takes its backup (pg_dump with
the role's options; SQLite: the online backup API, with the server killed so that its last writes are still in the
write-ahead log); the pinned Prefect migrates the database with the upgrade playbook's command (`prefect server database
upgrade -y`) and serves the same objects with migrate-on-start off. A second upgrade changes nothing. Then the
rollback the upgrade playbook does: the backup restored over the migrated database (PostgreSQL: into an empty database,
as files/backup_restore.ps1 does; the previous way, pg_restore --clean, fails there), after which the schema and every
table's rows equal the backup's, the old server serves the data, and the upgrade runs again (the new server serves it);
last, `prefect server database downgrade` back to the old head lets the old server serve them again. On SQLite and
PostgreSQL. The servers run without their background services (--no-services): only the API and the database matter.

Also the version rule "servers before workers", on real processes: an old worker runs flows for the new server,
and the report of what a new worker does against the old server."""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest
from pgtools import ROLE, aside_of, make_pg, pg_dump, pg_restore, row_counts, schema, swap
from playbooks import connection, module_task
from servers import (
    OLD_PREFECT,
    OLD_PREFECT_VENV_BIN,
    PINNED_PREFECT,
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


@functools.cache
def prefect_version(venv_bin: Path) -> str:
    """prefect.__version__ of a venv: prefect/__init__.py takes it from prefect/_build_info.py (written by versioningit
    at build), read here by that venv's Python without importing all of Prefect (seconds of CPU each time)."""
    script = ("import runpy, sys; from importlib.util import find_spec; "
              "print(runpy.run_path(find_spec('prefect').submodule_search_locations[0] + '/_build_info.py')"
              "['__version__'])")
    res = subprocess.run([prefect_bin("python", venv_bin), "-c", script], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:  # no _build_info.py: the import, as the engine reports it
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
    ok(server, "POST", "/task_runs/", {"flow_run_id": done["id"], "task_key": "extract", "dynamic_key": "0",
                                       "name": "extract-0"})
    # 3.9's automation_held_event references automation: a row there makes the old pg_restore --clean fail for real.
    ok(server, "POST", "/automations/", {
        "name": "upgrade-automation", "trigger": {"type": "event", "posture": "Reactive", "expect": ["upgrade.done"],
                                                  "threshold": 1, "within": 0},
        "actions": [{"type": "do-nothing"}]})


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
        "task_runs": {t["id"]: (t["name"], t["flow_run_id"]) for t in ok(server, "POST", "/task_runs/filter", {})},
        "automations": {a["name"]: (a["id"], a["enabled"]) for a in ok(server, "POST", "/automations/filter", {})},
    }


SQLITE_SCRIPT = ROLE / "files" / "prefect_sqlite_backup.py"


def sqlite_schema(db: Path) -> list:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
        return con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()


def sqlite_rows(db: Path) -> dict[str, int]:
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in sorted(tables)}


def sqlite_script(*argv: str) -> dict:
    """roles/backup/files/prefect_sqlite_backup.py, as the scheduled task and the restore run it."""
    proc = subprocess.run([prefect_bin("python"), "-I", str(SQLITE_SCRIPT), *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def kill(server: PrefectServer) -> None:
    """The server ends without closing its database (a crash, a power cut): SQLite keeps the last writes in the WAL."""
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    server.proc = None


def revision(server: PrefectServer, pg_cluster=None) -> str:
    if server.database == "sqlite":
        # Closed at once: a connection left open in this process would keep a stale view of the WAL index.
        with closing(sqlite3.connect(server.root / "home" / "prefect.db")) as db:
            return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    return pg_cluster.psql(server.database_url.rsplit("/", 1)[1], "SELECT version_num FROM alembic_version")


def database_command(server: PrefectServer, *args: str, venv_bin: Path = PREFECT_VENV_BIN) -> str:
    res = server.database_command(*args, venv_bin=venv_bin)
    assert res.returncode == 0, f"prefect server database {' '.join(args)} failed ({res.returncode}):\n" \
                                f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_keeps_the_data_downgrade_and_rollback_return(backend, request, old_prefect_venv, prefect_venv,
                                                              tmp_path_factory, playbook):
    pg_cluster = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None
    dialect = "postgresql" if pg_cluster else "sqlite"
    old_head, new_head = alembic_head(OLD_PREFECT_VENV_BIN, dialect), alembic_head(PREFECT_VENV_BIN, dialect)
    old_version, new_version = prefect_version(OLD_PREFECT_VENV_BIN), prefect_version(PREFECT_VENV_BIN)
    assert (old_version, new_version) == (OLD_PREFECT, PINNED_PREFECT) and old_head != new_head

    root = tmp_path_factory.mktemp(f"upgrade-{backend}")
    url = pg_cluster.create_database("prefect_upgrade") if pg_cluster else None
    pg = make_pg(pg_cluster, "prefect_upgrade") if pg_cluster else None
    live = root / "home" / "prefect.db"
    backups = root / "backups"
    backups.mkdir()
    # Without the background services: nothing here needs them, and they would only write while the data is compared.
    old = PrefectServer(root, database_url=url, venv_bin=OLD_PREFECT_VENV_BIN, services=False)
    new = PrefectServer(root, database_url=url, extra_env=NO_MIGRATION, services=False)
    try:
        old.start()
        assert ok(old, "GET", "/admin/version") == old_version
        assert revision(old, pg_cluster) == old_head
        if not pg:  # what the server writes from now on stays in the WAL until a checkpoint
            with closing(sqlite3.connect(live)) as con:
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        populate(old)
        before = snapshot(old)
        assert before["flow_run_count"] == 3 and len(before["pools"]) == 2 and len(before["automations"]) == 1
        # A new client against the old server: the modules (and the new CLI below) read it.
        res = playbook.run([module_task("old", "server_health", connection(old, timeout=30))])
        assert res.rc == 0 and res.task("old")["prefect_version"] == old_version, res.explain()

        # The upgrade's backup, as the backup role takes it.
        if pg:
            old.stop()
            dump = pg.work / "prefect-pg-20261206T010000Z.dump"
            pg_dump(pg, None, dump)
            at_backup = (schema(pg, pg.db), row_counts(pg, pg.db))
        else:
            kill(old)
            assert Path(f"{live}-wal").stat().st_size > 0
            # Negative control: the database file alone (a file copy without its WAL) misses the last writes.
            alone = root / "file-copy.db"
            shutil.copyfile(live, alone)
            assert sqlite_rows(alone).get("automation", 0) == 0
            dump = Path(sqlite_script("backup", "--database", str(live), "--dest-dir", str(backups), "--keep-count", "5",
                                      "--keep-days", "0")["file"])
            at_backup = (sqlite_schema(dump), sqlite_rows(dump))
        assert at_backup[1]["automation"] == 1 and at_backup[1]["task_run"] == 1 and at_backup[1]["flow_run"] == 3

        output = database_command(new, "upgrade", "-y")
        assert revision(new, pg_cluster) == new_head, output
        database_command(new, "upgrade", "-y")  # run twice by mistake: nothing to do
        assert revision(new, pg_cluster) == new_head
        new.start()
        assert ok(new, "GET", "/admin/version") == new_version
        assert snapshot(new) == before
        res = playbook.run([module_task("info", "work_pool_info", connection(new, name="upgrade-etl")),
                            module_task("runs", "flow_runs", connection(new, states=["COMPLETED", "FAILED"]))])
        assert res.rc == 0, res.explain()
        assert {q["name"] for q in res.task("info")["work_pools"][0]["queues"]} == {"default", "high", "backfill"}
        assert sorted(r["name"] for r in res.task("runs")["flow_runs"]) == ["upgrade-done", "upgrade-failed"]
        if pg:
            new.stop()
        else:  # the migrated server writes, and is killed: its WAL is left behind
            ok(new, "POST", "/variables/", {"name": "after_upgrade", "value": 1})
            kill(new)
            assert Path(f"{live}-wal").exists()

        # Rolled back from the backup over the migrated database, as the upgrade playbook's rollback does.
        old.extra_env = dict(NO_MIGRATION)
        if pg:
            owner = pg.passfile("owner.pgpass", [(pg.db, "prefect", pg_cluster.password)])
            # Negative control: the previous release's restore (pg_restore --clean over the migrated database) fails on
            # the new table's foreign key and leaves the database migrated.
            failed = pg_restore(pg, owner, dump, restore_args=["--clean", "--if-exists", "--no-password",
                                                               "--single-transaction", "--exit-on-error"], fresh=False)
            assert failed.returncode != 0 and "depends on" in failed.stderr, failed.stderr[-2000:]
            assert revision(new, pg_cluster) == new_head
            restored = pg_restore(pg, owner, dump)
            assert restored.returncode == 0, restored.stderr[-2000:]
            assert (schema(pg, pg.db), row_counts(pg, pg.db)) == at_backup
            assert aside_of(pg.db) in pg.superuser_sql("SELECT string_agg(datname, ' ') FROM pg_database")
        else:
            done = sqlite_script("restore", "--backup", str(dump), "--database", str(live))
            assert not Path(f"{live}-wal").exists() and not Path(f"{live}-shm").exists(), "a stale WAL stayed beside it"
            # The migrated database is kept whole, the write that was still in its WAL included.
            assert sqlite_rows(Path(done["replaced"]))["variable"] == at_backup[1]["variable"] + 1
            assert (sqlite_schema(live), sqlite_rows(live)) == at_backup
        assert revision(old, pg_cluster) == old_head
        old.start()
        assert snapshot(old) == before
        old.stop()
        if pg:
            assert "OK drop" in swap(pg, "drop").stdout

        # The next upgrade succeeds on the restored database.
        database_command(new, "upgrade", "-y")
        assert revision(new, pg_cluster) == new_head
        new.start()
        assert snapshot(new) == before
        new.stop()

        # Downgraded to the old head, the old server (migrate-on-start off) serves the data again.
        database_command(new, "downgrade", "-y", "-r", old_head)
        assert revision(new, pg_cluster) == old_head
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
        worker.start(timeout=180)  # generous: a loaded machine starts Prefect slowly
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
    """Servers before workers: during an upgrade the workers still on the previous release keep working against the new
    server."""
    run, engine, log = run_version_flow(sqlite_server, OLD_PREFECT_VENV_BIN, tmp_path_factory.mktemp("old-worker"),
                                        "itest-old-worker")
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert engine == prefect_version(OLD_PREFECT_VENV_BIN) == OLD_PREFECT
    assert ok(sqlite_server, "GET", "/admin/version") == PINNED_PREFECT
    assert "older version of Prefect than your client" not in log


def test_new_worker_against_the_old_server(old_prefect_venv, prefect_venv, tmp_path_factory):
    """The reverse order (workers before the server), measured: the pinned release's worker ran this simple flow on the
    previous release's server, and every new client warns that the server is older. Not a supported order, only what it
    does."""
    root = tmp_path_factory.mktemp("new-worker")
    old = PrefectServer(root / "server", venv_bin=OLD_PREFECT_VENV_BIN, services=False)  # the worker needs only the API
    try:
        old.start()
        old_version = ok(old, "GET", "/admin/version")
        assert old_version == prefect_version(OLD_PREFECT_VENV_BIN)
        assert ok(old, "GET", "/version") == ok(old, "GET", "/version")  # the API version the clients compare
        run, engine, log = run_version_flow(old, PREFECT_VENV_BIN, root, "itest-new-worker")
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert engine == PINNED_PREFECT
        assert (f"Your Prefect server is running an older version of Prefect than your client which may result in "
                f"unexpected behavior. Please upgrade your Prefect server from version {old_version} to version "
                f"{PINNED_PREFECT}") in log
    finally:
        old.stop()
