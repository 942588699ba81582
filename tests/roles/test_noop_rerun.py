"""The real site.yml against the simulated Windows host (simhost.py): a first run installs everything, the re-run
changes nothing and stays cheap, a new lock switches the venv and restarts the services, and an interrupted run
is finished by the next one, because the restart decision is read from the host, not remembered by a run.

The NSSM stand-in behaves as NSSM 2.24-101 does (read in its source): `nssm set` to a non-zero default deletes the
value, and NSSM uses the default when a value is absent. A negative control shows that a registry read which
ignores those deleted defaults makes every re-run report changes and restart the services here.

The all-in-one host of the example inventory gets every layer: Python, the venv, PostgreSQL, the services, the backups
(pg_dump, the host is in prefect_database), the IIS front door and the firewall.

Counted, not measured on Windows: the numbers are documented in docs/roles.md ("No-op re-run").
"""
from __future__ import annotations

import hashlib
import json
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from rolerun import REPO
from simhost import (DEFAULT_ENVIRONMENT_NAMES, FORBIDDEN_ON_RERUN, HOST, INSTALLER, LOCK, PROXY_CERT_THUMBPRINT, SECRETS, Sim, by_name,
                     host_results, make_bundle, module_runs, reached)

pytestmark = pytest.mark.simulated

# Documented in docs/roles.md; update both together.
EXPECTED_HOST_TASKS = 44
EXPECTED_MODULE_RUNS = 54
# Per role (tasks, module runs); common's tasks count for the role that imports them.
EXPECTED_PER_ROLE = {"python": (1, 2), "prefect_venv": (1, 1), "postgresql": (8, 8), "nssm_services": (12, 17),
                     "backup": (7, 10), "iis_proxy": (12, 13), "firewall": (3, 3)}
# win_copy tasks that reach a converged host: the action plugin (ansible.windows plugins/action/win_copy.py) first runs
# the module with _copy_mode=query, which compares checksums on the host, and transfers nothing when they match.
CHECKSUM_QUERIES = {"Backup script is on the host", "Proxy web.config holds the rewrite rules, limits and headers"}
# An all-in-one host with N worker services (one worker account): each extra worker adds this many module runs.
EXPECTED_RUNS_PER_EXTRA_WORKER = 1

SETTINGS = "NSSM settings of every Prefect service are as configured"
RESTART = "Prefect services running with outdated settings, venv or account are restarted"


def _extra(bundle, **more):
    # The stand-in installer is not python.org's, so its digest replaces the catalogue's; the example inventory's proxy
    # thumbprint is a placeholder, the simulated host's certificate store holds PROXY_CERT_THUMBPRINT.
    return {"prefect_bundle_dir": str(bundle), **SECRETS, "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest(),
            "iis_proxy_certificate_thumbprint": PROXY_CERT_THUMBPRINT, **more}


# Domain accounts named like the local service accounts (a domain member's primary domain): a bare name that is not
# found locally would resolve to them.
DIRECTORY = {"CORP\\svc_prefect": {"sid": "S-1-5-21-2000-3001"}, "CORP\\svc_prefect_worker": {"sid": "S-1-5-21-2000-3002"}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ansible_env):
    """A first run on an empty simulated host, the re-run, then a run with a new lock. The host's domain has accounts
    named like the local service accounts."""
    sim = Sim(tmp_path_factory.mktemp("noop"), ansible_env, {"directory": DIRECTORY})
    bundle = make_bundle(sim.root)
    first = sim.run(_extra(bundle))
    # The converged host the scenarios below start from (fixture `converged`): the state right after the first run.
    sim.first_state = sim.state
    second = sim.run(_extra(bundle))
    # A new bundle whose lock changed: a new venv, the junction moves, the running services restart.
    make_bundle(sim.root, LOCK + b"extra==1.0 --hash=sha256:1111\n")
    third = sim.run(_extra(bundle, prefect_venv_check_committed_lock=False))
    return first[1], second[1], third[1], [run[0].stdout + run[0].stderr for run in (first, second, third)], sim


