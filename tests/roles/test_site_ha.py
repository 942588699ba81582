"""site.yml over inventories/ha on simulated hosts (one state file per host, test_site_distributed.Hosts): two API
replicas each with its front door, a background-services host, PostgreSQL and a worker host, with high availability on.

The replicas run `prefect server start --no-services` with every in-memory backend set to Redis and migrations off at
start; the schema is made once, by the first replica's service program, before any replica starts; the services host
runs `prefect server services start` with the same backends and database; PostgreSQL admits both replicas and the
services host; the worker reaches the machine path. A re-run changes nothing and no secret appears. The real processes
with this environment are proven in tests/integration/test_ha_replicas.py.
"""
from __future__ import annotations

import copy
import hashlib
import shutil

import pytest
import yaml

from rolerun import PINNED_PREFECT, REPO
from simhost import INSTALLER, LOCK, PROXY_CERT_THUMBPRINT, SECRETS, default_state, host_results, make_bundle, reached
from test_postgresql import _pem
from test_verify import _cert
from test_site_distributed import Hosts

pytestmark = pytest.mark.simulated

API1, API2, SVC, DB, WRK = (f"prefect-{n}.corp.local" for n in ("api01", "api02", "svc01", "db02", "wrk04"))
HOSTS = [API1, API2, SVC, DB, WRK]
ADDRESSES = {API1: "10.20.2.11", API2: "10.20.2.12", SVC: "10.20.2.21", DB: "10.20.2.31", WRK: "10.20.2.41"}
CA = REPO / "tests" / "fixtures" / "roles" / "enclave-ca.pem"
REDIS_SECRET = "Redis-Secret-5a7c"
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
        {**SECRETS, "vault_prefect_redis_password": REDIS_SECRET, "vault_prefect_database_url": ""}))
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
    return {"first": first, "states": states, "second": second, "root": root, "extra": extra, "inventory": inventory}


def test_replicas_serve_the_api_only_with_redis_backends(runs):
    for host in (API1, API2):
        service = runs["states"][host]["services"]["PrefectServer"]
        assert service["registry"]["AppParameters"].endswith("--no-services"), host
        env = service["environment"]
        assert {k: env.get(k) for k in BACKENDS} == BACKENDS, host
        assert env["PREFECT_REDIS_MESSAGING_HOST"] == "redis.corp.local" and env["PREFECT_REDIS_MESSAGING_DB"] == "0"
        assert env["PREFECT_REDIS_WORKER_CLEANUP_QUEUE_DB"] == "2"
        assert env["PREFECT_SERVER_DOCKET_URL"] == f"redis://:{REDIS_SECRET}@redis.corp.local:6379/1"
        assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"].endswith("@prefect-db02.corp.local:5432/prefect?ssl=verify-full")


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
    # The retention the replicas no longer run: the vacuum service is a background service.
    assert env["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"].startswith("events")


def test_the_schema_is_made_once_by_the_first_replica_before_any_start(runs):
    tasks = [(h, n, r) for h in HOSTS for n, r in reached(runs["first"][1], h)
             if n.endswith("Database schema is made once before the first start of the replicas")]
    assert [(h, bool(r.get("changed"))) for h, _n, r in tasks] == [(API1, True)], tasks
    assert not [n for h in HOSTS for n, r in reached(runs["second"][1], h)
                if n.endswith("Database schema is made once before the first start of the replicas")]


def test_postgresql_admits_the_replicas_and_the_services_host(runs):
    hba = runs["states"][DB]["pg"]["hba"]
    text = str(hba)
    for host in (API1, API2, SVC):
        assert ADDRESSES[host] + "/32" in text, (host, hba)


def test_rerun_changes_nothing_and_no_secret_is_shown(runs):
    data = runs["second"][1]
    changed = {h: [n for n, r in reached(data, h) if r.get("changed")] for h in HOSTS}
    assert changed == {h: [] for h in HOSTS}, changed
    for proc, _data in (runs["first"], runs["second"]):
        assert REDIS_SECRET not in proc.stdout + proc.stderr


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
    for host in (API1, API2, DB, WRK):
        assert sim.host_state(host) == states[host], host
