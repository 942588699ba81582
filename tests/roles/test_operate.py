"""The operator playbooks (upgrade, uninstall, diagnose) against the simulated Windows host (simhost.py, stand-ins in
sim_operate.py): their control flow, not Windows itself. An upgrade with a failure injected at each step must roll
back (junction, database, services, pools); --check changes nothing; uninstall removes in reverse order; diagnose
completes on a host where everything is broken and ranks the problems."""
from __future__ import annotations

import hashlib
import json

import pytest

from rolerun import PINNED_PREFECT
from simhost import INSTALLER, LOCK, SECRETS, Sim, by_name, host_results, make_bundle, sqlite_example_inventory

pytestmark = pytest.mark.simulated

LINK = "c:\\prefect\\venvs\\current"
SQLITE = "c:\\prefect\\data\\prefect.db"


def _extra(bundle, **more):
    # SQLite under PREFECT_HOME (no database URL): the upgrade backs it up and restores it itself.
    return {"prefect_bundle_dir": str(bundle), **SECRETS, "vault_prefect_database_url": "", "prefect_database_host": "",
            "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest(), **more}


@pytest.fixture(scope="module")
def converged(tmp_path_factory, ansible_env):
    sim = Sim(tmp_path_factory.mktemp("operate"), ansible_env)
    sim.inventory = sqlite_example_inventory(sim.root / "inventory")
    bundle = make_bundle(sim.root)
    # The layers this collection's upgrade touches, one playbook each (site.yml also runs the front door and data layers).
    for layer in ("python.yml", "prefect_venv.yml", "nssm_services.yml"):
        sim.run(_extra(bundle), playbook=layer)
    state = sim.state
    # A Prefect with data: a SQLite database, one pool in use and one paused by its operator before the upgrade.
    state["files"][SQLITE] = "original-db"
    sim.update(**state)
    # The backups (their scheduled task takes the upgrade's backup and the backup role restores it on rollback).
    sim.run(_extra(bundle), playbook="layers/backup.yml")
    state = sim.state
    state["pools"] = {"windows-process": {"type": "process", "is_paused": False, "status": "READY",
                                          "workers": [{"name": "PrefectWorker-prefect-aio", "status": "ONLINE"}]},
                      "held": {"type": "process", "is_paused": True, "status": "PAUSED", "workers": []}}
    state["flow_runs"] = [{"name": "nightly", "state": "RUNNING", "finishes": True}]
    sim.update(**state)
    return sim.state


def _new_release(tmp_path, ansible_env, state):
    """A converged host and a bundle whose lock changed: the upgrade builds and switches to a new venv."""
    sim = Sim(tmp_path, ansible_env, state)
    sim.inventory = sqlite_example_inventory(sim.root / "inventory")
    make_bundle(sim.root, LOCK + b"extra==9.9 --hash=sha256:9999\n")
    return sim, _extra(sim.root / "bundle", prefect_venv_check_committed_lock=False)


# Written by the stand-ins for the tests to read, not host state.
REPORT_KEYS = {"clock", "last_nssm_report"}


def _host_state(sim) -> dict:
    return {k: v for k, v in sim.state.items() if k not in REPORT_KEYS}


def _unchanged(before: dict, after: dict) -> None:
    """Every part of the host that existed is as it was. Stand-ins of other areas may add their empty defaults for a
    host they read for the first time (e.g. the firewall profiles); such keys must not hold anything the run made."""
    def strip_empty_additions(old, new):
        if isinstance(old, dict) and isinstance(new, dict):
            return {k: strip_empty_additions(old.get(k), v) for k, v in new.items() if k in old or v}
        return new

    assert {k: strip_empty_additions(before[k], after.get(k)) for k in before} == before


@pytest.fixture(scope="module")
def upgraded(converged, tmp_path_factory, ansible_env):
    """One successful upgrade (-v) of a copy of the converged host, read by the two tests below: the server's NSSM
    environment holds a database URL and a proxy URL with passwords, which Prefect's migration output quotes."""
    sim, extra = _new_release(tmp_path_factory.mktemp("upgraded"), ansible_env, converged)
    old = sim.state["junctions"][LINK]
    services = sim.state["services"]
    services["PrefectServer"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"] = MASKED_URL
    services["PrefectServer"]["environment"]["HTTPS_PROXY"] = MASKED_PROXY
    sim.update(services=services, migration_output="Connecting to %s\nproxy refused password 'Px@Secret-9d2c' and "
               "'Px%%40Secret-9d2c'\nMigration complete" % MASKED_URL)
    proc, data = sim.run(extra, playbook="upgrade.yml", args=["-v"])
    return old, proc, data, sim.state


MASKED_URL = "postgresql+asyncpg://prefect:Db-Secret-0a7f@db01:5432/prefect"
# A proxy URL's password, URL-encoded in the environment, quoted decoded by an error message.
MASKED_PROXY = "http://svc_proxy:Px%40Secret-9d2c@proxy01:8080"


def test_upgrade_switches_migrates_once_and_restores_the_pools(upgraded):
    old, proc, _data, state = upgraded
    assert state["junctions"][LINK] != old, proc.stdout[-6000:]
    assert state["database"]["migrations"] == 1
    for name in ("PrefectServer", "PrefectWorker"):
        assert state["services"][name]["running"]
        assert state["services"][name]["registry"]["Application"].startswith(state["junctions"][LINK])
    assert state["pools"]["windows-process"]["is_paused"] is False
    assert state["pools"]["held"]["is_paused"] is True, "a pool the operator had paused must stay paused"
    assert state["flow_runs"][0]["state"] == "COMPLETED"
    # The migration ran with the server stopped, and the server environment turns migrate-on-start off.
    assert state["services"]["PrefectServer"]["environment"]["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] == "false"
    assert "database migrated" in proc.stdout and "FAILED" not in proc.stdout


def test_migration_output_masks_the_service_environment(upgraded):
    """database_upgrade.ps1 masks every value of the server's NSSM environment in the output it returns (the
    restore runs the same script): here Prefect's output quotes the database URL."""
    _old, proc, data, state = upgraded
    shown = [r for n, r in host_results(data) if n.endswith("Migration output is shown")]
    assert shown and "Connecting to ***" in str(shown[0]["msg"]), shown
    assert "proxy refused password '***' and '***'" in str(shown[0]["msg"]), shown
    for secret in ("Db-Secret-0a7f", "Px@Secret-9d2c", "Px%40Secret-9d2c"):
        assert secret not in proc.stdout + proc.stderr, secret
    assert state["database"]["migrations"] == 1

# (step, where to inject, what must have been restored)
FAILURES = [
    # "pools paused, runs drained": test_upgrade_waits_for_running_flow_runs_and_rolls_back_at_the_timeout fails at that
    # step (its drain times out after the pause) and checks the same rollback; the step's rescue is one.
    ("services stopped", {"target": "win_service", "match": '"state": "stopped"'}, False),
    ("database backed up", {"target": "backup_run.ps1", "match": "TaskName"}, False),
    ("venv switched", {"target": "venv_switch.ps1", "match": "Target"}, False),
    # Right after the junction moved: the role's next task fails, the junction must still go back.
    ("venv switched", {"target": "venv_prune.ps1", "match": "Root"}, False),
    ("database migrated", {"target": "../roles/backup/files/database_upgrade.ps1", "match": "ServiceName"}, True),
    ("servers started", {"target": "server_health", "match": "api_url"}, True),
    ("pools unpaused", {"target": "work_pool", "match": '"paused": false'}, True),
]


@pytest.mark.parametrize("step, inject, migrated", FAILURES, ids=[f[0] + " (" + f[1]["target"] + ")" for f in FAILURES])
def test_upgrade_failure_at_each_step_rolls_back(converged, tmp_path, ansible_env, step, inject, migrated):
    sim, extra = _new_release(tmp_path, ansible_env, converged)
    old = sim.state["junctions"][LINK]
    sim.update(inject_failure=inject)
    proc, data = sim.run(extra, playbook="upgrade.yml", expect_rc=2)
    state = sim.state
    assert state.get("injected") == [inject], "the failure was not injected where intended"
    assert f"failed at step '{step}'" in proc.stdout, proc.stdout[-3000:]
    # Junction back on the previous venv, services running it, pools as the operator left them.
    assert state["junctions"][LINK] == old
    for name in ("PrefectServer", "PrefectWorker"):
        assert state["services"][name]["running"], name
        assert state["services"][name]["registry"]["Application"].startswith(old), name
    assert state["pools"]["windows-process"]["is_paused"] is False
    assert state["pools"]["held"]["is_paused"] is True
    # The database is the copy from before the migration when the migration ran (or started), untouched otherwise.
    assert state["files"][SQLITE] == "original-db"
    assert ("rollback: database" in proc.stdout) == migrated
    assert "FAILED" in proc.stdout
    switched_back = [r for n, r in host_results(data) if n.endswith("Current junction points at the venv to roll back to")
                     and not r.get("skipped")]
    if migrated:
        # The previous venv must report its own release (venv_switch.ps1 checks `python -m prefect version`).
        assert switched_back and switched_back[0]["invocation"]["module_args"]["parameters"]["PrefectVersion"] == PINNED_PREFECT


def test_upgrade_waits_for_running_flow_runs_and_rolls_back_at_the_timeout(converged, tmp_path, ansible_env):
    """A flow run that does not finish: no service is stopped, the pools are unpaused again, the run is not cancelled.
    The rollback of a failure at the first step, 'pools paused, runs drained' (once a case of
    test_upgrade_failure_at_each_step_rolls_back too, a failure injected into the pause call): junction, services and
    database as they were."""
    sim, extra = _new_release(tmp_path, ansible_env, converged)
    old = sim.state["junctions"][LINK]
    sim.update(flow_runs=[{"name": "endless", "state": "RUNNING", "finishes": False}])
    proc, _data = sim.run(extra, playbook="upgrade.yml", expect_rc=2)
    state = sim.state
    assert "failed at step 'pools paused, runs drained'" in proc.stdout
    assert state["flow_runs"][0]["state"] == "RUNNING"
    assert state["pools"]["windows-process"]["is_paused"] is False
    assert state["pools"]["held"]["is_paused"] is True
    assert "database" not in state
    assert state["junctions"][LINK] == old
    for name in ("PrefectServer", "PrefectWorker"):
        assert state["services"][name]["running"], name
        assert state["services"][name]["registry"]["Application"].startswith(old), name
    assert state["files"][SQLITE] == "original-db"
    assert "rollback: database" not in proc.stdout and "FAILED" in proc.stdout


def test_upgrade_check_mode_prints_the_plan_and_changes_nothing(converged, tmp_path, ansible_env):
    sim, extra = _new_release(tmp_path, ansible_env, converged)
    before = _host_state(sim)
    proc, _data = sim.run(extra, playbook="upgrade.yml", args=["--check"])
    _unchanged(before, _host_state(sim))
    assert "prefect server database upgrade -y once" in proc.stdout


def test_uninstall_needs_confirmation(converged, tmp_path, ansible_env):
    sim = Sim(tmp_path, ansible_env, converged)
    sim.inventory = sqlite_example_inventory(sim.root / "inventory")
    bundle = make_bundle(sim.root)
    before = sim.state
    sim.run(_extra(bundle), playbook="uninstall.yml", expect_rc=2)
    assert sim.state["services"] == before["services"] and sim.state["junctions"] == before["junctions"]


def test_uninstall_removes_in_reverse_order_and_keeps_data(converged, tmp_path, ansible_env):
    sim = Sim(tmp_path, ansible_env, converged)
    sim.inventory = sqlite_example_inventory(sim.root / "inventory")
    bundle = make_bundle(sim.root)
    proc, data = sim.run(_extra(bundle, uninstall_confirm=True), playbook="uninstall.yml")
    state = sim.state
    assert state["services"] == {}
    assert not [j for j in state["junctions"] if j.startswith("c:\\prefect\\venvs")]
    assert not [p for p in state["files"] if p.startswith("c:\\prefect\\venvs\\")]
    assert not [d for d in state["dirs"] if d.startswith("c:\\prefect\\tools\\nssm-")]
    assert "python" not in state
    assert state["files"][SQLITE] == "original-db", "data stays without uninstall_purge_data"
    assert converged["tasks"] and state.get("tasks") == {}, "the SQLite backup task goes with the server"
    order = [name.split(" : ", 1)[-1] for name, r in host_results(data) if not r.get("skipped")]
    first = {task: order.index(task) for task in (
        "Prefect services are stopped and unregistered, workers before the server",
        "No Prefect venv, current junction or unpacked wheelhouse remains",
        "Python is removed") if task in order}
    assert list(first) == sorted(first, key=first.get) and len(first) == 3, order
    removed = [r["item"]["name"] for n, r in by_name(host_results(data)).items()
               if n == "Prefect services are stopped and unregistered, workers before the server" for r in r["results"]]
    assert removed == ["PrefectWorker", "PrefectServer"]


def test_uninstall_check_mode_changes_nothing(converged, tmp_path, ansible_env):
    sim = Sim(tmp_path, ansible_env, converged)
    sim.inventory = sqlite_example_inventory(sim.root / "inventory")
    bundle = make_bundle(sim.root)
    before = _host_state(sim)
    sim.run(_extra(bundle, uninstall_confirm=True), playbook="uninstall.yml", args=["--check"])
    _unchanged(before, _host_state(sim))


def test_diagnose_completes_on_a_broken_host_and_ranks_the_problems(converged, tmp_path, ansible_env):
    sim = Sim(tmp_path, ansible_env, converged)
    sim.inventory = sqlite_example_inventory(sim.root / "inventory")
    bundle = make_bundle(sim.root)
    services = sim.state["services"]
    services["PrefectServer"]["running"] = False
    services["PrefectWorker"]["state_override"] = "Paused"
    gb = 1024 ** 3
    sim.update(services=services, diagnose_errors={"iis": "Import-Module: WebAdministration is not installed"}, diagnose={
        "certificates": [{"subject": "CN=prefect.corp.local", "thumbprint": "AB" * 20, "days_left": 9}],
        "disks": [{"drive": "C:", "used_percent": 93.4, "free": 5 * gb}],
        "database": {"sqlite_bytes": int(1.2 * gb)},
        "pools": [{"name": "etl", "status": "NOT_READY", "is_paused": False,
                   "workers": [{"name": "w1", "status": "OFFLINE", "last_heartbeat_time": "2026-03-01T10:00:00Z"}]}],
        "events": [{"message": "Program python.exe for service PrefectWorker exited with return code 1."}] * 14,
    })
    out = tmp_path / "diag"
    proc, _data = sim.run(_extra(bundle, diagnose_output_dir=str(out)), playbook="diagnose.yml")
    summary = (out / "SUMMARY.md").read_text()
    # The archive is as private as the folder (0700): 0600, not the umask's 0644.
    assert (tmp_path / "diag.tar.gz").is_file() and (tmp_path / "diag.tar.gz").stat().st_mode & 0o777 == 0o600
    assert out.stat().st_mode & 0o777 == 0o700
    report = json.loads((out / "prefect-aio.corp.local" / "report.json").read_text())
    assert report["services"] and "iis" in report["errors"]
    lines = [line for line in summary.splitlines() if line.startswith("| ") and line[2].isdigit()]
    text = "\n".join(lines)
    for expected in ("PrefectServer is Stopped", "PrefectWorker is PAUSED", "restarted 14 times",
                     "worker w1 of pool etl OFFLINE for 2 h", "expires in 9 days", "SQLite database 1.2 GB: move to PostgreSQL",
                     "C: 93% full", "section iis could not be collected"):
        assert expected in text, (expected, summary)
    # Critical problems rank above warnings, warnings above notes.
    severities = [line.split("|")[2].strip() for line in lines]
    assert severities == sorted(severities, key=["critical", "warning", "info"].index)
    for secret in ("Svc-Secret-4c1d", "Wrk-Secret-6e21", "Auth-Secret-93be", "Db-Secret-0a7f"):
        assert secret not in proc.stdout and secret not in summary


EXTERNAL_URL = "postgresql+asyncpg://prefect:Db-Secret-0a7f@127.0.0.1:5432/prefect"


def test_an_external_database_needs_its_backup_named_and_is_not_restored_by_the_rollback(converged, tmp_path, ansible_env):
    """prefect_database_url and no prefect_database host: the collection cannot dump or restore that database. Without
    upgrade_external_backup the upgrade stops before any host; with it, the backup named is in the table, and a failed
    migration rolls everything else back and says to restore that backup."""
    sim, extra = _new_release(tmp_path, ansible_env, converged)
    sim.inventory = sqlite_example_inventory(sim.root / "external", no_database_hosts=True)
    extra["vault_prefect_database_url"] = EXTERNAL_URL
    before = _host_state(sim)
    proc, _ = sim.run(extra, playbook="upgrade.yml", expect_rc=2)
    assert "this playbook cannot back it up or restore it" in proc.stdout and _host_state(sim) == before
    old = sim.state["junctions"][LINK]
    sim.update(inject_failure={"target": "../roles/backup/files/database_upgrade.ps1", "match": "ServiceName"})
    proc, data = sim.run(dict(extra, upgrade_external_backup="dba snapshot prefect-2026-12-06"), playbook="upgrade.yml",
                         expect_rc=2)
    assert "named by the operator: dba snapshot prefect-2026-12-06" in proc.stdout
    assert "NOT restored (external database): restore dba snapshot prefect-2026-12-06" in proc.stdout
    assert sim.state["junctions"][LINK] == old
    assert not [n for n, r in host_results(data) if n.endswith("A backup was taken now by the scheduled task")
                and not r.get("skipped")]
