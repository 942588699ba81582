"""A PostgreSQL primary and a streaming standby on loopback, for tests/integration/test_ha_standby.py (issue 18), as the
postgresql role makes them: each host's enclave_prefect.conf, pg_hba.conf and replication passfile rendered by Ansible
for inventories of the pair (test_postgresql_role.render), the role's prefect_objects.sql with its replication section
on the primary, and the standby seeded the way files/postgresql_standby.ps1 does it (seed_like_the_role).

Two "hosts" on one machine, named by their addresses in the inventory (127.0.0.1 and 127.0.0.2: the names their
certificates carry, so that the standby's sslmode=verify-full holds), one port, each listening on its own address
(given on pg_ctl's command line, since the role writes listen_addresses '*'). A connection to either comes from
127.0.0.1 (Linux picks that source for the whole 127/8), so each host's prefect_host_address in the inventory is
127.0.0.1: the replication line admits 127.0.0.1/32; that it admits nothing else is checked from 127.0.0.2.

Every program runs as the postgres user when the tests run as root; no password is ever on a command line: psql reads
the superuser's from a passfile, the role's SQL the replication password from the environment (psql's \\getenv), and
pg_basebackup and the walreceiver theirs from the role's replication passfile.
"""
from __future__ import annotations

import datetime
import importlib.util
import ipaddress
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

import yaml

from servers import PG_BIN_DIRS, REPO, Unavailable, _tail, _uid

ROLE = REPO / "roles" / "postgresql"
_DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
REPLICATION_USER = _DEFAULTS["postgresql_replication_user"]
SLOT = _DEFAULTS["postgresql_replication_slot"]
# The files of the host that files/postgresql_standby.ps1 puts back after pg_basebackup (its KeepFiles default).
KEEP_FILES = re.findall(r"'([^']+)'", re.search(r"\[string\[\]\]\$KeepFiles = @\(([^)]*)\)",
                                               (ROLE / "files" / "postgresql_standby.ps1").read_text()).group(1))

