"""A PostgreSQL primary and a streaming standby on loopback, for tests/integration/test_ha_standby.py (issue 18).

The primary is a cluster as the postgresql role configures one: initdb with SCRAM and a superuser password, the role's
enclave_prefect.conf and pg_hba.conf as Ansible renders them (test_postgresql_role.render), its prefect_objects.sql.
What the role does not write yet, and a standby needs, is added beside it and nowhere else: REPLICATION_SETTINGS in a
second file of conf.d, the replication line appended to pg_hba.conf, REPLICATION_SQL (the replication role and the
slot). The standby is seeded with `pg_basebackup -R -S <slot>` reading the replication password from a passfile.

Two "hosts" on one machine: the primary listens where its rendered file says (localhost, 127.0.0.1), the standby on
127.0.0.2 with a port of its own (both given on pg_ctl's command line, since pg_basebackup copies the primary's
configuration). A connection to either comes from 127.0.0.1 (Linux picks that source for the whole 127/8), so the
replication line admits 127.0.0.1/32; that it admits nothing else is checked from 127.0.0.2.

Every program runs as the postgres user when the tests run as root; no password is ever on a command line: psql reads
the superuser's from a passfile, the SQL the replication password from the environment (psql's \\getenv), and
pg_basebackup and the walreceiver theirs from the replication passfile.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from servers import PG_BIN_DIRS, REPO, Unavailable, _tail, _uid

REPLICATION_USER = "prefect_replication"
SLOT = "prefect_standby"
# What the postgresql role must add to its configuration file on both hosts of the pair (either can be the primary
# after a failover). wal_level replica is PostgreSQL's default since 10 and runbook 001's value: written anyway so
# that nobody's "minimal" lowers it. max_slot_wal_keep_size bounds the WAL a slot keeps for a standby that is gone
# (unbounded by default: a dead standby's slot fills the primary's disk).
REPLICATION_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "max_slot_wal_keep_size": "1GB",
    "hot_standby": "on",
}

# The replication role and its slot, as the role would run them (psql as the superuser, names as psql variables,
# the password from the environment, never in the server log). Idempotent.
REPLICATION_SQL = r"""
\set ON_ERROR_STOP on
\set QUIET on
\getenv password PREFECT_REPLICATION_PASSWORD
\if :{?password}
\else
  DO $$BEGIN RAISE EXCEPTION 'PREFECT_REPLICATION_PASSWORD is not set'; END$$;
\endif
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SELECT format('CREATE ROLE %I', :'user') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD %L',
              :'user', :'password') \gexec
SELECT pg_create_physical_replication_slot(:'slot') IS NULL AS unused
  WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = :'slot') \gset
"""

_SPEC = importlib.util.spec_from_file_location("enclave_database_url_ha", REPO / "plugins" / "filter" / "database_url.py")
_FILTERS = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_FILTERS)
conf_value = _FILTERS.postgresql_conf_value


def replication_hba_line(address: str, user: str = REPLICATION_USER) -> str:
    """The one pg_hba.conf line for streaming replication: the replication role from the peer's address, SCRAM."""
    return f"host    replication    {user}    {address}/32    scram-sha-256"


def pgpass_line(host: str, port: int, database: str, user: str, password: str) -> str:
    """A passfile line, ':' and '\\' escaped as libpq reads them."""
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"{host}:{port}:{database}:{user}:{escaped}\n"


def conninfo_params(conninfo: str) -> dict[str, str]:
    """A libpq keyword/value connection string as a dict (values in single quotes with backslash escapes)."""
    params, pos = {}, 0
    pattern = re.compile(r"\s*([A-Za-z_]+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S*))")
    while pos < len(conninfo.rstrip()):
        m = pattern.match(conninfo, pos)
        if not m:
            raise ValueError(f"not a libpq connection string at {pos}")
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1)] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return params


def conninfo_text(params: dict[str, str]) -> str:
    return " ".join(f"{k}='" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for k, v in params.items())


