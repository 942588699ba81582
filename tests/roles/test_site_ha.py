"""site.yml over inventories/ha on simulated hosts (one state file per host, test_site_distributed.Hosts): two API
replicas each with its front door, a background-services host, a PostgreSQL primary and its streaming standby, and a
worker host, with high availability on.

The replicas run `prefect server start --no-services` with every in-memory backend set to Redis and migrations off at
start; the schema is made once, by the first replica's service program, before any replica starts; the services host
runs `prefect server services start` with the same backends and database; PostgreSQL admits both replicas and the
services host; prefect-db03 is seeded once from prefect-db02 and streams from it, and the servers' database URL names
both; the worker reaches the machine path. A re-run changes nothing and no secret appears. The real processes
with this environment are proven in tests/integration/test_ha_replicas.py.
"""
from __future__ import annotations

import copy
import hashlib
import shutil
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from rolerun import PINNED_PREFECT, REPO
from simhost import INSTALLER, LOCK, PROXY_CERT_THUMBPRINT, SECRETS, default_state, host_results, make_bundle, reached
from test_postgresql import _pem
from test_verify import _cert
from test_site_distributed import FRAGMENTS, Hosts

pytestmark = pytest.mark.simulated

API1, API2, SVC, DB, STANDBY, WRK = (f"prefect-{n}.corp.local" for n in ("api01", "api02", "svc01", "db02", "db03", "wrk04"))
HOSTS = [API1, API2, SVC, DB, STANDBY, WRK]
ADDRESSES = {API1: "10.20.2.11", API2: "10.20.2.12", SVC: "10.20.2.21", DB: "10.20.2.31", STANDBY: "10.20.2.32",
             WRK: "10.20.2.41"}
