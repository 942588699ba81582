"""Backup and restore for real: the backup role's SQL and pg_dump/pg_restore options (roles/backup/vars/main.yml) on the
throwaway PostgreSQL cluster, and the role's SQLite script (roles/backup/files/prefect_sqlite_backup.py) against a live
Prefect server's database while it writes; each restored database is served by a real server of the pinned Prefect.

The PowerShell around these (scheduling, PGPASSFILE handling on Windows) cannot run here: see tests/roles/test_backup.py.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from pgtools import (ROLE, VARS, Pg, aside_of, databases, drill, drill_database, make_pg, pg_dump, pg_restore, restore_and_keep, row_counts, schema,
                     snapshot_dump, swap)
from servers import PrefectServer, clean_env, prefect_bin

SCRIPT = ROLE / "files" / "prefect_sqlite_backup.py"
# A password with the characters a PGPASSFILE must escape.
BACKUP_PASSWORD = "bk:pass\\word-" + uuid.uuid4().hex[:6]


# --------------------------------------------------------------------------- data through the API

def make_data(server: PrefectServer, tag: str, pools: int = 2, runs: int = 4) -> None:
    """Work pools, a flow with a deployment per pool, and flow runs moved through states, all over the API."""
    status, flow = server.api("POST", "/flows/", {"name": f"bk-flow-{tag}"})
    assert status in (200, 201), flow
    for p in range(pools):
        pool = f"bk-{tag}-{p}"
        status, body = server.api("POST", "/work_pools/", {"name": pool, "type": "process"})
        assert status == 201, body
        status, dep = server.api("POST", "/deployments/", {"name": f"bk-dep-{tag}-{p}", "flow_id": flow["id"],
                                                           "work_pool_name": pool, "entrypoint": "f.py:f"})
        assert status in (200, 201), dep
        for r in range(runs):
            status, run = server.api("POST", f"/deployments/{dep['id']}/create_flow_run", {"parameters": {}})
            assert status == 201, run
            if r % 2:
                for state in ("PENDING", "RUNNING", "COMPLETED"):
                    status, body = server.api("POST", f"/flow_runs/{run['id']}/set_state",
                                              {"state": {"type": state}, "force": True})
                    assert status in (200, 201), body


def counts(server: PrefectServer) -> dict[str, int]:
    found = {}
    for what in ("flows", "deployments", "flow_runs"):
        status, body = server.api("POST", f"/{what}/count", {})
        assert status == 200, body
        found[what] = body
    status, pools = server.api("POST", "/work_pools/filter", {})
    found["work_pools"] = len([p for p in pools if p["name"].startswith("bk-")])
    status, completed = server.api("POST", "/flow_runs/count", {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
    found["completed_runs"] = completed
    return found


# --------------------------------------------------------------------------- PostgreSQL

@pytest.fixture(scope="module")
def pg(pg_cluster):
    # A database of its own, so the shared postgres_server is never touched. pg_trgm made by the superuser, as the
    # postgresql role does: the database owner cannot drop it.
    db = "prefect_bk_" + uuid.uuid4().hex[:6]
    pg = make_pg(pg_cluster, db)
    pg.superuser_sql(f"CREATE DATABASE {db} OWNER prefect")
    pg.superuser_sql("CREATE EXTENSION pg_trgm", database=db)
    pg.url = f"postgresql+asyncpg://prefect:{pg_cluster.password}@127.0.0.1:{pg_cluster.port}/{db}"
    return pg


def apply_backup_role(pg: Pg, password: str):
    return pg.run("psql", "-X", "-w", "-q", "-h", str(pg.cluster.root), "-p", str(pg.cluster.port), "-d", "postgres",
                  "-f", str(ROLE / "files" / "backup_role.sql"),
                  env={"BACKUP_ROLE": "prefect_backup", "BACKUP_ROLE_PASSWORD": password, "BACKUP_DATABASE": pg.db})


def login_check(pg: Pg, passfile: Path):
    return pg.run("psql", "-X", "-w", "-q", "-t", "-A", *pg.connect("prefect_backup", pg.db)[:6], "-d", pg.db,
                  "-f", str(ROLE / "files" / "backup_role_check.sql"), env={"PGPASSFILE": str(passfile)}, check=False)


def test_backup_login_sql_is_idempotent_and_least_privileged(pg):
    passfile = pg.passfile("backup.pgpass", [(pg.db, "prefect_backup", BACKUP_PASSWORD)])
    assert login_check(pg, passfile).returncode != 0  # no login yet: the role's script would apply the SQL
    apply_backup_role(pg, BACKUP_PASSWORD)
    first = pg.superuser_sql("SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolinherit, "
                             "rolpassword FROM pg_authid WHERE rolname = 'prefect_backup'")
    apply_backup_role(pg, BACKUP_PASSWORD)
    second = pg.superuser_sql("SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolinherit, "
                              "rolpassword FROM pg_authid WHERE rolname = 'prefect_backup'")
    # Creates databases (a drill's scratch copy), nothing more.
    assert first.split("|")[:7] == ["prefect_backup", "f", "f", "t", "f", "f", "t"] and second.split("|")[:7] == first.split("|")[:7]
    assert first.split("|")[7].startswith("SCRAM-SHA-256$")
    check = login_check(pg, passfile)
    assert check.returncode == 0 and check.stdout.strip() == "t", check.stdout + check.stderr
    # It may read, not write.
    denied = pg.run("psql", "-X", "-w", "-q", *pg.connect("prefect_backup", pg.db)[:6], "-d", pg.db, "-c",
                    "CREATE TABLE t_nope(a int)", env={"PGPASSFILE": str(passfile)}, check=False)
    assert denied.returncode != 0 and "permission denied" in denied.stderr
    # CREATEDB gives no power over a database the login does not own.
    anywhere = pg.passfile("backup-any.pgpass", [("*", "prefect_backup", BACKUP_PASSWORD)])
    for sql in (f"DROP DATABASE {pg.db}", f"ALTER DATABASE {pg.db} RENAME TO {pg.db}_x"):
        denied = pg.run("psql", "-X", "-w", "-q", *pg.connect("prefect_backup", "postgres")[:6], "-d", "postgres", "-c", sql,
                        env={"PGPASSFILE": str(anywhere)}, check=False)
        assert denied.returncode != 0 and "must be owner" in denied.stderr, denied.stderr
    # The password is never in the server log (SET log_statement = 'none' in the SQL, log_statement=all here).
    pg.superuser_sql("ALTER SYSTEM SET log_statement = 'all'")
    pg.superuser_sql("SELECT pg_reload_conf()")
    try:
        apply_backup_role(pg, BACKUP_PASSWORD)
    finally:
        pg.superuser_sql("ALTER SYSTEM RESET log_statement")
        pg.superuser_sql("SELECT pg_reload_conf()")
    assert BACKUP_PASSWORD not in (Path(pg.cluster.root) / "postgres.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def pg_server(pg, prefect_venv, tmp_path_factory):
    server = PrefectServer(tmp_path_factory.mktemp("bk-pg-server"), database_url=pg.url, services=False).start()
    yield server
    server.stop()


def upgrade(env: dict) -> None:
    proc = subprocess.run([prefect_bin(), "server", "database", "upgrade", "-y"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_postgresql_dump_and_restore_round_trip(pg, pg_server):
    """pg_dump -Fc as the least-privileged login, the database changed, restored over it as the owner: the counts of the
    dump come back; a second restore over the restored database gives the same."""
    passfile = pg.passfile("backup.pgpass", [(pg.db, "prefect_backup", BACKUP_PASSWORD)])
    if login_check(pg, passfile).stdout.strip() != "t":
        apply_backup_role(pg, BACKUP_PASSWORD)
    make_data(pg_server, "pg1")
    before = counts(pg_server)
    assert before["work_pools"] == 2 and before["flow_runs"] == 8 and before["completed_runs"] == 4
    dump = pg.work / "prefect-pg-20261130T023000Z.dump"
    pg_dump(pg, passfile, dump)
    assert re.match(VARS["backup_file_patterns"]["postgresql"], dump.name)

    make_data(pg_server, "pg2", pools=1, runs=3)  # the database moves on after the backup
    status, _ = pg_server.api("DELETE", "/work_pools/bk-pg1-0")
    assert status == 204
    assert counts(pg_server) != before

    owner = pg.passfile("owner.pgpass", [(pg.db, "prefect", pg.cluster.password)])
    pg_server.stop()
    try:
        restore_and_keep(pg, owner, dump)
        upgrade(clean_env(PREFECT_HOME=str(pg_server.root / "home"), PREFECT_SERVER_DATABASE_CONNECTION_URL=pg.url))
    finally:
        pg_server.start()
    assert counts(pg_server) == before
    # Restoring again over the restored (and then changed) database gives the same result.
    make_data(pg_server, "pg3", pools=1, runs=1)
    pg_server.stop()
    try:
        restore_and_keep(pg, owner, dump)
    finally:
        pg_server.start()
    assert counts(pg_server) == before


def test_backup_counts_its_own_snapshot_and_the_drill_restores_it(pg, pg_server, tmp_path):
    """The scheduled backup's snapshot session (backup_snapshot.sql) and pg_dump --snapshot, with the server writing
    after the snapshot was taken: the counts file holds exactly the rows of the dump, and a drill as the backup login
    (backup_drill.sql, pg_restore into the scratch database) finds every table with those rows, then drops the scratch
    database. Counts that differ (a damaged or incomplete dump) are named table by table; a dump taken without the
    snapshot (the negative control) differs from the counts."""
    # The PGPASSFILE as the role writes it: one line for the Prefect database, one for the drills' scratch database.
    passfile = pg.passfile("backup-drill.pgpass", [(pg.db, "prefect_backup", BACKUP_PASSWORD),
                                                   (drill_database(pg.db), "prefect_backup", BACKUP_PASSWORD)])
    if login_check(pg, passfile).stdout.strip() != "t":
        apply_backup_role(pg, BACKUP_PASSWORD)
    make_data(pg_server, "drill1")
    # The backup directory's name has a space: psql's \o gets the path through a variable.
    where = pg.work / "backups dir"
    where.mkdir(exist_ok=True)
    os.chmod(where, 0o777)
    dump = where / "prefect-pg-20261206T023000Z.dump"
    before = row_counts(pg, pg.db)
    manifest = snapshot_dump(pg, passfile, dump, meanwhile=lambda: make_data(pg_server, "drill2", pools=1, runs=3))
    after = row_counts(pg, pg.db)
    assert manifest["tables"] == before != after, "the counts are not the snapshot's"
    assert manifest["tables"]["flow_run"] >= 8 and set(manifest["tables"]) == set(after)

    record = drill(pg, passfile, dump)
    assert record["ok"] and record["mismatches"] == [], record
    assert record["tables"] == len(before) and record["rows"] == sum(before.values())
    assert drill_database(pg.db) not in databases(pg)

    # Counts that differ are named.
    damaged = dict(manifest, tables=dict(manifest["tables"], flow_run=manifest["tables"]["flow_run"] + 1, enclave_gone=3))
    Path(f"{dump}.json").write_text(json.dumps(damaged))
    record = drill(pg, passfile, dump)
    assert not record["ok"] and record["mismatches"] == [
        "enclave_gone expected=3 restored=none", f"flow_run expected={before['flow_run'] + 1} restored={before['flow_run']}"], record
    assert drill_database(pg.db) not in databases(pg)

    # Negative control: a dump of the database now (no snapshot) does not hold the counted rows.
    later = where / "prefect-pg-20261206T023100Z.dump"
    pg_dump(pg, passfile, later)
    Path(f"{later}.json").write_text(json.dumps(manifest))
    record = drill(pg, passfile, later)
    assert not record["ok"] and any(m.startswith("flow_run expected=") for m in record["mismatches"]), record

    # A scratch database left by a killed drill is replaced; a scratch name that is the connected database is refused.
    pg.run("psql", "-X", "-w", "-q", *pg.connect("prefect_backup", pg.db)[:6], "-d", pg.db, "-c",
           f"CREATE DATABASE {drill_database(pg.db)}", env={"PGPASSFILE": str(passfile)})
    Path(f"{dump}.json").write_text(json.dumps(manifest))
    assert drill(pg, passfile, dump)["ok"]
    refused = pg.run("psql", "-X", "-q", "-t", "-A", "-w", *pg.connect("prefect_backup", pg.db), "--set", "action=create",
                     "--set", f"scratch={pg.db}", "--file", str(ROLE / "files" / "postgresql" / "backup_drill.sql"),
                     env={"PGPASSFILE": str(passfile)}, check=False)
    assert refused.returncode == 3 and f"REFUSED the scratch database {pg.db} is the database connected to" in refused.stdout
    assert pg.db in databases(pg)


def test_restore_over_a_newer_schema_gives_back_exactly_the_dump(pg, pg_server):
    """A later release's migration, made up so that the test does not hang on one release's history: a new table with a
    foreign key to an old one (as Prefect's deployment_version of 2025-03-19 and automation_held_event of 3.9.1 are),
    and one without. The previous way (pg_restore --clean in one transaction) fails and leaves the newer schema; the
    restore into an empty database gives back the dump's schema and rows, with the database's own privileges and
    settings. A damaged dump puts the database from before back; an aside name already taken is refused."""
    passfile = pg.passfile("backup.pgpass", [(pg.db, "prefect_backup", BACKUP_PASSWORD)])
    if login_check(pg, passfile).stdout.strip() != "t":
        apply_backup_role(pg, BACKUP_PASSWORD)
    pg.superuser_sql(f"ALTER DATABASE {pg.db} SET work_mem = '8MB'")
    pg.superuser_sql(f"ALTER ROLE prefect_backup IN DATABASE {pg.db} SET statement_timeout = '1h'")
    pg.superuser_sql(f"ALTER DATABASE {pg.db} SET search_path = \"$user\", public")
    pg.superuser_sql(f"REVOKE TEMPORARY ON DATABASE {pg.db} FROM PUBLIC")
    database_row = ("SELECT datacl::text, pg_encoding_to_char(encoding), datcollate, datctype, datconnlimit, "
                    "(SELECT string_agg(setrole::regrole::text || ':' || array_to_string(setconfig, ','), ';' ORDER BY setrole) "
                    f"FROM pg_db_role_setting WHERE setdatabase = d.oid) FROM pg_database d WHERE datname = '{pg.db}'")
    make_data(pg_server, "newer")
    at_dump = (schema(pg, pg.db), row_counts(pg, pg.db), pg.superuser_sql(database_row))
    dump = pg.work / "prefect-pg-20261201T023000Z.dump"
    pg_dump(pg, passfile, dump)
    assert (schema(pg, pg.db), row_counts(pg, pg.db)) == at_dump[:2], "the database moved while it was dumped"
    assert at_dump[1]["deployment"] >= 2 and at_dump[1]["flow_run"] >= 8

    owner = pg.passfile("owner-newer.pgpass", [(pg.db, "prefect", pg.cluster.password)])
    newer = ("CREATE TABLE enclave_newer (id serial PRIMARY KEY, deployment_id uuid NOT NULL REFERENCES deployment (id));"
             "INSERT INTO enclave_newer (deployment_id) SELECT id FROM deployment;"
             "CREATE TABLE enclave_lonely (id int); INSERT INTO enclave_lonely VALUES (1);")
    pg.run("psql", "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", *pg.connect("prefect", pg.db)[:6], "-d", pg.db, "-c", newer,
           env={"PGPASSFILE": str(owner)})
    migrated = schema(pg, pg.db)
    pg_server.stop()
    try:
        # Negative control: the previous release's arguments over the database in place.
        old = pg_restore(pg, owner, dump, restore_args=["--clean", "--if-exists", "--no-password", "--single-transaction",
                                                        "--exit-on-error"], fresh=False)
        assert old.returncode != 0 and "other objects depend on it" in old.stderr, old.stderr[-2000:]
        assert schema(pg, pg.db) == migrated, "the single transaction rolled back: the newer schema is still there"

        # A damaged dump (its table of contents intact, its compressed data overwritten): the database from before
        # comes back whole.
        data = bytearray(dump.read_bytes())
        data[-4096:-64] = b"\xff" * (4096 - 64)  # the table data comes last, after the table of contents
        damaged = pg.work / "prefect-pg-20261201T023001Z.dump"
        damaged.write_bytes(bytes(data))
        os.chmod(damaged, 0o644)
        assert pg_restore(pg, owner, damaged).returncode != 0
        assert schema(pg, pg.db) == migrated and aside_of(pg.db) not in databases(pg)
        assert row_counts(pg, pg.db)["enclave_newer"] == at_dump[1]["deployment"]

        # A swap that stopped after closing the database to connections and before its rename (sessions that would
        # not end): undo opens it again.
        pg.superuser_sql(f"ALTER DATABASE {pg.db} ALLOW_CONNECTIONS false")
        reopened = swap(pg, "undo")
        assert reopened.returncode == 0 and "was not renamed and takes connections again" in reopened.stdout, reopened.stdout
        assert pg.superuser_sql(f"SELECT datallowconn FROM pg_database WHERE datname = '{pg.db}'") == "t"

        # An aside name already taken (an interrupted restore): refused, nothing changed.
        pg.superuser_sql(f"CREATE DATABASE {aside_of(pg.db)}")
        refused = swap(pg, "swap")
        assert refused.returncode == 3 and refused.stdout.strip().startswith("REFUSED database " + aside_of(pg.db)), refused.stdout
        assert schema(pg, pg.db) == migrated
        pg.superuser_sql(f"DROP DATABASE {aside_of(pg.db)}")

        restored = pg_restore(pg, owner, dump)
        assert restored.returncode == 0, restored.stderr[-2000:]
        assert (schema(pg, pg.db), row_counts(pg, pg.db), pg.superuser_sql(database_row)) == at_dump
        # The database from before waits aside, whole and closed to connections, until the restored one is known
        # good; then it is dropped.
        assert pg.superuser_sql(f"SELECT datallowconn FROM pg_database WHERE datname = '{aside_of(pg.db)}'") == "f"
        pg.superuser_sql(f"ALTER DATABASE {aside_of(pg.db)} ALLOW_CONNECTIONS true")
        assert schema(pg, aside_of(pg.db)) == migrated
        assert "OK drop" in swap(pg, "drop").stdout and aside_of(pg.db) not in databases(pg)
        upgrade(clean_env(PREFECT_HOME=str(pg_server.root / "home"), PREFECT_SERVER_DATABASE_CONNECTION_URL=pg.url))
    finally:
        pg_server.start()
    status, dep = pg_server.api("GET", "/deployments/name/bk-flow-newer/bk-dep-newer-0")
    assert status == 200, dep


# --------------------------------------------------------------------------- SQLite

def script(*argv, check=True):
    proc = subprocess.run([prefect_bin("python"), "-I", str(SCRIPT), *argv], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def table_counts(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("flow", "deployment", "flow_run", "work_pool")}
    finally:
        con.close()


@pytest.fixture(scope="module")
def lite_server(prefect_venv, tmp_path_factory):
    server = PrefectServer(tmp_path_factory.mktemp("bk-sqlite-server"), services=False).start()
    yield server
    server.stop()


def test_sqlite_online_copy_while_the_server_writes_then_restore(lite_server, tmp_path):
    make_data(lite_server, "lite1")
    live = lite_server.root / "home" / "prefect.db"
    dest, log = tmp_path / "backups", tmp_path / "backup.log"
    dest.mkdir()
    stop, written, errors = threading.Event(), [], []
    status, dep = lite_server.api("GET", "/deployments/name/bk-flow-lite1/bk-dep-lite1-0")
    assert status == 200, dep

    def writer():
        while not stop.is_set():
            status, body = lite_server.api("POST", f"/deployments/{dep['id']}/create_flow_run", {"parameters": {}})
            (written if status == 201 else errors).append(status)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        made = []
        for _ in range(3):
            while len(written) < len(made) * 10 + 10:  # the server keeps writing between the copies
                assert thread.is_alive()
                threading.Event().wait(0.05)
            proc = script("backup", "--database", str(live), "--dest-dir", str(dest), "--keep-count", "2", "--keep-days", "30",
                          "--log", str(log))
            made.append(Path(json.loads(proc.stdout)["file"]))
            threading.Event().wait(1.1)  # backups are named by the second
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:5]
    assert len(written) >= 30
    # Retention: keep-count 2 left the two newest.
    assert sorted(p.name for p in dest.glob("prefect-sqlite-*.db")) == sorted(p.name for p in made[1:])
    lines = log.read_text().splitlines()
    assert len(lines) == 3 and all(" prefect-backup OK sqlite file=prefect-sqlite-" in line for line in lines)
    assert lines[-1].endswith("removed=1")
    copy = made[-1]
    con = sqlite3.connect(copy)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    con.close()
    snapshot = table_counts(copy)
    assert 8 + 10 <= snapshot["flow_run"] < 8 + len(written) + 1

    # Restore: refused while the server holds the database; then, stopped, the copy replaces it and the old is kept.
    # The restore puts the copy in place byte for byte (a file copy), so the server started on it below shows that
    # a Prefect server serves what the copy holds (a server of its own on another copy of it proved no more).
    make_data(lite_server, "lite2", pools=1, runs=2)
    busy = script("restore", "--backup", str(copy), "--database", str(live), "--log", str(log), check=False)
    assert busy.returncode == 1 and "stop the Prefect server first" in busy.stdout, busy.stdout + busy.stderr
    lite_server.stop()
    try:
        done = json.loads(script("restore", "--backup", str(copy), "--database", str(live), "--log", str(log)).stdout)
        replaced = Path(done["replaced"])
        assert replaced.exists() and table_counts(replaced)["work_pool"] == table_counts(copy)["work_pool"] + 1
        assert not Path(f"{live}-wal").exists()
        upgrade(clean_env(PREFECT_HOME=str(lite_server.root / "home")))
    finally:
        lite_server.start()
    served = counts(lite_server)
    assert served["flow_runs"] == snapshot["flow_run"] and served["deployments"] == snapshot["deployment"]
    assert served["work_pools"] == 2 and served["completed_runs"] == 4
    assert log.read_text().splitlines()[-1].split(" ", 1)[1].startswith("prefect-restore OK sqlite from=" + copy.name)


def test_sqlite_backup_counts_rows_and_the_drill_compares_them(lite_server, tmp_path):
    """backup writes <backup>.json with every table's rows of the copy; with a drill due (the request file here) the
    copy is restored into a scratch file and compared, the record written and the request used up; retention removes
    a backup's counts with it. A backup whose counts differ, or that is damaged, fails its drill (exit 1)."""
    make_data(lite_server, "drill")
    live = lite_server.root / "home" / "prefect.db"
    dest, log, record, request = tmp_path / "backups", tmp_path / "backup.log", tmp_path / "drill.json", tmp_path / "drill.request"
    dest.mkdir()
    request.write_text("requested")
    proc = script("backup", "--database", str(live), "--dest-dir", str(dest), "--keep-count", "1", "--log", str(log),
                  "--drill-request", str(request), "--drill-record", str(record), "--drill-weekdays", "")
    made = Path(json.loads(proc.stdout)["file"])
    counted = json.loads(Path(f"{made}.json").read_text())
    assert counted["file"] == made.name and counted["tables"]["flow_run"] >= 8 and len(counted["tables"]) > 20
    assert all(counted["tables"][table] == rows for table, rows in table_counts(made).items())
    drilled = json.loads(record.read_text())
    assert drilled["ok"] and drilled["file"] == made.name and drilled["rows"] == sum(counted["tables"].values()), drilled
    assert not request.exists() and not (dest / "drill-scratch.db").exists()
    assert log.read_text().splitlines()[-1].split(" ", 1)[1].startswith(f"prefect-drill OK sqlite file={made.name}")
    # No request, not a drill day: no drill. Retention (keep-count 1) removes the older backup and its counts.
    threading.Event().wait(1.1)
    proc = script("backup", "--database", str(live), "--dest-dir", str(dest), "--keep-count", "1", "--log", str(log),
                  "--drill-request", str(request), "--drill-record", str(record), "--drill-weekdays", "")
    newer = Path(json.loads(proc.stdout)["file"])
    assert "drill" not in json.loads(proc.stdout) and json.loads(record.read_text())["file"] == made.name
    assert sorted(p.name for p in dest.iterdir()) == sorted([newer.name, newer.name + ".json"])
    # Counts that differ fail the drill, naming the table.
    text = json.loads(Path(f"{newer}.json").read_text())
    text["tables"]["flow_run"] += 2
    Path(f"{newer}.json").write_text(json.dumps(text))
    failed = script("drill", "--backup", str(newer), "--drill-record", str(record), "--log", str(log), check=False)
    drilled = json.loads(record.read_text())
    assert failed.returncode == 1 and not drilled["ok"]
    assert drilled["mismatches"] == [f"flow_run expected={text['tables']['flow_run']} restored={text['tables']['flow_run'] - 2}"]
    # A damaged backup fails it too, and no scratch file stays.
    newer.write_bytes(newer.read_bytes()[:4096])
    failed = script("drill", "--backup", str(newer), "--drill-record", str(record), "--log", str(log), check=False)
    drilled = json.loads(record.read_text())
    assert failed.returncode == 1 and not drilled["ok"] and drilled["message"], drilled
    assert not (dest / "drill-scratch.db").exists()
    assert log.read_text().splitlines()[-1].split(" ", 1)[1].startswith(f"prefect-drill FAILED sqlite file={newer.name}")


def test_sqlite_script_refuses_a_damaged_backup_and_reports_failure(tmp_path):
    bad = tmp_path / "prefect-sqlite-20261130T023000Z.db"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    target = tmp_path / "prefect.db"
    target.write_bytes(b"keep me")
    log = tmp_path / "backup.log"
    proc = script("restore", "--backup", str(bad), "--database", str(target), "--log", str(log), check=False)
    assert proc.returncode == 1 and target.read_bytes() == b"keep me"
    assert " prefect-restore FAILED sqlite " in log.read_text()
    missing = script("backup", "--database", str(tmp_path / "nope.db"), "--dest-dir", str(tmp_path), "--log", str(log), check=False)
    assert missing.returncode == 1 and "FileNotFoundError" in missing.stdout
    assert log.read_text().splitlines()[-1].split(" ", 1)[1].startswith("prefect-backup FAILED sqlite FileNotFoundError")


def test_retention_by_count_and_age(tmp_path):
    """keep-count and keep-days on named files (the name carries the UTC time); the newest is never deleted."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("prefect_sqlite_backup", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import datetime as dt
    now = dt.datetime(2026, 11, 30, 2, 30, tzinfo=dt.timezone.utc)
    names = [f"prefect-sqlite-{(now - dt.timedelta(days=d)).strftime(mod.STAMP)}.db" for d in (0, 1, 2, 10, 40, 41)]
    for name in names + ["prefect-pg-20200101T000000Z.dump", "notes.txt"]:
        (tmp_path / name).write_text("x")
    doomed = {p.name for p in mod.retention(tmp_path, 5, 30, now)}
    assert doomed == {names[4], names[5]}  # 40 days old (beyond age) and the 6th (beyond count)
    assert {p.name for p in mod.retention(tmp_path, 3, 0, now)} == set(names[3:])
    # All older than the age limit: the newest stays.
    old = tmp_path / "old"
    old.mkdir()
    for name in names[4:]:
        (old / name).write_text("x")
    assert {p.name for p in mod.retention(old, 14, 30, now)} == {names[5]}
