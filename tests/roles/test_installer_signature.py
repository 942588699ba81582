"""The installer's Authenticode signature checked on the host before it runs (roles/common/tasks/signature.yml,
authenticode_signature.ps1), with the python role on the simulated Windows host (simhost.py).

The stand-in for Get-AuthenticodeSignature reports what the host's "signatures" say of the file's content: Valid and
signed by the Python Software Foundation for the stand-in installer by default, NotSigned for any file it does not
know. What Windows itself reports for the real python.org installer is not shown here (see docs/bundle-layout.md).

The cases with the default signature (the check's place between delivery and installer, check mode on a new host, a
converged host's re-run) read the same python.yml runs as tests/roles/test_python_role.py and live there.
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


# NO_CHAIN without a recorded certificate takes the same path as UNTRUSTED_ROOT (status UnknownError, nothing pinned; the
# check reads the status, never the status message): its message is shown by the pinned case below (no-chain).
@pytest.mark.parametrize("signature, words", [
    (UNTRUSTED_ROOT, "UnknownError"),
    (dict(INSTALLER_SIGNATURE, status="HashMismatch", status_message="The contents of file might have been changed"),
     "HashMismatch"),
    (dict(INSTALLER_SIGNATURE, signer="Someone Else Ltd", subject="CN=Someone Else Ltd"), "signed by 'Someone Else Ltd'"),
    ({"status": "NotSigned", "status_message": "The file is not digitally signed.", "signer": "", "subject": "",
      "thumbprint": ""}, "NotSigned"),
], ids=["untrusted-root", "changed-content", "other-publisher", "unsigned"])
def test_installer_with_a_bad_signature_does_not_run(tmp_path, ansible_env, signature, words):
    sim, proc, data = _run(tmp_path, ansible_env, signature, expect_rc=2)
    out = proc.stdout
    assert STAGED.replace("\\", "\\\\") in out or STAGED in out, out[-3000:]
    assert words in out and "expected Valid, signed by 'Python Software Foundation'" in out, out[-3000:]
    assert INSTALL not in by_name(reached(data)), "the installer must not run"
    assert "python" not in sim.state


def test_empty_signer_skips_the_check(tmp_path, ansible_env):
    """python_installer_signer: '' leaves the digest as the only check (an installer the vendor does not sign)."""
    _sim, _proc, data = _run(tmp_path, ansible_env, {"status": "NotSigned", "status_message": "", "signer": "", "subject": "",
                                                     "thumbprint": ""}, python_installer_signer="")
    tasks = by_name(reached(data))
    assert READ not in tasks and tasks[INSTALL]["changed"]


# UNTRUSTED_ROOT with the recorded certificate takes the same path as NO_CHAIN (status UnknownError; the check reads the
# status, never the status message, which the run only repeats): its message is shown by the bad-signature case above.
@pytest.mark.parametrize("signature", [NO_CHAIN], ids=["no-chain"])
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
    # Any status but UnknownError fails the pin's status condition: HashMismatch with the recorded certificate takes the
    # same path as NotTrusted here (HashMismatch itself: test_installer_with_a_bad_signature_does_not_run).
    (DISTRUSTED, {"python-3.12.10-amd64.exe": "0" * 40}, "NotTrusted"),
], ids=["other-certificate", "none-recorded", "recorded-for-another-file", "other-publisher", "distrusted"])
def test_the_recorded_certificate_excuses_only_a_chain_the_host_cannot_build(tmp_path, ansible_env, signature, thumbprints,
                                                                           words):
    sim, proc, data = _run(tmp_path, ansible_env, signature, thumbprints=thumbprints, expect_rc=2)
    assert words in proc.stdout, proc.stdout[-3000:]
    assert INSTALL not in by_name(reached(data)) and "python" not in sim.state