def auto_conf_settings(text: str) -> list[tuple[str, str]]:
    """postgresql.auto.conf's settings in order (name, value unquoted as PostgreSQL's GUC_scanstr does: '' and
    backslash escapes): a name set twice counts from its last line."""
    found = []
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Za-z_]+)\s*=\s*'((?:[^'\\]|''|\\.)*)'\s*$", line)
        if m:
            value = re.sub(r"''|\\(.)", lambda e: "'" if e.group(0) == "''" else
                           {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}.get(e.group(1), e.group(1)), m.group(2))
            found.append((m.group(1), value))
    return found


def conf_quote(value: str) -> str:
    """A string as a quoted postgresql.conf value (the reverse of auto_conf_settings)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def startup(port: int, address: str, user: str, database: str, source: str = "127.0.0.1",
            replication: bool = False) -> tuple[str, bytes]:
    """The server's first answer to a StartupMessage from `source`: ('R', authentication request) or ('E', error)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect((address, port))
        params = [("user", user), ("database", database)] + ([("replication", "true")] if replication else [])
        body = struct.pack("!I", 196608) + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params) + b"\0"
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        kind = sock.recv(1).decode()
        length = struct.unpack("!I", sock.recv(4))[0]
        payload = b""
        while len(payload) < length - 4:
            payload += sock.recv(length - 4 - len(payload))
        return kind, payload


