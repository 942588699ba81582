"""Artifact delivery (roles/common/tasks/artifact.yml) on the simulated host: digests are checked on the host,
share and url delivery copy on the host, and the Prefect root is hardened where it is first created."""
from __future__ import annotations

import hashlib

import pytest

from simhost import INSTALLER, Sim, by_name, host_results, reached

pytestmark = pytest.mark.simulated

INSTALLER_PATH = "windows/installers/python-3.12.10-amd64.exe"


def _bundle(root):
    bundle = root / "bundle"
    (bundle / "windows" / "installers").mkdir(parents=True)
    (bundle / INSTALLER_PATH).write_bytes(INSTALLER)
    return bundle


def test_digest_mismatch_stops_with_both_digests(tmp_path, ansible_env):
    """An artifact whose digest on the host differs from the expected one stops the role, naming both."""
    sim = Sim(tmp_path, ansible_env)
    expected = "ab" * 32
    data = sim.run({"prefect_bundle_dir": str(_bundle(tmp_path)), "python_installer_sha256": expected},
                   playbook="python.yml", expect_rc=2)[1]
    failed = [(n, r) for n, r in host_results(data) if r.get("failed")]
    assert failed and failed[0][0].endswith("Artifact on the host has the expected SHA256"), failed
    msg = failed[0][1]["msg"]
    assert expected in msg and hashlib.sha256(INSTALLER).hexdigest() in msg, msg
    assert "Python is installed for all users" not in by_name(reached(data))


@pytest.mark.parametrize("mode", ["share", "url"])
def test_share_and_url_delivery(tmp_path, ansible_env, mode):
    """The installer arrives by a host-side copy from the share or a download with checksum, then is verified."""
    bundle = _bundle(tmp_path)
    prefix = "https://nexus.corp.example/repository/prefect"
    sim = Sim(tmp_path, ansible_env, {"bundle_dir": str(bundle), "url_prefix": prefix})
    extra = {"prefect_artifact_delivery": mode, "prefect_bundle_share": "\\\\fileserver\\software\\enclave-prefect",
             "prefect_bundle_url": prefix + "/", "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest()}
    if mode == "share":
        # The stand-in reads the UNC path from the local bundle directory.
        sim.update(unc={"\\\\fileserver\\software\\enclave-prefect": str(bundle)})
    data = sim.run(extra, playbook="python.yml")[1]
    hits = by_name(reached(data))
    if mode == "share":
        copy = hits["Artifact is copied from the enclave file share"]["invocation"]["module_args"]
        assert copy["src"] == "\\\\fileserver\\software\\enclave-prefect\\windows\\installers\\python-3.12.10-amd64.exe"
        assert copy["remote_src"]
    else:
        get = hits["Artifact is downloaded from the enclave web server"]["invocation"]["module_args"]
        assert get["url"] == prefix + "/" + INSTALLER_PATH
    assert "Artifact is copied from the control node as one file" not in hits
    assert hits["Python is installed for all users"]["changed"]


def test_prefect_root_is_hardened_where_it_is_first_created(tmp_path, ansible_env):
    """The python layer alone creates C:\\Prefect\\staging: the root is protected before anything lands in it, so no
    layer leaves it with the drive's user-writable rules."""
    sim = Sim(tmp_path, ansible_env)
    data = sim.run({"prefect_bundle_dir": str(_bundle(tmp_path)),
                    "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest()}, playbook="python.yml")[1]
    order = [n.split(" : ", 1)[-1] for n, _r in reached(data)]
    assert order.index("Prefect root inherits nothing and the listed directories have their rules") < \
        order.index("Artifact is copied from the control node as one file")
    root = sim.state["dirs"]["c:\\prefect"]
    assert root["protected"] and root["acl"] == {"S-1-5-18": "FullControl", "S-1-5-32-544": "FullControl"}
    assert "c:\\prefect\\staging" in sim.state["dirs"]
