"""The machine path's local account (prefect_worker_api_auth_string = account:password) on the simulated proxy host:
the iis_proxy role creates it in no group, grants the network logon IIS Basic authentication performs (logonMethod
Network) and denies every other kind of logon; the workers' site looks a name without DOMAIN\\ up on this host
(defaultLogonDomain = the computer name) and admits that account only. A re-run changes nothing, check mode on a new
host does not fail on the account it would create, state absent removes it, and the clashes with a service account of
the same host are refused before any host is touched.

Not on Windows: the stand-ins follow win_user.ps1 / win_user_right.ps1 (ansible.windows) and IIS Basic authentication
as documented (LogonUser with the logon type of basicAuthentication/logonMethod, sim_verify.py _v_basic_logon).
"""
from __future__ import annotations

import json

import pytest
import yaml

from simhost import HOST, by_name, reached
from test_iis_proxy import WORKERS, Proxy, assert_refused

pytestmark = pytest.mark.simulated

ACCOUNT, PASSWORD = "prefect_machine", "Mach-Secret-8e1f"
DENIED = ["SeDenyNetworkLogonRight", "SeDenyInteractiveLogonRight", "SeDenyRemoteInteractiveLogonRight", "SeDenyServiceLogonRight"]
BASIC = "Prefect-Workers|system.webServer/security/authentication/basicAuthentication"


def _local_proxy(root, env, credentials=None, state=None) -> Proxy:
    """The proxy of test_iis_proxy.py with both remote workers on the local account (or the given credentials); state:
    the host to start from (a copy of the module's converged one)."""
    proxy = Proxy(root, env, state=state)
    inventory = yaml.safe_load(proxy.inventory.read_text())
    for i, worker in enumerate(WORKERS):
        inventory["all"]["hosts"][worker]["prefect_worker_api_auth_string"] = (credentials or {}).get(
            worker, f"{ACCOUNT}:{PASSWORD}")
    proxy.inventory.write_text(yaml.safe_dump(inventory))
    return proxy


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ansible_env):
    proxy = _local_proxy(tmp_path_factory.mktemp("iis-local"), ansible_env)
    check_first = proxy.run(args=["--check"])[1]
    untouched = proxy.sim.state
    first = proxy.run()[1]
    converged = proxy.sim.state
    second = proxy.run()[1]
    return {"proxy": proxy, "check_first": check_first, "untouched": untouched, "first": first,
            "converged": converged, "second": second}


def test_check_mode_on_a_new_host_passes_and_creates_no_account(runs):
    assert ACCOUNT not in runs["untouched"].get("accounts", {})
    results = by_name(reached(runs["check_first"]))
    assert results["Machine path's local accounts exist, in no group"]["changed"]
    # The rights follow in the real run: win_user_right could not resolve an account that does not exist yet.
    assert "Machine path's local accounts may log on as IIS Basic authentication does and in no other way" not in results


def test_the_account_is_made_in_no_group_with_batch_logon_only(runs):
    state = runs["converged"]
    account = state["accounts"][ACCOUNT]
    assert account["password"] == PASSWORD and account["groups"] == []
    assert account["description"] == "Prefect remote workers at the IIS machine path (enclave.prefect.iis_proxy)"
    rights = state["rights"]
    assert account["sid"] in rights["SeBatchLogonRight"]
    assert all(account["sid"] in rights[r] for r in DENIED), {r: rights.get(r) for r in DENIED}
    # Nothing else of the role grants it a right.
    assert {r for r, sids in rights.items() if account["sid"] in sids} == {"SeBatchLogonRight", *DENIED}


def test_the_workers_site_looks_the_name_up_on_this_host_and_admits_only_it(runs):
    apphost = runs["converged"]["iis"]["apphost"]
    assert apphost[BASIC] == {"enabled": "true", "defaultLogonDomain": runs["converged"]["computer"], "logonMethod": "1"}
    rules = apphost["Prefect-Workers|system.webServer/security/authorization"]["collection:"]
    assert rules == [f"accessType=Allow;users={ACCOUNT};roles=;verbs="]


def test_rerun_changes_nothing(runs):
    changed = [n for n, r in reached(runs["second"]) if r.get("changed")]
    assert changed == [], changed