def bin_dir() -> Path:
    found = [d for d in PG_BIN_DIRS if all((d / p).exists() for p in ("initdb", "pg_ctl", "pg_basebackup", "psql"))]
    if not found:
        raise Unavailable("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or _uid("postgres") is None):
        raise Unavailable("running as root needs `runuser` and the `postgres` system user")
    return found[0]


def _own(*paths: Path) -> None:
    """Files and directories the postgres user must own (when the tests run as root)."""
    if os.geteuid() == 0:
        for path in paths:
            os.chown(path, _uid("postgres"), -1)


@dataclass
class Node:
    """One PostgreSQL host of the pair: data directory root/data, its log root/postgres.log (pg_ctl's) and root/log
    (the logging collector's), the superuser's passfile root/superuser.pgpass (the test's own psql) and the
    replication passfile root/replication.pgpass (the file the role writes for the service account)."""

    name: str
    address: str
    port: int
    superuser_password: str
    bin_dir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="prefect-itest-pgha-")))
    # Settings given on pg_ctl's command line: where this host differs from the configuration it was copied from.
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        (self.root / "log").mkdir(exist_ok=True)
        _own(self.root, self.root / "log")
        su = self.root / "superuser.pgpass"
        su.write_text(pgpass_line("*", self.port, "*", "postgres", self.superuser_password))
        os.chmod(su, 0o600)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def replication_passfile(self) -> Path:
        return self.root / "replication.pgpass"

    def write_replication_passfile(self, peers: list["Node"], password: str) -> None:
        path = self.replication_passfile
        path.write_text("".join(pgpass_line(p.address, p.port, "replication", REPLICATION_USER, password) for p in peers))
        os.chmod(path, 0o600)
        _own(path)

    def run(self, program: str, *argv: str, env: dict | None = None, check: bool = True, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """A PostgreSQL program as the postgres user, `env` added to its environment."""
        cmd = [str(self.bin_dir / program), *argv]
        if os.geteuid() == 0:  # runuser keeps the environment (only HOME, SHELL, USER, LOGNAME change): no `env K=V`
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input, check=False,
                              env={**os.environ, **(env or {})}, cwd=self.root)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{program} on {self.name} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                               f"{proc.stderr[-2000:]}\n{_tail(self.root / 'postgres.log', 30)}")
        return proc

    def start(self) -> "Node":
        opts = f"-c unix_socket_directories={self.root} " + " ".join(f"-c {k}={v}" for k, v in self.overrides.items())
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-o", opts, "-w", "-t", "60",
                 "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return self.run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def psql(self, *args: str, database: str = "postgres", input: str | None = None, env: dict | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
        """psql as the superuser over TCP (the role's way on Windows), its password from the superuser's passfile."""
        cmd = [str(self.bin_dir / "psql"), "-X", "-w", "-At", "-h", self.address, "-p", str(self.port), "-U", "postgres",
               "-d", database, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, input=input, check=False,
                              env={**os.environ, "PGPASSFILE": str(self.root / "superuser.pgpass"),
                                   "PGCONNECT_TIMEOUT": "10", **(env or {})})
        if check and proc.returncode != 0:
            raise RuntimeError(f"psql {args} on {self.name} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
        return proc

    def sql(self, statement: str, database: str = "postgres") -> str:
        return self.psql("-v", "ON_ERROR_STOP=1", "-c", statement, database=database).stdout.strip()

    def show(self, setting: str) -> str:
        return self.sql(f"SHOW {setting}")

    def in_recovery(self) -> bool:
        return self.sql("SELECT pg_is_in_recovery()") == "t"

    def apply_replication_sql(self, password: str) -> None:
        self.psql("-v", f"user={REPLICATION_USER}", "-v", f"slot={SLOT}", input=REPLICATION_SQL,
                  env={"PREFECT_REPLICATION_PASSWORD": password})

    def seed_from(self, source: "Node", slot: str | None = SLOT, data: Path | None = None,
                  env: dict | None = None) -> str:
        """pg_basebackup -R -S <slot> from `source` into this host's empty data directory (or `data`), the replication
        password read from this host's passfile (or what `env` says). Returns the postgresql.auto.conf -R wrote."""
        data = data or self.data
        self.run("pg_basebackup", "-h", source.address, "-p", str(source.port), "-U", REPLICATION_USER, "-w",
                 "-D", str(data), "-R", *(["-S", slot] if slot else []), "-X", "stream", "-c", "fast",
                 env=env or {"PGPASSFILE": str(self.replication_passfile)})
        return (data / "postgresql.auto.conf").read_text()

    def follow(self, source: "Node", application_name: str) -> str:
        """Replace every primary_conninfo line of postgresql.auto.conf with the one the role should write itself: the
        primary, the replication role, this host's replication passfile (passfile=, no password), its name as
        application_name (pg_stat_replication shows it; -R's line has none) and a connect timeout. Returns it."""
        auto = self.data / "postgresql.auto.conf"
        kept = [line for line in auto.read_text().splitlines() if not re.match(r"^\s*primary_conninfo\s*=", line)]
        conninfo = conninfo_text({"host": source.address, "port": str(source.port), "user": REPLICATION_USER,
                                  "passfile": str(self.replication_passfile), "application_name": application_name,
                                  "connect_timeout": "5"})
        kept.append("primary_conninfo = " + conf_quote(conninfo))
        auto.write_text("\n".join(kept) + "\n")
        return conninfo

    def wait_streaming(self, standby: "Node", application_name: str, timeout: float = 60) -> dict:
        """On this (primary) host: the standby's walsender streaming through the slot, and the standby has replayed
        everything written before this call. Returns the row."""
        deadline, row = time.monotonic() + timeout, ""
        lsn = self.sql("SELECT pg_current_wal_lsn()")
        while time.monotonic() < deadline:
            row = self.sql("SELECT r.state, r.sync_state, s.slot_name, s.active, r.client_addr, "
                           f"r.replay_lsn >= '{lsn}'::pg_lsn FROM pg_stat_replication r "
                           f"LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE r.application_name = "
                           f"'{application_name}'")
            fields = row.split("|")
            if len(fields) == 6 and fields[0] == "streaming" and fields[3] == "t" and fields[5] == "t":
                return {"state": fields[0], "sync_state": fields[1], "slot": fields[2], "client_addr": fields[4]}
            time.sleep(0.2)
        raise RuntimeError(f"{standby.name} not streaming from {self.name} after {timeout}s: {row!r}\n"
                           f"{_tail(standby.root / 'postgres.log', 30)}")

    def destroy(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def multi_host_url(user: str, password: str, database: str, nodes: list[Node], target: str | None = "read-write") -> str:
    """The Prefect server's database URL naming every host of the pair (SQLAlchemy's asyncpg multi-host form:
    ?host=h1:p1&host=h2:p2), asyncpg picking the writable one (target_session_attrs)."""
    from urllib.parse import quote

    query = "&".join(f"host={n.address}:{n.port}" for n in nodes)
    if target:
        query += f"&target_session_attrs={target}"
    return f"postgresql+asyncpg://{quote(user, safe='')}:{quote(password, safe='')}@/{quote(database, safe='')}?{query}"
