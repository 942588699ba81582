"""The backup role, playbooks/backup.yml and playbooks/restore.yml against the simulated host (simhost.py with the
stand-ins of sim_backup.py, which behave as community.windows win_scheduled_task.ps1 does as read in its source: the
account compared by SID, actions and StartBoundary as case-sensitive text, a password with update_password re-registering
on every run, s4u demanding a password). One Sim is one host.

What these tests cannot show: that Task Scheduler, pg_dump.exe and the PowerShell scripts behave on Windows as the
stand-ins do. The Python script and the SQL are run for real in tests/integration/test_backup_restore.py.
"""
from __future__ import annotations

import copy
import json
import re
import subprocess

import pytest
import yaml

from rolerun import REPO
from simhost import Sim, by_name, host_results, make_bundle, reached

pytestmark = pytest.mark.simulated

# The example inventory's all-in-one host is also its database host; LITE is an all-in-one host on SQLite (tmp inventory).
AIO, LITE, DB = "prefect-aio.corp.local", "prefect-lite.corp.local", "prefect-db01.corp.local"
SECRETS = {"vault_prefect_service_password": "Svc-Secret-4c1d", "vault_prefect_worker_password": "Wrk-Secret-6e21",
           "vault_prefect_api_auth_string": "prefect:Auth-Secret-93be",
           "backup_account_password": "Bkp-Secret-77aa", "backup_database_password": "PgBkp-Secret-1f3c",
           "prefect_database_password": "PgOwner-Secret-5d0e", "postgresql_superuser_password": "PgSuper-Secret-8b21"}
TASK_KEY = "\\enclave.prefect\\prefectdatabasebackup"
PYTHON = "c:\\prefect\\venvs\\current\\scripts\\python.exe"
SCHEDULE = "Backup runs daily as its account and shows a failed run in its last result"
CONFIRM_SQLITE = "yes, overwrite prefect.db"


def bk_sha(text):
    """The digest sim_backup.py keeps of a task's stored password."""
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()


def aio_state():
    """An all-in-one host the earlier layers set up: the server's account, the venv, the services running."""
    return {"accounts": {"svc_prefect": {"sid": "S-1-5-21-1000-1001"}, "svc_prefect_worker": {"sid": "S-1-5-21-1000-1002"}},
            "files": {PYTHON: "python", "c:\\prefect\\data\\prefect.db": "db"},
            "services": {"PrefectServer": {"registry": {}, "running": True, "object_name": ".\\svc_prefect"},
                         "PrefectWorker": {"registry": {}, "running": True, "object_name": ".\\svc_prefect_worker",
                                           "dependencies": ["PrefectServer"]}}}


def db_state():
    """A database host the postgresql role set up: psql.exe and the superuser's password."""
    import hashlib
    return {"files": {"c:\\program files\\postgresql\\17\\bin\\psql.exe": "psql"},
            "pg": {"roles": {}, "superuser_password_sha": hashlib.sha256(SECRETS["postgresql_superuser_password"].encode()).hexdigest()}}