def _health(proxy, root, auth_string, state_change=None, expect_rc=0, caller=None):
    """server_health (its stand-in: IIS Basic as sim_verify.py answers it) from a remote worker's address (or caller)
    to the workers' site of the converged proxy, whose Prefect server runs."""
    state = proxy.sim.state
    state.update(address=caller or list(WORKERS.values())[0])
    state.setdefault("services", {})["PrefectServer"] = {"running": True}
    if state_change:
        state_change(state)
    proxy.sim.state_path.write_text(json.dumps(state))
    playbook = root / "health.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": HOST, "gather_facts": False, "tasks": [{
        "name": "Machine path answers", "enclave.prefect.server_health": {
            "api_url": "https://prefect.corp.local:8443/api", "auth": "basic", "auth_string": auth_string, "timeout": 1}}]}]))
    _proc, data = proxy.sim.run({}, playbook=str(playbook), inventory=str(proxy.inventory), limit=HOST, expect_rc=expect_rc)
    return by_name(reached(data))["Machine path answers"]


def _deny_batch(state):
    state["rights"].setdefault("SeDenyBatchLogonRight", []).append(state["accounts"][ACCOUNT]["sid"])


def test_the_account_passes_iis_basic_with_its_password_and_batch_logon_only(runs, tmp_path, ansible_env):
    """The account and password pass IIS Basic on the workers' site; a wrong password, the name with a domain, or the
    account denied batch logon (a Group Policy could) get 401."""
    proxy = _local_proxy(tmp_path / "proxy", ansible_env, state=runs["converged"])  # the module's converged host
    converged = proxy.sim.state_path.read_text()
    assert _health(proxy, tmp_path, f"{ACCOUNT}:{PASSWORD}").get("healthy") is True
    for auth_string, change in [(f"{ACCOUNT}:wrong", None), (f"CORP\\{ACCOUNT}:{PASSWORD}", None),
                                (f"{ACCOUNT}:{PASSWORD}", _deny_batch)]:
        proxy.sim.state_path.write_text(converged)
        result = _health(proxy, tmp_path, auth_string, change, expect_rc=2)
        assert result["failed"] and "HTTP 401" in result["msg"], (auth_string, result["msg"])


def test_state_absent_removes_the_local_account(runs, tmp_path, ansible_env):
    proxy = _local_proxy(tmp_path, ansible_env, state=runs["converged"])  # the module's converged host
    assert ACCOUNT in proxy.sim.state["accounts"]
    proxy.run(iis_proxy_state="absent")
    assert ACCOUNT not in proxy.sim.state["accounts"]


W1, W2 = list(WORKERS)
REFUSALS = [
    ("the server's service account", {}, {"nssm_services_account": ACCOUNT},
     [f"prefect_worker_api_auth_string's local account {ACCOUNT} is also nssm_services_account ({ACCOUNT})"]),
    ("a worker's own service account", {}, {"nssm_services_workers": [{"service": "W", "pool": "p", "account": ".\\" + ACCOUNT}]},
     [f"local account {ACCOUNT} is also nssm_services_workers (account) (.\\{ACCOUNT})"]),
    ("a domain account denied batch logon", {W1: "CORP\\svc_prefect:Dom-Secret-1", W2: "CORP\\svc_prefect:Dom-Secret-1"},
     {"nssm_services_account": "CORP\\svc_prefect",
      "nssm_services_account_deny_rights": ["SeDenyInteractiveLogonRight", "SeDenyBatchLogonRight"]},
     ["account CORP\\svc_prefect is also nssm_services_account on this host, which is denied batch logon"]),
    ("two passwords", {W1: f"{ACCOUNT}:One-Secret-1", W2: f"{ACCOUNT}:Two-Secret-2"}, {},
     [f"give the local account {ACCOUNT} different passwords", "passwords hidden here"]),
    ("a name Windows refuses", {W1: "prefect+machine:Bad-Name-1", W2: "prefect+machine:Bad-Name-1"}, {},
     ["must be a Windows user name", "got prefect+machine"]),
    ("a developers' network with host bits", {}, {"prefect_cli_networks": ["10.40.0.0/16", "10.40.0.1/16"]},
     ["prefect_cli_networks must hold IPv4 or IPv6 addresses or IPv4 CIDR subnets", "got 10.40.0.1/16."]),
    ("an IPv6 prefix for developers", {}, {"prefect_cli_networks": ["fd00:40::/64"]},
     ["IPv6 networks as their addresses", "got fd00:40::/64."]),
    ("every address for developers", {}, {"prefect_cli_networks": ["0.0.0.0/0"]}, ["got 0.0.0.0/0."]),
    ("a default logon domain", {}, {"iis_proxy_basic_auth_domain": "CORP"},
     [f"the local account {ACCOUNT} without a domain", "leave iis_proxy_basic_auth_domain empty"]),
]


