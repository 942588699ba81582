"""The iis_proxy role through playbooks/iis_proxy.yml against the simulated host (simhost.py + sim_iis.py): a proxy host
with two remote worker hosts. First run installs and configures everything, the re-run changes nothing and stays
cheap, check mode changes nothing, state absent removes what the role made, and bad input stops the run in the
preflight before any host is touched. The web.config the host ends up with is parsed and checked (webconfig.py).

Counted, not measured on Windows: the stand-ins behave as the upstream modules do (read in their sources).
"""
from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from simhost import HOST, Sim, by_name, host_results, module_runs, reached
from rolerun import REPO, run_cost

sys.path.insert(0, str(REPO / "tests" / "static"))
from webconfig import check_web_config  # noqa: E402

pytestmark = pytest.mark.simulated

# Documented in roles/iis_proxy/README.md and docs/roles.md; update together.
EXPECTED_HOST_TASKS = 13
EXPECTED_MODULE_RUNS = 14

THUMB = "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678"
REWRITE_MSI, ARR_MSI = b"not the real rewrite msi", b"not the real arr msi"
WORKERS = {"wrk1.corp.local": "10.20.1.21", "wrk2.corp.local": "10.20.1.22"}
SIGNED = {"status": "Valid", "status_message": "Signature verified.", "signer": "Microsoft Corporation",
          "subject": "CN=Microsoft Corporation, O=Microsoft Corporation, L=Redmond, S=Washington, C=US", "thumbprint": "1" * 40}
# win_copy of web.config stays: its action plugin compares checksums on the host and sends nothing when equal.
FORBIDDEN_ON_RERUN = {"win_package", "win_certificate_store", "win_get_url", "win_unzip"}


def _bundle(root: Path) -> Path:
    bundle = root / "bundle"
    (bundle / "windows" / "installers").mkdir(parents=True)
    files = {"windows/installers/rewrite_amd64_en-US.msi": REWRITE_MSI, "windows/installers/requestRouter_amd64.msi": ARR_MSI}
    for name, content in files.items():
        (bundle / name).write_bytes(content)
    (bundle / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(v).hexdigest()}  {k}\n" for k, v in files.items()))
    return bundle


def _state() -> dict:
    digest = {m: hashlib.sha256(m).hexdigest() for m in (REWRITE_MSI, ARR_MSI)}
    return {"signatures": {digest[REWRITE_MSI]: SIGNED, digest[ARR_MSI]: SIGNED},
            "msi_products": {digest[REWRITE_MSI]: {"code": "{REWRITE}", "name": "URL Rewrite"},
                             digest[ARR_MSI]: {"code": "{ARR}", "name": "Application Request Routing"}},
            "iis": {"certificates": [THUMB], "dirs": ["c:\\inetpub"]},
            "spns": {"HOST/prefect.corp.local": ["OTHER$"]},
            # Windows Server 2019 (sim_iis.py's default, said here): IIS cannot turn legacy TLS off per binding.
            "os_build": 17763,
            # The remote workers' accounts (the workers' site admits them); the allowed group is in default_state.
            "directory": {"CORP\\svc_wrk1": {"sid": "S-1-5-21-2000-5201"}, "CORP\\svc_wrk2": {"sid": "S-1-5-21-2000-5202"}}}


