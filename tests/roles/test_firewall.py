"""The firewall role (playbooks/firewall.yml: preflight, then the layer) against the simulated host (simhost.py with
the stand-ins of sim_firewall.py, which behave as win_firewall_rule.ps1, win_firewall.ps1 and the role's
firewall_rules.ps1 do: rules matched by display name, case-insensitively, remote addresses compared as Windows stores
them). One Sim is one host: the distributed topology runs one Sim per host with --limit.

Counted, not measured on Windows: a no-op re-run sends EXPECTED_HOST_TASKS tasks to a host (documented in
roles/firewall/README.md and docs/roles.md).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from rolerun import REPO
from simhost import Sim, by_name, host_results, module_runs, reached

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "static"))
from firewallcheck import check_rules, sim_rules  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.simulated

AIO, SRV, WRK, DB = \
    "prefect-aio.corp.local", "prefect-srv01.corp.local", "prefect-wrk01.corp.local", "prefect-db01.corp.local"
WRK2 = "prefect-wrk02.corp.local"
VERDICT = "Every targeted host's input is valid"
GROUP = "enclave.prefect.firewall"
# Tasks reaching a host on a no-op re-run: the read of the host's rules, the allow rules (one loop) and the profiles.
EXPECTED_HOST_TASKS = 3
# Module runs on that re-run: the all-in-one host and the database host have one allow rule, the distributed proxy two.
EXPECTED_RUNS = {AIO: 3, SRV: 4, DB: 3}
PEOPLE, MACHINE = GROUP + " - people HTTPS", GROUP + " - worker machine path"
LEGACY = "Rules of runbook 000 that would block or bypass the allow rules are gone"
REPORT = "Runbook 000 rules found on the host are reported"


def com_rule(name, port, remote="*", action=1, group=None, enabled=True, rule_id=None):
    """A rule as runbook 000's New-NetFirewallRule leaves it, in the COM view the stand-ins keep."""
    return {"Name": name, "Description": None, "Grouping": group, "Direction": 1, "Action": action, "ApplicationName": None,
            "ServiceName": None, "Enabled": enabled, "Profiles": 0x7FFFFFFF, "LocalAddresses": "*", "RemoteAddresses": remote,
            "LocalPorts": str(port), "RemotePorts": "*", "Protocol": 6, "InterfaceTypes": "All", "EdgeTraversalOptions": 0,
            "SecureFlags": 0, "IcmpTypesAndCodes": None, "id": rule_id or "{0b3f%s}" % abs(hash(name))}


RUNBOOK_000 = [com_rule("Block Prefect Port 4200 - External", 4200, action=0),
               com_rule("Allow Prefect Port 4200 - Localhost", 4200, remote="127.0.0.1/255.255.255.255"),
               com_rule("IIS HTTPS Inbound", 443)]
PREPARE = com_rule("enclave.prefect: WinRM over HTTPS (5986) from the control node", 5986, remote="10.20.0.15/255.255.255.255",
                   group="enclave.prefect", rule_id="enclave.prefect-WinRM-HTTPS-In")
IIS_BUILTIN = com_rule("World Wide Web Services (HTTPS Traffic-In)", 443, group="Secure World Wide Web Services (HTTPS)",
                       rule_id="IIS-WebServerRole-HTTPS-In-TCP")


# Get-NetFirewallProfile on a fresh Windows Server: on, DefaultInboundAction NotConfigured (block in effect).
FRESH_PROFILES = {p: {"enabled": True, "inbound": "NotConfigured"} for p in ("Domain", "Private", "Public")}


def firewall(state):
    return state.get("firewall", {"rules": [], "profiles": {}})


def rules_by_name(state):
    return {r["Name"]: r for r in firewall(state)["rules"]}


def run(sim, limit=AIO, expect_rc=0, extra=None, args=None):
    return sim.run(extra or {}, playbook="firewall.yml", limit=limit, expect_rc=expect_rc, args=args)


@pytest.fixture(scope="module")
def aio(tmp_path_factory, ansible_env):
    """All in one, set up by runbook 000 and prepare-windows-host.ps1: first run, re-run."""
    sim = Sim(tmp_path_factory.mktemp("fw-aio"), ansible_env,
              {"firewall": {"rules": [*RUNBOOK_000, PREPARE, IIS_BUILTIN], "profiles": FRESH_PROFILES}})
    before = sim.state
    first = run(sim)
    after_first = sim.state
    second = run(sim)
    return sim, before, first, after_first, second