@pytest.fixture(scope="module")
def clashes(tmp_path_factory, ansible_env):
    """Every case of REFUSALS in one run (Proxy.preflight), each a proxy host of its own with the case's input; a case
    with credentials of its own has remote workers of its own (iis_proxy_worker_hosts), the others the inventory's two
    on the local account."""
    proxy = _local_proxy(tmp_path_factory.mktemp("iis-clash"), ansible_env)
    before = proxy.sim.state_path.read_text()
    cases, workers = {}, {}
    for i, (_case, credentials, extra, _messages) in enumerate(REFUSALS):
        host = f"clash{i}.corp.local"
        cases[host] = dict(extra)
        if credentials:
            own = {f"clash{i}-{w}": {"prefect_host_address": address, "prefect_worker_api_auth_string": credentials[w]}
                   for w, address in WORKERS.items()}
            workers.update(own)
            cases[host]["iis_proxy_worker_hosts"] = sorted(own)
    output, _data, verdicts = proxy.preflight(cases, workers=workers)
    return {"output": output, "verdicts": verdicts, "untouched": proxy.sim.state_path.read_text() == before}


@pytest.mark.parametrize("index", range(len(REFUSALS)), ids=[r[0] for r in REFUSALS])
def test_clashes_are_refused_before_any_host(clashes, index):
    _case, _credentials, _extra, messages = REFUSALS[index]
    assert_refused(clashes["verdicts"][f"clash{index}.corp.local"], f"clash{index}.corp.local", messages)
    for secret in ("One-Secret-1", "Two-Secret-2", "Dom-Secret-1", PASSWORD):
        assert secret not in clashes["output"]
    assert clashes["untouched"]


def test_the_service_account_fallbacks_are_those_roles_defaults():
    """roles/iis_proxy/vars/main.yml checks the machine path's account against the service accounts of this host, falling
    back to the nssm_services and backup roles' defaults when the inventory does not set them (another role's defaults
    are not visible in the proxy's play): those fallbacks must stay equal to the defaults."""
    from rolerun import REPO
    text = (REPO / "roles" / "iis_proxy" / "vars" / "main.yml").read_text()
    nssm = yaml.safe_load((REPO / "roles" / "nssm_services" / "defaults" / "main.yml").read_text())
    backup = yaml.safe_load((REPO / "roles" / "backup" / "defaults" / "main.yml").read_text())
    proxy_vars = yaml.safe_load(text)
    for name, value in [("nssm_services_account", nssm["nssm_services_account"]),
                        ("nssm_services_worker_account", nssm["nssm_services_worker_account"]),
                        ("backup_account", backup["backup_account"])]:
        assert f"{name} | default('{value}')" in text, name
    assert proxy_vars["iis_proxy_default_deny_rights"] == nssm["nssm_services_account_deny_rights"] \
        == backup["backup_account_deny_rights"]


# Remote workers at an IPv6 and an IPv4-mapped address, developers' networks of both kinds: one converge that the next
# two tests read (each case once, and the developers' test before took the same run with IPv4 workers and one network).
IPV6_WORKERS = {"wrk1.corp.local": "fd00:20::21", "wrk2.corp.local": "::ffff:10.20.1.22"}
CLI_NETWORKS = ["fd00:40::7", "10.40.0.0/16"]


@pytest.fixture(scope="module")
def developers(tmp_path_factory, ansible_env):
    root = tmp_path_factory.mktemp("iis-developers")
    proxy = _local_proxy(root / "proxy", ansible_env)
    inventory = yaml.safe_load(proxy.inventory.read_text())
    for worker, address in IPV6_WORKERS.items():
        inventory["all"]["hosts"][worker]["prefect_host_address"] = address
    proxy.inventory.write_text(yaml.safe_dump(inventory))
    proxy.run(prefect_cli_networks=CLI_NETWORKS)
    return {"proxy": proxy, "root": root, "converged": proxy.sim.state_path.read_text()}


def test_developers_networks_reach_the_machine_path_as_members_of_the_allowed_groups(developers):
    """prefect_cli_networks: Prefect's CLI from a developers' network sends DOMAIN\\user:password (IIS Basic); the
    workers' site admits that network and the members of iis_proxy_allowed_groups besides the workers' account. A
    person outside the groups gets 401, an address outside the networks 403, and the workers' account still passes."""
    proxy, root, converged = developers["proxy"], developers["root"], developers["converged"]
    proxy.sim.state_path.write_text(converged)
    apphost = proxy.sim.state["iis"]["apphost"]
    entries = apphost["Prefect-Workers|system.webServer/security/ipSecurity"]["collection:"]
    assert "ipAddress=10.40.0.0;subnetMask=255.255.0.0;allowed=true" in entries, entries
    assert "ipAddress=10.20.1.22;subnetMask=255.255.255.255;allowed=true" in entries, entries
    assert apphost["Prefect-Workers|system.webServer/security/authorization"]["collection:"] == [
        f"accessType=Allow;users={ACCOUNT};roles=;verbs=", "accessType=Allow;users=;roles=CORP\\Prefect Users;verbs="]

    def people(state):
        state["domain_accounts"] = {"CORP\\operator": "Op-Secret-77d1", "CORP\\someone": "Else-Secret-31a9"}

    developer = "10.40.3.7"
    assert _health(proxy, root, "CORP\\operator:Op-Secret-77d1", people, caller=developer).get("healthy") is True
    proxy.sim.state_path.write_text(converged)
    # The IPv4 worker's address (its IPv4-mapped prefect_host_address).
    assert _health(proxy, root, f"{ACCOUNT}:{PASSWORD}", people, caller="10.20.1.22").get("healthy") is True
    for auth_string, caller, status in [("CORP\\someone:Else-Secret-31a9", developer, "HTTP 401"),
                                        ("CORP\\operator:Op-Secret-77d1", "10.50.0.9", "HTTP 403")]:
        proxy.sim.state_path.write_text(converged)
        result = _health(proxy, root, auth_string, people, expect_rc=2, caller=caller)
        assert status in result["msg"], (auth_string, result["msg"])