class Proxy:
    """The simulated proxy host and an inventory of its own: the proxy (also server and a worker) and two remote workers.
    state: the host to start from (a copy of a converged one), else a prepared host where nothing of the role is yet."""

    def __init__(self, root: Path, env: dict, state: dict | None = None):
        self.sim = Sim(root, env, state=copy.deepcopy(state) if state is not None else _state())
        self.bundle = _bundle(root)
        # Each remote worker's machine-path credential (its account is what the workers' site admits).
        hosts = {HOST: {}, **{w: {"prefect_host_address": a, "prefect_worker_api_auth_string": f"CORP\\svc_wrk{i}:Wrk-Secret-{i}"}
                              for i, (w, a) in enumerate(WORKERS.items(), 1)}}
        inventory = {"all": {"hosts": hosts, "children": {
            "prefect_server": {"hosts": {HOST: None}}, "prefect_proxy": {"hosts": {HOST: None}},
            "prefect_workers": {"hosts": {h: None for h in hosts}}}}}
        self.inventory = root / "inventory.yml"
        self.inventory.write_text(yaml.safe_dump(inventory))

    def values(self, **extra) -> dict:
        return {**self.sim.base, "prefect_bundle_dir": str(self.bundle), "prefect_public_host": "prefect.corp.local",
                "iis_proxy_certificate_thumbprint": THUMB, "iis_proxy_allowed_groups": ["CORP\\Prefect Users"], **extra}

    def run(self, expect_rc: int = 0, args: list[str] | None = None, **extra) -> tuple[str, dict]:
        return self._play(self.inventory, HOST, self.values(**extra), expect_rc, args)

    def _play(self, inventory: Path, limit: str, values: dict, expect_rc: int, args: list[str] | None) -> tuple[str, dict]:
        (self.sim.root / "extra.json").write_text(json.dumps(values))
        argv = [str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inventory),
                str(self.sim.collections / "ansible_collections/enclave/prefect/playbooks/iis_proxy.yml"),
                "--limit", limit, "-e", f"@{self.sim.root / 'extra.json'}", *(args or [])]
        with run_cost("iis_proxy.yml", limit, args):
            proc = subprocess.run(argv, env=self.sim.env, cwd=self.sim.root, capture_output=True, text=True, timeout=600,
                                  check=False)
        start = proc.stdout.find("{")
        data = json.loads(proc.stdout[start:]) if start >= 0 else {}
        assert proc.returncode == expect_rc, f"rc={proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
        return proc.stdout + proc.stderr, data

    def preflight(self, cases: dict[str, dict], workers: dict[str, dict] | None = None,
                  not_servers: tuple[str, ...] = ()) -> tuple[str, dict, dict[str, str]]:
        """One run of iis_proxy.yml for several cases, each a proxy host of this inventory (also a server host, unless in
        not_servers) whose host variables are the case's input over the common input of run() (inventory variables: extra
        vars would override a case's); its remote workers are this inventory's, the proxy host not among them, unless the
        case names its own in iis_proxy_worker_hosts (workers: more hosts, in no group). The preflight refuses every case
        host on the control node, one line per problem naming the host. Returns the output, the callback's data and each
        case host's verdict message."""
        inventory = yaml.safe_load(self.inventory.read_text())
        inventory["all"]["vars"] = self.values()
        groups = inventory["all"]["children"]
        groups["prefect_workers"]["hosts"].pop(HOST)
        for name, variables in {**cases, **(workers or {})}.items():
            inventory["all"]["hosts"][name] = variables
        for name in cases:
            groups["prefect_proxy"]["hosts"][name] = None
            if name not in not_servers:
                groups["prefect_server"]["hosts"][name] = None
        path = self.sim.root / "preflight-inventory.yml"
        path.write_text(yaml.safe_dump(inventory))
        output, data = self._play(path, ",".join(cases), self.sim.base, 2, None)
        verdicts = {name: by_name(host_results(data, name)).get("Every targeted host's input is valid", {}).get("msg", "")
                    for name in cases}
        return output, data, verdicts


def assert_refused(verdict: str, host: str, messages: list[str]) -> None:
    """host's preflight verdict names each message, on lines that each begin with the host's name."""
    assert verdict and all(line.startswith(f"{host}: ") for line in verdict.splitlines()), verdict
    for message in messages:
        assert message in verdict, (message, verdict)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ansible_env):
    proxy = Proxy(tmp_path_factory.mktemp("iis"), ansible_env)
    check_first = proxy.run(args=["--check", "--diff"])
    untouched = proxy.sim.state
    first = proxy.run(args=["--diff"])
    converged = proxy.sim.state
    second = proxy.run()
    check_again = proxy.run(args=["--check"])
    return {"check_first": check_first[1], "untouched": untouched, "first": first[1], "converged": converged,
            "second": second[1], "check_again": check_again[1], "proxy": proxy}