@pytest.fixture(scope="module")
def playbook(tmp_path_factory):
    """The backup layer after its preflight, as site.yml runs it."""
    path = tmp_path_factory.mktemp("backup-play") / "backup_layer.yml"
    path.write_text(yaml.safe_dump([
        {"name": "Preflight", "ansible.builtin.import_playbook": "enclave.prefect.preflight", "vars": {"preflight_roles": ["backup"]}},
        {"name": "Backup layer", "ansible.builtin.import_playbook": "enclave.prefect.layers.backup"}], sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def lite_inventory(tmp_path_factory):
    """An all-in-one host without a database host (the example's all-in-one host is in prefect_database): SQLite."""
    path = tmp_path_factory.mktemp("backup-inv") / "lite.yml"
    lite = {"prefect_host_address": "10.20.1.40", "prefect_database_host": "", "nssm_services_workers": [{"service": "PrefectWorker", "pool": "windows-process"}]}
    path.write_text(yaml.safe_dump({"all": {"children": {"prefect_server": {"hosts": {LITE: lite}},
                                                         "prefect_workers": {"hosts": {LITE: None}}}}}))
    return str(path)


def lite(sim, inventory, extra_vars, playbook, expect_rc=0, more=()):
    """A run on the SQLite all-in-one host."""
    return sim.run(extra_vars, playbook=playbook, limit=LITE, expect_rc=expect_rc, args=["-i", inventory, *more])


def changed(data, host=LITE):
    return sorted(n for n, r in by_name(reached(data, host)).items() if r.get("changed"))


def extra(sim, **more):
    return {"prefect_bundle_dir": str(make_bundle(sim.root)), **SECRETS, **more}


@pytest.fixture(scope="module")
def aio(tmp_path_factory, ansible_env, playbook, lite_inventory):
    """All in one on SQLite: check mode first, then a first run, a re-run, backup.yml (and the host after it)."""
    sim = Sim(tmp_path_factory.mktemp("bk-aio"), ansible_env, aio_state())
    before = sim.state
    check = lite(sim, lite_inventory, extra(sim), playbook, more=["--check"])
    after_check = sim.state
    first = lite(sim, lite_inventory, extra(sim), playbook)
    after_first = sim.state
    second = lite(sim, lite_inventory, extra(sim), playbook)
    now = lite(sim, lite_inventory, extra(sim), "backup.yml")
    return sim, before, check, after_check, first, after_first, second, now, sim.state


@pytest.fixture(scope="module")
def aio_states(aio):
    """The aio fixture's host after its first run and after its backup.yml, for converged() and backed_up()."""
    data = aio[7][1]
    name = by_name(reached(data, LITE))["A backup was taken now by the scheduled task"]["result"]["file"].rsplit("\\", 1)[-1]
    return {"after_first": aio[5], "after_now": aio[8], "backup_name": name}


def converged(tmp_path, ansible_env, states, **more):
    """A new simulated SQLite all-in-one host in the state the aio fixture's first run left (the same playbook, input and
    starting host aio_state() the tests below used to converge a fresh Sim with), with more state on top."""
    return Sim(tmp_path, ansible_env, dict(copy.deepcopy(states["after_first"]), **more))


def backed_up(tmp_path, ansible_env, states):
    """Like converged(), after the aio fixture's backup.yml too: the host and the name of the backup it took."""
    return Sim(tmp_path, ansible_env, copy.deepcopy(states["after_now"])), states["backup_name"]


def test_check_mode_reports_and_changes_nothing(aio):
    sim, before, check, after_check = aio[:4]
    assert changed(check[1]), "check mode must report what it would change"
    for key in ("tasks", "dirs"):
        assert after_check.get(key, {}) == before.get(key, {}), key
    assert not any(after_check.get("rights", {}).values())
    assert not any(p.startswith("c:\\prefect\\backup") for p in after_check["files"])


def test_sqlite_host_gets_the_task_as_the_server_account(aio):
    state = aio[5]
    task = state["tasks"][TASK_KEY]
    sid = state["accounts"]["svc_prefect"]["sid"]
    # S4U (2): Task Scheduler stores no password for the task.
    assert task["principal"] == {"sid": sid, "logon_type": 2, "run_level": 0}
    assert task["password_sha"] in (None, bk_sha(""))
    assert task["triggers"] == [{"type": "daily", "start_boundary": "2000-01-01T02:30:00"}]
    assert task["actions"][0]["path"].lower() == PYTHON
    assert "prefect_sqlite_backup.py\" backup --config" in task["actions"][0]["arguments"]
    assert task["settings"]["multiple_instances"] == 2 and task["settings"]["execution_time_limit"] == "PT120M"
    assert sid in state["rights"]["SeBatchLogonRight"]
    # The server account's other logon rights belong to the services layer: nothing is denied here.
    assert sid not in state["rights"].get("SeDenyNetworkLogonRight", [])
    home, backups = state["dirs"]["c:\\prefect\\backup"], state["dirs"]["c:\\prefect\\backups"]
    assert home["protected"] and home["acl"] == {"S-1-5-18": "FullControl", "S-1-5-32-544": "FullControl", sid: "ReadAndExecute"}
    assert backups["protected"] and backups["acl"][sid] == "Modify"
    assert state["backup_configs"]["c:\\prefect\\backup\\backup.json"] == {
        "kind": "sqlite", "database": "C:\\Prefect\\data\\prefect.db", "dest_dir": "C:\\Prefect\\backups", "keep_count": 14,
        "keep_days": 30, "log": "C:\\Prefect\\backups\\backup.log", "drill_weekdays": ["Sunday"],
        "drill_request": "C:\\Prefect\\backups\\drill.request", "drill_record": "C:\\Prefect\\backups\\drill.json"}
    assert "c:\\prefect\\backup\\pgpass.conf" not in state["files"]


def test_second_run_changes_nothing(aio):
    assert changed(aio[6][1]) == []
    assert aio[6][0].stdout.count("Svc-Secret-4c1d") == 0


def test_backup_now_starts_the_task_and_reports_the_file(aio):
    proc, data = aio[7]
    now = by_name(reached(data, LITE))["A backup was taken now by the scheduled task"]
    assert now["result"]["last_result"] == 0 and re.search(r"prefect-sqlite-\d{8}T\d{6}Z\.db$", now["result"]["file"])
    summary = by_name(host_results(data, LITE))["Backup summary"]["msg"]
    assert summary[0].startswith("host | kind") and summary[1].startswith(f"{LITE} | sqlite | OK |"), summary
    assert "prefect-backup OK sqlite" in summary[1] and "| 4096 | none |" in summary[1]


def test_backup_drill_on_request_and_on_the_configured_day(tmp_path, ansible_env, playbook, lite_inventory, aio_states):
    """-e backup_drill=true: the request file makes the task's run end with a drill, whatever the day; the request is
    used up. On a configured weekday the nightly run drills by itself; on another day it does not. A drill whose rows
    differ fails backup.yml, naming the drill and the table."""
    # The converged host's state holds no weekday at setup (sim_backup.py reads it only when the task runs).
    sim = converged(tmp_path, ansible_env, aio_states, weekday="Wednesday")
    proc, data = lite(sim, lite_inventory, extra(sim, backup_drill=True), "backup.yml")
    summary = by_name(host_results(data, LITE))["Backup summary"]["msg"]
    assert "| OK: 60 tables, 1234 rows, every table has the rows of the backup |" in summary[1], summary
    assert "prefect-drill OK sqlite" in summary[1]
    state = sim.state
    assert "c:\\prefect\\backups\\drill.request" not in state["files"]
    assert state["drill_records"]["c:\\prefect\\backups\\drill.json"]["ok"]
    # Not asked, not the day: no drill. Shown by test_backup_now_starts_the_task_and_reports_the_file ("| 4096 | none |",
    # backup.yml on a converged host whose day is not in backup_drill_weekdays); the request used up is the state above.
    # The configured day (backup_drill_weekdays), and a damaged backup: the run fails naming the drill.
    sim.update(drill_mismatch="flow_run")
    lite(sim, lite_inventory, extra(sim, backup_drill_weekdays=["Wednesday"]), playbook)
    proc, data = lite(sim, lite_inventory, extra(sim), "backup.yml", expect_rc=2)
    summary = by_name(host_results(data, LITE))["Backup summary"]["msg"]
    assert "| FAILED: 60 tables, 1234 rows, rows differ from the backup (flow_run expected=5 restored=4) |" in summary[1], summary
    assert "took the backup, but its drill failed: rows differ from the backup" in proc.stdout


@pytest.fixture(scope="module")
def preflight_refused(tmp_path_factory, ansible_env, playbook, lite_inventory):
    """One backup layer run on the SQLite all-in-one host with four bad values: the preflight reports each problem on a
    line of its own (roles/backup/tasks/validate.yml collects them in one check), and the host before and after."""
    sim = Sim(tmp_path_factory.mktemp("bk-preflight"), ansible_env, aio_state())
    before = sim.state
    more = {"backup_time": "25:00", "backup_keep_count": 0, "backup_drill_weekdays": ["sunday"],
            "prefect_database_name": "p" * 40 + "_drill"}
    proc, _ = lite(sim, lite_inventory, extra(sim, **more), playbook, expect_rc=2)
    return proc, before, sim.state


@pytest.mark.parametrize("problem", ["backup_drill_weekdays must name days as Monday ... Sunday (got sunday)",
                                     "is the name of its own drill database"])
def test_bad_drill_input_is_refused_before_any_host(preflight_refused, problem):
    proc, before, after = preflight_refused
    # On one of the host's lines (the json callback's text: a line ends at an escaped line break or the message's end).
    assert re.search(re.escape(LITE) + r': [^\\"]*' + re.escape(problem), proc.stdout), proc.stdout[-3000:]
    assert after == before, "a task reached the host"


def test_backup_now_fails_visibly_without_the_batch_logon_right(tmp_path, ansible_env, lite_inventory, aio_states):
    """A run the account may not start (its batch logon right was removed): last result 0x80070569, named in the failure."""
    sim = converged(tmp_path, ansible_env, aio_states)
    state = sim.state
    state["rights"]["SeBatchLogonRight"] = []
    sim.update(rights=state["rights"])
    proc, data = lite(sim, lite_inventory, extra(sim), "backup.yml", expect_rc=2)
    summary = by_name(host_results(data, LITE))["Backup summary"]["msg"]
    assert "FAILED, last result 2147943785" in summary[1], summary
    assert "ended with last result 2147943785" in proc.stdout


def test_the_task_stores_no_password_and_is_not_registered_again(tmp_path, ansible_env, playbook, lite_inventory, aio_states):
    """S4U: win_scheduled_task.ps1 demands a password value for it (an empty one is sent) and, with update_password
    false, registers the task again only when something differs: a password rotation (backup_update_password) leaves
    the task as it is, and a task of the previous release (logon type password) is moved to S4U once."""
    sim = converged(tmp_path, ansible_env, aio_states)
    again = lite(sim, lite_inventory, extra(sim, backup_update_password=True), playbook)
    assert SCHEDULE not in changed(again[1])
    tasks = sim.state["tasks"]
    tasks[TASK_KEY]["principal"]["logon_type"] = 1
    tasks[TASK_KEY]["password_sha"] = bk_sha("Svc-Secret-4c1d")
    sim.update(tasks=tasks)
    moved = lite(sim, lite_inventory, extra(sim), playbook)
    assert SCHEDULE in changed(moved[1])
    task = sim.state["tasks"][TASK_KEY]
    assert task["principal"]["logon_type"] == 2 and task["password_sha"] == bk_sha("")
    assert changed(lite(sim, lite_inventory, extra(sim), playbook)[1]) == []


def test_state_absent_removes_the_task_and_keeps_the_backups(tmp_path, ansible_env, playbook, lite_inventory, aio_states):
    sim, _name = backed_up(tmp_path, ansible_env, aio_states)
    backups = [p for p in sim.state["files"] if p.startswith("c:\\prefect\\backups\\prefect-sqlite-")]
    assert backups
    _, data = lite(sim, lite_inventory, extra(sim, backup_state="absent"), playbook)
    assert "Backup task is removed, the backups stay" in changed(data)
    state = sim.state
    assert TASK_KEY not in state["tasks"]
    assert all(p in state["files"] for p in backups)
    assert changed(lite(sim, lite_inventory, extra(sim, backup_state="absent"), playbook)[1]) == []


def test_database_host_dumps_with_a_dedicated_account(tmp_path, ansible_env, playbook):
    sim = Sim(tmp_path, ansible_env, db_state())
    run = {"playbook": playbook, "limit": DB}
    first = sim.run(extra(sim), **run)
    state = sim.state
    sid = state["accounts"]["svc_prefect_backup"]["sid"]
    task = state["tasks"][TASK_KEY]
    assert task["principal"]["sid"] == sid and task["actions"][0]["path"].endswith("powershell.exe")
    assert '-File "C:\\Prefect\\backup\\prefect_backup.ps1" -ConfigPath "C:\\Prefect\\backup\\backup.json"' in task["actions"][0]["arguments"]
    for right in ("SeBatchLogonRight", "SeDenyInteractiveLogonRight", "SeDenyRemoteInteractiveLogonRight", "SeDenyNetworkLogonRight"):
        assert sid in state["rights"][right], right
    assert state["pg"]["roles"]["prefect_backup"]["read_all"] and state["pg"]["applied"] == 1
    # A login of the previous release (no CREATEDB, which drills need) is made again by backup_role.sql.
    roles = state["pg"]["roles"]
    roles["prefect_backup"]["createdb"] = False
    sim.update(pg=dict(state["pg"], roles=roles))
    assert "PostgreSQL backup login may read all data and nothing more" in changed(sim.run(extra(sim), **run)[1], DB)
    assert sim.state["pg"]["roles"]["prefect_backup"]["createdb"] and sim.state["pg"]["applied"] == 2
    assert "c:\\prefect\\backup\\pgpass.conf" in state["files"]
    config = state["backup_configs"]["c:\\prefect\\backup\\backup.json"]
    assert config["user"] == "prefect_backup" and config["dump_args"][0] == "--format=custom"
    assert "PgBkp-Secret-1f3c" not in str(config)
    # Re-run: no change, and the superuser is not needed once the backup login works.
    second = sim.run(extra(sim, postgresql_superuser_password=""), **run)
    assert changed(second[1], DB) == [] and sim.state["pg"]["applied"] == 2
    # A rotated backup password is applied as the superuser and reported.
    third = sim.run(extra(sim, backup_database_password="PgBkp-Rotated-22"), **run)
    assert "PostgreSQL backup login may read all data and nothing more" in changed(third[1], DB)
    assert sim.state["pg"]["applied"] == 3
    now = sim.run(extra(sim, backup_database_password="PgBkp-Rotated-22", backup_drill=True), playbook="backup.yml", limit=DB)
    taken = by_name(reached(now[1], DB))["A backup was taken now by the scheduled task"]["result"]
    assert re.search(r"prefect-pg-\d{8}T\d{6}Z\.dump$", taken["file"])
    # The drill's SQL is beside the script, and the backup login may create its scratch database (backup_role.sql).
    assert taken["drill"]["ok"], taken["drill"]
    for name in ("backup_snapshot.sql", "backup_counts.sql", "backup_drill.sql"):
        assert "c:\\prefect\\backup\\" + name in sim.state["files"], name
    assert config["psql"].endswith("\\psql.exe") and config["drill_database"] == "prefect_drill"
    for proc, _ in (first, second, third, now):
        for secret in ("PgBkp-Secret-1f3c", "PgBkp-Rotated-22", "Bkp-Secret-77aa", "PgSuper-Secret-8b21"):
            assert secret not in proc.stdout + proc.stderr


def test_check_mode_on_a_database_host_without_postgresql_yet(tmp_path, ansible_env, playbook):
    """site.yml --check on a fresh host: the postgresql role installs nothing in check mode, so psql.exe is missing;
    pg_backup_role.ps1 reports the login as to be made instead of failing."""
    sim = Sim(tmp_path, ansible_env)
    before = sim.state
    proc, data = sim.run(extra(sim), playbook=playbook, limit=DB, args=["--check"])
    login = by_name(reached(data, DB))["PostgreSQL backup login may read all data and nothing more"]
    assert login["changed"]
    assert "PostgreSQL backup login problems are shown" not in by_name(reached(data, DB))
    after = sim.state
    for key in ("tasks", "dirs", "files", "pg", "accounts"):
        assert after.get(key, {}) == before.get(key, {}), key
    for secret in ("PgBkp-Secret-1f3c", "Bkp-Secret-77aa", "PgSuper-Secret-8b21"):
        assert secret not in proc.stdout + proc.stderr


def test_server_host_with_a_database_takes_no_backup(tmp_path, ansible_env, playbook):
    """prefect-srv01 uses prefect-db01: the dumps are taken there, nothing on the server host."""
    sim = Sim(tmp_path, ansible_env, aio_state())
    _, data = sim.run(extra(sim), playbook=playbook, limit="prefect-srv01.corp.local")
    assert reached(data, "prefect-srv01.corp.local") == [] and "tasks" not in sim.state


BAD_INPUT = {
    "time_hour": ({"backup_time": "25:00"}, "backup_time must be a 24-hour local time HH:MM"),
    "time_short": ({"backup_time": "2:30"}, "backup_time must be a 24-hour local time HH:MM"),
    "keep_count": ({"backup_keep_count": 0}, "backup_keep_count must be 1 to 3650"),
    "keep_days": ({"backup_keep_days": -1}, "backup_keep_days must be 0 (no age limit) to 3650"),
    "keep_days_text": ({"backup_keep_days": "a month"}, "backup_keep_days"),
    "time_limit": ({"backup_time_limit_minutes": 2}, "backup_time_limit_minutes must be 5 to 1440"),
    "dir_relative": ({"backup_dir": "backups"}, "backup_dir must be an absolute Windows path"),
    "dir_in_home": ({"backup_dir": "C:\\Prefect\\data\\backups"}, "backup_dir must not be prefect_home or inside it"),
    "home_in_dir": ({"backup_home": "C:\\Prefect\\backups\\bin"}, "backup_dir and backup_home must be two different directories"),
    "task_name": ({"backup_task_name": "Prefect/Backup"}, "backup_task_name must be letters"),
    "task_folder": ({"backup_task_folder": "enclave.prefect"}, "backup_task_folder must be a Task Scheduler folder"),
    "admin": ({"backup_sqlite_account": "Administrator"}, "must be a dedicated, unprivileged account"),
    "builtin": ({"backup_sqlite_account": "NT AUTHORITY\\SYSTEM"}, "must be a dedicated, unprivileged account"),
    "state": ({"backup_state": "gone"}, "backup_state"),
}


def test_bad_input_is_refused_at_role_start(tmp_path, ansible_env):
    """Every case in one ansible-playbook run (one inventory host per case): each fails in validation, none reaches a host."""
    from rolerun import run_cases
    base = {"prefect_database_host": "", "prefect_bundle_dir": str(tmp_path)}
    runs = run_cases(tmp_path, ansible_env, "backup", {k: {**base, **bad} for k, (bad, _) in BAD_INPUT.items()},
                     groups={"prefect_server": list(BAD_INPUT)})
    for case, (_, named) in BAD_INPUT.items():
        name, result = runs[case].failed()
        assert named in str(result.get("msg", "")) + str(result.get("argument_errors", "")), (case, result.get("msg"))
        assert runs[case].host_actions() == [], (case, runs[case].host_actions())


def test_bad_input_is_refused_in_the_preflight_before_any_host(preflight_refused):
    """Several problems of one host, each on a line of its own (the run of preflight_refused, with the drill's two)."""
    proc, before, after = preflight_refused
    assert f"{LITE}: backup_time must be a 24-hour local time HH:MM" in proc.stdout
    assert f"{LITE}: backup_keep_count must be 1 to 3650" in proc.stdout
    assert after == before, "a task reached the host"


def test_a_line_break_in_a_database_password_is_refused_before_any_host(tmp_path, ansible_env, playbook):
    """Both passwords in one run: the check names each one that holds a line break (roles/backup/tasks/validate.yml)."""
    sim = Sim(tmp_path, ansible_env, db_state())
    before = sim.state
    bad = {"backup_database_password": "Pg-Secret-line1\nline2", "prefect_database_password": "Pg-Owner-line1\rline2"}
    proc, _ = sim.run(extra(sim, **bad), playbook=playbook, limit=DB, expect_rc=2)
    assert f"{DB}: backup_database_password and prefect_database_password must not hold a line break" in proc.stdout
    assert "Pg-Secret-line1" not in proc.stdout + proc.stderr and "Pg-Owner-line1" not in proc.stdout + proc.stderr
    assert sim.state == before


def test_database_host_needs_the_backup_login_password(tmp_path, ansible_env, playbook):
    sim = Sim(tmp_path, ansible_env, db_state())
    before = sim.state
    proc, _ = sim.run(extra(sim, backup_database_password=""), playbook=playbook, limit=DB, expect_rc=2)
    assert f"{DB}: backup_database_password (Ansible Vault) must be set" in proc.stdout
    assert sim.state == before


# --------------------------------------------------------------------------- restore.yml

STEP = "Prefect services are as this step needs, "
RESTORE_ORDER = [STEP + "workers stopped", STEP + "server stopped", "Prefect database holds the named backup",
                 "Restored database has the schema of the installed Prefect", STEP + "server started",
                 "Prefect server answers again after the restore", STEP + "workers started"]


@pytest.fixture(scope="module")
def restorable(tmp_path_factory, ansible_env, lite_inventory, aio_states):
    """The aio fixture's host after its backup.yml (a copy)."""
    sim, name = backed_up(tmp_path_factory.mktemp("bk-restore"), ansible_env, aio_states)
    return sim, name, lite_inventory


REFUSED_RESTORES = {"confirm-none": (None, None), "confirm-case": (None, "YES, OVERWRITE PREFECT.DB"),
                    "file-path": ("C:\\Temp\\x.db", CONFIRM_SQLITE), "file-kind": ("prefect-pg-20261130T023000Z.dump", CONFIRM_SQLITE)}


@pytest.fixture(scope="module")
def restore_refused(tmp_path_factory, restorable):
    """One restore.yml run for every refused input: one SQLite all-in-one host per case (restorable's host variables,
    its own address, the case's backup_restore_file and backup_restore_confirm as host variables), on restorable's host.
    The confirmation is checked for every host of the run before any is touched (the play is any_errors_fatal)."""
    sim, name, _inventory = restorable
    hosts, lite_vars = {}, {"prefect_database_host": "", "nssm_services_workers": [{"service": "PrefectWorker", "pool": "windows-process"}]}
    for number, (case, (file_name, confirm)) in enumerate(REFUSED_RESTORES.items()):
        more = {"backup_restore_file": file_name or name, **({"backup_restore_confirm": confirm} if confirm else {})}
        hosts[f"prefect-lite-{case}.corp.local"] = {**lite_vars, "prefect_host_address": f"10.20.1.{41 + number}", **more}
    path = tmp_path_factory.mktemp("bk-refused") / "refused.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts, "children": {
        "prefect_server": {"hosts": {h: None for h in hosts}}, "prefect_workers": {"hosts": {h: None for h in hosts}}}}}))
    before = sim.state
    # Its hosts only: the example inventory (Sim.run's -i) holds other prefect_server hosts.
    proc, data = sim.run(extra(sim), playbook="restore.yml", limit=":".join(hosts), expect_rc=2,
                         args=["-i", str(path), "--forks", str(len(hosts))])
    return proc, data, before, sim.state


