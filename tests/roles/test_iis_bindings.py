"""The iis_proxy role's bindings on the simulated host (simhost.py + sim_iis.py): the TLS flag it owns on its HTTPS
bindings (DisableLegacyTLS, sslFlags 64, Windows Server 2022 and later), kept across microsoft.iis.website 1.1.0, which
rewrites a kept binding's sslFlags from SNI and CCS alone and derives use_ccs as Floor(sslFlags / 2) (website.ps1:243-258);
and the sites that answer port 80 beside the redirect (IIS's Default Web Site). Windows Server 2019, where the flag is
not set: test_iis_proxy.py test_server_2019_gets_no_flag_and_a_note_naming_the_host (its proxy host is one).

Counted, not measured on Windows: the stand-ins behave as the upstream modules do (read in their sources).
"""
from __future__ import annotations

import copy
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from simhost import HOST, Sim, by_name, host_results, reached
from rolerun import REPO, run_cost
# The proxy host of test_iis_proxy.py: the extensions' MSIs and signatures, the bundle that carries them.
from test_iis_proxy import ARR_MSI, REWRITE_MSI, SIGNED, THUMB, _bundle

pytestmark = pytest.mark.simulated

RENEWED = "B2C3D4E5F60718293A4B5C6D7E8F901234567890"
PEOPLE, WORKERS = "*:443:prefect.corp.local", "*:8443:prefect.corp.local"
SERVER_2022 = 20348
FLAGS_TASK = "Proxy HTTPS bindings have legacy TLS off as configured and keep the flags of others"
READ_TASK = "Bindings, certificates and TLS flags of the proxy sites are known"
DEFAULT_SITE_TASK = "No site holding only IIS's start page answers port 80 beside the redirect"
DEFAULT_SITE_WARNING = "Sites with content of their own that answer port 80 beside the redirect are reported"


class Front:
    """A simulated proxy host (also server and worker) with one remote worker, so both sites exist. converged: the host to
    start from (a copy of a module fixture's converged one) instead of a prepared one of this build and state."""

    def __init__(self, root: Path, env: dict, build: int = SERVER_2022, converged: dict | None = None, **state):
        digest = {m: hashlib.sha256(m).hexdigest() for m in (REWRITE_MSI, ARR_MSI)}
        self.sim = Sim(root, env, state=copy.deepcopy(converged) if converged is not None else {
            "signatures": {digest[REWRITE_MSI]: SIGNED, digest[ARR_MSI]: SIGNED},
            "msi_products": {digest[REWRITE_MSI]: {"code": "{REWRITE}", "name": "URL Rewrite"},
                             digest[ARR_MSI]: {"code": "{ARR}", "name": "Application Request Routing"}},
            "iis": {"certificates": [THUMB, RENEWED], "dirs": ["c:\\inetpub"]},
            "directory": {"CORP\\svc_wrk1": {"sid": "S-1-5-21-2000-5201"}}, "os_build": build, **state})
        self.bundle = _bundle(root)
        hosts = {HOST: {}, "wrk1.corp.local": {"prefect_host_address": "10.20.1.21",
                                               "prefect_worker_api_auth_string": "CORP\\svc_wrk1:Wrk-Secret-1"}}
        self.inventory = root / "inventory.yml"
        self.inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts, "children": {
            "prefect_server": {"hosts": {HOST: None}}, "prefect_proxy": {"hosts": {HOST: None}},
            "prefect_workers": {"hosts": {h: None for h in hosts}}}}}))

    def _play(self, playbook: Path, extra: dict, args: list[str], expect_rc: int) -> tuple[str, dict]:
        (self.sim.root / "extra.json").write_text(json.dumps(extra))
        argv = [str(REPO / ".venv/bin/ansible-playbook"), "-i", str(self.inventory), str(playbook), "--limit", HOST,
                "-e", f"@{self.sim.root / 'extra.json'}", *args]
        with run_cost(playbook.name, HOST, args):
            proc = subprocess.run(argv, env=self.sim.env, cwd=self.sim.root, capture_output=True, text=True, timeout=600,
                                  check=False)
        start = proc.stdout.find("{")
        data = json.loads(proc.stdout[start:]) if start >= 0 else {}
        assert proc.returncode == expect_rc, f"rc={proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
        return proc.stdout + proc.stderr, data

    def run(self, expect_rc: int = 0, args: list[str] | None = None, **extra) -> tuple[str, dict]:
        values = {**self.sim.base, "prefect_bundle_dir": str(self.bundle), "prefect_public_host": "prefect.corp.local",
                  "iis_proxy_certificate_thumbprint": THUMB, "iis_proxy_allowed_groups": ["CORP\\Prefect Users"], **extra}
        playbook = self.sim.collections / "ansible_collections/enclave/prefect/playbooks/iis_proxy.yml"
        return self._play(playbook, values, args or [], expect_rc)

    def website(self, name: str, bindings: list[dict], expect_rc: int = 0) -> dict:
        """microsoft.iis.website (its stand-in) called directly, as a role that hands it every binding would."""
        playbook = self.sim.root / "website.yml"
        playbook.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [{
            "name": "Site bindings as given", "microsoft.iis.website": {"name": name, "bindings": {"set": bindings}},
            "ignore_errors": True}]}]))
        _out, data = self._play(playbook, self.sim.base, [], expect_rc)
        return by_name(host_results(data))["Site bindings as given"]

    def flags(self) -> dict[str, int]:
        return {f"{name} {key}": b["sslFlags"] for name, site in self.sim.state["iis"]["sites"].items()
                for key, b in site["bindings"].items()}

    def set_flags(self, site: str, key: str, value: int) -> None:
        iis = self.sim.state["iis"]
        iis["sites"][site]["bindings"][key]["sslFlags"] = value
        self.sim.update(iis=iis)