def test_check_mode_on_a_new_host_changes_nothing_and_says_what_would(runs):
    state = runs["untouched"]
    assert state["iis"]["features"] == [] and state["iis"]["sites"] == {} and state["iis"]["apphost"] == {}
    assert not state.get("installer_runs")
    changed = {n for n, r in by_name(reached(runs["check_first"])).items() if r.get("changed")}
    assert "IIS role services are installed" in changed, changed


def test_first_run_builds_the_front_door(runs):
    state = runs["converged"]["iis"]
    assert {"Web-Windows-Auth", "Web-Basic-Auth", "Web-IP-Security", "Web-WebSockets"} <= set(state["features"])
    assert state["extensions"] == ["URL Rewrite", "Application Request Routing"]  # in order: ARR needs URL Rewrite
    pool = state["pools"]["PrefectProxy"]["attributes"]
    assert pool["managedRuntimeVersion"] == "" and pool["processModel.idleTimeout"] == "00:00:00"
    people, workers = state["sites"]["Prefect"], state["sites"]["Prefect-Workers"]
    assert people["bindings"] == {"*:443:prefect.corp.local": {"protocol": "https", "sslFlags": 1, "certificate": THUMB}}
    assert workers["bindings"] == {"*:8443:prefect.corp.local": {"protocol": "https", "sslFlags": 1, "certificate": THUMB}}
    apphost = state["apphost"]
    assert apphost["|system.webServer/proxy"] == {"enabled": "true", "preserveHostHeader": "true",
                                                  "reverseRewriteHostInResponseHeaders": "false", "timeout": "01:00:00",
                                                  "includePortInXForwardedFor": "false", "arrResponseHeader": "false",
                                                  # ARR adds no second X-Forwarded-For entry after the rules' one.
                                                  "xForwardedForHeaderName": ""}
    win = apphost["Prefect|system.webServer/security/authentication/windowsAuthentication"]
    assert win["enabled"] == "true"
    # Extended Protection: tokens must carry the TLS channel bindings (2 Require; flags 0, the default, not written).
    assert win["extendedProtection.tokenChecking"] == "2" and "extendedProtection.flags" not in win
    assert apphost["Prefect|system.webServer/security/authentication/anonymousAuthentication"] == {"enabled": "false"}
    basic = apphost["Prefect-Workers|system.webServer/security/authentication/basicAuthentication"]
    assert basic["enabled"] == "true"
    # Windows authentication is off by the schema default: read as effective value, never written.
    assert "Prefect-Workers|system.webServer/security/authentication/windowsAuthentication" not in apphost
    assert apphost["Prefect-Workers|system.webServer/security/access"] == {"sslFlags": "8"}
    ip = apphost["Prefect-Workers|system.webServer/security/ipSecurity"]
    assert ip["allowUnlisted"] == "false"
    # The remote workers only, never the proxy host itself.
    assert ip["collection:"] == [f"ipAddress={a};subnetMask=255.255.255.255;allowed=true" for a in WORKERS.values()]
    # URL Authorization in place of the inherited "allow everyone": the allowed group on the people's site, the remote
    # workers' accounts on theirs.
    assert "Web-Url-Auth" in state["features"]
    assert apphost["Prefect|system.webServer/security/authorization"]["collection:"] == [
        "accessType=Allow;users=;roles=CORP\\Prefect Users;verbs="]
    assert apphost["Prefect-Workers|system.webServer/security/authorization"]["collection:"] == [
        "accessType=Allow;users=CORP\\svc_wrk1;roles=;verbs=", "accessType=Allow;users=CORP\\svc_wrk2;roles=;verbs="]


def test_server_proxy_and_worker_on_one_host_is_a_warning(runs):
    """The proxy host is also the server and a worker here: flow code there reaches the loopback API past the proxy."""
    shown = by_name(host_results(runs["first"]))["Server, proxy and workers on one host are reported"]
    assert shown["msg"].startswith(f"WARNING {HOST} is a Prefect server, the proxy and a worker host at once"), shown


