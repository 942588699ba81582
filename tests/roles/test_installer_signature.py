"""The installer's Authenticode signature checked on the host before it runs (roles/common/tasks/signature.yml,
authenticode_signature.ps1), with the python role on the simulated Windows host (simhost.py).

The stand-in for Get-AuthenticodeSignature reports what the host's "signatures" say of the file's content: Valid and
signed by the Python Software Foundation for the stand-in installer by default, NotSigned for any file it does not
know. What Windows itself reports for the real python.org installer is not shown here (see docs/bundle-layout.md).
"""
from __future__ import annotations

import hashlib

import pytest

from simhost import INSTALLER, INSTALLER_SIGNATURE, Sim, by_name, host_results, make_bundle, reached

pytestmark = pytest.mark.simulated

READ = "Installer signature is read on the host"
CHECK = "Installer carries a valid signature by its publisher"
INSTALL = "Python is installed for all users"
STAGED = "C:\\Prefect\\staging\\python-3.12.10-amd64.exe"
PINNED = "Installer whose chain the host cannot build runs on the certificate the bundle build verified"
# What Windows reports for a root it does not trust or a chain it cannot build (PowerShell's MshSignature.cs maps
# CERT_E_UNTRUSTEDROOT and CERT_E_CHAINING to UnknownError, with the Win32 message); NotTrusted is an explicit distrust.
NO_CHAIN = dict(INSTALLER_SIGNATURE, status="UnknownError", status_message="A certificate chain could not be built to a "
                "trusted root authority.")
UNTRUSTED_ROOT = dict(INSTALLER_SIGNATURE, status="UnknownError", status_message="A certificate chain processed, but "
                      "terminated in a root certificate which is not trusted by the trust provider.")
DISTRUSTED = dict(INSTALLER_SIGNATURE, status="NotTrusted", status_message="The file is signed by a certificate that is "
                  "explicitly distrusted.")


