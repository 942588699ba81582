"""IIS, listening-port and firewall findings of playbooks/diagnose.yml (plugins/filter/diagnose_checks.py): a healthy
all-in-one host gives none; each rule is tripped by one change of that host, and names its evidence and fix."""
from __future__ import annotations

import copy

import pytest

from ansible_collections.enclave.prefect.plugins.filter.diagnose import diagnose_details, diagnose_findings, diagnose_summary
from ansible_collections.enclave.prefect.plugins.filter.diagnose_checks import diagnose_checks

pytestmark = pytest.mark.unit

NOW = "2026-03-01T12:00:00+00:00"
THUMB = "5E0C1D7A9B3F4E2D8C6A1B0F9E8D7C6B5A4F3E2D"
GROUP = "enclave.prefect.firewall"
RULES = [
    {"name": GROUP + " - people HTTPS", "localport": "443", "remoteip": "10.20.0.0/16", "profiles": ["domain", "private", "public"]},
    {"name": GROUP + " - worker machine path", "localport": "8443", "remoteip": "10.20.1.11,10.20.1.12",
     "profiles": ["domain", "private", "public"]},
]
EXPECTED = {"server": True, "proxy": True, "database": True, "server_port": 4200, "public_host": "prefect.corp.local",
            "public_port": 443, "worker_port": 8443, "site": "Prefect", "worker_site": "Prefect-Workers", "app_pool": "PrefectProxy",
            "http_redirect": False, "certificate": THUMB, "database_port": 5432, "database_remote": False,
            "firewall": RULES, "firewall_profiles": ["Domain", "Private", "Public"], "input_error": ""}


def _binding(port):
    return {"protocol": "https", "binding": "*:%d:prefect.corp.local" % port, "thumbprint": THUMB, "store": "My",
            "certificate": {"found": True, "subject": "CN=prefect.corp.local", "not_before": "2025-06-01T00:00:00Z",
                            "not_after": "2027-06-01T00:00:00Z", "has_private_key": True}}


def _site(name, port):
    return {"name": name, "state": "Started", "app_pool": "PrefectProxy", "bindings": [_binding(port)],
            "rewrite_rules": [{"name": "Prefect API and UI", "enabled": "True"}, {"name": "Prefect websockets", "enabled": "True"}],
            "authorization": [{"access": "Allow", "users": "", "roles": "CORP\\Prefect Users"}],
            "url_auth_module": True, "rewrite_module": True}


def _rule(name, port, remote):
    return {"name": "{%s}" % name, "display_name": name, "group": GROUP, "enabled": "True", "direction": "Inbound", "action": "Allow",
            "profile": "Any", "source": "Local", "protocol": "TCP", "local_port": [port], "remote_address": remote}


HEALTHY = {
    "collected_at": NOW,
    "services": [{"name": "PrefectServer", "state": "Running", "app_pid": 3100}],
    "ports": [{"address": "0.0.0.0", "port": 443, "pid": 4, "process": "System"},
              {"address": "0.0.0.0", "port": 8443, "pid": 4, "process": "System"},
              {"address": "127.0.0.1", "port": 4200, "pid": 3100, "process": "python"},
              {"address": "127.0.0.1", "port": 5432, "pid": 2800, "process": "postgres"},
              {"address": "::1", "port": 5432, "pid": 2800, "process": "postgres"}],
    "iis": {"installed": True, "global_modules": ["RewriteModule", "UrlAuthorizationModule", "ApplicationRequestRouting"],
            "sites": [_site("Prefect", 443), _site("Prefect-Workers", 8443),
                      {"name": "Default Web Site", "state": "Stopped", "bindings": [{"protocol": "http", "binding": "*:80:"}]}],
            "app_pools": [{"name": "PrefectProxy", "state": "Started"}, {"name": "DefaultAppPool", "state": "Started"}],
            "arr": {"enabled": "True"}},
    "firewall": {"rules": [_rule(GROUP + " - people HTTPS", "443", ["10.20.0.0/255.255.0.0"]),
                           _rule(GROUP + " - worker machine path", "8443", ["10.20.1.11", "10.20.1.12"])],
                 "block_rules": [{"display_name": "Block SMB", "enabled": "True", "direction": "Inbound", "action": "Block",
                                  "profile": "Any", "protocol": "TCP", "local_port": ["445"], "remote_address": ["Any"]}],
                 "profiles": [{"name": n, "enabled": "True", "default_inbound_action": "NotConfigured", "allow_local_rules": "NotConfigured"}
                              for n in ("Domain", "Private", "Public")],
                 "network_categories": ["DomainAuthenticated"]},
}