def test_first_run_installs_everything(runs):
    # Any run of the task: common's tasks run once per role that imports them.
    changed = {n.split(" : ", 1)[-1] for n, r in reached(runs[0]) if r.get("changed")}
    for task in ["Artifact is copied from the control node as one file", "Python is installed for all users",
                 "Artifact is unpacked on the host", "Venv for this Prefect version and lock is built",
                 "Current junction points at the venv that reports the pinned Prefect",
                 "Service accounts may log on as a service and in no other way",
                 "Prefect root inherits nothing and the listed directories have their rules",
                 SETTINGS, "Windows service settings, account and recovery actions are as configured",
                 "PostgreSQL is installed silently from the EDB installer", "Prefect role, its database and pg_trgm are as configured",
                 "Backup runs daily as its account and shows a failed run in its last result",
                 "PostgreSQL backup login may read all data and nothing more",
                 "IIS role services are installed", "IIS extension is installed, URL Rewrite",
                 "IIS extension is installed, Application Request Routing",
                 "People's site answers HTTPS on prefect_public_port for prefect_public_host",
                 "Firewall profiles are on and block inbound traffic no rule allows"]:
        assert task in changed, (task, sorted(changed))
    # New services are started by the service task, not restarted.
    assert RESTART not in by_name(reached(runs[0]))


def test_host_state_after_the_first_run(runs):
    """What the host ends up with: NSSM values at non-zero defaults are absent (NSSM deleted them), the Parameters
    key is restricted to SYSTEM, Administrators and the account, server and worker run as different accounts with
    -P, the root inherits nothing and each account writes only its directories, and the services run the venv
    the junction points to, not the junction."""
    state = runs[4].state
    server, worker = state["services"]["PrefectServer"], state["services"]["PrefectWorker"]
    # The role never needs `nssm set` for a value at its default, and NSSM would delete a non-zero one anyway.
    for key in ["AppStdoutCreationDisposition", "AppStopMethodWindow", "AppStopMethodThreads", "AppKillProcessTree"]:
        assert key not in server["registry"], key
    # Zero defaults asked for are never set at all: absent already reads as NSSM's 0.
    assert "AppNoConsole" not in server["registry"] and "AppStopMethodSkip" not in server["registry"]
    assert server["registry"]["AppThrottle"] == 5000 and server["registry"]["AppRotateFiles"] == 1
    venv = state["junctions"]["c:\\prefect\\venvs\\current"]
    assert server["registry"]["Application"] == venv + "\\scripts\\python.exe"
    assert server["registry"]["AppParameters"].startswith("-P -m prefect server start")
    assert worker["registry"]["AppParameters"].startswith("-P -m prefect worker start --pool windows-process")
    sids = {name: info["sid"] for name, info in state["accounts"].items()}
    assert server["acl"] == {"S-1-5-18": "FullControl", "S-1-5-32-544": "FullControl", sids["svc_prefect"]: "ReadKey"}
    assert worker["acl"] == {"S-1-5-18": "FullControl", "S-1-5-32-544": "FullControl", sids["svc_prefect_worker"]: "ReadKey"}
    assert server["protected"] and worker["protected"]
    assert (server["object_name"], worker["object_name"]) == (".\\svc_prefect", ".\\svc_prefect_worker")
    assert worker["environment"]["PREFECT_HOME"] == "C:\\Prefect\\worker-data"
    assert "PREFECT_SERVER_DATABASE_CONNECTION_URL" not in worker["environment"]
    dirs = state["dirs"]
    assert dirs["c:\\prefect"]["protected"] and "S-1-5-32-545" not in dirs["c:\\prefect"]["acl"]
    # The server's data and logs inherit nothing: the worker account, which runs flow code, cannot read them.
    admins = {"S-1-5-18": "FullControl", "S-1-5-32-544": "FullControl"}
    assert dirs["c:\\prefect\\data"] == {"acl": dict(admins, **{sids["svc_prefect"]: "Modify"}), "protected": True}
    assert dirs["c:\\prefect\\logs"] == {"acl": dict(admins, **{sids["svc_prefect"]: "Modify"}), "protected": True}
    assert dirs["c:\\prefect\\logs\\workers"]["acl"] == {sids["svc_prefect_worker"]: "Modify"}
    assert dirs["c:\\prefect\\flows"]["acl"] == {sids["svc_prefect_worker"]: "Modify"}
    assert worker["registry"]["AppStdout"] == "C:\\Prefect\\logs\\workers\\PrefectWorker.out.log"
    # The backup task runs as its own account (pg_dump on this database host), not as a Prefect service's.
    # PostgreSQL's virtual account (NT SERVICE\postgresql-x64-17, S-1-5-80-...) holds it by name too.
    service_sids = [sids["svc_prefect"], sids["svc_prefect_worker"]]
    virtual = [sid for sid in state["rights"]["SeServiceLogonRight"] if sid.startswith("S-1-5-80-")]
    assert len(virtual) == 1 and state["dirs"]["d:\\postgresql\\17\\data"]["acl"][virtual[0]] == "Modify"
    assert sorted(state["rights"]["SeServiceLogonRight"]) == sorted(service_sids + virtual)
    for right in ["SeDenyInteractiveLogonRight", "SeDenyRemoteInteractiveLogonRight", "SeDenyNetworkLogonRight"]:
        assert sorted(state["rights"][right]) == sorted(sids.values()), right
    task = state["tasks"]["\\enclave.prefect\\prefectdatabasebackup"]
    assert task["principal"]["sid"] == sids["svc_prefect_backup"] and state["rights"]["SeBatchLogonRight"] == [sids["svc_prefect_backup"]]
    # The front door on the same host: both extensions, the people's site bound to the certificate, no workers' site
    # (the local worker calls the API on loopback).
    iis = state["iis"]
    assert iis["extensions"] == ["URL Rewrite", "Application Request Routing"]
    assert iis["sites"]["Prefect"]["bindings"] == {
        "*:443:prefect.corp.local": {"protocol": "https", "sslFlags": 1, "certificate": PROXY_CERT_THUMBPRINT}}
    assert "Prefect-Workers" not in iis["sites"]


