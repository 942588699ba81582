"""The supply chain of the Windows installers in playbooks/bundle.yml (docs/bundle-layout.md, "Installer trust").

Each build here stops in the installer stage, before any wheelhouse, so each takes seconds. The stand-ins come from
tests/installer_fixtures.py: EXE and MSI files signed at test time with a throwaway CA (the builds verify with
bundle_signature_ca_file pointing at it), HTML pages served where installers are expected, a tampered MSI, an
unsigned EXE, an EXE signed by another publisher and one whose certificate chains to a root the CA file lacks.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from bundlerun import build, error_text, output_of
from installer_fixtures import GOOD_SIGNER, HTML_PAGE, OTHER_SIGNER

pytestmark = pytest.mark.bundle

KIND_WORDS = {"pe": "not a Windows executable", "msi": "not an MSI package", "zip": "not a ZIP archive"}


def _installers(*names: str, trust: bool) -> list[str]:
    return ["-e", json.dumps({"bundle_installers": list(names), "bundle_trust_on_first_download": trust})]


def _refusal(text: str, fixtures, name: str) -> str:
    """The lines of the refusal message about one catalogue item (from its name to the next item)."""
    match = re.search(rf"^  {re.escape(name)}: (.*\n)(    .*\n?)*", text, re.M)
    assert match, f"{name} is not named in the refusal:\n{text}"
    block = match.group(0)
    assert fixtures.entries[name]["filename"] in block, block
    return " ".join(block.split())


@pytest.mark.parametrize("trust", [False, True], ids=["pinned-digests", "trust-on-first-download"])
def test_html_page_offered_as_any_installer_is_refused(tmp_path: Path, bundle_env, fixtures, installer_server, trust) -> None:
    """An error page served with status 200 where an EXE, an MSI or a ZIP is expected: refused, naming the file,
    whether the catalogue pins a digest or the build trusts the first download; the page leaves the cache."""
    suffix = "" if trust else "-pinned"
    names = [f"{kind}-html-page{suffix}" for kind in ("pe", "msi", "zip")]
    cache = tmp_path / "cache"
    proc = build(bundle_env, fixtures, installer_server, tmp_path / "out", cache, *_installers(*names, trust=trust), timeout=600)
    assert proc.returncode != 0
    text = error_text(proc)
    assert "3 Windows installer(s) refused" in text, output_of(proc)[-4000:]
    for name, kind in zip(names, ("pe", "msi", "zip")):
        refusal = _refusal(text, fixtures, name)
        assert "is an HTML page" in refusal and KIND_WORDS[kind] in refusal, refusal
        assert not (cache / "installers" / fixtures.entries[name]["filename"]).exists(), "the page must leave the cache"
    assert not list((tmp_path / "out").glob("enclave-prefect-*")), "no bundle may be published"


def test_html_page_in_the_local_directory_is_refused(tmp_path: Path, bundle_env, fixtures, installer_server) -> None:
    """A file fetched by hand is checked like a download: named with its path, and left where the user put it."""
    local = tmp_path / "by-hand"
    local.mkdir()
    page = local / fixtures.entries["python-3.12"]["filename"]
    page.write_bytes(HTML_PAGE)
    proc = build(bundle_env, fixtures, installer_server, tmp_path / "out", tmp_path / "cache",
                 "-e", f"bundle_installers_local_dir={local}", *_installers("python-3.12", trust=False), timeout=600)
    assert proc.returncode != 0
    refusal = _refusal(error_text(proc), fixtures, "python-3.12")
    assert str(page) in refusal and "from bundle_installers_local_dir" in refusal, refusal
    assert "is an HTML page" in refusal and KIND_WORDS["pe"] in refusal, refusal
    assert page.read_bytes() == HTML_PAGE


def test_signature_failures_are_refused_naming_each_file(tmp_path: Path, bundle_env, fixtures, installer_server) -> None:
    """Real Authenticode signatures checked with osslsigncode: another publisher, content changed after signing, no
    signature where the catalogue names a signer, a chain to a root the CA file does not hold. One message names
    every file with its reason; none of them stays in the cache."""
    names = ["wrong-signer", "tampered", "unsigned", "untrusted-root"]
    cache = tmp_path / "cache"
    proc = build(bundle_env, fixtures, installer_server, tmp_path / "out", cache, *_installers(*names, trust=True), timeout=600)
    assert proc.returncode != 0
    text = error_text(proc)
    assert "4 Windows installer(s) refused" in text, output_of(proc)[-4000:]
    reasons = {
        "wrong-signer": f"is signed by '{OTHER_SIGNER}', but the catalogue expects a signature by '{GOOD_SIGNER}'",
        "tampered": "has a signature that does not match its content",
        "unsigned": f"is not signed, but the catalogue expects an Authenticode signature by '{GOOD_SIGNER}'",
        "untrusted-root": "certificate chain is not accepted",
    }
    for name, reason in reasons.items():
        assert reason in _refusal(text, fixtures, name)
        assert not (cache / "installers" / fixtures.entries[name]["filename"]).exists()


def test_failed_downloads_are_listed_in_one_message(tmp_path: Path, bundle_env, fixtures, refusing_url) -> None:
    """Vendor sites unreachable (a port on 127.0.0.1 where nothing listens): one message lists every missing
    installer with its URL and the file name to save it under, and the option for a directory of files fetched by
    hand. NSSM, found in the local directory, is not missing."""
    names = ["python-3.12", "nssm", "url-rewrite", "arr", "unpinned-tool"]
    proc = build(bundle_env, fixtures, refusing_url, tmp_path / "out", tmp_path / "cache", *_installers(*names, trust=True),
                 timeout=600)
    assert proc.returncode != 0
    text = error_text(proc)
    assert output_of(proc).count("TASK [The build stops on failed downloads") == 1
    assert "4 Windows installer(s) could not be downloaded" in text, output_of(proc)[-4000:]
    assert "-e bundle_installers_local_dir=/path/to/that/directory" in text
    for name in ["python-3.12", "url-rewrite", "arr", "unpinned-tool"]:
        filename = fixtures.entries[name]["filename"]
        assert re.search(rf"^  {re.escape(name)}: {re.escape(refusing_url)}/{re.escape(filename)}\n    save as "
                         rf"{re.escape(filename)} ", text, re.M), text
    assert "\n  nssm:" not in text


def test_cached_installer_is_used_only_with_a_known_digest(tmp_path: Path, bundle_env, fixtures, refusing_url) -> None:
    """What the issue found in a real cache: stand-ins (here HTML pages) under the installers' names. A pinned item
    whose cached copy has another digest, and an item without a digest whose cached copy differs from what the
    previous bundle recorded, are downloaded again (here: they cannot be, so the build lists them), never taken."""
    cache = tmp_path / "cache"
    (cache / "installers").mkdir(parents=True)
    for name in ("url-rewrite", "unpinned-tool"):
        (cache / "installers" / fixtures.entries[name]["filename"]).write_bytes(HTML_PAGE)
    # The previous bundle recorded the genuine unpinned-tool.msi.
    previous = tmp_path / "out" / "previous"
    previous.mkdir(parents=True)
    genuine = hashlib.sha256((fixtures.served / "unpinned-tool.msi").read_bytes()).hexdigest()
    (previous / "MANIFEST.json").write_text(json.dumps({"installers": [{"filename": "unpinned-tool.msi", "sha256": genuine}]}))
    (tmp_path / "out" / "bundle").symlink_to("previous")
    proc = build(bundle_env, fixtures, refusing_url, tmp_path / "out", cache, *_installers("url-rewrite", "unpinned-tool", trust=True),
                 timeout=600)
    assert proc.returncode != 0
    text = error_text(proc)
    assert "2 Windows installer(s) could not be downloaded" in text, output_of(proc)[-4000:]
    assert "\n  url-rewrite: " in text and "\n  unpinned-tool: " in text


def test_cached_installer_without_any_known_digest_is_downloaded_again(tmp_path: Path, bundle_env, fixtures,
                                                                       installer_server) -> None:
    """No previous bundle and no pinned digest: the cached copy (an HTML page) is replaced by a download, which then
    passes every check and goes into the bundle. The build is stopped right after the installer stage (an
    interpreter that cannot make the tools venv), so that no wheel is fetched."""
    cache = tmp_path / "cache"
    (cache / "installers").mkdir(parents=True)
    cached = cache / "installers" / "unpinned-tool.msi"
    cached.write_bytes(HTML_PAGE)
    proc = build(bundle_env, fixtures, installer_server, tmp_path / "out", cache, *_installers("unpinned-tool", trust=True),
                 "-e", "bundle_control_node_python=/bin/false", timeout=600)
    out = output_of(proc)
    assert re.search(r"TASK \[Installers are in the bundle\] \**\nchanged: ", out), out[-4000:]
    assert re.search(r"TASK \[Tools venv for pip exists[^\]]*\] \**\n(\[ERROR\]|fatal)", out), out[-4000:]
    assert cached.read_bytes() == (fixtures.served / "unpinned-tool.msi").read_bytes()
