"""Consistent online copy of Prefect's SQLite database, retention, and restore (roles/backup).

Runs with the Prefect venv's python on the server host, standard library only:

  backup  --config FILE                  the scheduled task; FILE is the JSON the role writes (keys as the options)
  backup  --database DB --dest-dir DIR [--keep-count N] [--keep-days D] [--log FILE]
          [--drill-weekdays DAY,...] [--drill-request FILE] [--drill-record FILE]
  drill   --backup FILE --drill-record FILE [--log FILE]
  restore --backup FILE --database DB  [--log FILE]
  undo    --replaced FILE --database DB [--log FILE]

backup: sqlite3's online backup API copies the database in one step, i.e. inside one read transaction. Prefect runs
SQLite in WAL mode, where a reader never blocks the server's writers, so the copy is a consistent snapshot taken
while the server writes. The copy is written as <name>.partial, switched to a rollback journal (one self-contained
file), checked with PRAGMA integrity_check, every table's rows counted into <name>.json (the copy is the database at
the instant of the copy, so these are the source's rows then) and only then renamed to prefect-sqlite-<UTC time>.db.
Then retention: the newest keep-count copies are kept, and of those the ones older than keep-days are deleted, except
the newest, each with its counts. Then a drill when one is due: on the drill weekdays (local time) or when the
request file exists (playbooks/backup.yml -e backup_drill=true; removed after the drill).

drill: the backup is copied to a scratch file as a restore would copy it, checked with PRAGMA integrity_check, every
table's rows compared with <backup>.json, and the scratch file removed; the result is written to the drill record
(JSON, replaced atomically) and the log. A failed drill is exit code 1.

restore: refuses a backup that fails PRAGMA integrity_check and a database another process still uses (the server
must be stopped); the database and its -wal/-shm files are kept as <db>.replaced-<UTC time>[-wal|-shm] (still
openable together) and the backup, copied beside the database first, is renamed into place (os.replace: atomic).
Nothing stale stays beside the restored file: its -wal/-shm went with the replaced one.

undo: after a restore whose server did not come back healthy, the replaced database and its -wal/-shm are put back
(the restored file is removed: the backup it came from is still there).

Each run prints one JSON object and appends one line to the log; the exit code is 0 on success, 1 on failure (the
scheduled task's last result shows it).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import sys
from pathlib import Path

PREFIX = "prefect-sqlite-"
SUFFIX = ".db"
NAME = re.compile(r"^prefect-sqlite-(\d{8}T\d{6}Z)\.db$")
STAMP = "%Y%m%dT%H%M%SZ"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def retention(directory: Path, keep_count: int, keep_days: int, now: dt.datetime) -> list[Path]:
    """The backups to delete: beyond the newest keep_count, or older than keep_days (0: no age limit); the newest
    backup is never deleted. Only files named like this script's backups are considered."""
    found = sorted(((dt.datetime.strptime(m.group(1), STAMP).replace(tzinfo=dt.timezone.utc), p)
                    for p in directory.iterdir() if (m := NAME.match(p.name)) and p.is_file()), reverse=True)
    doomed = [path for _when, path in found[keep_count:]]
    if keep_days > 0:
        limit = now - dt.timedelta(days=keep_days)
        doomed += [p for when, p in found[1:keep_count] if when < limit]
    return doomed


WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def table_counts(path: Path) -> dict[str, int]:
    """Rows of every table (SQLite's own sqlite_* tables left out), read-only."""
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                                           "ORDER BY name")]
        return {name: con.execute('SELECT count(*) FROM "%s"' % name.replace('"', '""')).fetchone()[0] for name in names}
    finally:
        con.close()


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def drill(backup_file: Path, record: Path) -> dict:
    """The backup restored as a restore would (copied, integrity-checked) into a scratch file beside it, every
    table's rows compared with the counts taken at backup time; the scratch file removed, the result recorded."""
    result = {"at": utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"), "kind": "sqlite", "file": backup_file.name, "ok": False,
              "tables": 0, "rows": 0, "mismatches": [], "message": ""}
    scratch = backup_file.with_name("drill-scratch" + SUFFIX)
    try:
        manifest = Path(f"{backup_file}.json")
        if not manifest.is_file():
            raise FileNotFoundError(f"{backup_file.name} has no row counts ({manifest.name})")
        expected = json.loads(manifest.read_text(encoding="utf-8-sig")).get("tables") or {}
        shutil.copyfile(backup_file, scratch)
        check = integrity(scratch)
        if check != "ok":
            raise RuntimeError(f"the restored copy fails PRAGMA integrity_check: {check[:300]}")
        restored = table_counts(scratch)
        result["mismatches"] = [f"{name} expected={expected.get(name, 'none')} restored={restored.get(name, 'none')}"
                                for name in sorted(set(expected) | set(restored)) if expected.get(name) != restored.get(name)]
        result.update(tables=len(restored), rows=sum(restored.values()), ok=not result["mismatches"],
                      message="every table has the rows of the backup" if not result["mismatches"] else "rows differ from the backup")
    except Exception as exc:  # recorded, not raised: the record says what failed
        result["message"] = f"{type(exc).__name__}: {exc}"
    finally:
        scratch.unlink(missing_ok=True)
    write_atomically(record, json.dumps(result, indent=2))
    return result