def forbidden_on_rerun(hits: list[tuple[str, dict]]) -> list[str]:
    """Installs, downloads, unpacks and transfers among a re-run's tasks: FORBIDDEN_ON_RERUN actions, except the
    CHECKSUM_QUERIES win_copy tasks, which must then have found the host's file equal (unchanged: nothing sent)."""
    return [n for n, r in hits if r.get("action", "").rsplit(".", 1)[-1] in FORBIDDEN_ON_RERUN
            and not (n.split(" : ", 1)[-1] in CHECKSUM_QUERIES and not r.get("changed"))]


def per_role(hits: list[tuple[str, dict]]) -> dict[str, tuple[int, int]]:
    """Tasks and module runs by role, in play order; common's tasks count for the role whose play imported them."""
    counts, role = {}, None
    for name, result in hits:
        task_role = name.split(" : ", 1)[0].rsplit(".", 1)[-1]
        role = role if task_role == "common" else task_role
        tasks, runs = counts.get(role, (0, 0))
        counts[role] = (tasks + 1, runs + module_runs([(name, result)]))
    return counts


def test_noop_rerun_is_cheap_and_changes_nothing(runs):
    second = runs[1]
    hits = reached(second)
    assert not [n for n, r in hits if r.get("changed")], "a no-op re-run reported changes"
    assert not forbidden_on_rerun(hits), forbidden_on_rerun(hits)
    listing = "\n".join(f"  {n} ({r.get('action')}, {len(r.get('results', [])) or 1} run(s))" for n, r in hits)
    print(f"tasks reaching the host: {len(hits)}; module runs: {module_runs(hits)}; per role {per_role(hits)}\n{listing}")
    assert per_role(hits) == EXPECTED_PER_ROLE, listing
    assert (len(hits), module_runs(hits)) == (EXPECTED_HOST_TASKS, EXPECTED_MODULE_RUNS), listing


def test_each_role_checks_its_input_once_in_the_preflight(runs):
    """In site.yml the layer plays skip the input checks the preflight ran for the host (preflight_covers_play): each
    role's own checks (one task of each validate.yml) ran in the preflight play only (there, common's also as the
    other roles' dependency)."""
    second = runs[1]
    checks = {"python": "Requested Python matches the minor version the venvs are built for",
              "common": "Artifact delivery has a source for the chosen mode",
              "nssm_services": "Service input is well formed and consistent"}
    for role, task in checks.items():
        plays = [play["play"]["name"] for play in second["plays"] for t in play["tasks"]
                 if t["task"]["name"].split(" : ", 1)[-1] == task and HOST in t["hosts"]
                 and not t["hosts"][HOST].get("skipped")]
        assert plays and set(plays) == {"Preflight of every targeted host's input, on the control node"}, (role, plays)


def test_local_accounts_stay_local_next_to_same_named_domain_accounts(runs):
    """Every rule the run wrote (directories, the services' Parameters keys, logon rights) names the local accounts'
    SIDs, never the same-named domain accounts'."""
    *_rest, sim = runs
    state = json.dumps(sim.state["dirs"]) + json.dumps(sim.state["services"]) + json.dumps(sim.state.get("rights", {}))
    local = {sim.state["accounts"][name]["sid"] for name in ("svc_prefect", "svc_prefect_worker")}
    assert all(sid in state for sid in local)
    for account in DIRECTORY.values():
        assert account["sid"] not in state


