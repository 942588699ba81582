"""Consistent online copy of Prefect's SQLite database, retention, and restore (roles/backup).

Runs with the Prefect venv's python on the server host, standard library only:

  backup  --config FILE                  the scheduled task; FILE is the JSON the role writes (keys as the options)
  backup  --database DB --dest-dir DIR [--keep-count N] [--keep-days D] [--log FILE]
  restore --backup FILE --database DB  [--log FILE]
  undo    --replaced FILE --database DB [--log FILE]

backup: sqlite3's online backup API copies the database in one step, i.e. inside one read transaction. Prefect runs
SQLite in WAL mode, where a reader never blocks the server's writers, so the copy is a consistent snapshot taken
while the server writes. The copy is written as <name>.partial, switched to a rollback journal (one self-contained
file), checked with PRAGMA integrity_check and only then renamed to prefect-sqlite-<UTC time>.db. Then retention:
the newest keep-count copies are kept, and of those the ones older than keep-days are deleted, except the newest.

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
    try:
        check = integrity(partial)
        if check != "ok":
            raise RuntimeError(f"the copy fails PRAGMA integrity_check: {check[:300]}")
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    removed = []
    for path in retention(dest_dir, keep_count, keep_days, now):
        path.unlink()
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
    parser.add_argument("command", choices=["backup", "restore", "undo"])
    parser.add_argument("--config", help="JSON file with database, dest_dir, keep_count, keep_days, log")
    parser.add_argument("--database")
    parser.add_argument("--dest-dir")
    parser.add_argument("--keep-count", type=int)
    parser.add_argument("--keep-days", type=int)
    parser.add_argument("--backup", help="restore: the backup file")
    parser.add_argument("--replaced", help="undo: the file restore kept (its JSON's replaced)")
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    cfg = json.loads(Path(args.config).read_text(encoding="utf-8-sig")) if args.config else {}
    for key in ("database", "dest_dir", "keep_count", "keep_days", "log"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    try:
        if not cfg.get("database"):
            raise ValueError("no database given (--database or the config's database)")
        if args.command == "backup":
            if not cfg.get("dest_dir"):
                raise ValueError("no backup directory given (--dest-dir or the config's dest_dir)")
            result = backup(Path(cfg["database"]), Path(cfg["dest_dir"]), int(cfg.get("keep_count", 14)),
                            int(cfg.get("keep_days", 30)))
            log_line(cfg.get("log"), f"prefect-backup OK sqlite file={Path(result['file']).name} bytes={result['bytes']} "
                                     f"removed={len(result['removed'])}")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