CA = REPO / "tests" / "fixtures" / "roles" / "enclave-ca.pem"
REDIS_SECRET = "Redis-Secret-5a7c"
# The replication role's password (inventories/ha group_vars/all/ha.yml reads vault_postgresql_replication_password).
REPLICATION_SECRET = "PgRepl-Secret-8b16"
# Every secret of the run that must appear in no output (the Vault values' password parts, as test_site_distributed.py).
OUTPUT_SECRETS = (*FRAGMENTS, REDIS_SECRET, REPLICATION_SECRET)
DATA_DIR = "d:\\postgresql\\17\\data"
BACKENDS = {"PREFECT_SERVER_EVENTS_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE": "prefect_redis.cleanup_queue",
            "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ansible_env):
    root = tmp_path_factory.mktemp("ha")
    inventories = root / "inventories"
    shutil.copytree(REPO / "inventories", inventories, symlinks=True)
    (inventories / "ha" / "group_vars" / "all" / "vault.yml").write_text(yaml.safe_dump(
        {**SECRETS, "vault_prefect_redis_password": REDIS_SECRET, "vault_postgresql_replication_password": REPLICATION_SECRET,
         "vault_prefect_database_url": ""}))
    states = {h: {**default_state(h.split(".")[0].upper()), "address": ADDRESSES[h]} for h in HOSTS}
    sim = Hosts(root, ansible_env, states)
    extra = {"prefect_bundle_dir": str(make_bundle(root)), "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest(),
             "iis_proxy_certificate_thumbprint": PROXY_CERT_THUMBPRINT, "prefect_api_ca_cert": str(CA), **_pem(root),
             # The control node's question to Redis is test_preflight.py's (a real Redis on loopback): redis.corp.local
             # here would be looked up outside the machine.
             "nssm_services_preflight_redis": False}
    inventory = str(inventories / "ha" / "hosts.yml")
    first = sim.run(extra, limit="all", inventory=inventory)
    states = {h: sim.host_state(h) for h in HOSTS}
    second = sim.run(extra, limit="all", inventory=inventory)
    final = {h: sim.host_state(h) for h in HOSTS}
    return {"first": first, "states": states, "second": second, "final": final, "root": root, "extra": extra,
            "inventory": inventory}


def test_replicas_serve_the_api_only_with_redis_backends(runs):
    for host in (API1, API2):
        service = runs["states"][host]["services"]["PrefectServer"]
        assert service["registry"]["AppParameters"].endswith("--no-services"), host
        env = service["environment"]
        assert {k: env.get(k) for k in BACKENDS} == BACKENDS, host
        assert env["PREFECT_REDIS_MESSAGING_HOST"] == "redis.corp.local" and env["PREFECT_REDIS_MESSAGING_DB"] == "0"
        assert env["PREFECT_REDIS_WORKER_CLEANUP_QUEUE_DB"] == "2"
        assert env["PREFECT_SERVER_DOCKET_URL"] == f"redis://:{REDIS_SECRET}@redis.corp.local:6379/1"
        _assert_url_names_the_pair(env["PREFECT_SERVER_DATABASE_CONNECTION_URL"])


def _assert_url_names_the_pair(url):
    """asyncpg's multi-host form: no host after '@', the primary then its standby in ?host=, and only a writable one
    accepted (after a failover, the promoted standby); TLS verified against the enclave CA."""
    parts = urlsplit(url)
    assert parts.scheme == "postgresql+asyncpg" and parts.netloc.endswith("@") and parts.path == "/prefect", url
    query = parse_qs(parts.query)
    assert query["host"] == [f"{DB}:5432", f"{STANDBY}:5432"], url
    assert query["target_session_attrs"] == ["read-write"] and query["ssl"] == ["verify-full"], url


def test_the_services_host_runs_the_background_services_on_the_same_backends(runs):
    services = runs["states"][SVC]["services"]
    assert set(services) == {"PrefectServices"}
    service = services["PrefectServices"]
    assert service["registry"]["AppParameters"].endswith("-m prefect server services start")
    env, replica = service["environment"], runs["states"][API1]["services"]["PrefectServer"]["environment"]
    shared = [k for k in replica if k.startswith(("PREFECT_REDIS_", "PREFECT_SERVER_EVENTS_", "PREFECT_SERVER_CONCURRENCY_",
                                                   "PREFECT_SERVER_DOCKET_", "PREFECT_SERVER_WORKER_CHANNEL_"))]
    assert shared and {k: env.get(k) for k in shared} == {k: replica[k] for k in shared}
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == replica["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    _assert_url_names_the_pair(env["PREFECT_SERVER_DATABASE_CONNECTION_URL"])
    # The retention the replicas no longer run: the vacuum service is a background service.
    assert env["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"].startswith("events")


def test_the_schema_is_made_once_by_the_first_replica_before_any_start(runs):
    tasks = [(h, n, r) for h in HOSTS for n, r in reached(runs["first"][1], h)
             if n.endswith("Database schema is made once before the first start of the replicas")]
    assert [(h, bool(r.get("changed"))) for h, _n, r in tasks] == [(API1, True)], tasks
    assert not [n for h in HOSTS for n, r in reached(runs["second"][1], h)
                if n.endswith("Database schema is made once before the first start of the replicas")]


def test_postgresql_admits_the_replicas_and_the_services_host(runs):
    """On both hosts of the pair: the standby serves the same servers once promoted."""
    for db in (DB, STANDBY):
        hba = runs["states"][db]["pg"]["hba"]
        text = str(hba)
        for host in (API1, API2, SVC):
            assert ADDRESSES[host] + "/32" in text, (db, host, hba)


def test_the_standby_is_seeded_once_from_the_primary_and_in_recovery(runs):
    """The first run seeds prefect-db03 from prefect-db02 (pg_basebackup through the slot; its own data directory kept,
    renamed) and starts it as a standby that streams; the second finds standby.signal and does nothing."""
    first, final = runs["states"][STANDBY], runs["final"][STANDBY]
    seeded = [r for r in final["pg_standby_runs"] if r["seeded"]]
    assert len(seeded) == 1 and seeded[0]["primary"] == DB and not seeded[0]["error"], final["pg_standby_runs"]
    assert final["pg_standby_runs"] == first["pg_standby_runs"] + [
        {"reseed": False, "seeded": False, "kept": "", "error": "", "receiver": "streaming"}], final["pg_standby_runs"]
    assert seeded[0]["receiver"] == "streaming"
    assert seeded[0]["kept"].lower().startswith(DATA_DIR + ".before-standby-")
    assert seeded[0]["kept"].lower() in final["dirs"]
    pg = final["pg"]
    assert pg["in_recovery"] and pg["seeded_from"] == DB
    assert DATA_DIR + "\\standby.signal" in final["files"]
    assert final["services"]["postgresql-x64-17"]["running"]
    # The standby's catalog is the primary's (the Prefect database, its roles); it has no slot of its own, and the Prefect
    # objects were never made on it (read-only).
    assert pg["databases"]["prefect"] == runs["final"][DB]["pg"]["databases"]["prefect"]
    assert pg["slots"] == {} and pg["roles"]["prefect_replication"]["replication"]
    objects = "Prefect role, its database and pg_trgm are as configured"
    assert not [n for n, _r in reached(runs["first"][1], STANDBY) if n.endswith(objects)]
    assert [n for n, _r in reached(runs["first"][1], DB) if n.endswith(objects)]
    # It follows the primary by name, with the passfile and the CA beside it (the password in the passfile only).
    conninfo = pg["loaded"]["primary_conninfo"]
    assert "host='prefect-db02.corp.local'" in conninfo and "sslmode='verify-full'" in conninfo
    assert REPLICATION_SECRET not in conninfo and pg["loaded"]["primary_slot_name"] == "prefect_standby"
    assert final["texts"]["d:\\postgresql\\17\\replication\\replication.pgpass"] == (
        f"*:5432:replication:prefect_replication:{REPLICATION_SECRET}\n")


def test_the_primary_has_the_slot_and_the_replication_role(runs):
    pg = runs["final"][DB]["pg"]
    assert not pg.get("in_recovery")
    assert set(pg["slots"]) == {"prefect_standby"}
    role = pg["roles"]["prefect_replication"]
    assert {k: role[k] for k in ("login", "replication", "superuser", "createdb", "createrole", "bypassrls")} == {
        "login": True, "replication": True, "superuser": False, "createdb": False, "createrole": False, "bypassrls": False}
    assert role["password_sha"] == hashlib.sha256(REPLICATION_SECRET.encode()).hexdigest()
    # Replication settings on both hosts, taken at their start: nothing waits for a restart.
    for db in (DB, STANDBY):
        postmaster = runs["final"][db]["pg"]["postmaster"]
        assert (postmaster["wal_level"], postmaster["max_wal_senders"], postmaster["hot_standby"]) == ("replica", "10", "on")


def test_the_replication_line_of_each_host_names_the_other_host_only(runs):
    for db, other in ((DB, STANDBY), (STANDBY, DB)):
        lines = [e for e in runs["final"][db]["pg"]["hba"] if e["database"] == "replication"]
        assert lines == [{"type": "hostssl", "database": "replication", "user": "prefect_replication",
                          "address": ADDRESSES[other] + "/32", "method": "scram-sha-256"}], (db, lines)


def test_rerun_changes_nothing_and_no_secret_is_shown(runs):
    data = runs["second"][1]
    changed = {h: [n for n, r in reached(data, h) if r.get("changed")] for h in HOSTS}
    assert changed == {h: [] for h in HOSTS}, changed
    for proc, _data in (runs["first"], runs["second"]):
        for secret in OUTPUT_SECRETS:
            assert secret not in proc.stdout + proc.stderr, f"{secret} leaked"


def test_a_standby_that_holds_the_prefect_database_out_of_recovery_is_refused(runs, tmp_path, ansible_env):
    """prefect-db03 promoted (pg_promote: recovery ends, standby.signal is removed) while the inventory still names it
    the standby: site.yml on it refuses to seed it again over the Prefect database, with the script's message, leaves
    its data directory as it is and fences it (its PostgreSQL stopped and disabled: no second primary)."""
    states = copy.deepcopy(runs["final"])
    promoted = states[STANDBY]
    del promoted["files"][DATA_DIR + "\\standby.signal"]
    promoted["pg"]["in_recovery"] = False
    sim = Hosts(tmp_path, ansible_env, states)
    proc, data = sim.run(runs["extra"], limit=STANDBY, inventory=runs["inventory"], expect_rc=2)
    failed = [(n.split(" : ", 1)[-1], r) for n, r in host_results(data, STANDBY) if r.get("failed")]
    assert [n for n, _r in failed] == ["Standby seeding failures are shown"], failed
    assert failed[0][1]["msg"] == (
        f"{STANDBY}: This host is a primary with the prefect database, not a standby; its PostgreSQL is now stopped and "
        "disabled so that it cannot serve as a second primary. If playbooks/failover.yml promoted it, swap "
        "prefect_database_host and prefect_database_standby_host in the inventory; to make it the standby of the other "
        f"host, run this playbook with --limit {STANDBY} -e postgresql_reseed=true.")
    after = sim.host_state(STANDBY)
    assert after["pg_standby_runs"][-1]["error"].startswith("This host is a primary with the prefect database")
    assert [d for d in after["dirs"] if ".before-standby-" in d] == [d for d in promoted["dirs"] if ".before-standby-" in d]
    assert {k: v for k, v in after["files"].items() if k.startswith(DATA_DIR + "\\")} == {
        k: v for k, v in promoted["files"].items() if k.startswith(DATA_DIR + "\\")}
    service = after["services"]["postgresql-x64-17"]
    assert not service["running"] and service["start_mode"] == "disabled", service
    assert sim.host_state(DB) == states[DB]
    for secret in OUTPUT_SECRETS:
        assert secret not in proc.stdout + proc.stderr, f"{secret} leaked"


@pytest.fixture(scope="module")
def upgraded(runs, tmp_path_factory, ansible_env):
    """upgrade.yml over the converged HA hosts (copies of their states) with a bundle whose lock changed."""
    root = tmp_path_factory.mktemp("ha-upgrade")
    states = copy.deepcopy(runs["states"])
    states[API1] = {**states[API1], "pools": {"windows-process": {"type": "process", "is_paused": False, "status": "READY",
                                                                  "workers": []}}, "flow_runs": []}
    sim = Hosts(root, ansible_env, states)
    make_bundle(root, LOCK + b"extra==9.9 --hash=sha256:9999\n")
    extra = dict(runs["extra"], prefect_bundle_dir=str(root / "bundle"), prefect_venv_check_committed_lock=False)
    proc, data = sim.run(extra, playbook="upgrade.yml", limit="all", inventory=runs["inventory"])
    return proc, data, {h: sim.host_state(h) for h in HOSTS}


def test_upgrade_stops_every_replica_and_the_services_before_the_migration_and_switches_them(upgraded, runs):
    """The background services run against the same database: they stop with the replicas before the one migration
    and run the new venv after it, as the replicas do."""
    proc, data, states = upgraded
    order = [(h, name.split(" : ", 1)[-1], r) for play in data["plays"] for t in play["tasks"]
             for h, r in t["hosts"].items() for name in [t["task"]["name"]]]
    stops = {h: i for i, (h, n, r) in enumerate(order) if n == "Servers and background services are stopped"
             and r.get("changed")}
    migration = [i for i, (h, n, r) in enumerate(order) if n.startswith("Database schema is migrated once") and not r.get("skipped")]
    assert set(stops) == {API1, API2, SVC}, proc.stdout[-6000:]
    assert len(migration) == 1 and max(stops.values()) < migration[0]
    link = "c:\\prefect\\venvs\\current"
    for host, name in ((API1, "PrefectServer"), (API2, "PrefectServer"), (SVC, "PrefectServices")):
        assert states[host]["junctions"][link] != runs["states"][host]["junctions"][link], host
        service = states[host]["services"][name]
        assert service["running"], (host, name)
        assert service["registry"]["Application"].startswith(states[host]["junctions"][link]), (host, name)
        assert service["environment"]["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] == "false", host
    assert "FAILED" not in proc.stdout


def _verify_states(upgraded) -> dict:
    """The upgraded hosts with what verify meets beyond the deploy (test_verify.py converged): the operator's control
    node in the people's network, the proxies' certificate, the operator's account; the pools live in the one database
    both replicas read; the enclave's Redis as the server hosts reach it (sim_verify.py): 7.0, standalone."""
    states = copy.deepcopy(upgraded[2])
    pools = {"windows-etl": {"type": "process", "is_paused": False, "status": "READY",
                             "workers": [{"name": "PrefectWorker-etl-prefect-wrk04", "status": "ONLINE"}]}}
    for host in (API1, API2):
        states[host].update(control_node_address="10.30.0.15", certificate_details=_cert(400.5),
                            domain_accounts={"CORP\\operator": "Op-Secret-77d1"}, pools=pools,
                            redis_endpoints={"redis.corp.local:6379": {"version": "7.0.15", "password": REDIS_SECRET}})
    return states


def _verify_rows(sim, runs, limit: str = "all", expect_rc: int = 2) -> tuple[dict, list[str], object]:
    extra = dict(runs["extra"], prefect_bundle_dir=str(runs["root"] / "bundle"))
    proc, data = sim.run(extra, playbook="verify.yml", limit=limit, inventory=runs["inventory"], expect_rc=expect_rc)
    table = [r for h in HOSTS for n, r in host_results(data, h) if n == "Verify report"][0]["msg"]
    rows = {(line.split(" | ")[0].strip(), line.split(" | ")[1].strip()): line.split(" | ")[2] for line in table[1:]}
    return rows, table, proc


def test_verify_shows_each_replica_and_the_services_host(upgraded, runs, tmp_path, ansible_env):
    """verify.yml after the upgrade: one row per API replica (its services steady, its API healthy on loopback with the
    inventory's release) and one for the background-services host, and Redis asked from the first server host; a
    replica left on another release fails its row."""
    states = _verify_states(upgraded)
    states[API2]["prefect_version"] = "3.8.8"
    rows, table, proc = _verify_rows(Hosts(tmp_path, ansible_env, states), runs)
    check = "services steady, server healthy on loopback"
    assert rows[(API1, check)] == "ok: PrefectServer running, API healthy, Prefect %s" % PINNED_PREFECT, table
    assert rows[(SVC, check)] == "ok: PrefectServices running" and rows[(WRK, check)] == "ok: PrefectWorker-etl running"
    assert rows[(API2, check)].startswith(
        "FAILED: prefect-api02.corp.local: the Prefect server on loopback runs 3.8.8, the inventory names prefect_version"), table
    assert rows[(API1, "Redis for high availability")] == (
        "ok: redis.corp.local:6379 Redis 7.0.15, standalone, XAUTOCLAIM, from %s" % API1), table
    # The one other failure: no backup drill has run since the deploy (test_verify.py covers a drill).
    assert [k for k, v in rows.items() if v.startswith("FAILED")] == [(DB, "last backup drill"), (API2, check)], table
    assert REDIS_SECRET not in proc.stdout + proc.stderr


def test_verify_refuses_a_redis_older_than_6_2(upgraded, runs, tmp_path, ansible_env):
    """prefect-redis needs XAUTOCLAIM (Redis 6.2): a 6.0 fails the Redis row, naming the version."""
    states = _verify_states(upgraded)
    states[API1]["redis_endpoints"]["redis.corp.local:6379"]["version"] = "6.0.16"
    # The first server host alone: the Redis row is its own.
    rows, table, _proc = _verify_rows(Hosts(tmp_path, ansible_env, states), runs, limit=API1)
    assert rows[(API1, "Redis for high availability")] == (
        "FAILED: redis.corp.local:6379 from prefect-api01.corp.local: Redis 6.0.16 is older than 6.2 or lacks XAUTOCLAIM,"
        " which prefect-redis needs"), table


def test_restore_stops_the_services_host_with_the_replicas_and_starts_it_on_the_database_that_stays(upgraded, runs, tmp_path,
                                                                                                     ansible_env):
    """restore.yml over the HA hosts, of the backup the upgrade took: the background services stop with both replicas
    before the database is replaced and start only after the restore is kept."""
    _proc, _data, states = upgraded
    sim = Hosts(tmp_path, ansible_env, copy.deepcopy(states))
    dumps = sorted(f for f in states[DB]["files"] if f.startswith("c:\\prefect\\backups\\") and f.endswith(".dump"))
    extra = dict(runs["extra"], prefect_bundle_dir=str(runs["root"] / "bundle"), backup_restore_file=dumps[-1].rsplit("\\", 1)[-1],
                 backup_restore_confirm="yes, overwrite prefect")
    proc, data = sim.run(extra, playbook="restore.yml", limit="all", inventory=runs["inventory"])
    order = [(h, t["task"]["name"].split(" : ", 1)[-1], r) for play in data["plays"] for t in play["tasks"]
             for h, r in t["hosts"].items() if not r.get("skipped")]
    stopped = {h: i for i, (h, n, r) in enumerate(order)
               if n in ("Prefect services are as this step needs, server stopped",
                        "Prefect services are as this step needs, background stopped")}
    started = {h: i for i, (h, n, r) in enumerate(order)
               if n in ("Prefect services are as this step needs, server started",
                        "Prefect services are as this step needs, background started")}
    restored = [i for i, (h, n, _r) in enumerate(order) if h == DB and n == "Prefect database holds the named backup"]
    kept = [i for i, (h, n, _r) in enumerate(order) if h == DB and n == "Restore is ended, keep"]
    assert set(stopped) == {API1, API2, SVC} and max(stopped.values()) < restored[0], proc.stdout[-4000:]
    assert set(started) == {API1, API2, SVC} and started[SVC] > kept[0]
    after = sim.host_state(SVC)["services"]["PrefectServices"]
    assert after["running"]


def test_uninstall_removes_the_services_host_too(upgraded, runs, tmp_path, ansible_env):
    """uninstall.yml limited to the background-services host: it loses its service, NSSM and venvs as a server host
    does (test_operate.py removes a server host's); no other host is touched."""
    _proc, _data, states = upgraded
    sim = Hosts(tmp_path, ansible_env, copy.deepcopy(states))
    extra = dict(runs["extra"], prefect_bundle_dir=str(runs["root"] / "bundle"), uninstall_confirm=True)
    sim.run(extra, playbook="uninstall.yml", limit=SVC, inventory=runs["inventory"])
    after = sim.host_state(SVC)
    assert states[SVC]["services"] and after["services"] == {}
    assert not [j for j in after["junctions"] if j.startswith("c:\\prefect\\venvs")]
    assert not [d for d in after["dirs"] if d.startswith("c:\\prefect\\tools\\nssm-")]
    for host in (API1, API2, DB, STANDBY, WRK):
        assert sim.host_state(host) == states[host], host