def test_check_mode_before_the_accounts_exist_never_names_the_domain_accounts(tmp_path, ansible_env):
    """In check mode on a new host the local accounts do not exist yet: a bare name would resolve to the same-named
    domain account (LookupAccountName goes on to the domain), so the scripts get '.\\name', which stays local."""
    sim = Sim(tmp_path, ansible_env, {"directory": DIRECTORY})
    proc, _data = sim.run(_extra(make_bundle(sim.root)), playbook="nssm_services.yml", args=["--check"])
    for account in DIRECTORY.values():
        assert account["sid"] not in proc.stdout


def test_forbidden_on_rerun_catches_a_transfer(runs):
    """Negative control of the check above: the first run's artifact copies and installs are caught, and a checksum
    query that had to copy (changed) is caught too."""
    first = reached(runs[0])
    caught = {n.split(" : ", 1)[-1] for n in forbidden_on_rerun(first)}
    assert {"Artifact is copied from the control node as one file", "Python is installed for all users",
            "Backup script is on the host", "Proxy web.config holds the rewrite rules, limits and headers"} <= caught, caught


def test_new_lock_switches_venv_and_restarts_running_services(runs):
    third = by_name(reached(runs[2]))
    assert third["Venv for this Prefect version and lock is built"]["changed"]
    assert third["Current junction points at the venv that reports the pinned Prefect"]["changed"]
    # The local worker depends on the server: stopped before it (its full clean-shutdown time), started after it.
    assert [r["item"] for r in third[RESTART]["results"]] == ["PrefectServer"]
    assert [r["item"] for r in third["Local workers are stopped before their server restarts"]["results"]] == ["PrefectWorker"]
    assert [r["item"] for r in third["Local workers stopped for their server's restart run again"]["results"]] == ["PrefectWorker"]
    order = [n.split(" : ", 1)[-1] for n, _r in reached(runs[2])]
    assert order.index("Local workers are stopped before their server restarts") < order.index(RESTART) < \
        order.index("Local workers stopped for their server's restart run again")
    state = runs[4].state
    venv = state["junctions"]["c:\\prefect\\venvs\\current"]
    for service in ("PrefectServer", "PrefectWorker"):
        assert state["services"][service]["registry"]["Application"] == venv + "\\scripts\\python.exe"
        assert state["services"][service]["app_started"] > state["services"][service]["configured_at"]


def test_secrets_never_appear_in_any_result(runs):
    """Install, re-run and upgrade with auth string, database URL and passwords set: the json callback prints
    every task result in full, and none of them holds a secret."""
    fragments = ("Svc-Secret-4c1d", "Wrk-Secret-6e21", "WrkApi-Secret-5b3c", "Db-Secret-0a7f", "PgDb-Secret-3e9a",
                 "PgSu-Secret-71c4", "Bkp-Secret-2d8e", "PgBkp-Secret-9c05")
    # Every Vault value of the run is looked for (by its password part: JSON escapes the rest).
    assert all(any(f in value for f in fragments) for value in SECRETS.values()), "a secret of SECRETS is not looked for"
    for output in runs[3]:
        for secret in fragments:
            assert secret not in output, f"{secret} leaked"


@pytest.fixture(scope="module")
def converged(tmp_path_factory, ansible_env, runs):
    """A converged all-in-one host to start the scenarios below from: the state `runs` left after its first run."""
    sim = Sim(tmp_path_factory.mktemp("converged"), ansible_env, runs[-1].first_state)
    return sim, make_bundle(sim.root)


def _fresh(converged, tmp_path, ansible_env):
    sim, bundle = converged
    copy = Sim(tmp_path, ansible_env, sim.state)
    return copy, make_bundle(copy.root)


def test_venv_switch_by_a_layer_run_alone_is_finished_by_the_services_layer(converged, tmp_path, ansible_env):
    """prefect_venv.yml alone moves the junction; nothing restarts then. The next services-layer run sees on the
    host that the services run another venv and restarts them: no run has to remember the switch."""
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    make_bundle(sim.root, LOCK + b"extra==2.0 --hash=sha256:2222\n")
    extra = _extra(bundle, prefect_venv_check_committed_lock=False)
    venv_only = by_name(reached(sim.run(extra, playbook="prefect_venv.yml")[1]))
    assert venv_only["Current junction points at the venv that reports the pinned Prefect"]["changed"]
    services = by_name(reached(sim.run(extra, playbook="nssm_services.yml")[1]))
    assert [r["item"] for r in services[RESTART]["results"]] == ["PrefectServer"]
    again = by_name(reached(sim.run(extra, playbook="nssm_services.yml")[1]))
    assert RESTART not in again and not [n for n, r in again.items() if r.get("changed")]


