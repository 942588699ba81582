"""site.yml over inventories/ha on simulated hosts (one state file per host, test_site_distributed.Hosts): two API
replicas each with its front door, a background-services host, a PostgreSQL primary and its streaming standby, and a
worker host, with high availability on.

The replicas run `prefect server start --no-services` with every in-memory backend set to Redis and migrations off at
start; the schema is made once, by the first replica's service program, before any replica starts; the services host
runs `prefect server services start` with the same backends and database; PostgreSQL admits both replicas and the
services host; prefect-db03 is seeded once from prefect-db02 and streams from it, and the servers' database URL names
both; the worker reaches the machine path. A re-run changes nothing and no secret appears. The real processes
with this environment are proven in tests/integration/test_ha_replicas.py.

playbooks/failover.yml over copies of the converged pair: confirmed, it fences prefect-db02, promotes prefect-db03 once
it has prefect-db02's shutdown checkpoint and seeds prefect-db02 again as its standby; not confirmed, it touches no
host; site.yml with the inventory not swapped afterwards refuses both hosts of the pair before changing anything.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from rolerun import PINNED_PREFECT, REPO
from simhost import (INSTALLER, LOCK, PROXY_CERT_THUMBPRINT, SECRETS, by_name, default_state, host_results, make_bundle,
                     reached)
from test_postgresql import _pem
from test_verify import _cert
from test_site_distributed import FRAGMENTS, Hosts
from toolchain import VENV_BIN

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


def test_the_backups_are_taken_on_the_primary_only(runs):
    """The standby takes no backup; the removal of a task it kept from its days as the primary (after a failover) is
    checked there on every run, and finds none."""
    assert set(runs["final"][DB]["tasks"]) == {"\\enclave.prefect\\prefectdatabasebackup"}
    assert not runs["final"][STANDBY].get("tasks")
    removal = "Backup task is removed, the backups stay"
    assert [(n, bool(r.get("changed"))) for n, r in reached(runs["first"][1], STANDBY) if n.endswith(removal)] == [
        ("enclave.prefect.backup : " + removal, False)]
    assert not [n for n, _r in reached(runs["first"][1], DB) if n.endswith(removal)]


def test_rerun_changes_nothing_and_no_secret_is_shown(runs):
    data = runs["second"][1]
    changed = {h: [n for n, r in reached(data, h) if r.get("changed")] for h in HOSTS}
    assert changed == {h: [] for h in HOSTS}, changed
    for proc, _data in (runs["first"], runs["second"]):
        for secret in OUTPUT_SECRETS:
            assert secret not in proc.stdout + proc.stderr, f"{secret} leaked"


def test_a_standby_that_holds_the_prefect_database_out_of_recovery_is_refused(runs, tmp_path, ansible_env):
    """prefect-db03 promoted (pg_promote: recovery ends, standby.signal is removed) while the inventory still names it
    the standby: site.yml on it refuses to seed it again over the Prefect database, with the script's message, and
    leaves it as it is, running (with a stale inventory it is the only primary)."""
    states = copy.deepcopy(runs["final"])
    promoted = states[STANDBY]
    del promoted["files"][DATA_DIR + "\\standby.signal"]
    promoted["pg"]["in_recovery"] = False
    sim = Hosts(tmp_path, ansible_env, states)
    proc, data = sim.run(runs["extra"], limit=STANDBY, inventory=runs["inventory"], expect_rc=2)
    failed = [(n.split(" : ", 1)[-1], r) for n, r in host_results(data, STANDBY) if r.get("failed")]
    assert [n for n, _r in failed] == ["Standby seeding failures are shown"], failed
    assert failed[0][1]["msg"] == (
        f"{STANDBY}: This host is a primary with the prefect database, not a standby; nothing was changed. If "
        "playbooks/failover.yml promoted it, swap prefect_database_host and prefect_database_standby_host in the "
        "inventory. If it is a former primary back on the network, stop it now (it is a second primary); to make it the "
        f"standby of the other host, run this playbook with --limit {STANDBY} -e postgresql_reseed=true.")
    after = sim.host_state(STANDBY)
    assert after["pg_standby_runs"][-1]["error"].startswith("This host is a primary with the prefect database")
    assert [d for d in after["dirs"] if ".before-standby-" in d] == [d for d in promoted["dirs"] if ".before-standby-" in d]
    assert {k: v for k, v in after["files"].items() if k.startswith(DATA_DIR + "\\")} == {
        k: v for k, v in promoted["files"].items() if k.startswith(DATA_DIR + "\\")}
    service = after["services"]["postgresql-x64-17"]
    assert service["running"] and service["start_mode"] == "auto", service
    assert sim.host_state(DB) == states[DB]
    for secret in OUTPUT_SECRETS:
        assert secret not in proc.stdout + proc.stderr, f"{secret} leaked"


# --- playbooks/failover.yml over the converged pair (copies of its states) ---

FAILOVER_CONFIRM = f"yes, promote {STANDBY}"
SUPERUSER_SECRET = SECRETS["vault_postgresql_superuser_password"]


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _in_order(data, wanted: list[tuple[str, str]]) -> list[dict]:
    """The results of (host, task name without the role prefix) in wanted, each ran (not skipped), in that order."""
    order = [(h, t["task"]["name"].split(" : ", 1)[-1], r) for play in data["plays"] for t in play["tasks"]
             for h, r in t["hosts"].items() if not r.get("skipped")]
    found = [next(((i, r) for i, (h, n, r) in enumerate(order) if (h, n) == pair), None) for pair in wanted]
    assert None not in found, [pair for pair, hit in zip(wanted, found) if hit is None]
    assert [i for i, _r in found] == sorted(i for i, _r in found), wanted
    return [r for _i, r in found]


@pytest.fixture(scope="module")
def failed_over(runs, tmp_path_factory, ansible_env):
    """failover.yml -e failover_confirm="yes, promote prefect-db03.corp.local" -e failover_reseed=true over copies of the
    converged hosts: prefect-db02 fenced, prefect-db03 promoted, prefect-db02 seeded again as its standby."""
    root = tmp_path_factory.mktemp("ha-failover")
    before = copy.deepcopy(runs["final"])
    sim = Hosts(root, ansible_env, copy.deepcopy(before))
    extra = dict(runs["extra"], failover_confirm=FAILOVER_CONFIRM, failover_reseed=True)
    proc, data = sim.run(extra, playbook="failover.yml", limit="all", inventory=runs["inventory"])
    return {"proc": proc, "data": data, "before": before, "after": {h: sim.host_state(h) for h in HOSTS}}


def test_failover_fences_the_primary_then_promotes_the_standby_that_has_its_last_checkpoint(failed_over):
    """The standby is read first (in recovery, streaming); then the primary is stopped and disabled and its shutdown
    checkpoint read; the standby, which received WAL past that checkpoint, is promoted (standby.signal gone, out of
    recovery, writable) and gets the replication slot; only then is the old primary seeded from it."""
    state, fence, checkpoint, promote, objects, seed = _in_order(failed_over["data"], [
        (STANDBY, "The standby's replication state is read"),
        (DB, "The old primary's PostgreSQL is stopped and disabled"),
        (DB, "The old primary's last checkpoint is read"),
        (STANDBY, "The standby is promoted to primary"),
        (STANDBY, "Changes to the Prefect role, database and extension are shown"),
        (DB, "Standby is seeded from the primary and streams from it")])
    assert state["result"]["in_recovery"] and state["result"]["receiver"] == "streaming", state["result"]
    assert fence["changed"] and (fence["state"], fence["start_mode"]) == ("stopped", "disabled"), fence
    assert checkpoint["result"]["state"] == "shut down", checkpoint["result"]
    promoted = promote["result"]
    assert (promoted["was_standby"], promoted["promoted"], promoted["writable"]) == (True, True, True), promoted
    # Everything the primary wrote up to its shutdown checkpoint reached the standby before the promotion.
    assert _lsn(promoted["received_lsn"]) >= _lsn(checkpoint["result"]["checkpoint_lsn"]) >= _lsn(state["result"]["received_lsn"])
    assert objects["msg"] == ["replication slot prefect_standby created"]
    assert seed["changed"] and seed["result"]["seeded"]
    after, before = failed_over["after"][STANDBY], failed_over["before"][STANDBY]
    pg = after["pg"]
    assert DATA_DIR + "\\standby.signal" in before["files"] and DATA_DIR + "\\standby.signal" not in after["files"]
    assert not pg["in_recovery"] and set(pg["slots"]) == {"prefect_standby"}
    service = after["services"]["postgresql-x64-17"]
    assert service["running"] and service["start_mode"] == "auto", service
    # Its data directory stays where it is; nothing of it was seeded again.
    assert after["pg_standby_runs"] == before["pg_standby_runs"]
    assert sorted(d for d in after["dirs"] if ".before-standby-" in d) == sorted(d for d in before["dirs"] if ".before-standby-" in d)


def test_failover_seeds_the_old_primary_again_as_the_standby_of_the_new_one(failed_over):
    """failover_reseed: prefect-db02, fenced, gets the standby's configuration (primary_conninfo to prefect-db03) and is
    seeded from prefect-db03 through the new slot, its data directory kept renamed; it starts with Windows again and
    streams."""
    before, after = failed_over["before"][DB], failed_over["after"][DB]
    runs_ = after.get("pg_standby_runs", [])
    assert len(runs_) == 1 and runs_[0]["reseed"] and runs_[0]["seeded"] and not runs_[0]["error"], runs_
    assert runs_[0]["primary"] == STANDBY and runs_[0]["receiver"] == "streaming"
    kept = runs_[0]["kept"].lower()
    assert kept.startswith(DATA_DIR + ".before-standby-")
    # The old primary's data directory, whole, under the kept name.
    old = {p[len(DATA_DIR):] for p in before["files"] if p.startswith(DATA_DIR + "\\")}
    assert old and old == {p[len(kept):] for p in after["files"] if p.startswith(kept + "\\")}
    pg = after["pg"]
    assert DATA_DIR + "\\standby.signal" in after["files"] and pg["in_recovery"] and pg["seeded_from"] == STANDBY
    assert "host='prefect-db03.corp.local'" in pg["loaded"]["primary_conninfo"]
    assert pg["loaded"]["primary_slot_name"] == "prefect_standby"
    assert pg["databases"] == failed_over["after"][STANDBY]["pg"]["databases"]
    service = after["services"]["postgresql-x64-17"]
    assert service["running"] and service["start_mode"] == "auto", service
    shown = by_name(host_results(failed_over["data"], DB))["The data directory the standby replaced is named"]["msg"]
    assert shown.startswith(f"{DB} was seeded from {STANDBY} and streams from it.") and kept in shown.lower(), shown


def test_failover_names_the_swap_touches_no_other_host_and_shows_no_secret(failed_over):
    data, proc = failed_over["data"], failed_over["proc"]
    messages = [r["msg"] for n, r in host_results(data, DB) + host_results(data, STANDBY) if n == "The inventory is to be swapped"]
    assert messages == [
        f"{STANDBY} is the primary, {DB} its standby. Swap them in the inventory: prefect_database_host: {STANDBY} and "
        f"prefect_database_standby_host: {DB}, then run site.yml (the backups move to the new primary)."], messages
    for host in (API1, API2, SVC, WRK):
        assert failed_over["after"][host] == failed_over["before"][host], host
    for secret in OUTPUT_SECRETS:
        assert secret not in proc.stdout + proc.stderr, f"{secret} leaked"


def test_failover_not_confirmed_for_the_standby_touches_no_host(runs, tmp_path, ansible_env):
    """A confirmation that names the wrong host is refused on the control node, saying what to type; no task reaches a
    database host."""
    states = copy.deepcopy(runs["final"])
    sim = Hosts(tmp_path, ansible_env, copy.deepcopy(states))
    extra = dict(runs["extra"], failover_confirm=f"yes, promote {DB}")
    _proc, data = sim.run(extra, playbook="failover.yml", limit="all", inventory=runs["inventory"], expect_rc=2)
    results = [(h, n, r) for h in HOSTS for n, r in host_results(data, h)]
    assert [(n, r.get("failed")) for _h, n, r in results] == [
        ("The inventory has a standby, and the failover is confirmed for it", True)], results
    assert results[0][2]["msg"] == (
        f"This promotes {STANDBY} to primary in place of {DB}, which is stopped if it answers. Confirm with "
        f"-e 'failover_confirm=\"{FAILOVER_CONFIRM}\"'.")
    for host in HOSTS:
        assert sim.host_state(host) == states[host], host


def test_site_yml_refuses_both_hosts_of_the_pair_until_the_inventory_is_swapped(failed_over, runs, tmp_path, ansible_env):
    """site.yml after the failover, the inventory not swapped: prefect-db02 (a standby now) is refused as the primary and
    prefect-db03 (the only primary) as its standby, before anything is changed: neither is configured nor fenced."""
    states = copy.deepcopy(failed_over["after"])
    sim = Hosts(tmp_path, ansible_env, copy.deepcopy(states))
    proc, data = sim.run(runs["extra"], limit="prefect_database", inventory=runs["inventory"], expect_rc=2)
    failed = {h: [(n.split(" : ", 1)[-1], r["msg"]) for n, r in host_results(data, h) if r.get("failed")] for h in (DB, STANDBY)}
    assert failed == {
        DB: [("A standby is not configured as the primary",
              f"{DB} is a standby (its data directory has standby.signal) but the inventory names it prefect_database_host: "
              f"after playbooks/failover.yml, swap prefect_database_host and prefect_database_standby_host ({STANDBY} is "
              "the primary now).")],
        STANDBY: [("The primary of a standby is neither a standby nor fenced",
                   f"{DB}, which the inventory names prefect_database_host, is a standby (its data directory has "
                   f"standby.signal): playbooks/failover.yml promoted {STANDBY}, the primary now. Swap prefect_database_host "
                   f"and prefect_database_standby_host in the inventory. Nothing was changed on {STANDBY}.")]}, failed
    for host in (DB, STANDBY):
        assert not [n for n, r in reached(data, host) if r.get("changed")], host
        after = sim.host_state(host)
        assert {k: after[k] for k in ("pg", "files", "dirs", "services")} == {
            k: states[host][k] for k in ("pg", "files", "dirs", "services")}, host
    for secret in OUTPUT_SECRETS:
        assert secret not in proc.stdout + proc.stderr, f"{secret} leaked"


def test_site_yml_refuses_a_fenced_old_primary_until_it_is_seeded_again(failed_over, runs, tmp_path, ansible_env):
    """After a failover without the re-seed (prefect-db02 fenced: stopped, disabled, still the old primary's data) and
    before the swap: prefect-db02 is refused as the primary (fenced) and prefect-db03 as its standby (the other host is
    fenced), before anything is changed or started."""
    states = copy.deepcopy(failed_over["after"])
    fenced = states[DB]
    fenced["services"]["postgresql-x64-17"].update(running=False, start_mode="disabled")
    fenced["files"].pop(DATA_DIR + "\\standby.signal", None)
    fenced["pg"]["in_recovery"] = False
    sim = Hosts(tmp_path, ansible_env, copy.deepcopy(states))
    _proc, data = sim.run(runs["extra"], limit="prefect_database", inventory=runs["inventory"], expect_rc=2)
    failed = {h: [(n.split(" : ", 1)[-1], r["msg"]) for n, r in host_results(data, h) if r.get("failed")] for h in (DB, STANDBY)}
    assert failed == {
        DB: [("A fenced former primary is only seeded again as the standby",
              f"PostgreSQL on {DB} is disabled: playbooks/failover.yml fenced it when it promoted {STANDBY}. The inventory "
              "is stale: swap prefect_database_host and prefect_database_standby_host; then, to seed it again as the "
              f"standby of {STANDBY}, run this playbook with --limit {DB} -e postgresql_reseed=true (its data directory "
              "is kept, renamed).")],
        STANDBY: [("The primary of a standby is neither a standby nor fenced",
                   f"{DB}, which the inventory names prefect_database_host, is fenced (its PostgreSQL disabled): "
                   f"playbooks/failover.yml promoted {STANDBY}, the primary now. Swap prefect_database_host and "
                   f"prefect_database_standby_host in the inventory. Nothing was changed on {STANDBY}.")]}, failed
    for host in (DB, STANDBY):
        assert not [n for n, r in reached(data, host) if r.get("changed")], host
        assert sim.host_state(host)["services"] == states[host]["services"], host


def test_site_yml_after_the_swap_configures_the_pair_anew_and_restarts_no_server(failed_over, runs, tmp_path, ansible_env):
    """site.yml after the failover with the inventory swapped (as extra vars here): prefect-db03 gets the primary's
    configuration (no primary_conninfo) and the backups, prefect-db02 keeps following it and loses its backup task, and
    the API replica changes nothing at all: the servers' URL names the pair in the group's order, so the swap leaves
    every server's environment as it was (no restart)."""
    states = copy.deepcopy(failed_over["after"])
    sim = Hosts(tmp_path, ansible_env, copy.deepcopy(states))
    extra = dict(runs["extra"], prefect_database_host=STANDBY, prefect_database_standby_host=DB)
    # The pair and one API replica (the others compose the same URL the same way).
    proc, data = sim.run(extra, limit=f"prefect_database:{API1}", inventory=runs["inventory"])
    changed = {h: [n.split(" : ", 1)[-1] for n, r in reached(data, h) if r.get("changed")] for h in (API1, DB, STANDBY)}
    assert changed[API1] == [], changed
    assert sim.host_state(API1)["services"] == states[API1]["services"]
    assert "Prefect's settings are in the role's configuration file" in changed[STANDBY], changed[STANDBY]
    new_primary, new_standby = sim.host_state(STANDBY), sim.host_state(DB)
    conf = DATA_DIR + "\\conf.d\\enclave_prefect.conf"
    assert "primary_conninfo" not in new_primary["texts"][conf]
    assert "host=''prefect-db03.corp.local''" in new_standby["texts"][conf]
    assert new_standby["pg"]["in_recovery"] and not new_primary["pg"]["in_recovery"]
    assert set(new_primary.get("tasks") or {}) == {"\\enclave.prefect\\prefectdatabasebackup"}
    assert not new_standby.get("tasks")
    for secret in OUTPUT_SECRETS:
        assert secret not in proc.stdout + proc.stderr, f"{secret} leaked"


def _script(sim, host: str, name: str, args: dict) -> dict:
    """One call of a module's stand-in on a simulated host, without ansible-playbook: the body simhost.py built, run
    with that host's state file, as the module stub does."""
    code = (f"NAME = {name!r}\nARGS = {json.dumps(json.dumps(args))}\nimport sys\n"
            f"sys.path.insert(0, {str(sim.root / 'simbody')!r})\nimport enclave_sim_body\n")
    proc = subprocess.run([str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, check=True,
                          env=dict(os.environ, ENCLAVE_SIM_STATE=str(sim.root / "hosts" / host / "state.json")))
    return json.loads(proc.stdout)


def test_a_standby_that_did_not_stream_is_not_promoted_short_of_the_primary_checkpoint(runs, tmp_path, ansible_env):
    """The failover's scripts' stand-ins called directly (no playbook run): the primary's slot is gone, so the standby's
    receiver does not stream while the primary writes on; after the primary's clean stop, postgresql_promote.ps1 with its
    checkpoint refuses (the script's message) and leaves the standby in recovery; with AcceptDataLoss it promotes."""
    states = copy.deepcopy(runs["final"])
    primary = states[DB]["pg"]
    del primary["slots"]["prefect_standby"]
    primary["lsn"] += 5 * 0x1000  # what the Prefect servers wrote since
    sim = Hosts(tmp_path, ansible_env, states)
    secret = [{"name": "SuperuserPassword", "value": SUPERUSER_SECRET}]
    connect = {"BinDir": "C:\\Program Files\\PostgreSQL\\17\\bin", "Port": "5432", "Superuser": "postgres"}
    read = _script(sim, STANDBY, "win_powershell", {"path": "postgresql_standby_state.ps1", "parameters": connect,
                                                     "sensitive_parameters": secret})
    assert read["result"]["in_recovery"] and read["result"]["receiver"] == "none", read
    assert SUPERUSER_SECRET not in json.dumps(read)
    fence = _script(sim, DB, "win_service", {"name": "postgresql-x64-17", "state": "stopped", "start_mode": "disabled",
                                             "force_dependent_services": True})
    assert fence["changed"] and (fence["state"], fence["start_mode"]) == ("stopped", "disabled"), fence
    # What the role's fence check (tasks/main.yml, postgresql_fenced) reads: Win32_Service's StartMode.
    facts = _script(sim, DB, "win_powershell", {"path": "postgresql_facts.ps1", "parameters": {
        "ServiceName": "postgresql-x64-17", "DataDir": "D:\\PostgreSQL\\17\\data"}})["result"]["service"]
    assert (facts["start_mode"], facts["state"]) == ("Disabled", "Stopped"), facts
    # A disabled service does not start (win_service.ps1's Start-Service).
    start = _script(sim, DB, "win_service", {"name": "postgresql-x64-17", "state": "started"})
    assert start["failed"] and start["msg"] == ("Service 'postgresql-x64-17 (postgresql-x64-17)' cannot be started due to "
                                                "the following error: Cannot start service postgresql-x64-17 on computer '.'.")
    control = _script(sim, DB, "win_powershell", {"path": "postgresql_controldata.ps1", "parameters": {
        "BinDir": connect["BinDir"], "DataDir": "D:\\PostgreSQL\\17\\data"}})["result"]
    assert control["state"] == "shut down" and _lsn(control["checkpoint_lsn"]) > _lsn(read["result"]["received_lsn"])
    promote = {"path": "postgresql_promote.ps1", "sensitive_parameters": secret,
               "parameters": dict(connect, MinimumLsn=control["checkpoint_lsn"], AcceptDataLoss=False)}
    refused = _script(sim, STANDBY, "win_powershell", promote)
    assert refused["failed"] and refused["error"][0]["exception"]["message"] == (
        f"The standby received WAL up to {read['result']['received_lsn']}, short of the stopped primary's last checkpoint "
        f"{control['checkpoint_lsn']}: promoted now, it would lose what the primary wrote after that. Nothing was "
        "promoted; the primary is stopped and disabled. Start it again (Set-Service -StartupType Automatic; "
        "Start-Service) and find why the standby lags, or promote anyway with failover_accept_data_loss.")
    standby = sim.host_state(STANDBY)
    assert standby["pg"]["in_recovery"] and DATA_DIR + "\\standby.signal" in standby["files"]
    # The role passes the password as a SecureString only: as a plain parameter it does not bind.
    plain = _script(sim, STANDBY, "win_powershell", {"path": "postgresql_promote.ps1", "parameters": dict(
        promote["parameters"], SuperuserPassword="x")})
    assert plain["failed"] and plain["error"][0]["exception"]["message"].startswith(
        "Cannot process argument transformation on parameter 'SuperuserPassword'."), plain
    anyway = _script(sim, STANDBY, "win_powershell", dict(promote, parameters=dict(promote["parameters"], AcceptDataLoss=True)))
    assert anyway["changed"] and anyway["result"]["promoted"] and anyway["result"]["writable"], anyway
    assert not sim.host_state(STANDBY)["pg"]["in_recovery"]


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
