"""The backup role's PostgreSQL restore as files/backup_restore.ps1 runs it, for the tests on the throwaway cluster
(test_backup_restore.py, test_upgrade.py): programs run as the postgres user, the role's pg_dump and pg_restore
options (roles/backup/vars/main.yml), files/restore_swap.sql through psql as the superuser."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import yaml

from servers import REPO

ROLE = REPO / "roles" / "backup"
VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
# The filter the roles name the drill's scratch database with (plugins/filter/database_url.py), loaded from its file.
_SPEC = importlib.util.spec_from_file_location("enclave_database_url", REPO / "plugins" / "filter" / "database_url.py")
_FILTERS = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_FILTERS)
drill_database = _FILTERS.drill_database


class Pg:
    """Programs of the throwaway cluster, run as the postgres user when the tests run as root."""

    def __init__(self, cluster, work: Path):
        self.cluster, self.work = cluster, work

    def run(self, program, *argv, env=None, check=True, input=None):
        cmd = [str(self.cluster.bin_dir / program), *argv]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", "env", *[f"{k}={v}" for k, v in (env or {}).items()], *cmd]
            env = None
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, input=input,
                              env=None if env is None else {**os.environ, **env})
        if check:
            assert proc.returncode == 0, f"{program} {argv[:3]} -> {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        return proc

    def superuser_sql(self, sql, database="postgres"):
        return self.run("psql", "-X", "-h", str(self.cluster.root), "-p", str(self.cluster.port), "-v", "ON_ERROR_STOP=1",
                        "-q", "-t", "-A", "-d", database, "-c", sql).stdout.strip()

    def passfile(self, name, lines):
        """A PGPASSFILE as the role writes it (libpq escaping of ':' and '\\'), readable by its user only."""
        path = self.work / name
        path.write_text("".join(f"127.0.0.1:{self.cluster.port}:{db}:{user}:{pw.replace(chr(92), chr(92) * 2).replace(':', chr(92) + ':')}\n"
                                for db, user, pw in lines))
        os.chmod(path, 0o600)
        if os.geteuid() == 0:
            import pwd
            os.chown(path, pwd.getpwnam("postgres").pw_uid, -1)
        return path

    def connect(self, user, database):
        return ["--host", "127.0.0.1", "--port", str(self.cluster.port), "--username", user, "--dbname", database]


def pg_dump(pg: Pg, passfile: Path | None, dest: Path):
    """pg_dump with the role's options: as the backup login (its PGPASSFILE), or as the superuser when passfile is None."""
    if passfile is None:
        pg.run("pg_dump", *VARS["backup_pg_dump_args"], "-h", str(pg.cluster.root), "-p", str(pg.cluster.port), "-d", pg.db,
               "--file", str(dest))
    else:
        pg.run("pg_dump", *VARS["backup_pg_dump_args"], *pg.connect("prefect_backup", pg.db), "--file", str(dest),
               env={"PGPASSFILE": str(passfile)})
    pg.run("pg_restore", "--list", str(dest))  # the scheduled script's read-back