def test_first_run_creates_the_people_rule_only(aio):
    _sim, _before, _first, state, _second = aio
    rules = rules_by_name(state)
    people = rules[PEOPLE]
    # The stand-in stores the subnet as Windows does, with its mask.
    assert (people["LocalPorts"], people["RemoteAddresses"], people["Action"], people["Grouping"], people["Enabled"]) == \
        ("443", "10.30.0.0/255.255.0.0", 1, GROUP, True)
    assert [r["Name"] for r in firewall(state)["rules"] if r["Grouping"] == GROUP] == [PEOPLE]
    assert all(p["inbound"] == "Block" and p["enabled"] for p in firewall(state)["profiles"].values())


def test_runbook_000_rules_are_removed_and_reported(aio):
    _sim, before, first, state, _second = aio
    names = set(rules_by_name(state))
    assert not names & {r["Name"] for r in RUNBOOK_000}
    # The static checker's verdict on the host before and after: the block rule and the 4200 rule were the problems.
    problems_before = check_rules(sim_rules(before), api_port=4200, prefect_ports={443, 8443, 5432})
    assert any("block rule" in p for p in problems_before) and any("4200" in p for p in problems_before), problems_before
    assert check_rules(sim_rules(state), api_port=4200, prefect_ports={443, 8443, 5432}) == []
    results = by_name(host_results(first[1], AIO))
    assert results[LEGACY]["changed"]
    message = results[REPORT]["msg"]
    for rule in RUNBOOK_000:
        assert json.dumps(rule["Name"]) in message, message
    assert "removed" in message


def test_prepare_script_rule_is_untouched_and_iis_builtin_disabled(aio):
    _sim, _before, first, state, _second = aio
    assert rules_by_name(state)[PREPARE["Name"]] == PREPARE
    assert rules_by_name(state)[IIS_BUILTIN["Name"]]["Enabled"] is False
    assert "IIS-WebServerRole-HTTPS-In-TCP" in by_name(host_results(first[1], AIO))[
        "Built-in rules disabled on the host are reported"]["msg"]


def test_rerun_changes_nothing_and_stays_cheap(aio):
    _sim, _before, _first, state, second = aio
    results = reached(second[1], AIO)
    assert [n for n, r in results if r.get("changed")] == []
    assert len(results) == EXPECTED_HOST_TASKS, [n for n, _r in results]
    assert module_runs(results) == EXPECTED_RUNS[AIO]
    assert rules_by_name(state) == rules_by_name(_sim.state)
    assert LEGACY not in by_name(results)


def test_check_mode_changes_nothing(tmp_path, ansible_env):
    sim = Sim(tmp_path, ansible_env, {"firewall": {"rules": [*RUNBOOK_000, PREPARE], "profiles": FRESH_PROFILES}})
    before = sim.state
    _proc, data = run(sim, args=["--check", "--diff"])
    after = sim.state
    assert firewall(after) == firewall(before)
    changed = {n for n, r in by_name(reached(data, AIO)).items() if r.get("changed")}
    assert {LEGACY, "Allow rules this host needs are in place, from the listed addresses only",
            "Firewall profiles are on and block inbound traffic no rule allows"} <= changed, changed
    assert "would remove" in by_name(host_results(data, AIO))[REPORT]["msg"]
    created = by_name(host_results(data, AIO))["Allow rules this host needs are in place, from the listed addresses only"]
    assert "+RemoteAddresses='10.30.0.0/255.255.0.0'" in created["results"][0]["diff"]["prepared"]


def test_stale_group_rules_go_and_state_absent_removes_the_group(tmp_path, ansible_env):
    # A hand-made rule in the group and the redirect rule of an earlier run with firewall_http_redirect.
    sim = Sim(tmp_path, ansible_env, {"firewall": {"rules": [PREPARE, com_rule(GROUP + " - old", 9000, group=GROUP)]}})
    run(sim, extra={"firewall_http_redirect": True})
    names = set(rules_by_name(sim.state))
    assert {PEOPLE, GROUP + " - HTTP redirect"} <= names and GROUP + " - old" not in names
    assert rules_by_name(sim.state)[GROUP + " - HTTP redirect"]["LocalPorts"] == "80"
    run(sim)
    assert GROUP + " - HTTP redirect" not in rules_by_name(sim.state)
    _proc, data = run(sim, extra={"firewall_state": "absent"})
    assert [r["Name"] for r in firewall(sim.state)["rules"]] == [PREPARE["Name"]]
    assert by_name(reached(data, AIO))["No rule of the firewall group is left"]["changed"]


def test_distributed_proxy_admits_the_remote_workers_only(tmp_path, ansible_env):
    srv = Sim(tmp_path / "srv", ansible_env)
    run(srv, limit=SRV)
    rules = rules_by_name(srv.state)
    assert rules[MACHINE]["LocalPorts"] == "8443"
    assert sorted(rules[MACHINE]["RemoteAddresses"].split(",")) == ["10.20.1.21/255.255.255.255", "10.20.1.22/255.255.255.255"]
    assert rules[PEOPLE]["RemoteAddresses"] == "10.30.0.0/255.255.0.0"
    _proc, data = run(srv, limit=SRV)
    results = reached(data, SRV)
    assert not [n for n, r in results if r.get("changed")]
    assert (len(results), module_runs(results)) == (EXPECTED_HOST_TASKS, EXPECTED_RUNS[SRV])
    wrk = Sim(tmp_path / "wrk", ansible_env)
    run(wrk, limit=WRK)
    assert firewall(wrk.state)["rules"] == []
    assert check_rules(sim_rules(srv.state), api_port=4200, prefect_ports={443, 8443, 5432}) == []


