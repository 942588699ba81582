"""playbooks/diagnose.yml's IIS, port and firewall findings on the simulated all-in-one host (simhost.py; the diagnosis
script's stand-in in sim_operate.py reads the state the other stand-ins keep) after a real site.yml run: the converged
host gives none of them; one fault seeded per area gives its finding, ranked, with its evidence and fix, in the output,
SUMMARY.md and findings.json of the archive."""
from __future__ import annotations

import copy
import hashlib
import json
import tarfile

import pytest

from rolerun import REPO
from simhost import INSTALLER, PROXY_CERT_THUMBPRINT, SECRETS, Sim, by_name, host_results, make_bundle

pytestmark = pytest.mark.simulated

CA = REPO / "tests" / "fixtures" / "roles" / "enclave-ca.pem"
HOST = "prefect-aio.corp.local"
AREAS = {"iis", "ports", "firewall"}


def _extra(bundle, **more):
    return {"prefect_bundle_dir": str(bundle), **SECRETS, "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest(),
            "iis_proxy_certificate_thumbprint": PROXY_CERT_THUMBPRINT, "prefect_api_ca_cert": str(CA), **more}


@pytest.fixture(scope="module")
def converged(tmp_path_factory, ansible_env):
    sim = Sim(tmp_path_factory.mktemp("diagnose"), ansible_env)
    bundle = make_bundle(sim.root)
    sim.run(_extra(bundle))
    state = sim.state
    assert "Prefect" in state["iis"]["sites"] and state["firewall"]["rules"]
    return state


def _diagnose(converged, tmp_path, ansible_env, change=None):
    state = copy.deepcopy(converged)
    if change:
        change(state)
    sim = Sim(tmp_path, ansible_env, state)
    out = tmp_path / "diag"
    proc, data = sim.run(_extra(sim.root / "bundle", diagnose_output_dir=str(out)), playbook="diagnose.yml")
    findings = json.loads((out / "findings.json").read_text())
    shown = by_name(host_results(data))["Diagnosis summary"]["msg"]
    return proc, findings, (out / "SUMMARY.md").read_text(), shown, tmp_path / "diag.tar.gz"


def test_converged_host_has_no_iis_port_or_firewall_finding(converged, tmp_path, ansible_env):
    _proc, findings, _summary, _shown, _archive = _diagnose(converged, tmp_path, ansible_env)
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


def test_a_fault_per_area_gives_its_ranked_finding_with_evidence_and_fix(converged, tmp_path, ansible_env):
    proc, findings, summary, shown, archive = _diagnose(converged, tmp_path, ansible_env, _faults)
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