_SPEC = importlib.util.spec_from_file_location("enclave_database_url_ha", REPO / "plugins" / "filter" / "database_url.py")
_FILTERS = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_FILTERS)
conf_value = _FILTERS.postgresql_conf_value


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
    """One PostgreSQL host of the pair, named by its address: data directory root/data, its log root/postgres.log
    (pg_ctl's) and root/log (the logging collector's, the role's postgresql_log_dir), the superuser's passfile
    root/superuser.pgpass (the test's own psql), and root/replication (the role's postgresql_replication_dir: its
    replication passfile and the enclave CA)."""

    name: str
    address: str
    port: int
    superuser_password: str
    bin_dir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="prefect-itest-pgha-")))
    def __post_init__(self):
        for sub in ("log", "replication"):
            (self.root / sub).mkdir(exist_ok=True)
            _own(self.root / sub)
        _own(self.root)
        su = self.root / "superuser.pgpass"
        su.write_text(pgpass_line("*", self.port, "*", "postgres", self.superuser_password))
        os.chmod(su, 0o600)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def replication_dir(self) -> Path:
        return self.root / "replication"

    @property
    def replication_passfile(self) -> Path:
        return self.replication_dir / "replication.pgpass"

    def write(self, path: Path, content: str | bytes, mode: int = 0o600) -> None:
        """A file the role writes, the postgres user's (the service account's) only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        os.chmod(path, mode)
        _own(path.parent, path)

    def install(self, files: dict[str, str], tls: dict[str, bytes], ca: bytes) -> "Node":
        """What the installer and the role's config stage leave: initdb (SCRAM, the superuser password from a file),
        the include_dir line, the role's rendered enclave_prefect.conf and pg_hba.conf, this host's certificate and key,
        the replication passfile and the CA (tasks/replication.yml); then started."""
        from test_postgresql_role import _include_dir_line
        pwfile = self.root / "pw"
        self.write(pwfile, self.superuser_password + "\n")
        try:
            self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256", "--pwfile", str(pwfile),
                     "-E", "UTF8", "--locale=C", "--no-sync")
        finally:
            pwfile.unlink()
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n" + _include_dir_line() + "\n")
        self.configure(files, tls, ca)
        return self.start()

    def configure(self, files: dict[str, str], tls: dict[str, bytes], ca: bytes) -> None:
        """The role's config stage and replication files for this host (in the data directory as it is now)."""
        self.write(self.data / "conf.d" / "enclave_prefect.conf", files["enclave_prefect.conf"])
        self.write(self.data / "pg_hba.conf", files["pg_hba.conf"])
        for name, content in tls.items():
            self.write(self.data / name, content)
        self.write(self.replication_passfile, files["replication.pgpass"])
        self.write(self.replication_dir / "root.crt", ca)

    def seed_like_the_role(self, conninfo: str, reseed: bool = False) -> Path:
        """files/postgresql_standby.ps1 step by step: a data directory that holds the Prefect database and is not in
        recovery is refused and left running, one that is not a fresh cluster refused (unless reseed); stop; the data directory renamed and kept; pg_basebackup through the slot
        with the role's conninfo (no password, the passfile); the host's own KeepFiles back from the kept directory;
        standby.signal; start. Returns the kept directory."""
        if not reseed:
            state = self.sql("SELECT pg_is_in_recovery()::text || '|' || EXISTS (SELECT 1 FROM pg_database WHERE "
                             "datname = 'prefect')::text")
            if state == "false|true":  # left running: it may be the only primary
                raise RuntimeError("This host is a primary with the prefect database, not a standby")
            if state != "false|false":
                raise RuntimeError(f"the server did not say what its data directory holds: {state!r}")
        self.stop()
        kept = self.root / "data.before-standby"
        os.rename(self.data, kept)
        self.data.mkdir(mode=0o700)
        _own(self.data)
        self.run("pg_basebackup", "-D", str(self.data), "-X", "stream", "-c", "fast", "-S", SLOT, "-w",
                 "-d", conninfo, env={"PGPASSFILE": str(self.replication_passfile)})
        for name in KEEP_FILES:
            source, target = kept / name, self.data / name
            if source.exists():
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                if source.is_dir():
                    shutil.copytree(source, target)
                else:
                    shutil.copy2(source, target)
                _own(target, *(target.rglob("*") if target.is_dir() else []))
        self.write(self.data / "standby.signal", "")
        self.start()
        return kept

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
        # Two hosts on one machine and one port: each listens on its own address (the role writes '*').
        opts = f"-c unix_socket_directories={self.root} -c listen_addresses={self.address}"
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

    def apply_role_sql(self, prefect_password: str, replication_password: str | None = None) -> list[str]:
        """The role's prefect_objects.sql as prefect_objects.ps1 runs it (names as psql variables, passwords in the
        environment), with its replication section on a primary: the CHANGED lines."""
        sql = (ROLE / "files" / "prefect_objects.sql").read_text()
        args = ["-v", "role=prefect", "-v", "database=prefect", "-v", "apply=true"]
        env = {"PREFECT_DB_PASSWORD": prefect_password}
        if replication_password is not None:
            args += ["-v", f"replication_role={REPLICATION_USER}", "-v", f"slot={SLOT}"]
            env["PREFECT_REPLICATION_PASSWORD"] = replication_password
        out = self.psql(*args, input=sql, env=env).stdout
        return [line[8:] for line in out.splitlines() if line.startswith("CHANGED ")]

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


def make_pki(addresses: list[str]) -> tuple[bytes, dict[str, dict[str, bytes]]]:
    """An enclave CA (prefect_api_ca_cert) and, for each address, the server.crt and server.key the role writes into
    that host's data directory: issued by the CA for the address (IP SAN), as verify-full checks it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Enclave test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    issued = {}
    for address in addresses:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        issued[address] = {"server.crt": cert.public_bytes(serialization.Encoding.PEM),
                           "server.key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption())}
    return ca.public_bytes(serialization.Encoding.PEM), issued