def drill_due(weekdays: list[str], request: str | None, now: dt.datetime | None = None) -> bool:
    """On a configured weekday (the host's local time), or when the request file exists."""
    local = now or dt.datetime.now()
    return bool(request and Path(request).exists()) or WEEKDAYS[local.weekday()] in (weekdays or [])


def integrity(path: Path) -> str:
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()
    return "; ".join(str(r[0]) for r in rows)


def backup(database: Path, dest_dir: Path, keep_count: int, keep_days: int) -> dict:
    if keep_count < 1 or keep_days < 0:
        raise ValueError(f"keep-count must be 1 or more and keep-days 0 or more (got {keep_count}, {keep_days})")
    if not database.is_file():
        raise FileNotFoundError(f"database {database} does not exist")
    now = utc_now()
    final = dest_dir / f"{PREFIX}{now.strftime(STAMP)}{SUFFIX}"
    partial = final.with_name(final.name + ".partial")
    # A run killed half-way leaves its .partial; one run goes at a time (the task starts no second instance), so every
    # one found now is stale.
    for stale in dest_dir.glob(f"{PREFIX}*{SUFFIX}.partial"):
        stale.unlink(missing_ok=True)
    # Read-only: the copy never writes to the server's database (Windows: the -shm is mapped read-only).
    source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    try:
        target = sqlite3.connect(partial)
        try:
            source.backup(target, pages=-1)  # one step: one read transaction, never restarted by the writers
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    finally:
        source.close()
    manifest = Path(f"{final}.json")
    try:
        check = integrity(partial)
        if check != "ok":
            raise RuntimeError(f"the copy fails PRAGMA integrity_check: {check[:300]}")
        # The counts first: a backup never exists without them.
        write_atomically(manifest, json.dumps({"file": final.name, "database": str(database), "tables": table_counts(partial)},
                                              indent=2))
        os.replace(partial, final)
    except BaseException:
        manifest.unlink(missing_ok=True)
        raise
    finally:
        partial.unlink(missing_ok=True)
    removed = []
    for path in retention(dest_dir, keep_count, keep_days, now):
        path.unlink()
        Path(f"{path}.json").unlink(missing_ok=True)
        removed.append(path.name)
    return {"changed": True, "file": str(final), "bytes": final.stat().st_size, "removed": removed}


def not_in_use(database: Path) -> None:
    """Raises when another process (the server) has the database open: the exclusive lock fails at once. In WAL mode a
    plain BEGIN EXCLUSIVE does not see an idle reader; the exclusive locking mode needs the file to itself."""
    if not database.exists():
        return
    con = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        con.execute("PRAGMA locking_mode=EXCLUSIVE")
        con.execute("BEGIN EXCLUSIVE")
        con.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        raise RuntimeError(f"{database} is in use ({exc}): stop the Prefect server first, nothing was changed") from exc
    finally:
        con.close()


def undo(replaced: Path, database: Path) -> dict:
    if not replaced.is_file():
        raise FileNotFoundError(f"replaced database {replaced} does not exist, {database} left as it is")
    not_in_use(database)
    for suffix in ("-wal", "-shm", ""):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    for suffix in ("-wal", "-shm", ""):
        side = Path(f"{replaced}{suffix}")
        if side.exists():
            os.replace(side, f"{database}{suffix}")
    return {"changed": True, "database": str(database), "put_back": str(replaced)}