def _found(change=None, expected=None):
    report = copy.deepcopy(HEALTHY)
    if change:
        change(report)
    return diagnose_checks({"h": report}, {"h": dict(EXPECTED, **(expected or {}))})


def _one(change=None, expected=None):
    found = _found(change, expected)
    assert len(found) == 1, found
    assert found[0]["evidence"] and found[0]["fix"] and found[0]["host"] == "h"
    return found[0]


def _site_of(report, name):
    return next(s for s in report["iis"]["sites"] if s["name"] == name)


def test_healthy_host_has_no_finding():
    assert _found() == []


def test_unreachable_and_failed_hosts_and_missing_sections_give_nothing():
    reports = {"a": {"unreachable": True}, "b": {"failed": True}, "c": {"collected_at": NOW, "errors": {"iis": "x", "ports": "y"}}}
    assert diagnose_checks(reports, {h: EXPECTED for h in reports}) == []


# ------------------------------------------------------------------------------------------------------------ IIS


def test_iis_missing_on_a_proxy_host():
    found = _one(lambda r: r.update(iis={"installed": False}))
    assert found["severity"] == "critical" and "IIS is not installed" in found["message"]


def test_iis_is_not_checked_on_a_host_that_is_no_proxy():
    assert _found(lambda r: r.update(iis={"installed": False}), {"proxy": False}) == []


@pytest.mark.parametrize("site, who", [("Prefect", "people's"), ("Prefect-Workers", "workers'")])
def test_site_stopped(site, who):
    found = _one(lambda r: _site_of(r, site).update(state="Stopped"))
    assert found["severity"] == "critical" and found["message"] == "the %s site %s is Stopped: it answers nothing" % (who, site)
    assert "Start-Website -Name '%s'" % site in found["fix"]


def test_site_missing_names_the_sites_there():
    found = _one(lambda r: r["iis"].update(sites=[s for s in r["iis"]["sites"] if s["name"] != "Prefect-Workers"]))
    assert found["message"] == "the workers' site Prefect-Workers does not exist" and found["evidence"] == "sites on the host: Default Web Site, Prefect"


def test_workers_site_not_expected_without_remote_workers():
    assert _found(lambda r: r["iis"].update(sites=[s for s in r["iis"]["sites"] if s["name"] != "Prefect-Workers"]),
                  {"worker_site": ""}) == []


@pytest.mark.parametrize("state", ["Stopped", None])
def test_app_pool_stopped_or_missing(state):
    def change(report):
        pools = [p for p in report["iis"]["app_pools"] if p["name"] != "PrefectProxy"]
        report["iis"]["app_pools"] = pools + ([{"name": "PrefectProxy", "state": state}] if state else [])
    found = _one(change)
    assert found["severity"] == "critical"
    assert found["message"] == "application pool PrefectProxy is %s: the sites answer 503" % (state or "missing")


def test_https_binding_missing_on_the_people_port():
    found = _one(lambda r: _site_of(r, "Prefect").update(bindings=[{"protocol": "http", "binding": "*:80:prefect.corp.local"}]))
    assert found["message"] == "the people's site Prefect has no HTTPS binding on port 443" and "http *:80:" in found["evidence"]


@pytest.mark.parametrize("certificate, text", [
    ({"found": False}, "which is not in LocalMachine\\My"),
    ({"not_after": "2026-02-01T00:00:00Z"}, "expired on 2026-02-01"),
    ({"not_before": "2026-03-05T00:00:00Z"}, "is not valid before 2026-03-05"),
    ({"has_private_key": False}, "has no private key"),
])
def test_binding_certificate_problems(certificate, text):
    def change(report):
        cert = _site_of(report, "Prefect-Workers")["bindings"][0]["certificate"]
        if certificate.get("found") is False:
            cert.clear()
        cert.update(certificate)
    found = _one(change)
    assert found["severity"] == "critical" and text in found["message"]
    assert found["message"].startswith("site Prefect-Workers binding *:8443:prefect.corp.local")


def test_binding_with_another_certificate_names_both():
    found = _found(expected={"certificate": "AA" * 20})
    assert [f["severity"] for f in found] == ["warning", "warning"]
    assert "uses certificate %s, not the configured %s" % (THUMB, "AA" * 20) in found[0]["message"]