def _refusal(restore_refused, case):
    """The refusal of the case's host: the failed check's message."""
    _proc, data, before, after = restore_refused
    assert after == before, "a task reached the host"
    host = f"prefect-lite-{case}.corp.local"
    failed = [(n, r) for n, r in host_results(data, host) if r.get("failed")]
    assert failed and failed[0][0].endswith("Restore names a backup file of this host's kind and is confirmed"), failed
    msg = " ".join(failed[0][1]["msg"].split())
    assert msg.startswith(host + ": nothing was stopped or restored"), msg
    return msg


@pytest.mark.parametrize("case", ["confirm-none", "confirm-case"])
def test_restore_refuses_without_the_exact_confirmation(restore_refused, case):
    msg = _refusal(restore_refused, case)
    assert CONFIRM_SQLITE in msg and "(matches)" not in msg
    confirm = REFUSED_RESTORES[case][1]
    if confirm:
        assert f"(got {confirm})" in msg, msg


@pytest.mark.parametrize("case", ["file-path", "file-kind"])
def test_restore_refuses_a_bad_file_name(restore_refused, case):
    msg = _refusal(restore_refused, case)
    # Confirmed as asked: the file name alone is refused.
    assert f"got '{REFUSED_RESTORES[case][0]}'" in msg and "(matches)" in msg, msg