def test_run_interrupted_before_the_restart_is_finished_by_the_next(converged, tmp_path, ansible_env):
    """A changed setting is written, then the run stops before the restart: the next run, which writes nothing,
    still restarts the service, because its application started before the settings changed."""
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    sim.update(fail_restart=True)
    extra = _extra(bundle, nssm_services_throttle_ms=6000)
    sim.run(extra, playbook="nssm_services.yml", expect_rc=2)
    second = by_name(reached(sim.run(extra, playbook="nssm_services.yml")[1]))
    assert not second[SETTINGS]["changed"]
    assert [r["item"] for r in second[RESTART]["results"]] == ["PrefectServer"]


def test_account_changed_by_win_service_but_not_restarted_is_finished_by_the_next(converged, tmp_path, ansible_env):
    """The service's logon account differs from the running process's: restart, even with no setting changed."""
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    state = sim.state
    state["services"]["PrefectWorker"]["process_owner"] = ".\\svc_prefect"
    sim.update(services=state["services"])
    second = by_name(reached(sim.run(_extra(bundle), playbook="nssm_services.yml")[1]))
    assert [r["item"] for r in second[RESTART]["results"]] == ["PrefectWorker"]


def test_reading_the_registry_without_nssm_defaults_never_converges(converged, tmp_path, ansible_env):
    """Negative control: NSSM deleted the five settings the role asks for at their defaults (`nssm set` to a default
    deletes the value). A script that read an absent value as empty instead of NSSM's default would see a difference
    on every run, set it again (NSSM deletes it again) and restart the services: the simulated host catches this
    class of defect, and the role's script, which applies the defaults table, does not have it."""
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    assert "AppKillProcessTree" not in sim.state["services"]["PrefectServer"]["registry"]
    sim.update(read_absent_as_empty=True)
    second = by_name(reached(sim.run(_extra(bundle), playbook="nssm_services.yml")[1]))
    assert second[SETTINGS]["changed"]
    assert set(sim.state["last_nssm_report"]["PrefectServer"]["changes"]) >= {
        "AppStdoutCreationDisposition", "AppStderrCreationDisposition", "AppStopMethodWindow", "AppStopMethodThreads",
        "AppKillProcessTree"}
    assert [r["item"] for r in second[RESTART]["results"]] == ["PrefectServer"]
    # `nssm set` deleted the values again, so the next run finds the same "difference": it never converges.
    third = by_name(reached(sim.run(_extra(bundle), playbook="nssm_services.yml")[1]))
    assert third[SETTINGS]["changed"] and "AppKillProcessTree" in sim.state["last_nssm_report"]["PrefectServer"]["changes"]


def test_nssm_get_prints_the_default_of_an_absent_value(converged, tmp_path, ansible_env):
    """What `nssm get` really prints for a deleted default (settings.cpp get_setting presets it): comparing with it
    converges too. The role reads the registry once per service instead of starting nssm.exe once per setting."""
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    sim.update(read_via_nssm_get=True)
    second = by_name(reached(sim.run(_extra(bundle), playbook="nssm_services.yml")[1]))
    assert not second[SETTINGS]["changed"] and RESTART not in second


def test_crash_looping_or_throttled_service_fails_verify(converged, tmp_path, ansible_env):
    """NSSM shows a crash-looping application's service as running (or PAUSED while throttled): verify reads the
    application process after the settle time and fails naming the service and its log."""
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    state = sim.state
    state["services"]["PrefectWorker"]["crash_loop"] = True
    state["services"]["PrefectServer"]["state_override"] = "Paused"
    sim.update(services=state["services"])
    data = sim.run(_extra(bundle), playbook="nssm_services.yml", expect_rc=2, args=["--tags", "verify"])[1]
    failed = [(n, r) for n, r in host_results(data) if r.get("failed")]
    assert failed and failed[0][0].endswith("Prefect services run steadily as their accounts"), failed
    msg = failed[0][1]["msg"]
    assert "PrefectServer is PAUSED: NSSM throttles it" in msg
    assert "PrefectWorker is Running but its application restarted" in msg and "PrefectWorker.err.log" in msg


