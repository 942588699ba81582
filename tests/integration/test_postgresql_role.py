"""The postgresql role's configuration, pg_hba.conf and SQL on a real PostgreSQL 15 cluster on 127.0.0.1.

The role's templates are rendered by ansible-playbook with the role's own defaults and vars (the filter plugin
included), for an all-in-one host whose Prefect server is the database host. Linux adaptations, and only these:
postgresql_log_dir points into the test's directory (a Windows path otherwise), the host's memory is given as the
fact postgresql_facts.ps1 would read (2048 MB), and the Unix socket directory is set on the pg_ctl command line (EDB's
Windows build has none). The `include_dir` line is the one the role's win_lineinfile task writes.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from servers import REPO, PostgresCluster, PrefectServer, Unavailable, _uid, free_port, http

ROLE = REPO / "roles" / "postgresql"
SQL = ROLE / "files" / "prefect_objects.sql"
HOST = "prefect-aio.corp.local"
SUPERUSER_PASSWORD = "Super-Secret-71c3"
URL_PASSWORD = "p@ss:w/rd%#?&x y"


def _include_dir_line() -> str:
    """The line the role's config stage puts into postgresql.conf (its win_lineinfile task)."""
    for task in yaml.safe_load((ROLE / "tasks" / "config.yml").read_text()):
        args = task.get("ansible.windows.win_lineinfile") or task.get("community.windows.win_lineinfile")
        if args:
            return args["line"]
    raise AssertionError("no win_lineinfile task in roles/postgresql/tasks/config.yml")


FILES = ("enclave_prefect.conf", "pg_hba.conf", "url", "replication.pgpass")