def changed(data: dict) -> list[str]:
    return [n.split(" : ", 1)[-1] for n, r in reached(data) if r.get("changed")]


@pytest.fixture(scope="module")
def server_2022(tmp_path_factory, ansible_env):
    front = Front(tmp_path_factory.mktemp("b2022"), ansible_env, SERVER_2022)
    _out, check_first = front.run(args=["--check", "--diff"])
    untouched = front.sim.state
    _out, first = front.run(args=["--diff"])
    converged = front.sim.state
    _out, second = front.run()
    _out, check_again = front.run(args=["--check"])
    return {"front": front, "check_first": check_first, "untouched": untouched, "first": first, "converged": converged,
            "second": second, "check_again": check_again}


def test_first_run_turns_legacy_tls_off_on_both_https_bindings(server_2022):
    sites = server_2022["converged"]["iis"]["sites"]
    # Sni (1) + DisableLegacyTLS (64); the module wrote 1 and the role's script the rest.
    assert sites["Prefect"]["bindings"][PEOPLE]["sslFlags"] == 65
    assert sites["Prefect-Workers"]["bindings"][WORKERS]["sslFlags"] == 65
    result = by_name(reached(server_2022["first"]))[FLAGS_TASK]
    assert result["changed"] and sorted(result["diff"]["after"].values()) == [65, 65], result["diff"]


def test_check_mode_on_a_new_host_changes_nothing(server_2022):
    assert server_2022["untouched"]["iis"]["sites"] == {}


def test_rerun_changes_nothing_and_does_not_write_flags(server_2022):
    """A module call with the bindings would fail here (website.ps1:247-250: use_ccs 32 with a certificate_hash) or,
    with use_ccs given, write sslFlags 1 again; the role calls it without them, and the write is skipped."""
    assert not changed(server_2022["second"]), changed(server_2022["second"])
    assert FLAGS_TASK not in by_name(reached(server_2022["second"]))
    assert server_2022["front"].flags()["Prefect " + PEOPLE] == 65
    assert not changed(server_2022["check_again"]), changed(server_2022["check_again"])


def test_upstream_module_given_every_binding_fails_or_drops_the_flag(server_2022, tmp_path, ansible_env):
    """What the role avoids, on the stand-in of website.ps1: the converged binding (sslFlags 65) handed to the module
    again. Without use_ccs the module derives use_ccs = Floor(65 / 2) = 32 and refuses it beside a certificate_hash;
    with use_ccs false it writes sslFlags 1 (legacy TLS back on) and reports a change."""
    front = Front(tmp_path, ansible_env, SERVER_2022)
    front.sim.update(iis=server_2022["converged"]["iis"])
    binding = {"ip": "*", "port": 443, "hostname": "prefect.corp.local", "protocol": "https", "use_sni": True,
               "certificate_hash": THUMB, "certificate_store_name": "my"}
    failed = front.website("Prefect", [binding])
    assert failed.get("failed") and "You set use_ccs to 32" in failed["msg"], failed
    assert front.flags()["Prefect " + PEOPLE] == 65
    dropped = front.website("Prefect", [dict(binding, use_ccs=False)])
    assert dropped["changed"] and front.flags()["Prefect " + PEOPLE] == 1


