"""playbooks/verify.yml on the simulated all-in-one host (simhost.py; verify's own stand-ins in sim_verify.py, the Prefect
API's in sim_operate.py) after a real site.yml run: its control flow and messages, not Windows itself. A healthy
deployment passes with a table of every check; each check broken on its own fails the run naming that check first; a
certificate near its end is a WARNING; --check deploys nothing; no Vault value shows at -v.

playbooks/diagnose.yml's IIS, port and firewall findings on the same converged host (once test_diagnose_findings.py,
here so that one site.yml run serves both; the diagnosis script's stand-in in sim_operate.py reads the state the other
stand-ins keep): the converged host gives none of them; one fault seeded per area gives its finding, ranked, with its
evidence and fix, in the output, SUMMARY.md and findings.json of the archive."""
from __future__ import annotations

import copy
import datetime
import hashlib
import json
import re
import tarfile

import pytest

from rolerun import PINNED_PREFECT, REPO
from simhost import INSTALLER, PROXY_CERT_THUMBPRINT, SECRETS, Sim, by_name, host_results, make_bundle

pytestmark = pytest.mark.simulated

CA = REPO / "tests" / "fixtures" / "roles" / "enclave-ca.pem"
CHECKS = ["proxy (negotiate 200, anonymous 401)", "authorization (allowed 200, not allowed 401)", "machine path (worker credential 200, anonymous 401)",
          "Prefect port closed to other hosts", "pools READY, workers ONLINE", "proxy certificate expiry",
          "smoke flow in pool windows-process", "newest backup", "last backup drill", "services steady, server healthy on loopback",
          "Redis for high availability"]
WORKER = "PrefectWorker-prefect-aio"
# The password parts of the Vault values (the JSON output escapes backslashes).
FRAGMENTS = [re.split(r"[:@]", v.split(":", 1)[-1])[0] if k.endswith("api_auth_string") else v for k, v in SECRETS.items()] + [
    "Db-Secret-0a7f", "WrkApi-Secret-5b3c", "Op-Secret-77d1"]


def _cert(days: float) -> dict:
    not_after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)
    return {PROXY_CERT_THUMBPRINT: {"subject": "CN=prefect.corp.local", "not_after": not_after.isoformat()}}


def _extra(bundle, **more):
    return {"prefect_bundle_dir": str(bundle), **SECRETS, "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest(),
            "iis_proxy_certificate_thumbprint": PROXY_CERT_THUMBPRINT, "prefect_api_ca_cert": str(CA), **more}


@pytest.fixture(scope="module")
def site(tmp_path_factory, ansible_env):
    """The all-in-one host right after site.yml: the one converge of this module. `converged` goes on from it, and the
    diagnose findings tests below start from a copy of its state (they converged the same site.yml with the same
    extra vars on their own before, in test_diagnose_findings.py)."""
    sim = Sim(tmp_path_factory.mktemp("verify"), ansible_env)
    bundle = make_bundle(sim.root)
    sim.run(_extra(bundle))
    state = sim.state
    assert "Prefect" in state["iis"]["sites"] and state["firewall"]["rules"]
    return sim, bundle, state


@pytest.fixture(scope="module")
def converged(site):
    """The all-in-one host after site.yml and a backup with its drill (backup.yml -e backup_drill=true), then what
    verify meets beyond it: its address, a control node in the people's network (firewall_client_ranges), the proxy
    certificate's expiry, a domain account, and the worker's heartbeat."""
    sim, bundle, _state = site
    sim.run(_extra(bundle, backup_drill=True), playbook="backup.yml")
    state = sim.state
    assert state["services"]["PrefectServer"]["running"] and "Prefect" in state["iis"]["sites"]
    state.update(address="10.20.1.10", control_node_address="10.30.0.15", certificate_details=_cert(400.5),
                 domain_accounts={"CORP\\operator": "Op-Secret-77d1"})
    # The worker service the role made has sent its heartbeat: the pool the role made is READY.
    assert "PrefectWorker" in state["services"] and "windows-process" in state["pools"]
    state["pools"]["windows-process"].update(status="READY", workers=[{"name": WORKER, "status": "ONLINE"}])
    return sim, state


