"""plugins/filter/firewall.py: the rules and refusals of the firewall role, without Ansible; and the stand-in's
address spelling (sim_firewall.py), which decides whether a re-run compares equal."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rolerun import REPO

pytestmark = pytest.mark.static

spec = importlib.util.spec_from_file_location("firewall_filter", REPO / "plugins" / "filter" / "firewall.py")
firewall = importlib.util.module_from_spec(spec)
spec.loader.exec_module(firewall)


def plan(**changes):
    data = {"host": "px", "state": "present", "group": "enclave.prefect.firewall", "is_proxy": True, "is_database": False,
            "client_ranges": ["10.30.0.0/16"], "allow_any_client": False, "http_redirect": False,
            "worker_hosts": ["px", "w1", "w2"], "database_client_hosts": [], "inventory": ["px", "w1", "w2", "s1"],
            "addresses": {"w1": "10.20.1.21", "w2": "10.20.1.22", "s1": "10.20.1.20"}, "api_port": 4200,
            "prefect_public_port": 443, "prefect_worker_port": 8443, "prefect_database_port": 5432,
            "manage_winrm": False, "firewall_winrm_port": 5986, "control_node_addresses": [],
            "rule_profiles": ["domain", "private", "public"], "legacy_rules": [], "disable_rules": []}
    data.update(changes)
    return firewall.firewall_plan(data)


def test_proxy_rules():
    result = plan()
    assert result["errors"] == []
    assert [(r["name"], r["localport"], r["remoteip"]) for r in result["rules"]] == [
        ("enclave.prefect.firewall - people HTTPS", "443", "10.30.0.0/16"),
        ("enclave.prefect.firewall - worker machine path", "8443", "10.20.1.21,10.20.1.22")]
    assert all(r["action"] == "allow" and r["group"] == "enclave.prefect.firewall" for r in result["rules"])


@pytest.mark.parametrize("value, canonical", [
    ("10.30.0.7", "10.30.0.7"), ("10.30.0.7/32", "10.30.0.7"), ("10.30.0.0/255.255.0.0", "10.30.0.0/16"),
    ("localsubnet", "LocalSubnet"), ("10.30.0.10 - 10.30.0.20", "10.30.0.10-10.30.0.20")])
def test_client_ranges_get_one_spelling(value, canonical):
    result = plan(client_ranges=[value, canonical])
    assert result["errors"] == [] and result["rules"][0]["remoteip"] == canonical


@pytest.mark.parametrize("value, problem", [
    ("any", "admits every address"), ("*", "admits every address"), ("0.0.0.0/0", "admits every address"),
    ("6.0.0.0/7", "wider than /8"), ("10.30.0.5/16", "host bits set"), ("10.30.0.300", "not an IPv4"),
    ("Internet", "keyword 'Internet' is not allowed"), ("10.0.0.9-10.0.0.1", "first address is after its last"),
    ("fd00::/31", "wider than /8 (IPv6 /32)"), ("::/0", "admits every address"), ("fd00::1/64", "host bits set"),
    ("10.0.0.1-fd00::1", "from an IPv4 to an IPv6 address"), ("fd00::g", "not an IPv4 or IPv6 address")])
def test_dangerous_or_bad_client_ranges_are_refused(value, problem):
    errors = plan(client_ranges=[value])["errors"]
    assert len(errors) == 1 and problem in errors[0] and "firewall_client_ranges" in errors[0], errors


def test_ipv6_networks_and_worker_addresses():
    """IPv6 client networks (/32 or narrower), IPv6 worker addresses, IPv4-mapped addresses as their IPv4 address."""
    result = plan(client_ranges=["fd00:20::/48", "2001:db8::7"], cli_networks=["fd00:40::/64"],
                  addresses={"w1": "fd00:20::21", "w2": "::ffff:10.20.1.22", "s1": "10.20.1.20"})
    assert result["errors"] == []
    remote = {r["name"].rsplit(" - ", 1)[1]: r["remoteip"] for r in result["rules"]}
    assert remote == {"people HTTPS": "fd00:20::/48,2001:db8::7",
                      "worker machine path": "fd00:20::21,10.20.1.22,fd00:40::/64"}
    errors = plan(addresses={"w1": "fe80::1", "w2": "::1", "s1": ""})["errors"]
    assert len(errors) == 2 and all("not an address another host can use" in e for e in errors), errors
    # The WinRM guard tells the families apart: an IPv4 rule does not admit an IPv6 control node.
    assert firewall.firewall_winrm_unreachable([{"name": "r", "profiles": 7, "remoteip": "10.0.0.0/255.0.0.0"}],
                                               ["Domain"], ["fd00::5"]) == ["Domain"]
    assert firewall.firewall_winrm_unreachable([{"name": "r", "profiles": 7, "remoteip": "fd00::/64"}],
                                               ["Domain"], ["fd00::5"]) == []


def test_any_only_when_allowed():
    result = plan(client_ranges=["10.30.0.0/16", "any"], allow_any_client=True)
    assert result["errors"] == [] and result["rules"][0]["remoteip"] == "any"


def test_never_the_api_port_and_one_port_per_site():
    assert any("Prefect API port" in e for e in plan(prefect_public_port=4200)["errors"])
    assert any("Prefect API port" in e for e in plan(prefect_worker_port="4200")["errors"])
    assert any("need a port each" in e for e in plan(prefect_worker_port=443)["errors"])
    assert all(r["localport"] != "4200" for r in plan(http_redirect=True)["rules"])
    assert "80" in [r["localport"] for r in plan(http_redirect=True)["rules"]]


def test_worker_addresses_are_required():
    errors = plan(addresses={"w1": "", "w2": "127.0.0.1"}, worker_hosts=["w1", "w2", "ghost"])["errors"]
    assert len(errors) == 3
    assert "w1 needs prefect_host_address" in errors[0] and "not an address another host can use" in errors[1]
    assert "ghost is not a host of the inventory" in errors[2]


def test_developers_networks_share_the_machine_path():
    result = plan(cli_networks=["10.40.0.0/16", "10.20.1.21", "10.40.0.0/255.255.0.0"])
    assert result["errors"] == []
    rule = next(r for r in result["rules"] if r["name"].endswith("worker machine path"))
    assert rule["remoteip"] == "10.20.1.21,10.20.1.22,10.40.0.0/16" and "developers' networks" in rule["description"]
    # Developers alone (no remote worker) still open the port; keywords, any and wide ranges are refused.
    alone = plan(worker_hosts=["px"], cli_networks=["10.40.0.0/16"])
    assert [r["remoteip"] for r in alone["rules"] if r["name"].endswith("worker machine path")] == ["10.40.0.0/16"]
    errors = plan(cli_networks=["LocalSubnet", "0.0.0.0/0", "10.0.0.0/7", "10.40.0.1/16"])["errors"]
    assert [e.split(":")[0] for e in errors] == ["prefect_cli_networks"] * 4, errors


def test_database_rule_and_all_in_one():
    result = plan(is_proxy=False, is_database=True, database_client_hosts=["s1"])
    assert [(r["localport"], r["remoteip"]) for r in result["rules"]] == [("5432", "10.20.1.20")]
    assert plan(is_proxy=False, is_database=True, database_client_hosts=["px"])["rules"] == []


def test_control_node_lock_out_and_prepare_script_rule_are_refused():
    assert any("lock the control node out" in e for e in plan(manage_winrm=True)["errors"])
    ok = plan(manage_winrm=True, control_node_addresses=["10.20.0.15", "10.20.0.16/28"])
    assert ok["errors"] == [] and ok["rules"][-1]["remoteip"] == "10.20.0.15,10.20.0.16/28"
    assert any("wider than /24" in e for e in plan(manage_winrm=True, control_node_addresses=["10.20.0.0/16"])["errors"])
    assert any("prepare-windows-host.ps1" in e for e in plan(group="Enclave.Prefect")["errors"])
    assert any("prepare-windows-host.ps1" in e for e in plan(
        legacy_rules=["enclave.prefect: WinRM over HTTPS (5986) from the control node"])["errors"])
    # state absent checks only what removal needs: the group is still refused.
    assert plan(state="absent", client_ranges=[])["errors"] == []
    assert plan(state="absent", group="enclave.prefect")["errors"]


def _sim_part():
    """The stand-in's helper functions, loaded alone (no host state needed for fw_addresses)."""
    from simhost import LAZY_PRELUDE

    namespace = {"STANDINS": {}, "SCRIPTS": {}}
    exec(LAZY_PRELUDE, namespace)  # noqa: S102
    exec(compile((Path(__file__).parent / "sim_firewall.py").read_text(), "sim_firewall.py", "exec"), namespace)  # noqa: S102
    return namespace