def test_restore_check_mode_prints_the_plan_and_changes_nothing(restorable):
    sim, name, lite_inventory = restorable
    before = sim.state
    proc, data = lite(sim, lite_inventory, extra(sim, backup_restore_file=name, backup_restore_confirm=CONFIRM_SQLITE),
                      "restore.yml", more=["--check"])
    after = sim.state
    # Nothing restored or migrated. (Service states are not compared: the shared win_service stand-in of sim_module.py
    # does not honour check mode, the real module does.)
    assert after.get("events") == before.get("events") and after["files"] == before["files"]
    summary = by_name(host_results(data, LITE))["Restore summary"]["msg"]
    assert any("| restore " + name + " | restore " in row for row in summary), summary


def test_restore_stops_restores_upgrades_starts_in_order(restorable):
    sim, name, lite_inventory = restorable
    proc, data = lite(sim, lite_inventory, extra(sim, backup_restore_file=name, backup_restore_confirm=CONFIRM_SQLITE),
                      "restore.yml")
    ran = [n.split(" : ", 1)[-1] for n, r in host_results(data, LITE) if not r.get("skipped")]
    positions = [ran.index(step) for step in RESTORE_ORDER]
    assert positions == sorted(positions), list(zip(RESTORE_ORDER, positions))
    events = sim.state["events"]
    # The restore and the upgrade saw every Prefect service stopped; at the end they run again.
    assert [e[0] for e in events] == ["restore", "upgrade"] and events[0][2] == [] and events[1][2] == []
    assert events[0][3].lower() == "c:\\prefect\\backups\\" + name.lower()
    assert all(s["running"] for s in sim.state["services"].values())
    summary = by_name(host_results(data, LITE))["Restore summary"]["msg"]
    assert summary[0] == "host | step | result"
    assert any("restored, replaced file kept: C:\\Prefect\\data\\prefect.db.replaced-" in row for row in summary), summary
    assert any(row.endswith("| server health | healthy") for row in summary), summary