def test_web_config_on_the_host_passes_the_checker(runs):
    state = runs["converged"]["iis"]
    text = state["files"]["c:\\inetpub\\prefect-proxy\\web.config"]
    allowed = [v.split("=", 1)[1] for v in state["apphost"]["|system.webServer/rewrite/allowedServerVariables"]["collection:"]]
    assert check_web_config(text, allowed) == []
    assert "http://127.0.0.1:4200{UNENCODED_URL}" in text and "X_FORWARDED_USER" not in text and "LOGON_USER" not in text


def test_noop_rerun_is_cheap_and_changes_nothing(runs):
    hits = reached(runs["second"])
    assert not [n for n, r in hits if r.get("changed")], [n for n, r in hits if r.get("changed")]
    actions = {r.get("action", "").rsplit(".", 1)[-1] for _n, r in hits}
    assert not actions & FORBIDDEN_ON_RERUN, actions
    listing = "\n".join(f"  {n} ({r.get('action')})" for n, r in hits)
    print(f"tasks reaching the host: {len(hits)}; module runs: {module_runs(hits)}\n{listing}")
    assert (len(hits), module_runs(hits)) == (EXPECTED_HOST_TASKS, EXPECTED_MODULE_RUNS), listing
    assert runs["proxy"].sim.state["iis"] == runs["converged"]["iis"]


def test_check_mode_on_a_converged_host_reports_nothing(runs):
    assert not [n for n, r in reached(runs["check_again"]) if r.get("changed")]


def test_spn_problem_is_a_warning_naming_the_host(runs):
    result = by_name(host_results(runs["second"]))["Kerberos SPN problems are shown"]
    assert HOST in result["msg"] and "HTTP/prefect.corp.local" in result["msg"]


# test_iis_bindings.py's task names: the TLS flag the role owns on its bindings (Windows Server 2022 and later).
FLAGS_TASK = "Proxy HTTPS bindings have legacy TLS off as configured and keep the flags of others"


def test_server_2019_gets_no_flag_and_a_note_naming_the_host(runs):
    """The proxy host here is Windows Server 2019 (build 17763): its bindings keep sslFlags 1 (SNI), a note names the
    host and the build that would turn legacy TLS off, and the re-run does not reach the flags task."""
    sites = runs["converged"]["iis"]["sites"]
    assert {b["sslFlags"] for site in sites.values() for b in site["bindings"].values()} == {1}, sites
    note = by_name(host_results(runs["first"]))["Legacy TLS on a host whose IIS cannot turn it off per binding is noted"]
    assert HOST in note["msg"] and "build 17763" in note["msg"] and "20348" in note["msg"], note
    assert FLAGS_TASK not in by_name(reached(runs["second"]))


def test_state_absent_removes_what_the_role_made_and_leaves_iis(runs, tmp_path, ansible_env):
    proxy = Proxy(tmp_path, ansible_env, state=runs["converged"])  # the converged host of the module's runs
    proxy.run(iis_proxy_state="absent")
    state = proxy.sim.state["iis"]
    assert state["sites"] == {} and state["pools"] == {} and state["files"] == {}
    assert not [k for k in state["apphost"] if not k.startswith("|")]  # no <location> of the role is left
    assert "Web-Server" in state["features"] and "Application Request Routing" in state["extensions"]
    _out, again = proxy.run(iis_proxy_state="absent")
    assert not [n for n, r in reached(again) if r.get("changed")]


def test_state_absent_on_a_host_without_iis_removes_nothing_and_does_not_fail(tmp_path, ansible_env):
    """The IIS modules and the settings script cannot load without IIS (sim_iis.py _iis_missing): InetStp decides."""
    proxy = Proxy(tmp_path, ansible_env)
    before = proxy.sim.state["iis"]
    _out, data = proxy.run(iis_proxy_state="absent")
    hits = by_name(reached(data))
    assert hits["IIS is known to be installed or not"]["exists"] is False
    assert {"Proxy sites are removed", "Proxy application pool is removed",
            "Site settings of the role are removed from applicationHost.config"}.isdisjoint(hits), sorted(hits)
    assert not [n for n, r in hits.items() if r.get("changed")]
    assert {k: v for k, v in proxy.sim.state["iis"].items() if v} == before