def snapshot_dump(pg: Pg, passfile: Path, dest: Path, meanwhile=None) -> dict:
    """The scheduled backup as files/postgresql/prefect_backup.ps1 runs it: psql -f backup_snapshot.sql -f - as the backup login
    stays open on stdin, its output file (the snapshot's name, the counts, "ready") is polled, pg_dump dumps that
    snapshot, COMMIT goes on stdin; the counts file <dump>.json is written as the script writes it. meanwhile() runs
    after the snapshot was taken and before pg_dump (writes the dump must not hold). Returns the counts file's JSON."""
    out = dest.parent / (dest.name + ".snapshot")
    cmd = [str(pg.cluster.bin_dir / "psql"), "-X", "-q", "-t", "-A", "-w", *pg.connect("prefect_backup", pg.db), "-v",
           f"out={out}", "-f", str(ROLE / "files" / "postgresql" / "backup_snapshot.sql"), "-f", "-"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", "env", f"PGPASSFILE={passfile}", *cmd]
    session = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PGPASSFILE": str(passfile)})
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and "ready" in out.read_text().splitlines()):
            assert session.poll() is None, f"psql ended ({session.returncode}): {session.stderr.read()}"
            assert time.monotonic() < deadline, "no snapshot within 60 s"
            time.sleep(0.1)
        snapshot, counts = out.read_text().splitlines()[:2]
        if meanwhile:
            meanwhile()
        pg.run("pg_dump", *VARS["backup_pg_dump_args"], f"--snapshot={snapshot}", *pg.connect("prefect_backup", pg.db),
               "--file", str(dest), env={"PGPASSFILE": str(passfile)})
        stdout, stderr = session.communicate("COMMIT;\n", timeout=60)
        assert session.returncode == 0, stderr
    finally:
        if session.poll() is None:
            session.kill()
        out.unlink(missing_ok=True)
    pg.run("pg_restore", "--list", str(dest))
    manifest = {"file": dest.name, "database": pg.db, "snapshot": snapshot, "tables": json.loads(counts)}
    Path(f"{dest}.json").write_text(json.dumps(manifest))
    return manifest


def drill(pg: Pg, passfile: Path, dump: Path) -> dict:
    """A drill as files/postgresql/prefect_backup.ps1 runs it, as the backup login: backup_drill.sql create (connected to the
    Prefect database), pg_restore with the role's drill options into the scratch database, check with the counts file
    in DRILL_EXPECTED, drop. Returns the record the script writes (without its time)."""
    scratch = drill_database(pg.db)
    env = {"PGPASSFILE": str(passfile)}

    def step(action, database, more=None):
        return pg.run("psql", "-X", "-q", "-t", "-A", "-w", *pg.connect("prefect_backup", database), "--set", f"action={action}",
                      "--set", f"scratch={scratch}", "--file", str(ROLE / "files" / "postgresql" / "backup_drill.sql"), env={**env, **(more or {})},
                      check=False)

    record = {"file": dump.name, "ok": False, "tables": 0, "rows": 0, "mismatches": [], "message": ""}
    created = step("create", pg.db)
    try:
        if created.returncode != 0:
            record["message"] = f"the scratch database could not be made (exit {created.returncode}): {created.stdout}{created.stderr}"
            return record
        restored = pg.run("pg_restore", *VARS["backup_pg_drill_restore_args"], *pg.connect("prefect_backup", scratch), str(dump),
                          env=env, check=False)
        if restored.returncode != 0:
            record["message"] = f"pg_restore into the scratch database failed (exit {restored.returncode}): {restored.stderr}"
            return record
        checked = step("check", scratch, {"DRILL_EXPECTED": Path(f"{dump}.json").read_text()})
        assert checked.returncode == 0, checked.stdout + checked.stderr
        lines = checked.stdout.splitlines()
        record["mismatches"] = [line[9:] for line in lines if line.startswith("MISMATCH ")]
        total = re.fullmatch(r"TABLES (\d+) ROWS (\d+)", [line for line in lines if line.startswith("TABLES ")][-1])
        record.update(tables=int(total.group(1)), rows=int(total.group(2)), ok=not record["mismatches"])
        return record
    finally:
        if created.returncode == 0:
            dropped = step("drop", pg.db)
            assert dropped.returncode == 0 and "OK drop" in dropped.stdout, dropped.stdout + dropped.stderr


SWAP_SQL = (ROLE / "files" / "restore_swap.sql").read_text()


def aside_of(database: str) -> str:
    """roles/backup/vars/main.yml backup_restore_aside."""
    return database[:40] + "_before_restore"


def swap(pg: Pg, action: str, database: str | None = None):
    """files/restore_swap.sql as backup_restore.ps1 runs it: psql as the superuser, names as variables, SQL on stdin."""
    database = database or pg.db
    return pg.run("psql", "-X", "-q", "-t", "-A", "-h", str(pg.cluster.root), "-p", str(pg.cluster.port), "-d", "postgres",
                  "-v", f"database={database}", "-v", "role=prefect", "-v", f"aside={aside_of(database)}",
                  "-v", f"action={action}", input=SWAP_SQL, check=False)


