"""Issue 18's PostgreSQL standby, for real, as the postgresql role makes it: both hosts' configuration, client
authentication and replication passfile rendered by Ansible from the role for an inventory of the pair, the role's SQL
(replication role and slot) on the primary, the standby seeded the way files/postgresql_standby.ps1 does it and
following the primary with the primary_conninfo the role writes (TLS verify-full, the passfile); a real Prefect server
and a second API replica (`--no-services`) whose database URL is the one the roles compose for the pair; a promotion
after the primary stops, after which both write again by themselves; and the old primary
seeded again as the new standby from the files the role renders for the swapped inventory (playbooks/failover.yml's
re-seed). Helpers: pgstandby.py.

The tests run in order on one module fixture (about a minute in all): each checks one stage and the later ones build
on the state the earlier ones leave.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import threading
import time
from types import SimpleNamespace
from urllib.parse import quote

import pytest

from pgstandby import (REPLICATION_USER, SLOT, Node, auto_conf_settings, bin_dir, conninfo_params, make_pki,
                       multi_host_url, startup)
from servers import REPO, PrefectServer, Unavailable, free_port, http, prefect_bin
from test_postgresql_role import render

SUPERUSER_PASSWORD = "Super-Ha-" + os.urandom(6).hex()
PREFECT_PASSWORD = "p@ss:w/rd%#?&ha " + os.urandom(4).hex()
REPLICATION_PASSWORD = "Repl:ic@tion\\" + os.urandom(6).hex()
# A promotion must not cost more than this many seconds of refused writes (measured: a few seconds, docs/benchmarks.md).
UNAVAILABLE_MAX = 30.0
FIGURE = REPO / "build" / "ha-promotion.json"

FLOW = '''
import pathlib, sys, time
from prefect import flow, task
from prefect.runtime import flow_run

@task
def before():
    return 20

@task
def after(x):
    return x + 22

@flow(name="ha-failover-flow")
def ha_flow(started: str, resume: str) -> int:
    first = before()
    pathlib.Path(started).write_text(str(flow_run.id))
    deadline = time.monotonic() + 300
    while not pathlib.Path(resume).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never resumed")
        time.sleep(0.2)
    return after(first)

if __name__ == "__main__":
    print("RESULT", ha_flow(sys.argv[1], sys.argv[2]))
'''

# Prefect's own engine (prefect/server/database/configurations.py AsyncPostgresConfiguration.engine) on each URL from
# the environment: which server answered, whether it is in recovery, and whether a write passes.
ROUTE = '''
import asyncio, json, os, sys
import sqlalchemy as sa
from prefect.server.database.configurations import AsyncPostgresConfiguration

async def probe(url):
    engine = await AsyncPostgresConfiguration(connection_url=url).engine()
    try:
        async with engine.connect() as conn:
            address, recovery = (await conn.execute(sa.text("SELECT host(inet_server_addr()), pg_is_in_recovery()"))).one()
            try:
                await conn.execute(sa.text("CREATE TEMP TABLE ha_probe (x int)"))
                await conn.execute(sa.text("INSERT INTO ha_probe VALUES (1)"))
                write = "ok"
            except Exception as exc:
                write = type(exc).__name__ + ": " + str(exc).splitlines()[0]
        return {"address": address, "in_recovery": recovery, "write": write}
    finally:
        await engine.dispose()

out = {}
for name in sys.argv[1:]:
    try:
        out[name] = asyncio.run(probe(os.environ[name]))
    except Exception as exc:
        out[name] = {"error": type(exc).__name__ + ": " + str(exc).splitlines()[0][:200]}
print(json.dumps(out))
'''


A, B = "127.0.0.1", "127.0.0.2"
SERVER = "prefect-api01.corp.local"


def _render_pair(nodes: list[Node], primary: str, standby: str, root) -> dict[str, dict[str, str]]:
    """The role's files for each of `nodes` (one Ansible run) in an inventory where `primary` streams to `standby`
    (inventory names = addresses), served to one Prefect server host; every host is seen from 127.0.0.1 (module
    docstring of pgstandby.py). {address: {file: text}}."""
    seen = {"prefect_host_address": "127.0.0.1"}
    own = {n.address: {**seen, "render_log_dir": str(n.root / "log"), "render_replication_dir": str(n.replication_dir)}
           for n in nodes}
    inventory = {"all": {"children": {"prefect_server": {"hosts": {SERVER: seen}},
                                      "prefect_database": {"hosts": {a: own.get(a, seen) for a in (A, B)}}}}}
    return render(root, nodes[0].port, PREFECT_PASSWORD, None, host=[n.address for n in nodes], inventory=inventory,
                  extra={"prefect_database_host": primary, "prefect_database_standby_host": standby,
                         "postgresql_replication_password": REPLICATION_PASSWORD,
                         "postgresql_superuser_password": SUPERUSER_PASSWORD})


def _setting(conf: str, name: str) -> str:
    return dict(auto_conf_settings(conf))[name]


@pytest.fixture(scope="module")
def ha(tmp_path_factory):
    try:
        binaries = bin_dir()
        prefect_bin()
    except Unavailable as exc:
        pytest.skip(f"standby tests skipped: {exc}")
    work = tmp_path_factory.mktemp("pgha")
    port = free_port()
    a = Node("pg-a", A, port, SUPERUSER_PASSWORD, binaries)
    b = Node("pg-b", B, port, SUPERUSER_PASSWORD, binaries)
    ca, tls = make_pki([A, B])
    (work / "ca.pem").write_bytes(ca)
    state = SimpleNamespace(a=a, b=b, work=work, server=None, replica=None, timings={}, ca=ca, tls=tls)
    try:
        state.files = _render_pair([a, b], A, B, work / "render")
        a.install(state.files[A], tls[A], ca)
        state.primary_changes = a.apply_role_sql(PREFECT_PASSWORD, REPLICATION_PASSWORD)
        b.install(state.files[B], tls[B], ca)  # the installer's cluster on the standby, configured by the role
        state.conninfo = _setting(state.files[B]["enclave_prefect.conf"], "primary_conninfo")
        started = time.monotonic()
        b.seed_like_the_role(state.conninfo)
        state.timings["basebackup_s"] = time.monotonic() - started
        state.streaming = a.wait_streaming(b, B)
        state.url = state.files[A]["url"]
        state.server = PrefectServer(work / "server", database_url=state.url,
                                     extra_env={"PGSSLROOTCERT": str(work / "ca.pem")})
        state.server.start()
        # A second API replica on the same database URL, as the roles run them under high availability.
        state.replica = PrefectServer(work / "replica", database_url=state.url, services=False,
                                      extra_env={"PGSSLROOTCERT": str(work / "ca.pem")})
        state.replica.start()
    except BaseException:
        for process in (state.server, state.replica):
            if process:
                process.stop()
        a.destroy()
        b.destroy()
        raise
    yield state
    state.replica.stop()
    state.server.stop()
    a.destroy()
    b.destroy()


def _startup_kind(node: Node, user: str, database: str, source: str = "127.0.0.1", replication: bool = False):
    kind, payload = startup(node.port, node.address, user, database, source=source, replication=replication)
    return kind, payload


def test_the_standby_streams_through_its_slot_and_only_the_replication_role_may_replicate(ha):
    a, b = ha.a, ha.b
    assert ha.primary_changes == ["role prefect created", "role prefect_replication created",
                                  f"replication slot {SLOT} created", "database prefect created",
                                  "extension pg_trgm created"], ha.primary_changes
    # The role's SQL again: nothing of replication to change (the replication role's SCRAM verifier matches its
    # password); the Prefect server has made its tables since, which get their autovacuum settings.
    again = a.apply_role_sql(PREFECT_PASSWORD, REPLICATION_PASSWORD)
    assert [c for c in again if not c.startswith("autovacuum settings of")] == [], again
    for node in (a, b):
        assert node.show("wal_level") == "replica" and node.show("max_slot_wal_keep_size") == "1GB"
        # Every setting of the role's file applies (listen_addresses '*' gives way to this machine's own address on
        # the command line, module docstring of pgstandby.py).
        assert node.sql("SELECT string_agg(name || ': ' || error, ', ') FROM pg_file_settings WHERE error IS NOT NULL "
                        "AND name <> 'listen_addresses'") == ""
        assert node.sql("SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == "0"
        rules = node.sql("SELECT type, user_name, address, auth_method FROM pg_hba_file_rules "
                         "WHERE 'replication' = ANY(database)")
        assert rules.splitlines() == [f"hostssl|{{{REPLICATION_USER}}}|127.0.0.1|scram-sha-256"]
    attrs = a.sql(f"SELECT rolcanlogin, rolreplication, rolsuper, left(rolpassword, 14) FROM pg_authid "
                  f"WHERE rolname = '{REPLICATION_USER}'")
    assert attrs == "t|t|f|SCRAM-SHA-256$"
    assert ha.streaming == {"state": "streaming", "sync_state": "async", "slot": SLOT, "client_addr": "127.0.0.1"}
    assert b.in_recovery() and (b.data / "standby.signal").exists()
    assert b.show("primary_slot_name") == SLOT
    # Over TLS, the primary's certificate verified against the enclave CA for the name in primary_conninfo.
    assert a.sql("SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_replication r ON r.pid = s.pid") in (
        "t|TLSv1.3", "t|TLSv1.2")
    assert conninfo_params(b.show("primary_conninfo"))["sslmode"] == "verify-full"
    # Replication without TLS, from anywhere else, as the Prefect role, or the replication role to a database: no
    # pg_hba.conf entry.
    for user, database, source, replication in ((REPLICATION_USER, "replication", "127.0.0.1", True),
                                                (REPLICATION_USER, "replication", "127.0.0.2", True),
                                                ("prefect", "replication", "127.0.0.1", True),
                                                (REPLICATION_USER, "prefect", "127.0.0.1", False),
                                                (REPLICATION_USER, "postgres", "127.0.0.1", False)):
        kind, payload = _startup_kind(a, user, database, source=source, replication=replication)
        assert kind == "E" and b"no pg_hba.conf entry" in payload, (user, database, source, payload)


def test_the_standby_follows_with_the_roles_conninfo_and_keeps_no_password(ha):
    """primary_conninfo is the role's (the primary by the name its certificate carries, the passfile, no password),
    from the role's file in conf.d: the seeding wrote none of its own (no -R), and the host's own files came back from
    the kept directory (its own certificate, its own pg_hba.conf)."""
    b = ha.b
    params = conninfo_params(b.show("primary_conninfo"))
    assert "password" not in params and params["passfile"] == str(b.replication_passfile), params
    assert (params["host"], params["user"], params["application_name"]) == (A, REPLICATION_USER, B)
    assert b.sql("SELECT sourcefile FROM pg_settings WHERE name = 'primary_conninfo'").endswith("conf.d/enclave_prefect.conf")
    assert "primary_conninfo" not in (b.data / "postgresql.auto.conf").read_text()
    assert (b.data / "server.crt").read_bytes() == ha.tls[B]["server.crt"]
    assert (b.data / "pg_hba.conf").read_text() == ha.files[B]["pg_hba.conf"]
    # The password is in no file of either host but the passfiles (the data directories hold SCRAM verifiers), and the
    # passfiles are the postgres user's only.
    secret = REPLICATION_PASSWORD.encode()
    for node in (ha.a, ha.b):
        for path in node.root.rglob("*"):
            if path.is_file() and path != node.replication_passfile:
                assert secret not in path.read_bytes(), path
        assert oct(node.replication_passfile.stat().st_mode & 0o777) == "0o600"


def test_a_primary_holding_the_prefect_database_is_not_seeded_over(ha):
    """The role's refusal (postgresql_standby.ps1 without Reseed): the primary, named standby by a stale inventory, is
    neither seeded over nor stopped."""
    with pytest.raises(RuntimeError, match="primary with the prefect database"):
        ha.a.seed_like_the_role(ha.conninfo)
    # Left running (with a stale inventory it is the only primary), its data untouched.
    assert ha.a.running() and not ha.a.in_recovery() and not (ha.a.root / "data.before-standby").exists()


def test_prefect_writes_to_the_primary_through_the_url_naming_both_hosts(ha):
    server, a, b = ha.server, ha.a, ha.b
    # The URL the roles compose for the pair (roles/nssm_services/vars/main.yml): both hosts, the writable one, TLS.
    assert "@/prefect?host=127.0.0.1:" in ha.url and "&host=127.0.0.2:" in ha.url
    assert ha.url.endswith("&target_session_attrs=read-write&ssl=verify-full")
    status, body = server.api("POST", "/work_pools/", {"name": "ha-before", "type": "process"})
    assert status == 201, body
    assert http("GET", f"{server.api_url}/ready")[0] == 200
    # Prefect's connections are on the primary, none on the standby; the pool reached the standby by replication.
    assert int(a.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'prefect'")) > 0
    assert b.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'prefect'") == "0"
    assert a.sql("SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity p USING (pid) "
                 "WHERE p.usename = 'prefect'") == "t"
    deadline = time.monotonic() + 20
    while b.sql("SELECT count(*) FROM work_pool WHERE name = 'ha-before'", database="prefect") != "1":
        assert time.monotonic() < deadline, "the pool did not reach the standby"
        time.sleep(0.2)


class Prober(threading.Thread):
    """Writes a new variable every 0.1 s until stopped: (start, end, HTTP status or 0) for each attempt."""

    def __init__(self, server: PrefectServer, prefix: str = "ha-probe"):
        super().__init__(daemon=True)
        self.server, self.prefix, self.records, self.done = server, prefix, [], threading.Event()

    def run(self):
        i = 0
        while not self.done.is_set():
            i += 1
            start = time.monotonic()
            try:
                status = http("POST", f"{self.server.api_url}/variables/", {"name": f"{self.prefix}-{i}", "value": i},
                              timeout=5)[0]
            except OSError:
                status = 0
            self.records.append((start, time.monotonic(), status, f"{self.prefix}-{i}"))
            time.sleep(0.1)

    def first_ok_after(self, t: float):
        return next((r for r in self.records if r[0] >= t and r[2] == 201), None)


def test_promoting_the_standby_keeps_the_server_its_data_and_a_running_flow(ha):
    """A flow runs its first task against the primary and waits; a write is attempted every 0.1 s; the primary stops
    (pg_ctl stop -m fast), the server refuses writes, the standby is promoted (pg_promote); the same server process
    writes again, the flow finishes its second task and completes. While no host is writable asyncpg raises the last
    host's ConnectionRefusedError, which Prefect answers with HTTP 500 (not 503: is_client_retryable_exception in
    prefect/server/api/server.py); the figure and the statuses go to build/ha-promotion.json (docs/benchmarks.md)."""
    server, a, b, work = ha.server, ha.a, ha.b, ha.work
    pid = server.proc.pid
    (work / "flow.py").write_text(FLOW)
    started, resume = work / "flow.started", work / "flow.resume"
    flow_log = open(work / "flow.log", "wb")
    flow = subprocess.Popen([prefect_bin("python"), str(work / "flow.py"), str(started), str(resume)],
                            env=server.client_env(work / "flow-home"), cwd=work, stdout=flow_log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    prober = Prober(server)
    # The second API replica (`--no-services`, the same URL): it must reconnect by itself too.
    replica_prober = Prober(ha.replica, prefix="ha-replica-probe")
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert flow.poll() is None, (work / "flow.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the flow did not start"
            time.sleep(0.2)
        flow_run_id = started.read_text()
        prober.start()
        replica_prober.start()
        time.sleep(1.0)
        t_stop = time.monotonic()
        a.stop("fast")
        t_stopped = time.monotonic()
        # As failover.yml would: the primary is down and the server says so (two writes refused), then promote.
        deadline = time.monotonic() + 15
        while len([r for r in prober.records if r[0] >= t_stop and r[2] != 201]) < 2:
            assert time.monotonic() < deadline, f"writes still pass with the primary stopped: {prober.records[-5:]}"
            time.sleep(0.05)
        t_promote = time.monotonic()
        assert b.psql("-c", "SELECT pg_promote(true, 60)").stdout.strip() == "t"
        t_promoted = time.monotonic()
        assert not b.in_recovery()
        deadline = time.monotonic() + 60
        while (ok := prober.first_ok_after(t_promoted)) is None:
            assert time.monotonic() < deadline, f"no write succeeded within 60 s of the promotion: {prober.records[-5:]}"
        while replica_prober.first_ok_after(t_promoted) is None:
            assert time.monotonic() < deadline, f"the replica wrote nothing within 60 s: {replica_prober.records[-5:]}"
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        prober.done.set()
        replica_prober.done.set()
        prober.join(10)
        replica_prober.join(10)
    resume.write_text("go")
    try:
        flow.wait(120)
    finally:
        if flow.poll() is None:
            os.killpg(flow.pid, 9)
        flow_log.close()
    output = (work / "flow.log").read_text()
    assert flow.returncode == 0 and "RESULT 42" in output, output[-3000:]

    records = prober.records
    failed = [r for r in records if r[2] != 201]
    # Unavailability: from the end of the last write that passed before the first refused one to the start of the
    # first one that passed after it (the probe writes every 0.1 s, so the figure is up to 0.1 s long).
    last_ok_before = max((r for r in records if r[2] == 201 and r[1] <= failed[0][0]), key=lambda r: r[1])
    first_ok = prober.first_ok_after(failed[0][0])
    unavailable = first_ok[0] - last_ok_before[1]
    statuses = {}
    for r in failed:
        statuses[str(r[2])] = statuses.get(str(r[2]), 0) + 1
    figure = {"unavailable_s": round(unavailable, 2), "stop_s": round(t_stopped - t_stop, 2),
              "stop_to_promote_s": round(t_promote - t_stop, 2), "promote_s": round(t_promoted - t_promote, 2),
              "first_write_after_promote_s": round(ok[1] - t_promoted, 2), "refused_writes": statuses,
              "writes": len(records), "basebackup_s": round(ha.timings["basebackup_s"], 2),
              "load_1min": round(os.getloadavg()[0], 2)}
    FIGURE.parent.mkdir(exist_ok=True)
    FIGURE.write_text(json.dumps(figure, indent=1))
    print("PROMOTION", json.dumps(figure))
    # ... and the same server process (no restart) writes again within UNAVAILABLE_MAX seconds.
    assert unavailable < UNAVAILABLE_MAX, figure
    assert server.proc.pid == pid and server.proc.poll() is None
    assert http("GET", f"{server.api_url}/ready")[0] == 200
    # Everything acknowledged before the failover is there: the pool, the flow run, every variable that got a 201.
    assert server.pool("ha-before") is not None
    status, run = server.api("GET", f"/flow_runs/{flow_run_id}")
    assert status == 200 and run["state"]["type"] == "COMPLETED", run
    for probe in (prober, replica_prober):
        acknowledged = {r[3] for r in probe.records if r[2] == 201}
        status, found = server.api("POST", "/variables/filter",
                                   {"variables": {"name": {"like_": probe.prefix + "-"}}, "limit": 200})
        assert status == 200 and acknowledged <= {v["name"] for v in found}, (len(acknowledged), len(found))
    assert int(b.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'prefect'")) > 0


def test_the_old_primary_is_seeded_again_as_the_new_standby(ha):
    """failover.yml's "re-seed on request", the cheap way: a fresh pg_basebackup from the new primary (a Prefect
    database is small; pg_rewind would also need wal_log_hints or data checksums and a superuser-like login). The role's
    files for the swapped inventory (127.0.0.2 primary, 127.0.0.1 its standby) go into the stopped old primary's data
    directory first (its config stage), then the seeding keeps them."""
    server, a, b = ha.server, ha.a, ha.b
    assert not a.running()
    # The role's SQL on the new primary: only the slot is new (slots are not replicated; the roles are).
    assert b.apply_role_sql(PREFECT_PASSWORD, REPLICATION_PASSWORD) == [f"replication slot {SLOT} created"]
    files = _render_pair([a], B, A, ha.work / "render-swapped")[A]
    a.configure(files, ha.tls[A], ha.ca)
    kept = a.seed_like_the_role(_setting(files["enclave_prefect.conf"], "primary_conninfo"), reseed=True)
    assert (kept / "PG_VERSION").exists()  # the old primary's data, kept
    assert a.in_recovery()
    assert conninfo_params(a.show("primary_conninfo"))["host"] == B
    assert b.wait_streaming(a, A)["slot"] == SLOT
    status, body = server.api("POST", "/work_pools/", {"name": "ha-after-reseed", "type": "process"})
    assert status == 201, body
    deadline = time.monotonic() + 20
    while a.sql("SELECT count(*) FROM work_pool WHERE name IN ('ha-before', 'ha-after-reseed')",
                database="prefect") != "2":
        assert time.monotonic() < deadline, "the new standby does not receive the new primary's writes"
        time.sleep(0.2)


def _database_url_errors():
    """plugins/filter/database_url.py's check of prefect_database_url, loaded from its file (it imports only ansible)."""
    spec = importlib.util.spec_from_file_location("enclave_database_url", REPO / "plugins" / "filter" / "database_url.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.database_url_errors


def test_prefects_engine_picks_the_writable_host_only_with_target_session_attrs(ha):
    """The old primary is a standby again and first in the URL: Prefect's own engine (the server's code path) goes past
    it to the writable host with target_session_attrs=read-write, and stays on it (writes refused) without."""
    a, b = ha.a, ha.b
    urls = {
        "URL_READ_WRITE": ha.url,
        "URL_ANY": multi_host_url("prefect", PREFECT_PASSWORD, "prefect", [a, b], target=None),
        "URL_COMMA_FORM": (f"postgresql+asyncpg://prefect:{quote(PREFECT_PASSWORD, safe='')}@/prefect?host={a.address},"
                           f"{b.address}&port={a.port},{b.port}&target_session_attrs=read-write"),
        "URL_LIBPQ_AUTHORITY": (f"postgresql+asyncpg://prefect:{quote(PREFECT_PASSWORD, safe='')}@{a.address}:{a.port},"
                                f"{b.address}:{b.port}/prefect?target_session_attrs=read-write"),
    }
    proc = subprocess.run([prefect_bin("python"), "-c", ROUTE, *urls], capture_output=True,
                          env={**os.environ, **urls, "PGSSLROOTCERT": str(ha.work / "ca.pem")},
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["URL_READ_WRITE"] == {"address": B, "in_recovery": False, "write": "ok"}, out
    assert out["URL_COMMA_FORM"] == {"address": B, "in_recovery": False, "write": "ok"}, out
    assert out["URL_ANY"]["address"] == A and out["URL_ANY"]["in_recovery"] is True, out
    assert "read-only transaction" in out["URL_ANY"]["write"], out
    # libpq's host1:port1,host2:port2 in the authority is no URL SQLAlchemy reads.
    assert "error" in out["URL_LIBPQ_AUTHORITY"], out
    # prefect_database_url's check (plugins/filter/database_url.py) takes the two forms that reach the writable host and
    # refuses the two that do not.
    check = _database_url_errors()
    assert [name for name, url in urls.items() if not check(url)] == ["URL_READ_WRITE", "URL_COMMA_FORM"]
    assert PREFECT_PASSWORD not in proc.stdout + proc.stderr
    # Neither password, nor the URL-encoded one, in the Prefect server's or the flow's logs (the failover's tracebacks
    # included).
    secrets_ = [p.encode() for p in (PREFECT_PASSWORD, quote(PREFECT_PASSWORD, safe=""), REPLICATION_PASSWORD)]
    logs = [ha.server.log_path, ha.work / "flow.log"]
    assert all(path.exists() for path in logs)
    for path in logs:
        assert not [s for s in secrets_ if s in path.read_bytes()], path