def test_first_check_run_with_product_ids_reports_the_extensions(tmp_path, ansible_env):
    """win_package refuses state present without path (win_package.ps1:1303-1306): check mode before the MSIs are staged
    skips it and says what a real run installs."""
    proxy = Proxy(tmp_path, ansible_env)
    _out, data = proxy.run(args=["--check"], iis_proxy_url_rewrite_product_id="{REWRITE}", iis_proxy_arr_product_id="{ARR}")
    state = proxy.sim.state
    assert not state.get("installer_runs") and state["iis"]["extensions"] == [] and state["iis"]["features"] == []
    results = [r for n, r in host_results(data) if "Check mode reports the IIS extension as to be installed" in n]
    assert len(results) == 2 and all(r.get("changed") for r in results), results
    assert "URL Rewrite" in results[0]["msg"] and "Application Request Routing" in results[1]["msg"]
    assert not [n for n, r in host_results(data) if "IIS extension is installed" in n and not r.get("skipped")]


def test_certificate_renewal_is_reported_and_check_mode_leaves_the_binding(runs, tmp_path, ansible_env):
    """website.ps1:261-264 (microsoft.iis 1.1.0) rebinds a kept binding's certificate unreported, in check mode too; the
    role reads website_info first. After the renewal check mode reports nothing (a real re-run after a rotation changes
    nothing: test_iis_bindings.py test_certificate_rotation_keeps_the_flag_and_flags_of_others)."""
    renewed = "B2C3D4E5F60718293A4B5C6D7E8F901234567890"
    proxy = Proxy(tmp_path, ansible_env, state=runs["converged"])  # the converged host of the module's runs
    iis = proxy.sim.state["iis"]
    proxy.sim.update(iis={**iis, "certificates": [THUMB, renewed]})
    before = proxy.sim.state["iis"]
    _out, check = proxy.run(args=["--check"], iis_proxy_certificate_thumbprint=renewed)
    assert proxy.sim.state["iis"] == before  # nothing rebound
    reports = by_name(host_results(check))["Check mode reports a site whose certificate would be replaced"]
    messages = [r["msg"] for r in reports["results"] if not r.get("skipped")]
    assert reports["changed"] and len(messages) == 2 and all(THUMB in m and renewed in m for m in messages), reports
    _out, real = proxy.run(iis_proxy_certificate_thumbprint=renewed)
    results = by_name(reached(real))
    assert results["People's site answers HTTPS on prefect_public_port for prefect_public_host"]["changed"]
    assert results["Workers' site answers HTTPS on prefect_worker_port"]["changed"]
    sites = proxy.sim.state["iis"]["sites"]
    assert {b["certificate"] for s in sites.values() for b in s["bindings"].values()} == {renewed}
    _out, check_again = proxy.run(args=["--check"], iis_proxy_certificate_thumbprint=renewed)
    assert not [n for n, r in host_results(check_again) if r.get("changed")]