# Every printable ASCII character, space included: the example vault says a database password may hold any.
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
DB_URL = "PREFECT_SERVER_DATABASE_CONNECTION_URL"


def test_password_with_every_printable_character_reaches_the_server_unchanged(converged, tmp_path, ansible_env):
    """The composed database URL (prefect_database_password, no prefect_database_url override) with every printable
    character: URL encoding puts '%' around hexadecimal pairs (%20%21...), which NSSM would expand only where a
    variable of that name is defined on the host; none is, so the value is written, and decodes to the password."""
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    extra = _extra(bundle, vault_prefect_database_url="", vault_prefect_database_password=PRINTABLE)
    proc, data = sim.run(extra, playbook="nssm_services.yml")
    assert by_name(reached(data))[SETTINGS]["changed"]
    url = sim.state["services"]["PrefectServer"]["environment"][DB_URL]
    assert url.count("%") > 2 and "%%" not in url
    userinfo = urlsplit(url).netloc.rsplit("@", 1)[0]
    assert unquote(userinfo.split(":", 1)[1]) == PRINTABLE
    assert PRINTABLE not in proc.stdout + proc.stderr and userinfo not in proc.stdout + proc.stderr


def test_secret_that_the_host_would_expand_is_refused_before_anything_is_written(converged, tmp_path, ansible_env):
    """The same password on a host where a variable named '21' is defined: ExpandEnvironmentStrings would replace
    '%21%' in the encoded URL. The settings script refuses before it writes, naming the service and the variable."""
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    sim.update(environment_names=DEFAULT_ENVIRONMENT_NAMES + ["21"])
    before = sim.state["services"]
    extra = _extra(bundle, vault_prefect_database_url="", vault_prefect_database_password=PRINTABLE)
    proc, data = sim.run(extra, playbook="nssm_services.yml", expect_rc=2)
    failed = [(n, r) for n, r in host_results(data) if r.get("failed")]
    assert failed and failed[0][0].endswith("No secret of the services holds a name the host would expand"), failed
    assert "PrefectServer: " + DB_URL in failed[0][1]["msg"] and "Nothing was written" in failed[0][1]["msg"]
    assert sim.state["services"] == before
    assert PRINTABLE not in proc.stdout + proc.stderr


def test_worker_named_like_a_service_nssm_does_not_run_is_refused_before_anything_is_written(converged, tmp_path,
                                                                                              ansible_env):
    """A worker service named WinRM on a host whose WinRM runs in svchost.exe: `nssm set WinRM ImagePath` would replace
    Windows Remote Management's program; a worker to remove (state: absent) named W32Time would remove Windows Time.
    The settings script refuses before it writes anything, naming each service and what it runs; WinRM, W32Time and
    the Prefect services stay as they were. (Once a run per state, present and absent: the script checks the names of
    both lists in one loop, so one run with one of each proves both.)"""
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    def svchost(group, account):
        return {"running": True, "image_path": f"C:\\Windows\\System32\\svchost.exe -k {group} -p", "registry": {},
                "object_name": account, "start_mode": "auto"}
    sim.update(services={**sim.state["services"], "WinRM": svchost("NetworkService", "NT AUTHORITY\\NetworkService"),
                         "W32Time": svchost("LocalService", "NT AUTHORITY\\LocalService")})
    before = sim.state["services"]
    extra = _extra(bundle, nssm_services_workers=[{"service": "PrefectWorker", "pool": "windows-process"},
                                                  {"service": "WinRM", "pool": "windows-process"},
                                                  {"service": "W32Time", "pool": "windows-process", "state": "absent"}])
    _proc, data = sim.run(extra, playbook="nssm_services.yml", expect_rc=2)
    failed = [(n, r) for n, r in host_results(data) if r.get("failed")]
    assert failed and failed[0][0].endswith("No Prefect service name is taken by a service NSSM does not run"), failed
    msg = failed[0][1]["msg"]
    assert "WinRM runs C:\\Windows\\System32\\svchost.exe -k NetworkService" in msg, msg
    assert "W32Time runs C:\\Windows\\System32\\svchost.exe -k LocalService" in msg, msg
    assert "Nothing was written" in msg
    assert sim.state["services"] == before