def test_backup_role_tasks_carry_role_and_stage_tags(ansible_env):
    proc = subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "--list-tasks", "playbooks/layers/backup.yml"],
                          cwd=REPO, env=ansible_env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if re.match(r"^\s+(enclave\.prefect\.)?backup : ", line)]
    assert lines
    for line in lines:
        tags = set(re.search(r"TAGS: \[([^\]]*)\]", line).group(1).replace(" ", "").split(","))
        if "Validating arguments" in line:
            assert "always" in tags, line
            continue
        assert "backup" in tags and tags & {"install", "config", "service"}, line


# A failure after the restore (the schema upgrade, the server's health) puts the database from before back and starts
# the services on it; the run fails naming the step. (sim_operate.py's injection: the matching call fails once.)
AFTER_RESTORE_FAILURES = [("schema upgrade", {"target": "database_upgrade.ps1", "match": "ServiceName"}),
                          ("server started and healthy", {"target": "server_health", "match": "api_url"})]


@pytest.mark.parametrize("step, inject", AFTER_RESTORE_FAILURES, ids=[f[0] for f in AFTER_RESTORE_FAILURES])
def test_restore_failing_after_the_swap_puts_the_database_back(tmp_path, ansible_env, lite_inventory, aio_states, step, inject):
    sim, name = backed_up(tmp_path, ansible_env, aio_states)
    state = sim.state
    database = "c:\\prefect\\data\\prefect.db"
    state["files"][database] = "written after the backup"
    sim.update(**state, inject_failure=inject)
    proc, data = lite(sim, lite_inventory, extra(sim, backup_restore_file=name, backup_restore_confirm=CONFIRM_SQLITE),
                      "restore.yml", expect_rc=2)
    after = sim.state
    assert after.get("injected") == [inject], "the failure was not injected where intended"
    assert f"The restore failed at step '{step}'" in proc.stdout, proc.stdout[-3000:]
    assert after["files"][database] == "written after the backup"
    assert not any(".replaced-" in f for f in after["files"]), "the replaced file went back into place"
    assert [e[0] for e in after["events"]][-1] == "undo"
    assert all(s["running"] for s in after["services"].values())
    summary = by_name(host_results(data, LITE))["Restore summary"]["msg"]
    assert any("| restore undo | " in row for row in summary), summary