def test_pfx_is_imported_once_and_its_staged_copy_removed(tmp_path, ansible_env):
    proxy = Proxy(tmp_path, ansible_env)
    pfx = tmp_path / "proxy.pfx"
    pfx.write_bytes(b"not a real pfx")
    proxy.sim.update(iis={"certificates": [], "dirs": ["c:\\inetpub"]},
                     pfx={hashlib.sha256(b"not a real pfx").hexdigest(): {"password": "Pfx-Secret-77aa", "thumbprints": [THUMB]}})
    output, data = proxy.run(iis_proxy_certificate_pfx=str(pfx), iis_proxy_certificate_pfx_password="Pfx-Secret-77aa",
                             args=["-vvv"])
    assert THUMB in proxy.sim.state["iis"]["certificates"]
    assert not [f for f in proxy.sim.state["files"] if f.endswith(".pfx")]
    # It waited where only SYSTEM and Administrators may read (not the staging directory the service accounts read).
    private = proxy.sim.state["dirs"]["c:\\prefect\\staging\\iis-proxy-pfx"]
    assert private["protected"] and set(private["acl"]) == {"S-1-5-18", "S-1-5-32-544"}, private
    assert "Pfx-Secret-77aa" not in output
    _out, again = proxy.run(iis_proxy_certificate_pfx=str(pfx), iis_proxy_certificate_pfx_password="Pfx-Secret-77aa")
    assert "PFX is staged on the host" not in by_name(reached(again))


def test_reboot_needed_by_a_role_service_stops_naming_the_host(tmp_path, ansible_env):
    proxy = Proxy(tmp_path, ansible_env)
    proxy.sim.update(reboot_features=["Web-WebSockets"])
    output, _data = proxy.run(expect_rc=2)
    assert f"{HOST} must be restarted" in output
    assert proxy.sim.state["iis"]["sites"] == {}


# Cases through iis_proxy.yml (the preflight stops the run before any host; a secret never shows), all in one run, each
# case a proxy host of its own (Proxy.preflight); the role's other bad input is refused the same way by its own checks,
# all cases in one run: test_roles_bad_input.py.
BAD = [
    ({"iis_proxy_certificate_thumbprint": "A1B2 C3"}, "iis_proxy_certificate_thumbprint must be"),
    ({"prefect_api_auth_string": "prefect:Auth-Secret-93be"}, "prefect_api_auth_string must be empty"),
    ({"iis_proxy_allowed_groups": []}, "whose members may use Prefect, and know that each of them is then a Prefect "
     "administrator (Prefect has no roles"),
    ({"iis_proxy_allowed_groups": ["Prefect Users", "CORP\\a,b"]},
     "without commas (IIS reads a comma as a list separator); got Prefect Users, CORP"),
]
BAD_HOSTS = [f"bad{i}.corp.local" for i in range(len(BAD))]
# The rules forward to 127.0.0.1:4200: a proxy host without the Prefect server would proxy to nothing.
NOT_SERVER = "notserver.corp.local"
# Remote workers of its own (iis_proxy_worker_hosts) without a usable prefect_host_address: one invalid, one without any.
NO_ADDRESS = "noaddress.corp.local"
NO_ADDRESS_WORKERS = {"wrk8.corp.local": {"prefect_host_address": "10.20.1.300"}, "wrk9.corp.local": {}}


@pytest.fixture(scope="module")
def refused(tmp_path_factory, ansible_env):
    proxy = Proxy(tmp_path_factory.mktemp("iis-bad"), ansible_env)
    before = proxy.sim.state_path.read_text()
    cases = {**{host: extra for host, (extra, _m) in zip(BAD_HOSTS, BAD)}, NOT_SERVER: {},
             NO_ADDRESS: {"iis_proxy_worker_hosts": sorted(NO_ADDRESS_WORKERS)}}
    output, _data, verdicts = proxy.preflight(cases, workers=NO_ADDRESS_WORKERS, not_servers=(NOT_SERVER,))
    return {"output": output, "verdicts": verdicts, "untouched": proxy.sim.state_path.read_text() == before}


@pytest.mark.parametrize(("host", "extra", "message"), [(h, e, m) for h, (e, m) in zip(BAD_HOSTS, BAD)],
                         ids=[m.split()[0] + str(i) for i, (_e, m) in enumerate(BAD)])
def test_bad_input_is_refused_before_any_host(refused, host, extra, message):
    assert_refused(refused["verdicts"][host], host, [message])
    assert refused["untouched"]  # no task reached the host
    assert "Auth-Secret-93be" not in refused["output"]