def test_certificate_rotation_keeps_the_flag_and_flags_of_others(server_2022, tmp_path, ansible_env):
    """A rotation makes the role hand the module the bindings, which rewrites sslFlags to 1; the script then puts back
    DisableLegacyTLS and what an administrator set (DisableHTTP2, 4), read before the module ran."""
    front = Front(tmp_path, ansible_env, converged=server_2022["converged"])
    front.set_flags("Prefect", PEOPLE, 65 | 4)
    _out, rotated = front.run(iis_proxy_certificate_thumbprint=RENEWED)
    results = by_name(reached(rotated))
    assert results["People's site answers HTTPS on prefect_public_port for prefect_public_host"]["changed"]
    assert results[FLAGS_TASK]["changed"]
    sites = front.sim.state["iis"]["sites"]
    assert sites["Prefect"]["bindings"][PEOPLE] == {"protocol": "https", "sslFlags": 69, "certificate": RENEWED}
    assert sites["Prefect-Workers"]["bindings"][WORKERS] == {"protocol": "https", "sslFlags": 65, "certificate": RENEWED}
    _out, again = front.run(iis_proxy_certificate_thumbprint=RENEWED)
    assert not changed(again), changed(again)


def test_flag_drifted_by_hand_is_set_again_alone(server_2022, tmp_path, ansible_env):
    """Someone cleared DisableLegacyTLS and set DisableOCSPStp (8): only the role's bit comes back, the sites are not
    rebound."""
    front = Front(tmp_path, ansible_env, converged=server_2022["converged"])
    front.set_flags("Prefect-Workers", WORKERS, 1 | 8)
    _out, data = front.run()
    assert changed(data) == [FLAGS_TASK], changed(data)
    assert front.flags()["Prefect-Workers " + WORKERS] == 1 | 8 | 64


def test_option_off_clears_the_flag_and_keeps_others(server_2022, tmp_path, ansible_env):
    front = Front(tmp_path, ansible_env, converged=server_2022["converged"])
    front.set_flags("Prefect", PEOPLE, 65 | 32)
    _out, check = front.run(args=["--check"], iis_proxy_disable_legacy_tls=False)
    assert front.flags()["Prefect " + PEOPLE] == 97 and by_name(reached(check))[FLAGS_TASK]["changed"]
    front.run(iis_proxy_disable_legacy_tls=False)
    assert front.flags()["Prefect " + PEOPLE] == 1 | 32 and front.flags()["Prefect-Workers " + WORKERS] == 1
    _out, again = front.run(iis_proxy_disable_legacy_tls=False)
    assert not changed(again), changed(again)


# Port 80 beside the redirect: IIS setup's Default Web Site (*:80:, the start page) on a host where Web-Server is
# installed by the role (sim_iis.py iis_win_feature with iis_setup_default_site).

@pytest.fixture(scope="module")
def default_site(tmp_path_factory, ansible_env):
    """The host converged without the redirect (iis_proxy_http_redirect's default, false)."""
    front = Front(tmp_path_factory.mktemp("default-site"), ansible_env, SERVER_2022, iis_setup_default_site=True)
    front.run(iis_proxy_http_redirect=False)
    return front.sim.state


def test_redirect_stops_a_default_web_site_that_holds_only_the_start_page(default_site, tmp_path, ansible_env):
    front = Front(tmp_path, ansible_env, converged=default_site)
    default = front.sim.state["iis"]["sites"]["Default Web Site"]
    assert default["state"] == "Started"  # without the redirect port 80 stays closed and the site is left alone
    _out, check = front.run(args=["--check"], iis_proxy_http_redirect=True)
    assert front.sim.state["iis"]["sites"]["Default Web Site"] == default
    assert by_name(reached(check))[DEFAULT_SITE_TASK]["changed"]
    _out, data = front.run(iis_proxy_http_redirect=True)
    sites = front.sim.state["iis"]["sites"]
    assert sites["Default Web Site"]["state"] == "Stopped" and sites["Default Web Site"]["auto_start"] is False
    assert sites["Default Web Site"]["bindings"] == default["bindings"]  # stopped, not rebound: it can be started again
    assert set(sites["Prefect"]["bindings"]) == {PEOPLE, "*:80:prefect.corp.local"}
    assert by_name(reached(data))[DEFAULT_SITE_TASK]["result"]["stopped"] == ["Default Web Site"]
    _out, again = front.run(iis_proxy_http_redirect=True)
    assert not changed(again), changed(again)


def test_redirect_leaves_a_site_with_content_of_its_own_and_names_it(default_site, tmp_path, ansible_env):
    front = Front(tmp_path, ansible_env, converged=default_site)
    iis = front.sim.state["iis"]
    iis["files"]["c:\\inetpub\\wwwroot\\index.html"] = "the team's own page"
    front.sim.update(iis=iis)
    _out, data = front.run(iis_proxy_http_redirect=True)
    assert front.sim.state["iis"]["sites"]["Default Web Site"]["state"] == "Started"
    warning = by_name(host_results(data))[DEFAULT_SITE_WARNING]
    messages = [r["msg"] for r in warning["results"]]
    assert len(messages) == 1 and messages[0].startswith(f"WARNING {HOST}: site Default Web Site answers port 80"), messages
    assert "index.html" in messages[0] and "*:80:" in messages[0]
    assert DEFAULT_SITE_TASK not in changed(data)