def render(root: Path, port: int, password: str, log_dir: Path | None, extra: dict | None = None,
           inventory: dict | None = None, host: str | list[str] = HOST) -> dict:
    """The role's enclave_prefect.conf, pg_hba.conf and replication passfile, and the server URL database_url composes
    (as roles/nssm_services/vars/main.yml calls it), rendered by Ansible for `host` (HOST; inventory: another one instead
    of the all-in-one HOST): {name: text}. With a list of hosts, in one run: {host: {name: text}}, each host's own
    values from the inventory's host vars render_log_dir and render_replication_dir (log_dir None)."""
    root.mkdir(parents=True, exist_ok=True)
    hosts = host if isinstance(host, list) else [host]
    host_vars = {"ansible_connection": "local", "ansible_python_interpreter": str(REPO / ".venv/bin/python"),
                 "prefect_host_address": "127.0.0.1", "postgresql_port": port, "prefect_database_port": port,
                 "postgresql_facts": {"result": {"ram_mb": 2048}}, "prefect_database_password": password,
                 **({"postgresql_log_dir": str(log_dir)} if log_dir is not None else {}), **(extra or {})}
    # Extra vars: they win over the role defaults the play loads as vars_files.
    (root / "extra.json").write_text(json.dumps(host_vars))
    inventory = inventory or {"all": {"children": {"prefect_server": {"hosts": {HOST: None}},
                                                   "prefect_database": {"hosts": {HOST: None}}}}}
    (root / "inventory.yml").write_text(yaml.safe_dump(inventory))
    for name in hosts:
        (root / name).mkdir(exist_ok=True)
    out = str(root) + "/{{ inventory_hostname }}/"
    play = [{"name": "Render the postgresql role's files", "hosts": ":".join(hosts), "gather_facts": False,
             "vars_files": [str(REPO / "roles/common/defaults/main.yml"), str(REPO / "roles/common/vars/main/installers.yml"),
                            str(REPO / "roles/common/vars/main/windows.yml"),
                            str(ROLE / "defaults/main.yml"), str(ROLE / "vars/main.yml")],
             "tasks": [
                 # A host's own directories (inventory host vars render_log_dir, render_replication_dir): set as facts,
                 # which win over the role defaults loaded as vars_files (inventory host vars do not).
                 {"name": "Host's own directories", "when": "render_log_dir is defined", "ansible.builtin.set_fact": {
                     "postgresql_log_dir": "{{ render_log_dir }}",
                     "postgresql_replication_dir": "{{ render_replication_dir }}"}},
                 {"name": "Configuration file", "ansible.builtin.template": {
                     "src": str(ROLE / "templates/enclave_prefect.conf.j2"), "dest": out + "enclave_prefect.conf"}},
                 {"name": "Client authentication", "ansible.builtin.template": {
                     "src": str(ROLE / "templates/pg_hba.conf.j2"), "dest": out + "pg_hba.conf"}},
                 {"name": "Server URL", "no_log": True, "ansible.builtin.copy": {"dest": out + "url", "content": (
                     "{{ prefect_database_host | enclave.prefect.database_url(port=prefect_database_port, "
                     "name=prefect_database_name, user=prefect_database_user, password=prefect_database_password, "
                     "local=prefect_database_host == inventory_hostname, standby=prefect_database_standby_host, "
                     "order=groups.get('prefect_database', [])) }}")}},
                 {"name": "Replication passfile", "no_log": True, "ansible.builtin.copy": {
                     "dest": out + "replication.pgpass", "content": "{{ postgresql_replication_passfile_line }}\n"}},
             ]}]
    (root / "render.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    proc = subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "-i", str(root / "inventory.yml"),
                           "-e", f"@{root / 'extra.json'}", str(root / "render.yml")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert password not in proc.stdout + proc.stderr
    files = {name: {f: (root / name / f).read_text() for f in FILES} for name in hosts}
    return files if isinstance(host, list) else files[host]


class RoleCluster(PostgresCluster):
    """initdb (SCRAM for everything, a superuser password), then the role's files, then pg_ctl start."""

    def prepare(self) -> Path:
        """The cluster's directory (postgres may enter it, unlike pytest's); its log directory for the rendering."""
        self.root = Path(tempfile.mkdtemp(prefix="prefect-itest-pgrole-"))
        return self.root / "log"

    def start_with(self, files: dict[str, str], port: int, data_files: dict[str, bytes] | None = None) -> "RoleCluster":
        """data_files: more files for the data directory (the certificate and key the role writes there), owner-only."""
        found = [d for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True) if (d / "initdb").exists()]
        if not found:
            raise Unavailable("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed")
        self.bin_dir = found[0]
        self.port = port
        (self.root / "pw").write_text(SUPERUSER_PASSWORD + "\n")
        (self.root / "log").mkdir()
        if os.geteuid() == 0:
            for path in (self.root, self.root / "pw", self.root / "log"):
                os.chown(path, _uid("postgres"), -1)
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=scram-sha-256", "--pwfile", str(self.root / "pw"),
                  "-E", "UTF8", "--locale=C", "--no-sync")
        with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n" + _include_dir_line() + "\n")
        (data / "conf.d").mkdir()
        # The rendered files name the role's log directory: the test's, as rendered.
        (data / "conf.d" / "enclave_prefect.conf").write_text(files["enclave_prefect.conf"])
        (data / "pg_hba.conf").write_text(files["pg_hba.conf"])
        for name, content in (data_files or {}).items():
            (data / name).write_bytes(content)
            os.chmod(data / name, 0o600)
        if os.geteuid() == 0:
            for path in (data / "conf.d", data / "conf.d" / "enclave_prefect.conf", data / "pg_hba.conf",
                         *[data / name for name in data_files or {}]):
                os.chown(path, _uid("postgres"), -1)
        self._run("pg_ctl", "-D", str(data), "-l", str(self.root / "postgres.log"), "-o",
                  f"-c unix_socket_directories={self.root}", "-w", "-t", "60", "start")
        return self

    def psql(self, *args: str, user: str = "postgres", password: str = SUPERUSER_PASSWORD, database: str = "postgres",
             env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / "psql"), "-X", "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", database,
               "-At", *args]
        full_env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10", **(env or {}))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=full_env)
        if check and proc.returncode != 0:
            raise AssertionError(f"psql {args} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
        return proc

    def show(self, setting: str) -> str:
        return self.psql("-c", f"SHOW {setting}").stdout.strip()

    def apply_sql(self, password: str, apply: bool = True) -> list[str]:
        """prefect_objects.sql as the role's script runs it: names on the command line, the password in the
        environment. Returns the CHANGED lines."""
        proc = self.psql("-v", "role=prefect", "-v", "database=prefect", "-v", f"apply={'true' if apply else 'false'}",
                         "-f", str(SQL), env={"PREFECT_DB_PASSWORD": password})
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        assert all(line.startswith("CHANGED ") for line in lines), proc.stdout
        assert password not in proc.stdout + proc.stderr
        return lines

    def can_login(self, password: str) -> bool:
        return self.psql("-c", "SELECT 1", user="prefect", password=password, database="prefect", check=False).returncode == 0


def startup(port: int, user: str, source: str = "127.0.0.1", database: str = "prefect") -> tuple[str, bytes]:
    """The server's first answer to a StartupMessage sent from `source`: ('R', auth request) or ('E', error)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        body = struct.pack("!I", 196608) + b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                                                    for k, v in (("user", user), ("database", database))) + b"\0"
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        kind = sock.recv(1).decode()
        length = struct.unpack("!I", sock.recv(4))[0]
        payload = b""
        while len(payload) < length - 4:
            payload += sock.recv(length - 4 - len(payload))
        return kind, payload


@pytest.fixture(scope="module")
def role_cluster(tmp_path_factory):
    port = free_port()
    cluster = RoleCluster()
    files = render(tmp_path_factory.mktemp("pgrole-render"), port, URL_PASSWORD, cluster.prepare())
    try:
        cluster.start_with(files, port)
    except Unavailable as exc:
        cluster.stop()
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    except RuntimeError as exc:
        cluster.stop()
        pytest.fail(f"PostgreSQL did not start with the role's configuration: {exc}", pytrace=False)
    cluster.files = files
    yield cluster
    cluster.stop()


def test_cluster_runs_with_the_rendered_settings(role_cluster):
    conf = role_cluster.files["enclave_prefect.conf"]
    assert "listen_addresses = 'localhost'" in conf
    assert role_cluster.show("listen_addresses") == "localhost"
    assert role_cluster.show("port") == str(role_cluster.port)
    assert role_cluster.show("password_encryption") == "scram-sha-256"
    assert role_cluster.show("logging_collector") == "on"
    assert role_cluster.show("log_filename") == "postgresql-%Y-%m-%d.log"
    assert role_cluster.show("log_rotation_age") == "1d"
    assert role_cluster.show("ssl") == "off"
    # 2048 MB of memory: a quarter, a half, a sixteenth.
    assert role_cluster.show("shared_buffers") == "512MB"
    assert role_cluster.show("effective_cache_size") == "1GB"
    assert role_cluster.show("maintenance_work_mem") == "128MB"
    assert role_cluster.show("work_mem") == "16MB"
    assert role_cluster.show("autovacuum_vacuum_scale_factor") == "0.1"
    sources = role_cluster.psql("-c", "SELECT DISTINCT sourcefile FROM pg_settings WHERE name IN "
                                "('listen_addresses', 'shared_buffers', 'password_encryption')").stdout.split()
    assert [Path(s).name for s in sources] == ["enclave_prefect.conf"]
    assert role_cluster.psql("-c", "SELECT count(*) FROM pg_file_settings WHERE error IS NOT NULL").stdout.strip() == "0"
    assert role_cluster.psql("-c", "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL").stdout.strip() == "0"
    today = datetime.date.today().strftime("postgresql-%Y-%m-%d.log")
    assert (role_cluster.root / "log" / today).exists() or any((role_cluster.root / "log").glob("postgresql-*.log"))


def test_pg_hba_admits_prefect_from_the_server_only_with_scram(role_cluster):
    port = role_cluster.port
    kind, payload = startup(port, "prefect")
    # AuthenticationSASL (10) offering SCRAM-SHA-256 only: never md5 (5) or a cleartext password (3).
    assert kind == "R" and struct.unpack("!I", payload[:4])[0] == 10, (kind, payload)
    assert payload[4:].split(b"\0")[0] == b"SCRAM-SHA-256"
    kind, payload = startup(port, "prefect", source="127.0.0.2")
    assert kind == "E" and b"no pg_hba.conf entry" in payload and b"127.0.0.2" in payload
    kind, payload = startup(port, "postgres", source="127.0.0.2", database="postgres")
    assert kind == "E" and b"no pg_hba.conf entry" in payload
    # Another role, even with a valid SCRAM password, and prefect to another database: no entry.
    role_cluster.psql("-c", "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'other') THEN "
                      "CREATE ROLE other LOGIN PASSWORD 'Other-Secret-1'; END IF; END$$")
    kind, payload = startup(port, "other")
    assert kind == "E" and b"no pg_hba.conf entry" in payload
    kind, payload = startup(port, "prefect", database="postgres")
    assert kind == "E" and b"no pg_hba.conf entry" in payload


def test_role_sql_is_idempotent_and_applies_a_new_password(role_cluster):
    first = role_cluster.apply_sql("First-Secret-2b")
    assert "CHANGED role prefect created" in first and "CHANGED database prefect created" in first
    assert "CHANGED extension pg_trgm created" in first
    assert role_cluster.apply_sql("First-Secret-2b") == []
    assert role_cluster.can_login("First-Secret-2b")
    owner = role_cluster.psql("-c", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'prefect'").stdout
    assert owner.strip() == "prefect"
    attrs = role_cluster.psql("-c", "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                              "WHERE rolname = 'prefect'").stdout.strip()
    assert attrs == "t|f|f|f"
    ext = role_cluster.psql("-d", "prefect", "-c", "SELECT pg_get_userbyid(extowner) FROM pg_extension "
                            "WHERE extname = 'pg_trgm'").stdout.strip()
    assert ext == "prefect"
    # Check mode reports the new password and changes nothing; the real run applies it.
    assert role_cluster.apply_sql("Second-Secret-9d", apply=False) == ["CHANGED role prefect password"]
    assert role_cluster.can_login("First-Secret-2b") and not role_cluster.can_login("Second-Secret-9d")
    assert role_cluster.apply_sql("Second-Secret-9d") == ["CHANGED role prefect password"]
    assert role_cluster.can_login("Second-Secret-9d") and not role_cluster.can_login("First-Secret-2b")
    assert role_cluster.apply_sql("Second-Secret-9d") == []
    # A password stored as md5 (runbook 001's era) never passes scram-only pg_hba: it is set again, as SCRAM.
    role_cluster.psql("-c", "SET password_encryption = 'md5'", "-c", "ALTER ROLE prefect PASSWORD 'Second-Secret-9d'")
    assert not role_cluster.can_login("Second-Secret-9d")
    assert role_cluster.apply_sql("Second-Secret-9d") == ["CHANGED role prefect password"]
    assert role_cluster.can_login("Second-Secret-9d")
    stored = role_cluster.psql("-c", "SELECT rolpassword FROM pg_authid WHERE rolname = 'prefect'").stdout
    assert stored.startswith("SCRAM-SHA-256$")
    # A superuser flag given by hand is taken back.
    role_cluster.psql("-c", "ALTER ROLE prefect CREATEDB")
    assert role_cluster.apply_sql("Second-Secret-9d") == [
        "CHANGED role prefect attributes LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"]
    assert role_cluster.apply_sql("Second-Secret-9d") == []
    # The password never reached the server log, where a failing statement would be written.
    logs = "".join(p.read_text(errors="replace") for p in (role_cluster.root / "log").glob("*"))
    assert "Second-Secret-9d" not in logs and "First-Secret-2b" not in logs


@pytest.mark.slow
def test_prefect_server_migrates_and_serves_through_the_composed_url(role_cluster, prefect_venv, tmp_path):
    url = role_cluster.files["url"]
    assert url.startswith("postgresql+asyncpg://prefect:") and URL_PASSWORD not in url
    assert url.endswith(f"@127.0.0.1:{role_cluster.port}/prefect")
    role_cluster.apply_sql(URL_PASSWORD)
    assert role_cluster.apply_sql(URL_PASSWORD) == []
    server = PrefectServer(tmp_path / "server", database_url=url, services=False)
    try:
        server.start()
        status, body = server.api("POST", "/work_pools/", {"name": "pg-role-pool", "type": "process"})
        assert status == 201, body
        assert server.pool("pg-role-pool")["name"] == "pg-role-pool"
        assert http("GET", f"{server.api_url}/ready")[0] == 200
    finally:
        server.stop()
    tables = role_cluster.psql("-d", "prefect", "-c", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                               " AND tableowner = 'prefect'").stdout.strip()
    assert int(tables) > 30
    # Prefect's tables exist now: the run after the server's first start sets their autovacuum settings, once.
    assert role_cluster.apply_sql(URL_PASSWORD) == ["CHANGED autovacuum settings of events, flow_run_state, flow_run"]
    assert role_cluster.apply_sql(URL_PASSWORD) == []
    options = role_cluster.psql("-d", "prefect", "-c", "SELECT reloptions FROM pg_class WHERE relname = 'events'").stdout
    assert "autovacuum_vacuum_scale_factor=0.05" in options


TLS_PROBE = re.search(r'\$tlsSql = "(.*)"', (ROLE / "files" / "postgresql_reload.ps1").read_text()).group(1)


def test_remote_servers_get_every_address_tls_and_only_their_own_rule(tmp_path_factory):
    """A Prefect server on another host (prefect-srv02, 127.0.0.2 here): listen_addresses '*' (no address that can be
    missing at boot), ssl on with the certificate and key the role writes, pg_hba admitting that host with TLS only.
    postgresql_reload.ps1's TLS probe says yes; with a key the server cannot load, ssl still reads on but the probe
    says no (what service.yml then fails on)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    port = free_port()
    cluster = RoleCluster()
    inventory = {"all": {"children": {
        "prefect_server": {"hosts": {HOST: None, "prefect-srv02.corp.local": {"prefect_host_address": "127.0.0.2"}}},
        "prefect_database": {"hosts": {HOST: None}}}}}
    files = render(tmp_path_factory.mktemp("pgrole-remote"), port, URL_PASSWORD, cluster.prepare(),
                   extra={"prefect_database_host": HOST}, inventory=inventory)
    assert "listen_addresses = '*'" in files["enclave_prefect.conf"], files["enclave_prefect.conf"]
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    tls_files = {"server.crt": cert.public_bytes(serialization.Encoding.PEM),
                 "server.key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption())}
    try:
        cluster.start_with(files, port, data_files=tls_files)
        assert cluster.show("listen_addresses") == "*" and cluster.show("ssl") == "on"
        assert cluster.psql("-c", TLS_PROBE).stdout.strip() == "on true"
        # The other server's address: admitted with TLS only (hostssl), refused in plain text.
        plain = startup(port, "prefect", source="127.0.0.2")
        assert plain[0] == "E" and b"no pg_hba.conf entry" in plain[1], plain
        # TLS turned on by a reload (the role's first configuration of an installed server) with a key the server
        # cannot load (not the certificate's): ssl reads on, and no session gets TLS. (A reload that fails while TLS
        # already works keeps the previous certificate and key.)
        cluster.psql("-c", "ALTER SYSTEM SET ssl = off")
        cluster.psql("-c", "SELECT pg_reload_conf()")
        other = ec.generate_private_key(ec.SECP256R1())
        (cluster.root / "data" / "server.key").write_bytes(other.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        cluster.psql("-c", "ALTER SYSTEM RESET ssl")
        cluster.psql("-c", "SELECT pg_reload_conf()")
        for _ in range(50):
            probe = cluster.psql("-c", TLS_PROBE).stdout.strip()
            if probe != "on true":
                break
            time.sleep(0.1)
        assert probe == "on false", probe
    finally:
        cluster.stop()


def test_the_installs_one_time_superuser_password_is_replaced_through_psql(role_cluster):
    """superuser_password.ps1's SQL on the real server, as the script runs it (psql with the SQL on stdin, the one-time
    password in PGPASSWORD, the real one in ENCLAVE_SUPERUSER_PASSWORD): afterwards the real password logs in, the
    one-time one does not, and neither is in the server's log even with log_statement = all."""
    script = (ROLE / "files" / "superuser_password.ps1").read_text()
    sql = re.search(r"\$sql = @'\r?\n(.*?)\r?\n'@", script, re.S).group(1)
    one_time, real = "OneTime" + os.urandom(6).hex(), SUPERUSER_PASSWORD
    role_cluster.psql("-c", "ALTER SYSTEM SET log_statement = 'all'")
    role_cluster.psql("-c", "SELECT pg_reload_conf()")
    role_cluster.psql("-c", f"ALTER ROLE postgres PASSWORD '{one_time}'")
    role_cluster.psql("-c", "SELECT 'enclave-marker'", password=one_time)
    try:
        cmd = [str(role_cluster.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
               "-p", str(role_cluster.port), "-U", "postgres", "-d", "postgres"]
        proc = subprocess.run(cmd, input=sql, capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PGPASSWORD=one_time, ENCLAVE_SUPERUSER_PASSWORD=real))
        assert proc.returncode == 0, proc.stderr
        assert role_cluster.psql("-c", "SELECT 1", check=False).returncode == 0
        assert role_cluster.psql("-c", "SELECT 1", password=one_time, check=False).returncode != 0
    finally:
        role_cluster.psql("-c", "ALTER SYSTEM RESET log_statement")
        role_cluster.psql("-c", "SELECT pg_reload_conf()")
    logs = "".join(p.read_text(errors="replace") for p in (role_cluster.root / "log").glob("*"))
    logs += (role_cluster.root / "postgres.log").read_text(errors="replace")
    assert "enclave-marker" in logs, "log_statement = all was on"
    assert real not in logs