def _run(tmp_path, ansible_env, signature: dict | None = None, expect_rc: int = 0, args: list[str] | None = None,
         thumbprints: dict[str, str] | None = None, **extra):
    state = {"signatures": {hashlib.sha256(INSTALLER).hexdigest(): signature}} if signature else None
    sim = Sim(tmp_path, ansible_env, state)
    bundle = make_bundle(tmp_path, thumbprints=thumbprints)
    variables = {"prefect_bundle_dir": str(bundle), "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest(), **extra}
    proc, data = sim.run(variables, playbook="python.yml", expect_rc=expect_rc, args=args)
    return sim, proc, data


def test_signature_is_checked_after_delivery_and_before_the_installer_runs(tmp_path, ansible_env):
    _sim, _proc, data = _run(tmp_path, ansible_env)
    order = [n.split(" : ", 1)[-1] for n, _r in reached(data)]
    assert order.index("Artifact is copied from the control node as one file") < order.index(READ) < order.index(INSTALL)
    read = by_name(reached(data))[READ]
    assert read["invocation"]["module_args"]["parameters"] == {"Path": STAGED}
    assert not read["changed"] and read["result"]["signer"] == "Python Software Foundation"


@pytest.mark.parametrize("signature, words", [
    (UNTRUSTED_ROOT, "UnknownError"),
    (NO_CHAIN, "UnknownError"),
    (dict(INSTALLER_SIGNATURE, status="HashMismatch", status_message="The contents of file might have been changed"),
     "HashMismatch"),
    (dict(INSTALLER_SIGNATURE, signer="Someone Else Ltd", subject="CN=Someone Else Ltd"), "signed by 'Someone Else Ltd'"),
    ({"status": "NotSigned", "status_message": "The file is not digitally signed.", "signer": "", "subject": "",
      "thumbprint": ""}, "NotSigned"),
], ids=["untrusted-root", "no-chain", "changed-content", "other-publisher", "unsigned"])
def test_installer_with_a_bad_signature_does_not_run(tmp_path, ansible_env, signature, words):
    sim, proc, data = _run(tmp_path, ansible_env, signature, expect_rc=2)
    out = proc.stdout
    assert STAGED.replace("\\", "\\\\") in out or STAGED in out, out[-3000:]
    assert words in out and "expected Valid, signed by 'Python Software Foundation'" in out, out[-3000:]
    assert INSTALL not in by_name(reached(data)), "the installer must not run"
    assert "python" not in sim.state


def test_check_mode_on_a_new_host_does_not_fail_on_the_undelivered_installer(tmp_path, ansible_env):
    _sim, _proc, data = _run(tmp_path, ansible_env, args=["--check"])
    tasks = by_name(reached(data))
    assert tasks[READ]["result"]["exists"] is False and not tasks[READ]["changed"]


def test_empty_signer_skips_the_check(tmp_path, ansible_env):
    """python_installer_signer: '' leaves the digest as the only check (an installer the vendor does not sign)."""
    _sim, _proc, data = _run(tmp_path, ansible_env, {"status": "NotSigned", "status_message": "", "signer": "", "subject": "",
                                                     "thumbprint": ""}, python_installer_signer="")
    tasks = by_name(reached(data))
    assert READ not in tasks and tasks[INSTALL]["changed"]


def test_converged_host_does_not_read_the_signature(tmp_path, ansible_env):
    sim, _proc, _data = _run(tmp_path, ansible_env)
    _proc, data = sim.run({"prefect_bundle_dir": str(tmp_path / "bundle"),
                           "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest()}, playbook="python.yml")
    assert READ not in by_name(reached(data))


@pytest.mark.parametrize("signature", [NO_CHAIN, UNTRUSTED_ROOT], ids=["no-chain", "untrusted-root"])
def test_host_without_the_root_runs_the_installer_signed_by_the_certificate_the_build_verified(tmp_path, ansible_env,
                                                                                               signature):
    """An air-gapped host whose roots never arrived: the signer certificate recorded in MANIFEST.json (and the pinned
    digest checked at delivery) let the installer run, and the run says why."""
    _sim, proc, data = _run(tmp_path, ansible_env, signature, thumbprints={"python-3.12.10-amd64.exe": "0" * 40})
    tasks = by_name(host_results(data))
    assert tasks[INSTALL]["changed"]
    assert "could not build the signature's certificate chain" in tasks[PINNED]["msg"]
    assert "0" * 40 in tasks[PINNED]["msg"] and signature["status_message"] in tasks[PINNED]["msg"]


@pytest.mark.parametrize("signature, thumbprints, words", [
    (NO_CHAIN, {"python-3.12.10-amd64.exe": "A" * 40}, "or a chain the host cannot build for the certificate " + "A" * 40),
    (NO_CHAIN, {"python-3.12.10-amd64.exe": ""}, "a bundle whose MANIFEST.json records the signer certificate"),
    (NO_CHAIN, {"another-file.exe": "0" * 40}, "a bundle whose MANIFEST.json records the signer certificate"),
    (dict(NO_CHAIN, signer="Someone Else Ltd"), {"python-3.12.10-amd64.exe": "0" * 40}, "signed by 'Someone Else Ltd'"),
    (DISTRUSTED, {"python-3.12.10-amd64.exe": "0" * 40}, "NotTrusted"),
    (dict(INSTALLER_SIGNATURE, status="HashMismatch", status_message="The contents of file might have been changed"),
     {"python-3.12.10-amd64.exe": "0" * 40}, "HashMismatch"),
], ids=["other-certificate", "none-recorded", "recorded-for-another-file", "other-publisher", "distrusted", "changed-content"])
def test_the_recorded_certificate_excuses_only_a_chain_the_host_cannot_build(tmp_path, ansible_env, signature, thumbprints,
                                                                           words):
    sim, proc, data = _run(tmp_path, ansible_env, signature, thumbprints=thumbprints, expect_rc=2)
    assert words in proc.stdout, proc.stdout[-3000:]
    assert INSTALL not in by_name(reached(data)) and "python" not in sim.state