@pytest.fixture(scope="module")
def pg_restorable(tmp_path_factory, ansible_env, playbook):
    """The example's all-in-one host, its own database host: PostgreSQL dumps."""
    state = aio_state()
    state["files"].update(db_state()["files"])
    state["pg"] = db_state()["pg"]
    sim = Sim(tmp_path_factory.mktemp("bk-pg-restore"), ansible_env, state)
    sim.run(extra(sim), playbook=playbook)
    _, data = sim.run(extra(sim), playbook="backup.yml")
    name = by_name(reached(data, AIO))["A backup was taken now by the scheduled task"]["result"]["file"].rsplit("\\", 1)[-1]
    return sim, name


def test_postgresql_restore_drops_the_old_database_only_after_the_server_answers(pg_restorable):
    sim, name = pg_restorable
    proc, data = sim.run(extra(sim, backup_restore_file=name, backup_restore_confirm="yes, overwrite prefect"),
                         playbook="restore.yml")
    after = sim.state
    assert after["pg"]["database"].endswith(name) and "aside" not in after["pg"]
    ran = [n.split(" : ", 1)[-1] for n, r in host_results(data, AIO) if not r.get("skipped")]
    assert ran.index("Prefect server answers again after the restore") < ran.index("Restore is ended, keep")
    assert after["events"][-3][4] == ["--no-password", "--single-transaction", "--exit-on-error"], \
        "no --clean: the restore goes into an empty database"
    assert [e[0] for e in after["events"]][-3:] == ["restore", "upgrade", "keep"]