def _verify(converged, tmp_path, ansible_env, expect_rc=0, args=None, **more):
    sim, state = converged
    changes = more.pop("state", None)
    state = copy.deepcopy(state)
    if changes:
        changes(state)
    sim = Sim(tmp_path, ansible_env, state)
    extra = _extra(sim.root / "bundle", **{"verify_smoke_pool": "windows-process", **more})
    proc, data = sim.run(extra, playbook="verify.yml", expect_rc=expect_rc, args=["-v", *(args or [])])
    table = by_name(host_results(data)).get("Verify report", {}).get("msg", [])
    return sim, proc, data, table


def _rows(table: list[str]) -> dict[str, str]:
    """{check: result} of the closing table (HOST | STEP | RESULT)."""
    rows = [[c.strip() for c in line.split(" | ")] for line in table[1:]]
    return {row[1]: row[2] for row in rows}


def _no_secret(proc) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in proc.stdout + proc.stderr, fragment


def test_healthy_deployment_passes_with_a_table_of_every_check(converged, tmp_path, ansible_env):
    sim, proc, data, table = _verify(converged, tmp_path, ansible_env)
    rows = _rows(table)
    assert list(rows) == CHECKS, table
    assert rows[CHECKS[0]].startswith(f"ok: https://prefect.corp.local Prefect {PINNED_PREFECT}, anonymous 401")
    # All in one: no worker host calls the machine path or could reach the server's port from outside.
    assert rows[CHECKS[1]].startswith("skipped: no second credential: set verify_denied_username and verify_denied_password")
    assert rows[CHECKS[2]].startswith("skipped: no worker host without the server")
    assert rows[CHECKS[3]].startswith("skipped: no worker host without the server")
    assert rows[CHECKS[4]] == "ok: windows-process READY, 1 worker(s) ONLINE"
    assert rows[CHECKS[5]].startswith("ok: CN=prefect.corp.local expires in 400 days")
    assert rows[CHECKS[6]] == "ok: sim-run COMPLETED in 2.5 s"
    assert re.fullmatch(r"ok: prefect-pg-\d{8}T\d{6}Z\.dump, 4096 bytes, 3\.5 h old", rows[CHECKS[7]], re.I), rows[CHECKS[7]]
    assert re.fullmatch(r"ok: passed on 2026-11-30T02:31:00Z \(0\.2 days ago\) with prefect-pg-\d{8}T\d{6}Z\.dump: 60 tables, "
                        r"1234 rows, every table has the rows of the backup", rows[CHECKS[8]]), rows[CHECKS[8]]
    assert rows[CHECKS[9]] == f"ok: PrefectServer, PrefectWorker running, API healthy, Prefect {PINNED_PREFECT}", rows[CHECKS[9]]
    assert rows[CHECKS[10]] == "skipped: prefect_ha is off: no Redis"
    assert sim.state["smoke_pool_of"] == {"enclave-smoke/smoke": "windows-process"}
    shown = by_name(host_results(data))["Smoke flow log lines are shown"]["msg"]
    assert shown == ["Flow run sim-run: COMPLETED", "INFO enclave.prefect smoke flow", "INFO Finished in state Completed()"]
    _no_secret(proc)


def _anonymous_allowed(state):
    state["iis"]["apphost"]["Prefect|system.webServer/security/authentication/anonymousAuthentication"]["enabled"] = "true"


def _pool_paused(state):
    state["pools"]["windows-process"]["is_paused"] = True


def _worker_offline(state):
    state["pools"]["windows-process"]["workers"][0]["status"] = "OFFLINE"


def _expired(state):
    state["certificate_details"] = _cert(-2.5)


def _smoke_fails(state):
    state["smoke_flow_raises"] = "RuntimeError('database is locked')"


def _control_node_outside(state):
    state["control_node_address"] = "10.20.0.15"


def _backup_old(state):
    state["backup_age_hours"] = 49.2


def _drill_failed(state):
    for record in state["drill_records"].values():
        record.update(ok=False, mismatches=["flow_run expected=8 restored=5"], message="rows differ from the backup")


def _drill_old(state):
    state["drill_age_days"] = 12.4


def _no_drill(state):
    state["drill_records"] = {}


def _other_release(state):
    """The server answers with another release than the inventory's prefect_version (a replica a partial upgrade left)."""
    state["prefect_version"] = "3.8.8"


def _worker_stopped(state):
    state["services"]["PrefectWorker"]["running"] = False