def test_database_host_admits_the_prefect_servers(tmp_path, ansible_env):
    # The example's distributed database host serves srv01 (its prefect_database_host); the all-in-one host is in
    # prefect_database too, and its rules (test_first_run_creates_the_people_rule_only) hold no database rule.
    sim = Sim(tmp_path, ansible_env)
    run(sim, limit=DB)
    rules = rules_by_name(sim.state)
    assert list(rules) == [GROUP + " - PostgreSQL"]
    assert (rules[GROUP + " - PostgreSQL"]["LocalPorts"], rules[GROUP + " - PostgreSQL"]["RemoteAddresses"]) == \
        ("5432", "10.20.1.20/255.255.255.255")
    _proc, data = run(sim, limit=DB)
    results = reached(data, DB)
    assert not [n for n, r in results if r.get("changed")]
    assert (len(results), module_runs(results)) == (EXPECTED_HOST_TASKS, EXPECTED_RUNS[DB])


def test_bad_input_is_refused_before_any_host(tmp_path, ansible_env):
    """Every host of the example with its own bad input (host_vars of a copy of the inventory), in one run: the
    preflight names each problem on the host's own line, and no task reaches any host."""
    sim = Sim(tmp_path, ansible_env)
    inventory = tmp_path / "inventory"
    shutil.copytree(REPO / "inventories" / "example", inventory)
    bad = {
        AIO: {"firewall_client_ranges": ["0.0.0.0/0", "any", "10.30.0.5/16", "10.300.0.0/16", "Internet", "4.0.0.0/6"],
              "prefect_public_port": 4200, "firewall_group": "enclave.prefect",
              "firewall_manage_winrm": True, "firewall_control_node_addresses": [],
              "firewall_legacy_rules": ["enclave.prefect: WinRM over HTTPS (5986) from the control node"]},
        # The distributed proxy: keywords and a wide control node range, no client range.
        SRV: {"firewall_manage_winrm": True, "firewall_control_node_addresses": ["LocalSubnet", "10.20.0.0/16"],
              "firewall_client_ranges": []},
        # A remote worker without its address: the proxy's preflight names the worker and the variable.
        WRK: {"prefect_host_address": ""},
        WRK2: {"firewall_state": "gone"},
    }
    for host, variables in bad.items():
        path = inventory / "host_vars" / f"{host}.yml"
        path.write_text(yaml.safe_dump({**(yaml.safe_load(path.read_text()) or {}), **variables}))
    expected = {
        AIO: ["firewall_client_ranges: '0.0.0.0/0' admits every address",
              "firewall_client_ranges: 'any' admits every address",
              "firewall_client_ranges: '10.30.0.5/16' is a subnet with host bits set",
              "firewall_client_ranges: '10.300.0.0/16' is not an IPv4 or IPv6",
              "firewall_client_ranges: keyword 'Internet' is not allowed",
              "firewall_client_ranges: '4.0.0.0/6' is wider than /8",
              "prefect_public_port is 4200, the Prefect API port",
              "firewall_group must not be 'enclave.prefect'",
              "firewall_control_node_addresses is empty while firewall_manage_winrm is true",
              "firewall_legacy_rules: 'enclave.prefect: WinRM over HTTPS (5986) from the control node' is the control node's"],
        SRV: ["firewall_control_node_addresses: keyword 'LocalSubnet' is not allowed",
              "firewall_control_node_addresses: '10.20.0.0/16' is wider than /24",
              f"firewall_worker_hosts: {WRK} needs prefect_host_address",
              "firewall_client_ranges is empty on a prefect_proxy host"],
    }
    before = sim.state_path.read_text()
    proc, data = sim.run({}, playbook="firewall.yml", limit="all", expect_rc=2, inventory=str(inventory / "hosts.yml"))
    output = proc.stdout + proc.stderr
    for host, texts in expected.items():
        for text in texts:
            assert f"{host}: {text}" in output, (text, output[-4000:])
    assert any(line.startswith(f"{WRK2}: ") and "firewall_state" in line and "gone" in line
               for line in by_name(host_results(data, WRK2))[VERDICT]["msg"].splitlines()), output[-4000:]
    # The preflight stopped the run: no task reached any host.
    assert sim.state_path.read_text() == before
    assert all(reached(data, host) == [] for host in (AIO, SRV, WRK, WRK2, DB))