def test_postgresql_restore_needs_the_superuser_password(pg_restorable):
    sim, name = pg_restorable
    before = sim.state
    proc, _ = sim.run(extra(sim, backup_restore_file=name, backup_restore_confirm="yes, overwrite prefect",
                            postgresql_superuser_password=""), playbook="restore.yml", expect_rc=2)
    assert "set backup_postgresql_superuser_password" in proc.stdout
    assert sim.state == before


def test_site_check_mode_on_a_fresh_sqlite_server_host(tmp_path, ansible_env, lite_inventory):
    """site.yml --check on a fresh all-in-one host on SQLite: the server account the services layer would create in the
    same run does not exist yet, and the backup layer reports what it would grant it instead of failing."""
    sim = Sim(tmp_path, ansible_env)
    before = sim.state
    proc, data = lite(sim, lite_inventory, extra(sim), "site.yml", more=["--check"])
    results = by_name(host_results(data, LITE))
    after = sim.state
    for key in ("tasks", "dirs", "accounts", "rights"):
        assert after.get(key, {}) == before.get(key, {}), key
    assert results["Backup account may log on as a batch job, and the dedicated one in no other way"].get("skipped"), \
        "nothing can be granted to an account this run would create"


def test_backup_now_waits_for_the_nightly_run_still_going(tmp_path, ansible_env, lite_inventory, aio_states):
    """The task starts no second instance: backup.yml waits for the run already going, then takes its own."""
    sim = converged(tmp_path, ansible_env, aio_states)
    tasks = sim.state["tasks"]
    tasks[TASK_KEY]["running"] = True
    sim.update(tasks=tasks)
    _, data = lite(sim, lite_inventory, extra(sim), "backup.yml")
    result = by_name(reached(data, LITE))["A backup was taken now by the scheduled task"]["result"]
    assert result["waited"] and result["last_result"] == 0 and result["file"]
    summary = by_name(host_results(data, LITE))
    assert "after the run that was already going" in json.dumps(summary), "the table says it waited"