def test_authorization_is_refused_on_the_host_before_anything_is_written(tmp_path, ansible_env):
    """A group that does not resolve on the proxy host, and URL Authorization not installed (IIS would ignore the
    rules and let every authenticated account through): the run stops naming the cause, applicationHost.config
    unchanged. Allowing every authenticated account is possible on purpose."""
    proxy = Proxy(tmp_path, ansible_env)
    output, _data = proxy.run(expect_rc=2, iis_proxy_allowed_groups=["CORP\\Prefect Users", "CORP\\No Such Group"])
    assert (f"{HOST}: these names do not resolve to a Windows account or group on this host, nothing was written: "
            "CORP\\No Such Group") in output.replace("\\\\", "\\"), output[-3000:]
    assert proxy.sim.state["iis"].get("apphost", {}) == {}
    # A host where the role service is left out of iis_proxy_features.
    bare = Proxy(tmp_path / "bare", ansible_env)
    features = [f for f in yaml.safe_load((REPO / "roles/iis_proxy/defaults/main.yml").read_text())["iis_proxy_features"]
                if f != "Web-Url-Auth"]
    output, _data = bare.run(expect_rc=2, iis_proxy_features=features)
    assert "IIS URL Authorization (role service Web-Url-Auth, UrlAuthorizationModule) is not installed" in output
    assert bare.sim.state["iis"].get("apphost", {}) == {}
    # Installed, but removed from the people's site's module list: the rules would be ignored there too.
    removed = Proxy(tmp_path / "removed", ansible_env)
    removed.sim.update(iis=dict(removed.sim.state["iis"], url_auth_removed_from=["Prefect"]))
    output, _data = removed.run(expect_rc=2)
    assert "IIS URL Authorization (role service Web-Url-Auth, UrlAuthorizationModule) is not installed" in output
    # Every authenticated account: the server-level rule "allow *" already says so (anonymous is off), nothing written;
    # the workers' site still admits its accounts only.
    proxy.run(iis_proxy_allowed_groups=[], iis_proxy_allow_all_authenticated=True)
    apphost = proxy.sim.state["iis"]["apphost"]
    assert "Prefect|system.webServer/security/authorization" not in apphost
    assert apphost["Prefect|system.webServer/security/authentication/anonymousAuthentication"] == {"enabled": "false"}
    assert len(apphost["Prefect-Workers|system.webServer/security/authorization"]["collection:"]) == 2


def test_the_spn_check_asks_the_directory_as_system():
    """The WinRM session cannot reach a domain controller with its own logon (no delegation: a double hop); the
    computer account can, so the task runs as SYSTEM (runas). The simulated host's local connection cannot run as
    another account, so the task itself is checked."""
    tasks = yaml.safe_load((REPO / "roles" / "iis_proxy" / "tasks" / "verify.yml").read_text())
    task = next(t for t in tasks if t.get("name") == "Kerberos service principal name of the proxy is known")
    assert (task.get("become"), task.get("become_method"), task.get("become_user")) == (True, "ansible.builtin.runas", "SYSTEM")


def test_a_proxy_that_is_not_a_server_host_is_refused_before_any_host(refused):
    """The rules forward to 127.0.0.1:4200: a proxy host without the Prefect server would proxy to nothing."""
    assert_refused(refused["verdicts"][NOT_SERVER], NOT_SERVER, ["this host is in prefect_proxy but not in prefect_server"])
    assert refused["untouched"]


def test_missing_worker_address_is_refused_before_any_host(refused):
    assert_refused(refused["verdicts"][NO_ADDRESS], NO_ADDRESS, ["wrk8.corp.local = '10.20.1.300'", "wrk9.corp.local = ''"])
    assert refused["untouched"]


def test_every_script_of_the_role_runs_in_check_mode():
    """win_powershell.ps1 skips a script in check mode and reports a change unless it declares SupportsShouldProcess:
    a read-only script without it would report a change on every check run, a writing one could not show its diff."""
    for script in (REPO / "roles/iis_proxy/files").glob("*.ps1"):
        assert "[CmdletBinding(SupportsShouldProcess)]" in script.read_text(), script.name