# (case, state change, extra vars, the failed check, what its message says)
FAILURES = [
    ("anonymous 200", _anonymous_allowed, {}, CHECKS[0],
     f"without credentials: HTTP 200 \"{PINNED_PREFECT}\", expected HTTP 401: authentication is not enforced"),
    ("credentials 401", None, {"verify_username": "CORP\\operator", "verify_password": "wrong-Op-Secret"}, CHECKS[0],
     "check 'health' failed after 60.0 s: GET https://prefect.corp.local/api/health: HTTP 401"),
    ("control node outside the people's network", _control_node_outside, {}, CHECKS[0],
     "connection error: timed out"),
    ("pool paused", _pool_paused, {}, CHECKS[4], "pool windows-process is PAUSED, not READY"),
    ("worker offline", _worker_offline, {}, CHECKS[4], f"worker windows-process/{WORKER} is OFFLINE"),
    ("certificate expired", _expired, {}, CHECKS[5], "certificate CN=prefect.corp.local (%s) expired on" % PROXY_CERT_THUMBPRINT),
    ("smoke flow failed", _smoke_fails, {}, CHECKS[6],
     "ended FAILED (Failed): Flow run encountered an exception: RuntimeError('database is locked'); expected COMPLETED."),
    ("backup too old", _backup_old, {}, CHECKS[7], "4096 bytes, 49.2 h old, over backup_verify_max_age_hours 26"),
    ("backup too old for a custom threshold", None, {"backup_verify_max_age_hours": 2}, CHECKS[7],
     "3.5 h old, over backup_verify_max_age_hours 2"),
    ("drill failed", _drill_failed, {}, CHECKS[8],
     "FAILED on 2026-11-30T02:31:00Z (0.2 days ago) with prefect-pg-"),
    ("drill too old", _drill_old, {}, CHECKS[8], "(12.4 days ago)"),
    ("server on another release", _other_release, {}, CHECKS[9],
     f"the Prefect server on loopback runs 3.8.8, the inventory names prefect_version {PINNED_PREFECT}"),
    ("worker service stopped", _worker_stopped, {}, CHECKS[9], "PrefectWorker is Stopped, expected Running"),
    ("no drill", _no_drill, {}, CHECKS[8],
     "no drill recorded (drills run after the scheduled backup on Sunday, or with playbooks/backup.yml -e backup_drill=true)"),
]


@pytest.mark.parametrize("case, change, more, check, seen", FAILURES, ids=[f[0] for f in FAILURES])
def test_each_check_failing_alone_fails_the_run_naming_it(converged, tmp_path, ansible_env, case, change, more, check, seen):
    sim, proc, data, table = _verify(converged, tmp_path, ansible_env, expect_rc=2, state=change, **more)
    rows = _rows(table)
    assert list(rows) == CHECKS, table
    failed = [c for c, r in rows.items() if r.startswith("FAILED")]
    # The smoke flow needs a READY pool with an ONLINE worker: it fails with them, after them.
    assert failed == [check] + ([CHECKS[6]] if check == CHECKS[4] else []), table
    assert seen in rows[check], rows[check]
    verdict = by_name(host_results(data))["Every check passed"]
    assert verdict["failed"] and verdict["msg"].startswith(f"First failed check: {check} on prefect-aio.corp.local: ")
    assert seen in verdict["msg"]
    if check == CHECKS[6]:
        shown = by_name(host_results(data))["Smoke flow log lines of the failed run are shown"]["msg"]
        assert shown[0] == "Flow run sim-run: FAILED" and "ERROR Encountered exception during execution" in shown[2]
        assert "Its log lines are shown above." in rows[check]
    _no_secret(proc)


def _someone_else(state):
    state["domain_accounts"]["CORP\\someone"] = "Else-Secret-31a9"


def test_authorization_row_proves_an_account_outside_the_groups_is_refused(converged, tmp_path, ansible_env):
    """verify_denied_username: an account that signs in but is not in iis_proxy_allowed_groups gets 401 from IIS URL
    Authorization; the same account in the group (authorization not doing its job) fails the row naming the cause."""
    more = {"verify_denied_username": "CORP\\someone", "verify_denied_password": "Else-Secret-31a9"}
    sim, proc, data, table = _verify(converged, tmp_path, ansible_env, state=_someone_else, **more)
    assert _rows(table)[CHECKS[1]] == "ok: the Kerberos ticket 200, CORP\\someone HTTP 401", table
    assert "Else-Secret-31a9" not in proc.stdout + proc.stderr

    def in_the_group(state):
        _someone_else(state)
        state["group_members"]["CORP\\Prefect Users"].append("CORP\\someone")

    sim, proc, data, table = _verify(converged, tmp_path / "open", ansible_env, expect_rc=2, state=in_the_group, **more)
    assert "authorization is not enforced, every account that signs in is let through" in _rows(table)[CHECKS[1]], table
    # The operator outside the allowed group: the proxy itself refuses them.
    def operator_out(state):
        state["group_members"]["CORP\\Prefect Users"] = []

    sim, proc, data, table = _verify(converged, tmp_path / "out", ansible_env, expect_rc=2, state=operator_out)
    assert "HTTP 401 401 - Unauthorized: Access is denied due to server configuration." in _rows(table)[CHECKS[0]], table