def test_profile_is_not_turned_on_without_a_winrm_rule(tmp_path, ansible_env):
    """A host where no rule admits 5986, with the Domain profile off and the Public one on but with DefaultInboundAction
    Allow: turning Domain on, or setting Public to Block, would cut the control node off, and the guard refuses both
    alike, naming them (Private, on and blocking, is not named). With the role's own WinRM rule from the control node,
    both are set after the rule exists. Group Policy that does not apply local rules is reported by profile."""
    sim = Sim(tmp_path, ansible_env, {"firewall": {"rules": [], "profiles": {
        "Domain": {"enabled": False, "inbound": "NotConfigured"}, "Private": {"enabled": True, "inbound": "Block"},
        "Public": {"enabled": True, "inbound": "Allow", "local_rules": "False"}}}})
    proc, _data = run(sim, expect_rc=2)
    message = next(line for line in proc.stdout.splitlines() if "lock the control node out" in line)
    assert "profile(s) Domain, Public are off or allow" in message, message
    assert sim.state["firewall"]["profiles"]["Domain"]["enabled"] is False
    assert sim.state["firewall"]["profiles"]["Public"]["inbound"] == "Allow"
    proc, _data = run(sim, extra={"firewall_manage_winrm": True})
    rules = rules_by_name(sim.state)
    assert rules[GROUP + " - WinRM HTTPS"]["RemoteAddresses"] == "10.20.0.15/255.255.255.255"
    assert sim.state["firewall"]["profiles"]["Domain"] == {"enabled": True, "inbound": "Block"}
    assert sim.state["firewall"]["profiles"]["Public"]["inbound"] == "Block"
    assert ('Group Policy sets \\"Apply local firewall rules: No\\" for the Public profile(s)' in proc.stdout
            or 'Group Policy sets "Apply local firewall rules: No" for the Public profile(s)' in proc.stdout), proc.stdout[-3000:]


def _domain_off(rules):
    return {"firewall": {"rules": rules, "profiles": {
        "Domain": {"enabled": False, "inbound": "NotConfigured"}, "Private": {"enabled": True, "inbound": "Block"},
        "Public": {"enabled": False, "inbound": "NotConfigured"}}}}


@pytest.mark.parametrize(("rule", "locked"), [
    # A WinRM rule for the Domain profile only does not keep the control node in when Public is turned on.
    (dict(PREPARE, Profiles=1), "Public"),
    # A WinRM rule from another address does not admit the control node (10.20.0.15, example inventory).
    (dict(PREPARE, RemoteAddresses="10.20.9.0/255.255.255.0"), "Domain"),
    # A disabled rule admits nobody.
    (dict(PREPARE, Enabled=False), "Domain"),
], ids=["domain-only", "other-address", "disabled"])
def test_winrm_guard_counts_only_rules_for_the_profile_and_the_control_node(tmp_path, ansible_env, rule, locked):
    sim = Sim(tmp_path, ansible_env, _domain_off([rule]))
    proc, _data = run(sim, expect_rc=2)
    message = next(line for line in proc.stdout.splitlines() if "lock the control node out" in line)
    assert locked in message and "10.20.0.15" in message, message
    assert sim.state["firewall"]["profiles"]["Domain"]["enabled"] is False


def test_winrm_guard_admits_a_rule_for_all_profiles_from_the_control_node_subnet(tmp_path, ansible_env):
    sim = Sim(tmp_path, ansible_env, _domain_off([dict(PREPARE, RemoteAddresses="10.20.0.0/255.255.255.0")]))
    run(sim)
    assert all(p["enabled"] for p in sim.state["firewall"]["profiles"].values())


def test_stale_group_rule_sharing_its_name_with_another_group_is_left_with_a_warning(tmp_path, ansible_env):
    """win_firewall_rule.ps1:178-185 matches `name` in every group: removing the stale group rule by name would take the
    other product's rule of the same display name with it."""
    stale = GROUP + " - old"
    other = com_rule(stale, 9000, group="Other product", rule_id="other-product-rule")
    sim = Sim(tmp_path, ansible_env, {"firewall": {"rules": [PREPARE, com_rule(stale, 9000, group=GROUP), other,
                                                             com_rule(GROUP + " - unique old", 9001, group=GROUP)]}})
    _proc, data = run(sim)
    rules = firewall(sim.state)["rules"]
    assert other in rules
    assert [r["Grouping"] for r in rules if r["Name"] == stale] == [GROUP, "Other product"]
    assert GROUP + " - unique old" not in rules_by_name(sim.state)  # a stale rule with its own name still goes
    warning = by_name(host_results(data, AIO))["Rules of the group sharing their name with other rules are shown"]["msg"]
    assert json.dumps(stale) in warning and AIO in warning