def test_arr_missing_or_disabled():
    assert "not installed" in _one(lambda r: r["iis"].update(arr=None))["message"]
    found = _one(lambda r: r["iis"].update(arr={"enabled": "False"}))
    assert found["message"] == "ARR's proxy is disabled: requests are not forwarded to Prefect"
    assert found["evidence"] == "system.webServer/proxy enabled=False"


def test_url_rewrite_missing_disabled_or_partly_disabled():
    def no_module(report):
        report["iis"]["global_modules"].remove("RewriteModule")
    found = _found(no_module)
    assert [f["message"].split(":")[0] for f in found] == ["URL Rewrite is not installed or not active for site Prefect"] + \
        ["URL Rewrite is not installed or not active for site Prefect-Workers"]

    def all_disabled(report):
        for rule in _site_of(report, "Prefect")["rewrite_rules"]:
            rule["enabled"] = "False"
    assert _one(all_disabled)["message"] == "site Prefect has no enabled rewrite rule: nothing is forwarded to Prefect"
    found = _one(lambda r: _site_of(r, "Prefect")["rewrite_rules"][1].update(enabled="False"))
    assert found["severity"] == "warning" and found["message"] == "site Prefect has disabled rewrite rule(s): Prefect websockets"


@pytest.mark.parametrize("where", ["global", "site"])
def test_url_authorization_missing_while_rules_exist(where):
    def change(report):
        if where == "global":
            report["iis"]["global_modules"].remove("UrlAuthorizationModule")
            _site_of(report, "Prefect-Workers")["authorization"] = [{"access": "Allow", "users": "*", "roles": ""}]
        else:
            _site_of(report, "Prefect")["url_auth_module"] = False
    found = _one(change)
    assert found["severity"] == "critical" and found["message"].startswith("site Prefect has authorization rules, but URL Authorization")
    assert "Allow CORP\\Prefect Users" in found["evidence"] and "Web-Url-Auth" in found["fix"]


def test_url_authorization_missing_without_rules_is_no_finding():
    def change(report):
        report["iis"]["global_modules"].remove("UrlAuthorizationModule")
        for site in ("Prefect", "Prefect-Workers"):
            _site_of(report, site)["authorization"] = [{"access": "Allow", "users": "*", "roles": ""}]
    assert _found(change) == []


def test_default_web_site_on_a_port_of_the_role():
    def https_443(hostname):
        def change(report):
            site = _site_of(report, "Default Web Site")
            site.update(state="Started", bindings=[{"protocol": "https", "binding": "*:443:" + hostname}])
        return change
    found = _one(https_443(""))
    assert found["severity"] == "warning" and found["message"].startswith("site Default Web Site answers on port 443 for every request")
    found = _one(https_443("Prefect.corp.local"))
    assert found["severity"] == "critical" and "IIS cannot start both" in found["message"]
    # Port 80 matters only when the role binds it (the HTTP redirect); a stopped site binds nothing.

    def port_80(report):
        _site_of(report, "Default Web Site")["state"] = "Started"
        report["ports"].append({"address": "0.0.0.0", "port": 80, "pid": 4, "process": "System"})
    assert _found(port_80) == []
    assert _one(port_80, {"http_redirect": True})["message"].startswith("site Default Web Site answers on port 80")


# ---------------------------------------------------------------------------------------------------------- ports


def _ports(report, port, *listeners):
    report["ports"] = [p for p in report["ports"] if p["port"] != port] + list(listeners)


def test_server_port_not_listening():
    found = _one(lambda r: _ports(r, 4200))
    assert found["message"].startswith("the Prefect server does not listen on 127.0.0.1:4200")
    assert found["evidence"] == "nothing listens on port 4200"


def test_server_port_on_a_network_address():
    # 0.0.0.0 holds loopback too: the one finding is the exposure.
    found = _one(lambda r: _ports(r, 4200, {"address": "0.0.0.0", "port": 4200, "pid": 3100, "process": "python"}))
    assert found["severity"] == "critical" and "the Prefect API listens on 0.0.0.0, not only on loopback" in found["message"]
    # On loopback and on the host's address: still exposed.
    found = _one(lambda r: _ports(r, 4200, {"address": "127.0.0.1", "port": 4200, "pid": 3100, "process": "python"},
                                  {"address": "10.20.1.10", "port": 4200, "pid": 3100, "process": "python"}))
    assert "listens on 10.20.1.10" in found["message"]