def test_worker_account_named_through_the_computer_name_is_the_server_account_and_refused(converged, tmp_path, ansible_env):
    """The inventory names the host prefect-aio, Windows calls it PFAIO01: PFAIO01\\svc_prefect looks like a domain
    account to the control node, but is the server's local account. The account check compares what the names
    resolve to on the host and refuses one account for server and workers."""
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    sim.update(computer="PFAIO01")
    before = sim.state["services"]
    extra = _extra(bundle, nssm_services_worker_account="PFAIO01\\svc_prefect")
    _proc, data = sim.run(extra, playbook="nssm_services.yml", expect_rc=2)
    failed = [(n, r) for n, r in host_results(data) if r.get("failed")]
    assert failed and failed[0][0].endswith(ACCOUNTS_CHECK), failed
    assert "'.\\svc_prefect' and 'PFAIO01\\svc_prefect' are one account" in failed[0][1]["msg"], failed[0][1]["msg"]
    assert sim.state["services"] == before


def test_cost_per_extra_worker_service(converged, tmp_path, ansible_env):
    """A no-op re-run of an all-in-one host with N worker services: the script reads and sets every service's
    Parameters key and security descriptor in one pass, so each extra worker costs only its win_service run. The
    converged one-worker host gets three more, then re-runs. Only the services layer knows the workers (the other
    layers' tasks do not depend on them), so the layer is run alone and compared with its share of the site re-run."""
    workers = 4
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    pool = "windows-process"
    extra = _extra(bundle, nssm_services_workers=[{"service": f"PrefectWorker{i}", "pool": pool} for i in range(workers)])
    sim.run(extra, playbook="nssm_services.yml")
    hits = reached(sim.run(extra, playbook="nssm_services.yml")[1])
    assert not [n for n, r in hits if r.get("changed")]
    print(f"{workers} workers: tasks {len(hits)}, module runs {module_runs(hits)}")
    assert set(per_role(hits)) == {"nssm_services"}
    assert module_runs(hits) == EXPECTED_PER_ROLE["nssm_services"][1] + EXPECTED_RUNS_PER_EXTRA_WORKER * (workers - 1)


ACCOUNTS_CHECK = "Service accounts are not administrators, directly or through nested groups"
SHOWN = "Group Policy conflicts and unchecked nested memberships of the service accounts are shown"
# A domain worker account, and domain groups: Prefect Ops is in the host's Administrators and holds Prefect Admins.
WORKER = "S-1-5-21-2000-3002"
OPS, ADMINS, DOMAIN_USERS = "S-1-5-21-2000-5001", "S-1-5-21-2000-5002", "S-1-5-21-2000-513"


def _domain_worker(converged, tmp_path, ansible_env, groups, administrators, **state):
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    directory = {"CORP\\svc_prefect_worker": {"sid": WORKER, "primary_group": DOMAIN_USERS}}
    sim.update(directory=directory, directory_groups=groups, administrators=sim.state.get("administrators", []) + administrators,
               **state)
    return sim, _extra(bundle, nssm_services_worker_account="CORP\\svc_prefect_worker")


def test_domain_account_in_administrators_through_nested_groups_is_refused_on_every_run(converged, tmp_path, ansible_env):
    """The directory is asked on every run (as SYSTEM: no delegation needed): a domain group of Administrators that
    does not hold the account passes; once the account is in it through another group, or the group is the account's
    primary group (which memberOf leaves out), the run stops naming the group, before any NSSM setting is written."""
    groups = {OPS: {"name": "CORP\\Prefect Ops", "members": [ADMINS]}, ADMINS: {"name": "CORP\\Prefect Admins", "members": []},
              DOMAIN_USERS: {"name": "CORP\\Domain Users", "members": []}}
    sim, extra = _domain_worker(converged, tmp_path, ansible_env, groups, [OPS])
    passed = by_name(reached(sim.run(extra, playbook="nssm_services.yml")[1]))
    assert passed[ACCOUNTS_CHECK]["result"]["accounts"]["CORP\\svc_prefect_worker"]["effective_administrator"] is False
    # Again, with the account in Prefect Admins (inside Prefect Ops): the second run asks again and refuses.
    groups[ADMINS]["members"] = [WORKER]
    sim.update(directory_groups=groups)
    _proc, data = sim.run(extra, playbook="nssm_services.yml", expect_rc=2)
    assert "is a member of Administrators through the domain group CORP\\Prefect Ops" in by_name(reached(data))[ACCOUNTS_CHECK]["msg"]
    assert SETTINGS not in by_name(reached(data))
    # The primary group: not in any memberOf chain, still a membership.
    groups[ADMINS]["members"] = []
    sim.update(directory_groups=groups, administrators=[DOMAIN_USERS])
    _proc, data = sim.run(extra, playbook="nssm_services.yml", expect_rc=2)
    assert "through the domain group CORP\\Domain Users" in by_name(reached(data))[ACCOUNTS_CHECK]["msg"]