def test_server_core_gets_iis_without_the_graphical_console(tmp_path, ansible_env):
    """Server Core has no Web-Mgmt-Console: the whole Install-WindowsFeature call would fail on it (the stand-in, as
    the real one, refuses the list); the role leaves it out there, says so, and installs the rest."""
    proxy = _local_proxy(tmp_path, ansible_env)
    proxy.sim.update(installation_type="Server Core")
    output, data = proxy.run()
    features = proxy.sim.state["iis"]["features"]
    assert "Web-Mgmt-Console" not in features and {"Web-Server", "Web-Url-Auth", "Web-Scripting-Tools"} <= set(features)
    assert "is Server Core: Web-Mgmt-Console left out" in output
    # The check fails without the role's choice: the stand-in refuses the console on Server Core.
    failed = _local_proxy(tmp_path / "again", ansible_env)
    failed.sim.update(installation_type="Server Core")
    output, _data = failed.run(expect_rc=2, iis_proxy_gui_features=[])
    assert "The role, role service, or feature name is not valid: 'Web-Mgmt-Console'" in output


def test_ipv6_worker_and_developer_addresses_are_admitted(developers):
    """A remote worker with an IPv6 prefect_host_address and a developer's IPv6 address get ipSecurity entries (single
    addresses, the mask IIS Manager leaves at its default), an IPv4-mapped one its IPv4 spelling; the IPv6 worker
    passes the machine path from its address."""
    proxy, root = developers["proxy"], developers["root"]
    proxy.sim.state_path.write_text(developers["converged"])
    entries = proxy.sim.state["iis"]["apphost"]["Prefect-Workers|system.webServer/security/ipSecurity"]["collection:"]
    assert entries == ["ipAddress=10.20.1.22;subnetMask=255.255.255.255;allowed=true",
                       "ipAddress=fd00:20::21;subnetMask=255.255.255.255;allowed=true",
                       "ipAddress=fd00:40::7;subnetMask=255.255.255.255;allowed=true",
                       "ipAddress=10.40.0.0;subnetMask=255.255.0.0;allowed=true"]
    assert _health(proxy, root, f"{ACCOUNT}:{PASSWORD}", caller="fd00:20::21").get("healthy") is True


def test_an_account_the_role_did_not_make_is_never_taken_over(tmp_path, ansible_env):
    """A local account of the credential's name that exists without the role's description (an administrator's) stops
    the run before it is changed, and state absent leaves it."""
    proxy = _local_proxy(tmp_path, ansible_env)
    proxy.sim.update(accounts={ACCOUNT: {"sid": "S-1-5-21-1000-500", "password": "Admins-Own-1", "groups": ["administrators"],
                                         "description": "Operator"}})
    output, _data = proxy.run(expect_rc=2)
    assert f"the local account {ACCOUNT} of\nprefect_worker_api_auth_string exists and was not made by this role" in output \
        or "exists and was not made by this role" in output, output[-3000:]
    assert proxy.sim.state["accounts"][ACCOUNT]["password"] == "Admins-Own-1"
    proxy.run(iis_proxy_state="absent")
    assert proxy.sim.state["accounts"][ACCOUNT]["groups"] == ["administrators"]


def test_a_local_credential_with_the_workers_site_off_converges(tmp_path, ansible_env):
    """iis_proxy_worker_site_enabled false: the accounts are neither made nor asked to resolve."""
    proxy = _local_proxy(tmp_path, ansible_env)
    proxy.run(iis_proxy_worker_site_enabled=False)
    assert ACCOUNT not in proxy.sim.state.get("accounts", {}) and "Prefect-Workers" not in proxy.sim.state["iis"]["sites"]