def pg_restore(pg: Pg, owner_passfile: Path, dump: Path, restore_args=None, fresh: bool = True):
    """What files/backup_restore.ps1 does: the dump's TOC without extension entries; the database renamed aside and
    made again empty by the superuser (restore_swap.sql swap); the dump's extensions created as the owner; pg_restore
    with the role's options as the owner; on failure the database from before put back (undo). fresh=False is the
    previous release's way (pg_restore --clean over the database in place), for negative controls."""
    toc = pg.run("pg_restore", "--list", str(dump)).stdout.splitlines()
    pattern = re.compile(VARS["backup_pg_restore_skip"])
    kept = [line for line in toc if not pattern.search(line)]
    extensions = [m.group(1) for line in toc if (m := re.match(r"^\d+; \d+ \d+ EXTENSION - (\S+)", line))]
    listing = pg.work / ("restore-%s.list" % uuid.uuid4().hex[:6])
    listing.write_text("\n".join(kept) + "\n")
    os.chmod(listing, 0o644)
    env = {"PGPASSFILE": str(owner_passfile)}
    if fresh:
        swapped = swap(pg, "swap")
        assert swapped.returncode == 0, swapped.stdout + swapped.stderr
        assert swapped.stdout.strip().splitlines()[-1].startswith("OK swap"), swapped.stdout
    if extensions:
        sql = pg.work / "extensions.sql"
        sql.write_text("".join(f'CREATE EXTENSION IF NOT EXISTS "{e}";\n' for e in extensions))
        os.chmod(sql, 0o644)
        pg.run("psql", "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", *pg.connect("prefect", pg.db)[:6], "-d", pg.db, "-f", str(sql), env=env)
    proc = pg.run("pg_restore", *(restore_args or VARS["backup_pg_restore_args"]), *pg.connect("prefect", pg.db), "--use-list",
                  str(listing), str(dump), env=env, check=False)
    if fresh and proc.returncode != 0:
        undone = swap(pg, "undo")
        assert undone.returncode == 0, undone.stdout + undone.stderr
    return proc


def restore_and_keep(pg: Pg, owner_passfile: Path, dump: Path):
    """A restore that succeeded, then (the server healthy) the database from before dropped: restore_swap.sql drop."""
    restored = pg_restore(pg, owner_passfile, dump)
    assert restored.returncode == 0, restored.stderr
    dropped = swap(pg, "drop")
    assert dropped.returncode == 0 and "OK drop" in dropped.stdout, dropped.stdout + dropped.stderr
    return restored


def databases(pg: Pg) -> set[str]:
    return set(pg.superuser_sql("SELECT datname FROM pg_database").split())


def schema(pg: Pg, database: str) -> str:
    """pg_dump --schema-only, without the lines that name the dump itself."""
    text = pg.run("pg_dump", "--schema-only", "-h", str(pg.cluster.root), "-p", str(pg.cluster.port), "-d", database).stdout
    return "\n".join(line for line in text.splitlines() if not line.startswith(("-- Dumped ", "\\restrict ", "\\unrestrict ")))


def row_counts(pg: Pg, database: str) -> dict[str, int]:
    """Rows of every table of the public schema."""
    text = pg.superuser_sql(
        "SELECT string_agg(table_name || '=' || (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM "
        "public.%I', table_name), false, true, '')))[1]::text, ' ' ORDER BY table_name) FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'", database=database)
    return {k: int(v) for k, v in (item.split("=") for item in text.split())}


def make_pg(cluster, database: str) -> Pg:
    """A Pg for one database of the cluster, with a work directory the postgres user may use."""
    work = Path(cluster.root) / ("bk-" + uuid.uuid4().hex[:6])
    work.mkdir()
    if os.geteuid() == 0:
        import pwd
        os.chown(work, pwd.getpwnam("postgres").pw_uid, -1)
    pg = Pg(cluster, work)
    pg.db = database
    return pg