def test_backup_thresholds_of_zero_show_without_judging(converged, tmp_path, ansible_env):
    """backup_verify_max_age_hours and backup_verify_drill_max_age_days of 0: the rows show the age and the drill, the
    run passes (the operator judges)."""
    def stale(state):
        _backup_old(state)
        _drill_old(state)

    sim, proc, data, table = _verify(converged, tmp_path, ansible_env, state=stale, backup_verify_max_age_hours=0,
                                     backup_verify_drill_max_age_days=0)
    rows = _rows(table)
    assert rows[CHECKS[7]].endswith("4096 bytes, 49.2 h old") and rows[CHECKS[8]].startswith("ok: passed on "), table


def test_certificate_under_the_threshold_warns_and_passes(converged, tmp_path, ansible_env):
    def soon(state):
        state["certificate_details"] = _cert(9.5)

    sim, proc, data, table = _verify(converged, tmp_path, ansible_env, state=soon)
    result = _rows(table)[CHECKS[5]]
    assert result.startswith("WARNING: CN=prefect.corp.local expires in 9 days") and "under verify_cert_warn_days 30" in result
    # The threshold is the operator's.
    sim, proc, data, table = _verify(converged, tmp_path / "5", ansible_env, state=soon, verify_cert_warn_days=5)
    assert _rows(table)[CHECKS[5]].startswith("ok: CN=prefect.corp.local expires in 9 days")


def test_check_mode_runs_the_read_only_checks_and_deploys_nothing(converged, tmp_path, ansible_env):
    sim, proc, data, table = _verify(converged, tmp_path, ansible_env, args=["--check"])
    rows = _rows(table)
    assert list(rows) == CHECKS, table
    assert rows[CHECKS[6]] == "skipped (check mode): it deploys and runs a flow"
    assert rows[CHECKS[0]].startswith("ok:") and rows[CHECKS[4]].startswith("ok:") and rows[CHECKS[5]].startswith("ok:")
    state = sim.state
    assert "smoke_pool_of" not in state
    assert "c:\\prefect\\flows\\enclave-smoke" not in state["dirs"]
    # A failing read-only check still fails in check mode.
    sim, proc, data, table = _verify(converged, tmp_path / "worker", ansible_env, expect_rc=2, args=["--check"],
                                     state=_worker_offline)
    assert [c for c, r in _rows(table).items() if r.startswith("FAILED")] == [CHECKS[4]]


def test_without_a_smoke_pool_the_smoke_flow_is_a_skipped_row(converged, tmp_path, ansible_env):
    sim, proc, data, table = _verify(converged, tmp_path, ansible_env, verify_smoke_pool="")
    assert _rows(table)["smoke flow in pool"] == "skipped: set verify_smoke_pool to deploy and run the smoke flow"
    assert "smoke_pool_of" not in sim.state


def test_a_verify_username_without_its_password_is_refused_before_any_check(converged, tmp_path, ansible_env):
    """verify_password comes from the inventory's vault or a hidden prompt; a run without a terminal cannot be asked
    and stops before the first check, saying where the password belongs."""
    sim, proc, data, table = _verify(converged, tmp_path, ansible_env, expect_rc=2, verify_username="CORP\\operator")
    refused = by_name(host_results(data))["Password of verify_username is known"]
    assert refused["failed"] and "verify_username is CORP\\operator but there is no verify_password" in refused["msg"]
    assert "Not waiting for response to prompt as stdin is not interactive" in proc.stdout + proc.stderr
    assert table == [] and "Proxy answers with Windows authentication and refuses anonymous requests" not in by_name(
        host_results(data))


# playbooks/diagnose.yml's IIS, port and firewall findings, from a copy of the host right after site.yml (fixture `site`).
HOST = "prefect-aio.corp.local"
AREAS = {"iis", "ports", "firewall"}