def test_unreachable_directory_fails_unless_the_check_is_turned_off_which_warns_every_run(converged, tmp_path, ansible_env):
    sim, extra = _domain_worker(converged, tmp_path, ansible_env, {}, [], directory_unreachable=True)
    _proc, data = sim.run(extra, playbook="nssm_services.yml", expect_rc=2)
    assert ("Make the domain controller reachable, or set nssm_services_nested_admin_check: false"
            in by_name(reached(data))[ACCOUNTS_CHECK]["msg"])
    assert SETTINGS not in by_name(reached(data))
    skipped = by_name(host_results(sim.run(dict(extra, nssm_services_nested_admin_check=False), playbook="nssm_services.yml")[1]))
    assert skipped[ACCOUNTS_CHECK]["invocation"]["module_args"]["parameters"]["SkipNestedCheck"] is True
    assert any("CORP\\svc_prefect_worker is not checked (nssm_services_nested_admin_check: false)" in line
               for line in skipped[SHOWN]["msg"])


def test_the_account_check_runs_as_system():
    """The directory is asked with the computer account's credentials: the task's become is SYSTEM (runas). The
    simulated host's local connection cannot run as another account, so the task itself is checked."""
    tasks = yaml.safe_load((REPO / "roles" / "nssm_services" / "tasks" / "config.yml").read_text())
    task = next(t for t in tasks if t.get("name") == ACCOUNTS_CHECK)
    assert (task.get("become"), task.get("become_method"), task.get("become_user")) == (True, "ansible.builtin.runas", "SYSTEM")


def test_check_mode_reports_the_restarts_a_venv_switch_of_the_same_run_will_cause(converged, tmp_path, ansible_env):
    """--check does not move the junction, yet the services layer of the same run reports the restart the switch will
    cause (prefect_venv's switch target is passed to it); the host is left as it was."""
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    make_bundle(sim.root, LOCK + b"extra==3.0 --hash=sha256:3333\n")
    before = sim.state
    checked = by_name(reached(sim.run(_extra(bundle, prefect_venv_check_committed_lock=False), args=["--check"])[1]))
    assert checked["Current junction points at the venv that reports the pinned Prefect"]["changed"]
    assert [r["item"] for r in checked[RESTART]["results"] if not r.get("skipped")] == ["PrefectServer"]
    after = sim.state
    assert after["junctions"] == before["junctions"] and after["services"] == before["services"]


def test_the_server_depends_on_the_local_postgresql_which_runs_as_its_own_account(runs):
    """All in one: the Prefect server service starts after the local PostgreSQL (DependOnService), and PostgreSQL runs
    as its own virtual account, not the NetworkService that WinRM and others share."""
    services = runs[4].first_state["services"]
    assert services["PrefectServer"]["dependencies"] == ["postgresql-x64-17"]
    assert services["postgresql-x64-17"]["object_name"] == "NT SERVICE\\postgresql-x64-17"
    assert services["postgresql-x64-17"]["process_owner"] == "NT SERVICE\\postgresql-x64-17"


@pytest.mark.parametrize("tag", ["nssm_services", "service"])
def test_site_runs_by_tag(converged, tmp_path, ansible_env, tag):
    """site.yml with one role's tag, or one stage's tag, runs on a converged host, changes nothing and runs only tasks
    of that tag (and the checks tagged always). It stopped before on the argument check ansible-core inserts, tagged
    always, for the common role's helpers inside the proxy's certificate block: "'iis_proxy_certificate' is undefined"
    (tests/static/test_common_calls.py)."""
    sim, bundle = _fresh(converged, tmp_path, ansible_env)
    _proc, data = sim.run(_extra(bundle), args=["--tags", tag])
    hits = reached(data)
    assert hits and not [n for n, r in hits if r.get("changed")], [n for n, r in hits if r.get("changed")]
    # Task names start with the role's full name; common's helpers run inside the role that imports them.
    roles = {n.split(" : ", 1)[0].removeprefix("enclave.prefect.") for n, _r in hits}
    if tag == "nssm_services":
        assert roles <= {"nssm_services", "common"} and "nssm_services" in roles, roles
    else:
        assert "nssm_services" in roles and "python" not in roles and "prefect_venv" not in roles, roles