def restore(backup_file: Path, database: Path) -> dict:
    if not backup_file.is_file():
        raise FileNotFoundError(f"backup {backup_file} does not exist")
    check = integrity(backup_file)
    if check != "ok":
        raise RuntimeError(f"{backup_file} fails PRAGMA integrity_check, nothing was changed: {check[:300]}")
    not_in_use(database)
    staged = database.with_name(database.name + ".restoring")
    shutil.copyfile(backup_file, staged)
    with open(staged, "rb+") as handle:
        os.fsync(handle.fileno())
    replaced = ""
    if database.exists():
        replaced = f"{database}.replaced-{utc_now().strftime(STAMP)}"
        shutil.copy2(database, replaced)
        for suffix in ("-wal", "-shm"):
            side = Path(f"{database}{suffix}")
            if side.exists():
                os.replace(side, f"{replaced}{suffix}")
    os.replace(staged, database)
    return {"changed": True, "database": str(database), "restored_from": str(backup_file), "replaced": replaced}


def log_line(log: str | None, text: str) -> None:
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{utc_now().strftime('%Y-%m-%dT%H:%M:%SZ')} {text}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["backup", "restore", "undo", "drill"])
    parser.add_argument("--config", help="JSON file with database, dest_dir, keep_count, keep_days, log")
    parser.add_argument("--database")
    parser.add_argument("--dest-dir")
    parser.add_argument("--keep-count", type=int)
    parser.add_argument("--keep-days", type=int)
    parser.add_argument("--backup", help="restore, drill: the backup file")
    parser.add_argument("--drill-weekdays", help="backup: the days a drill follows it (Monday,...,Sunday)")
    parser.add_argument("--drill-request", help="backup: a drill follows it when this file exists (then removed)")
    parser.add_argument("--drill-record", help="backup, drill: where the drill's result is written (JSON)")
    parser.add_argument("--replaced", help="undo: the file restore kept (its JSON's replaced)")
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    cfg = json.loads(Path(args.config).read_text(encoding="utf-8-sig")) if args.config else {}
    for key in ("database", "dest_dir", "keep_count", "keep_days", "log", "drill_request", "drill_record"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.drill_weekdays is not None:
        cfg["drill_weekdays"] = [d.strip() for d in args.drill_weekdays.split(",") if d.strip()]
    drilled = None
    try:
        if args.command == "drill":
            if not args.backup or not cfg.get("drill_record"):
                raise ValueError("drill needs --backup FILE and --drill-record FILE")
            drilled = drill(Path(args.backup), Path(cfg["drill_record"]))
            result = {"changed": True, "drill": drilled}
            log_line(cfg.get("log"), drill_line(drilled))
            print(json.dumps(result))
            return 0 if drilled["ok"] else 1
        if not cfg.get("database"):
            raise ValueError("no database given (--database or the config's database)")
        if args.command == "backup":
            if not cfg.get("dest_dir"):
                raise ValueError("no backup directory given (--dest-dir or the config's dest_dir)")
            result = backup(Path(cfg["database"]), Path(cfg["dest_dir"]), int(cfg.get("keep_count", 14)),
                            int(cfg.get("keep_days", 30)))
            log_line(cfg.get("log"), f"prefect-backup OK sqlite file={Path(result['file']).name} bytes={result['bytes']} "
                                     f"removed={len(result['removed'])}")
            if cfg.get("drill_record") and drill_due(cfg.get("drill_weekdays") or [], cfg.get("drill_request")):
                drilled = result["drill"] = drill(Path(result["file"]), Path(cfg["drill_record"]))
                log_line(cfg.get("log"), drill_line(drilled))
                if cfg.get("drill_request"):
                    Path(cfg["drill_request"]).unlink(missing_ok=True)
        elif args.command == "undo":
            if not args.replaced:
                raise ValueError("undo needs --replaced FILE")
            result = undo(Path(args.replaced), Path(cfg["database"]))
            log_line(cfg.get("log"), f"prefect-restore UNDONE sqlite put back {Path(args.replaced).name}")
        else:
            if not args.backup:
                raise ValueError("restore needs --backup FILE")
            result = restore(Path(args.backup), Path(cfg["database"]))
            log_line(cfg.get("log"), f"prefect-restore OK sqlite from={Path(args.backup).name} replaced={result['replaced']}")
    except Exception as exc:  # every failure is one log line and exit code 1, never a traceback only
        message = f"{type(exc).__name__}: {exc}"
        log_line(cfg.get("log"), f"prefect-{args.command} FAILED sqlite {message}")
        print(json.dumps({"changed": False, "failed": True, "msg": message}))
        return 1
    print(json.dumps(result))
    return 0 if drilled is None or drilled["ok"] else 1


def drill_line(record: dict) -> str:
    return (f"prefect-drill {'OK' if record['ok'] else 'FAILED'} sqlite file={record['file']} tables={record['tables']} "
            f"rows={record['rows']} mismatches={len(record['mismatches'])} {record['message']}")


if __name__ == "__main__":
    sys.exit(main())
