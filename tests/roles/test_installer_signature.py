"""The installer's Authenticode signature checked on the host before it runs (roles/common/tasks/signature.yml,
authenticode_signature.ps1), with the python role on the simulated Windows host (simhost.py).

The stand-in for Get-AuthenticodeSignature reports what the host's "signatures" say of the file's content: Valid and
signed by the Python Software Foundation for the stand-in installer by default, NotSigned for any file it does not
know. What Windows itself reports for the real python.org installer is not shown here (see docs/bundle-layout.md).
"""
from __future__ import annotations

import hashlib

import pytest

from simhost import INSTALLER, INSTALLER_SIGNATURE, Sim, by_name, make_bundle, reached

pytestmark = pytest.mark.static

READ = "Installer signature is read on the host"
CHECK = "Installer carries a valid signature by its publisher"
INSTALL = "Python is installed for all users"
STAGED = "C:\\Prefect\\staging\\python-3.12.10-amd64.exe"


def _run(tmp_path, ansible_env, signature: dict | None = None, expect_rc: int = 0, args: list[str] | None = None,
         **extra):
    state = {"signatures": {hashlib.sha256(INSTALLER).hexdigest(): signature}} if signature else None
    sim = Sim(tmp_path, ansible_env, state)
    bundle = make_bundle(tmp_path)
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
    (dict(INSTALLER_SIGNATURE, status="NotTrusted", status_message="A certificate chain processed, but terminated in a "
          "root certificate which is not trusted by the trust provider."), "NotTrusted"),
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