def _diagnose(site, tmp_path, ansible_env, change=None):
    state = copy.deepcopy(site[2])
    if change:
        change(state)
    sim = Sim(tmp_path, ansible_env, state)
    out = tmp_path / "diag"
    proc, data = sim.run(_extra(sim.root / "bundle", diagnose_output_dir=str(out)), playbook="diagnose.yml")
    findings = json.loads((out / "findings.json").read_text())
    shown = by_name(host_results(data))["Diagnosis summary"]["msg"]
    return proc, findings, (out / "SUMMARY.md").read_text(), shown, tmp_path / "diag.tar.gz"


def test_converged_host_has_no_iis_port_or_firewall_finding(site, tmp_path, ansible_env):
    _proc, findings, _summary, _shown, _archive = _diagnose(site, tmp_path, ansible_env)
    assert [f for f in findings if f["area"] in AREAS | {"inventory"}] == []


def _faults(state):
    # IIS: the people's site stopped, and the Default Web Site bound to its port for any host name.
    state["iis"]["sites"]["Prefect"]["state"] = "Stopped"
    state["iis"]["sites"]["Default Web Site"] = {"physical_path": "c:\\inetpub\\wwwroot", "pool": "DefaultAppPool", "state": "Started",
                                                 "bindings": {"*:443:": {"protocol": "https", "sslFlags": 0,
                                                                         "certificate": PROXY_CERT_THUMBPRINT}}}
    # Ports: another program holds the Prefect server's port on loopback.
    state.setdefault("listeners", []).append({"address": "127.0.0.1", "port": 4200, "pid": 6100, "process": "node"})
    # Firewall: a Group Policy block rule for 443 from every address, and the Public profile (not in use) off.
    state["firewall"]["rules"].append({"Name": "Corp block web", "Grouping": "", "Enabled": True, "Direction": 1, "Action": 0,
                                       "Protocol": 6, "LocalPorts": "443", "RemoteAddresses": "*", "Profiles": 0x7FFFFFFF,
                                       "id": "{corp-block-web}", "source": "GroupPolicy"})
    state["firewall"]["profiles"]["Public"]["enabled"] = False


def test_a_fault_per_area_gives_its_ranked_finding_with_evidence_and_fix(site, tmp_path, ansible_env):
    proc, findings, summary, shown, archive = _diagnose(site, tmp_path, ansible_env, _faults)
    ours = {f["message"]: f for f in findings if f["area"] in AREAS}
    expected = {
        "the people's site Prefect is Stopped: it answers nothing": ("critical", "Get-Website Prefect: State Stopped"),
        "port 4200, the Prefect server's, is held by node (pid 6100): the server cannot listen": (
            "critical", "127.0.0.1:4200 (node, pid 6100)"),
        "block rule Corp block web beats the allow rule enclave.prefect.firewall - people HTTPS (TCP 443 from 10.30.0.0/16): a block "
        "rule wins over every allow rule, so these clients are refused": ("critical", "Corp block web (Block, GroupPolicy, TCP 443 from Any"),
        "Windows Firewall profile Public is off (not the profile of this host's network now): every port that listens on the "
        "network is open": ("warning", "Public: Enabled False"),
    }
    for message, (severity, evidence) in expected.items():
        assert message in ours, (message, sorted(ours))
        assert ours[message]["severity"] == severity and ours[message]["evidence"].startswith(evidence), ours[message]
        assert ours[message]["fix"]
    default_site = [m for m in ours if m.startswith("site Default Web Site answers on port 443")]
    assert default_site and ours[default_site[0]]["severity"] == "warning"
    # Ranked: every critical finding before every warning, the ranks 1..n in order.
    assert [f["rank"] for f in findings] == list(range(1, len(findings) + 1))
    severities = [f["severity"] for f in findings]
    assert severities == sorted(severities, key=["critical", "warning", "info"].index)
    # The same findings in the playbook's output, SUMMARY.md and the archive's findings.json.
    text = "\n".join(shown)
    block = next(f for f in findings if f["message"].startswith("block rule Corp block web"))
    assert "#%d %s firewall: evidence: %s" % (block["rank"], HOST, block["evidence"]) in text
    assert block["message"] in summary and "   - fix: " + block["fix"] in summary
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/findings.json"))
        assert json.loads(tar.extractfile(member).read()) == findings
    for secret in ("Svc-Secret-4c1d", "Wrk-Secret-6e21", "WrkApi-Secret-5b3c"):
        assert secret not in proc.stdout and secret not in summary