def test_server_port_held_by_another_process_names_it():
    found = _one(lambda r: _ports(r, 4200, {"address": "127.0.0.1", "port": 4200, "pid": 777, "process": "splunkd"}))
    assert found["message"] == "port 4200, the Prefect server's, is held by splunkd (pid 777): the server cannot listen"


def test_server_port_not_checked_on_a_worker_host():
    assert _found(lambda r: _ports(r, 4200), {"server": False}) == []


def test_postgresql_on_the_network_where_pg_hba_admits_nobody():
    found = _one(lambda r: _ports(r, 5432, {"address": "0.0.0.0", "port": 5432, "pid": 2800, "process": "postgres"}))
    assert found["severity"] == "warning" and found["message"].startswith("PostgreSQL listens on 0.0.0.0, where pg_hba.conf admits no client")


def test_postgresql_on_loopback_only_where_pg_hba_admits_other_hosts():
    found = _one(expected={"database_remote": True})
    assert found["severity"] == "critical" and "they cannot connect" in found["message"]
    assert _found(lambda r: _ports(r, 5432, {"address": "::", "port": 5432, "pid": 2800, "process": "postgres"}),
                  {"database_remote": True}) == []


def test_postgresql_port_free_or_held_by_another_process():
    assert _one(lambda r: _ports(r, 5432))["message"] == "PostgreSQL does not listen on port 5432"
    found = _one(lambda r: _ports(r, 5432, {"address": "0.0.0.0", "port": 5432, "pid": 91, "process": "mysqld"}))
    assert found["message"] == "port 5432, PostgreSQL's, is held by mysqld (pid 91)"


def test_public_and_worker_ports():
    found = _one(lambda r: _ports(r, 8443))
    assert found["message"] == "nothing listens on port 8443 (the workers' site)"
    found = _one(lambda r: _ports(r, 443, {"address": "0.0.0.0", "port": 443, "pid": 1900, "process": "nginx"}))
    assert found["message"] == "port 443 (the people's site) is held by nginx (pid 1900), not by IIS (http.sys)"
    assert _one(expected={"http_redirect": True})["message"] == "nothing listens on port 80 (the HTTP redirect site)"


# ------------------------------------------------------------------------------------------------------- firewall


def _profile(report, name, **values):
    next(p for p in report["firewall"]["profiles"] if p["name"] == name).update(values)


@pytest.mark.parametrize("values, text", [({"enabled": "False"}, "is off"),
                                          ({"default_inbound_action": "Allow"}, "allows inbound traffic no rule allows"),
                                          ({"allow_local_rules": "False"}, "Group Policy stops local firewall rules from applying")])
def test_profile_problems_rank_by_the_network_in_use(values, text):
    found = _one(lambda r: _profile(r, "Domain", **values))
    assert found["severity"] == "critical" and text in found["message"] and "the profile of this host's network" in found["message"]
    found = _one(lambda r: _profile(r, "Public", **values))
    assert found["severity"] == "warning" and "not the profile of this host's network now" in found["message"]


def test_profiles_the_role_does_not_manage_are_left_out():
    assert _found(lambda r: _profile(r, "Public", enabled="False"), {"firewall_profiles": ["Domain"]}) == []


def test_our_rule_missing_or_disabled():
    found = _one(lambda r: r["firewall"]["rules"].pop(1))
    assert found["severity"] == "critical" and found["message"].startswith(
        "the allow rule %s - worker machine path (TCP 8443 from 10.20.1.11,10.20.1.12) is missing" % GROUP)
    found = _one(lambda r: r["firewall"]["rules"][0].update(enabled="False"))
    assert found["message"] == "the allow rule %s - people HTTPS is disabled" % GROUP


def test_our_rule_on_another_port():
    found = _one(lambda r: r["firewall"]["rules"][0].update(local_port=["443", "4200"]))
    assert found["message"] == "the allow rule %s - people HTTPS admits port(s) 443,4200 instead of 443" % GROUP


@pytest.mark.parametrize("remote", [["Any"], ["10.0.0.0/255.0.0.0"], ["10.20.0.0/255.255.0.0", "10.30.0.5"], ["LocalSubnet"],
                                    ["10.20.0.0-10.21.0.0"]])
def test_our_rule_wider_than_configured(remote):
    found = _one(lambda r: r["firewall"]["rules"][0].update(remote_address=remote))
    assert found["severity"] == "warning" and "admits more addresses than configured: " + ",".join(remote) in found["message"]