def test_stand_in_spells_addresses_as_windows_stores_them():
    fw = _sim_part()
    # win_firewall_rule's own integration tests: 192.168.2.0/24 after 192.168.2.0/255.255.255.0 is no change.
    assert fw["fw_addresses"]("192.168.2.0/24") == fw["fw_addresses"]("192.168.2.0/255.255.255.0") == "192.168.2.0/255.255.255.0"
    assert fw["fw_addresses"]("localsubnet,10.0.0.1") == "LocalSubnet,10.0.0.1/255.255.255.255"
    assert fw["fw_addresses"]("any") == "*"
    with pytest.raises(fw["FwComError"]):
        fw["fw_addresses"]("10.0.0.300")
    assert fw["fw_profiles"](["domain", "private", "public"]) == 0x7FFFFFFF
    assert fw["fw_profiles"](["domain", "private"]) == 3


@pytest.mark.parametrize("changes, problem", [
    ({"disable_rules": ["*"]}, "holds a wildcard"),
    ({"disable_rules": ["IIS-WebServerRole-HTTP-In-TCP?"]}, "holds a wildcard"),
    ({"disable_rules": ["WINRM-HTTP-In-TCP"]}, "one of Windows' WinRM or Remote Desktop rules"),
    ({"legacy_rules": ["RemoteDesktop-UserMode-In-TCP"]}, "one of Windows' WinRM or Remote Desktop rules"),
    ({"group": "Windows Remote Management"}, "a group of Windows' own rules"),
    ({"group": "Remote Desktop"}, "a group of Windows' own rules"),
], ids=["star", "question-mark", "winrm-rule", "rdp-rule", "winrm-group", "rdp-group"])
def test_windows_own_access_rules_and_wildcards_are_refused(changes, problem):
    """An audit found them accepted: Get-NetFirewallRule -Name expands wildcards, and the built-in WinRM and Remote
    Desktop rules are how administrators and the control node reach the host."""
    assert any(problem in error for error in plan(**changes)["errors"]), plan(**changes)["errors"]