def test_our_rule_narrower_than_configured():
    found = _one(lambda r: r["firewall"]["rules"][1].update(remote_address=["10.20.1.11"]))
    assert "admits fewer addresses than configured (10.20.1.11,10.20.1.12)" in found["message"]
    # The same addresses in another spelling: no finding.
    assert _found(lambda r: r["firewall"]["rules"][1].update(remote_address=["10.20.1.11/255.255.255.255", "10.20.1.12/32"])) == []


def _block(**values):
    rule = {"name": "{b}", "display_name": "Block 443", "enabled": "True", "direction": "Inbound", "action": "Block", "profile": "Any",
            "source": "GroupPolicy", "protocol": "TCP", "local_port": ["443"], "remote_address": ["Any"]}
    rule.update(values)
    return rule


@pytest.mark.parametrize("values", [{}, {"local_port": ["400-500"]}, {"protocol": "Any", "local_port": ["443", "5000"]},
                                    {"remote_address": ["10.20.5.0/255.255.255.0"]}, {"remote_address": ["LocalSubnet"]},
                                    {"profile": "Domain, Private"}])
def test_block_rule_beats_our_allow_rule(values):
    found = _one(lambda r: r["firewall"]["block_rules"].append(_block(**values)))
    assert found["severity"] == "critical" and found["message"].startswith(
        "block rule Block 443 beats the allow rule %s - people HTTPS (TCP 443 from 10.20.0.0/16)" % GROUP)
    assert "in its Group Policy" in found["fix"] and "GroupPolicy" in found["evidence"]


def test_block_rule_of_every_port_beats_each_allow_rule():
    found = _found(lambda r: r["firewall"]["block_rules"].append(_block(protocol="Any", local_port=["Any"])))
    assert [f["message"].split(":")[0] for f in found] == [
        "block rule Block 443 beats the allow rule %s - people HTTPS (TCP 443 from 10.20.0.0/16)" % GROUP,
        "block rule Block 443 beats the allow rule %s - worker machine path (TCP 8443 from 10.20.1.11,10.20.1.12)" % GROUP]


@pytest.mark.parametrize("values", [{"local_port": ["4200"]}, {"protocol": "UDP"}, {"remote_address": ["192.168.0.0/255.255.0.0"]},
                                    {"enabled": "False"}, {"direction": "Outbound"}])
def test_block_rules_that_do_not_meet_our_rules(values):
    assert _found(lambda r: r["firewall"]["block_rules"].append(_block(**values))) == []


def test_block_rule_only_in_a_profile_not_in_use_is_a_warning():
    found = _one(lambda r: r["firewall"]["block_rules"].append(_block(profile="Public", source="Local")))
    assert found["severity"] == "warning" and "in its Group Policy" not in found["fix"]


def test_refused_role_input_is_a_finding():
    found = _one(expected={"input_error": "firewall_client_ranges is empty", "firewall": []})
    assert found["area"] == "inventory" and found["evidence"] == "firewall_client_ranges is empty"


# ------------------------------------------------------------------------------------------------ ranked with the rest


def test_checks_rank_with_the_other_findings_and_keep_evidence_and_fix():
    def broken(report):
        report["iis"]["arr"] = {"enabled": "False"}
        _profile(report, "Domain", allow_local_rules="False")
        _profile(report, "Public", enabled="False")
        report["services"][0]["state"] = "Stopped"
    report = copy.deepcopy(HEALTHY)
    broken(report)
    checks = diagnose_checks({"h": report}, {"h": EXPECTED})
    ranked = diagnose_findings({"h": report}, {}, checks)
    assert [(f["rank"], f["severity"], f["area"]) for f in ranked] == [
        (1, "critical", "firewall"), (2, "critical", "iis"), (3, "critical", "service"), (4, "warning", "firewall")]
    assert ranked[0]["fix"].startswith("put the rules of the firewall role's group into that Group Policy")
    assert "weight" not in ranked[0] and checks[0]["weight"]  # the checks' list itself is not changed
    summary = diagnose_summary(ranked, ["h"])
    assert "## Evidence and fixes" in summary and "   - evidence: system.webServer/proxy enabled=False" in summary
    details = diagnose_details(ranked)
    assert len(details) == 3 and details[0].startswith("#1 h firewall: evidence: Domain: Enabled True")
