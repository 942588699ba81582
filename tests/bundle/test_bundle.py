"""The offline bundle (playbooks/bundle.yml, install-control-node.sh, docs/bundle-layout.md).

The bundle is built once per session with the stand-in installer catalogue of tests/installer_fixtures.py (EXE
and MSI files signed at test time with a throwaway CA, served over http on 127.0.0.1, NSSM's zip from a local
directory), the real Windows and control-node wheelhouses and the real collections. The download cache is the
tests' own (conftest.py): the user's default cache is never read or written, and a second run is warm.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import jinja2
import pytest
import yaml

from bundlerun import USER_CACHE, build, error_text, output_of, run, tree_state
from installer_fixtures import GOOD_SIGNER, thumbprint
from toolchain import REPO, tool

pytestmark = pytest.mark.bundle

DEFAULTS = yaml.safe_load((REPO / "roles/common/defaults/main.yml").read_text())
GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text())
FIXTURE_INSTALLERS = ["python-3.12", "nssm", "url-rewrite", "arr", "postgresql-17", "unpinned-tool"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(functools.partial(handle.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def layout(python_version: str = "3.12") -> dict[str, str]:
    """prefect_bundle_layout rendered independently of Ansible (the contract as the roles see it)."""
    raw = yaml.safe_load((REPO / "roles/common/vars/main/layout.yml").read_text())["prefect_bundle_layout"]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    values = {"prefect_version": DEFAULTS["prefect_version"], "prefect_python_version": python_version}
    return {key: env.from_string(value).render(values) for key, value in raw.items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory, bundle_env, fixtures, installer_server, bundle_cache):
    output = tmp_path_factory.mktemp("dist")
    proc = build(bundle_env, fixtures, installer_server, output, bundle_cache,
                 "-e", json.dumps({"bundle_installers": FIXTURE_INSTALLERS, "bundle_trust_on_first_download": True}))
    assert proc.returncode == 0, output_of(proc)[-6000:]
    return output, proc


@pytest.fixture(scope="module")
def bundle(built) -> Path:
    output, _ = built
    name = f"enclave-prefect-{GALAXY['version']}-prefect-{DEFAULTS['prefect_version']}"
    assert (output / "bundle").resolve() == (output / name).resolve()
    return output / name


@pytest.fixture(scope="module")
def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "MANIFEST.json").read_text())


@pytest.fixture(scope="module")
def unshare_n() -> list[str]:
    proc = run(["unshare", "-n", "true"], timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"`unshare -n` is not available here (needs root or user namespaces): {proc.stderr.strip()}")
    return ["unshare", "-n"]


def clean_env(home: Path) -> dict[str, str]:
    """An environment that knows nothing of the checkout: no ansible.cfg, no collections path, no pip config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PIP_", "UV_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    return env


# --- the build ---------------------------------------------------------------------------------------

def test_windows_locks_pin_prefect_and_pywin32() -> None:
    for minor in ("311", "312", "313"):
        lock = (REPO / f"requirements/windows/prefect-py{minor}.lock").read_text()
        assert "--python-platform x86_64-pc-windows-msvc" in lock
        assert "requirements/windows/extra.in" in lock.splitlines()[1]
        assert re.search(rf"^prefect=={re.escape(DEFAULTS['prefect_version'])} ", lock, re.M), minor
        assert re.search(r"^pywin32==\S+ ", lock, re.M), f"py{minor}: pywin32 missing from the Windows lock"
    # FINDINGS: on 3.13 Prefect takes `whenever`, not `pendulum`.
    assert re.search(r"^whenever==", (REPO / "requirements/windows/prefect-py313.lock").read_text(), re.M)


def test_bundle_follows_the_layout_contract(bundle: Path, manifest: dict) -> None:
    contract = layout()
    assert manifest["layout"] == contract
    for key in ("manifest", "checksums", "windows_lock", "windows_wheelhouse_archive", "control_node_lock",
                "collections_requirements", "control_node_installer"):
        assert (bundle / contract[key]).is_file(), key
    for key in ("windows_installers_dir", "control_node_wheels_dir", "collections_dir"):
        assert (bundle / contract[key]).is_dir(), key


def test_sha256sums_cover_every_file(bundle: Path) -> None:
    listed = {}
    for line in (bundle / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    present = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert set(listed) == present
    assert all(sha256(bundle / name) == digest for name, digest in listed.items())


def test_archive_and_its_digest(built, bundle: Path) -> None:
    output, _ = built
    archive = output / f"{bundle.name}.tar.gz"
    recorded = (output / f"{bundle.name}.tar.gz.sha256").read_text().split()
    assert recorded == [sha256(archive), archive.name]
    listing = run(["tar", "-tzf", str(archive)], timeout=300)
    assert listing.returncode == 0
    assert f"{bundle.name}/SHA256SUMS" in listing.stdout.splitlines()


def test_manifest_records_versions_and_sources(bundle: Path, manifest: dict, fixtures) -> None:
    assert manifest["prefect_version"] == DEFAULTS["prefect_version"]
    assert manifest["collection"] == {"name": "enclave.prefect", "version": GALAXY["version"]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["build_date"])
    (windows,) = manifest["windows"]
    assert windows["python_version"] == "3.12"
    assert windows["lock_sha256"] == sha256(REPO / "requirements/windows/prefect-py312.lock")
    assert manifest["control_node"]["source_lock_sha256"] == sha256(REPO / "requirements/control-node.lock")
    assert {c["name"] for c in manifest["collections"]} == {
        "enclave.prefect", "ansible.windows", "community.windows", "microsoft.iis", "community.postgresql"}
    for collection in manifest["collections"]:
        assert (bundle / collection["file"]).is_file()
    installers = {i["name"]: i for i in manifest["installers"]}
    assert list(installers) == FIXTURE_INSTALLERS
    assert installers["nssm"]["origin"] == "local-dir"
    assert installers["python-3.12"]["origin"] == "download"
    for item in installers.values():
        assert sha256(bundle / item["path"]) == item["sha256"]
    assert installers["unpinned-tool"]["trusted_on_first_download"] is True
    assert installers["python-3.12"]["trusted_on_first_download"] is False
    # The signer verified at build time; NSSM's zip is unsigned and rests on its digest alone.
    assert {name: (i["kind"], i["signer"]) for name, i in installers.items()} == {
        "python-3.12": ("pe", GOOD_SIGNER), "nssm": ("zip", ""), "url-rewrite": ("msi", GOOD_SIGNER),
        "arr": ("msi", GOOD_SIGNER), "postgresql-17": ("pe", GOOD_SIGNER), "unpinned-tool": ("msi", GOOD_SIGNER)}
    assert manifest["installer_signature_roots"] == str(fixtures.ca_file)
    # The signer certificate's thumbprint the build verified, for hosts that cannot build the chain themselves.
    good = thumbprint(fixtures.ca_file.parent / "good.pem")
    assert {name: i["signer_thumbprint"] for name, i in installers.items()} == {
        name: (good if i["signer"] else "") for name, i in installers.items()}


def test_builds_leave_the_default_cache_alone(built, bundle_env, bundle_cache, user_cache_before) -> None:
    """The build used the tests' cache: nothing appeared where the default cache would be (XDG_CACHE_HOME of the
    builds), and the user's own default cache is as it was before the tests."""
    assert not (Path(bundle_env["XDG_CACHE_HOME"]) / "enclave-prefect-bundle").exists()
    assert {p.name for p in (bundle_cache / "installers").iterdir()} == {
        "python-3.12.99-amd64.exe", "rewrite_amd64_en-US.msi", "requestRouter_amd64.msi",
        "postgresql-17.99-1-windows-x64.exe", "unpinned-tool.msi"}
    assert tree_state(USER_CACHE) == user_cache_before, f"{USER_CACHE} changed during the bundle tests"


def test_trust_on_first_download_prints_the_digest(built, fixtures) -> None:
    _, proc = built
    digest = sha256(fixtures.served / "unpinned-tool.msi")
    assert re.search(rf"TRUSTED ON FIRST DOWNLOAD: unpinned-tool unpinned-tool.msi\s+sha256 {digest}", proc.stdout)


def test_windows_wheelhouse_has_pywin32_and_installs_offline(bundle: Path, tmp_path: Path) -> None:
    contract = layout()
    archive = zipfile.ZipFile(bundle / contract["windows_wheelhouse_archive"])
    names = archive.namelist()
    assert contract["windows_wheelhouse_archive_lock"] in names
    # Flat: the expanded directory is pip's --find-links on the host.
    assert all("/" not in n for n in names), names
    wheels = [n for n in names if n.endswith(".whl")]
    assert len(wheels) == len(names) - 1
    assert any(re.fullmatch(r"pywin32-[^-]+-cp312-cp312-win_amd64\.whl", n) for n in wheels), wheels
    assert not [n for n in wheels if "linux" in n or "macosx" in n]
    archive.extractall(tmp_path)
    # Every wheel is one the lock pinned (pip download checked the hashes; check again here).
    lock_text = (tmp_path / contract["windows_wheelhouse_archive_lock"]).read_text()
    for wheel in wheels:
        assert f"sha256:{sha256(tmp_path / wheel)}" in lock_text, wheel
    proc = run([tool("uv"), "pip", "install", "--dry-run", "--no-index", "--find-links", str(tmp_path),
                "--python-platform", "x86_64-pc-windows-msvc", "--python-version", "3.12",
                "--target", str(tmp_path / "target"), "-r", str(tmp_path / contract["windows_wheelhouse_archive_lock"])],
               timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "pywin32==" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_rebuild_with_unchanged_locks_needs_no_network(built, bundle, tmp_path: Path, bundle_env, fixtures, bundle_cache,
                                                       unshare_n) -> None:
    """Everything expensive comes from the cache: the same build succeeds with no network at all. The installer
    without a pinned digest is taken from the cache because the previous bundle in the output directory recorded
    that digest."""
    previous = tmp_path / "out" / "previous"
    previous.mkdir(parents=True)
    shutil.copyfile(bundle / "MANIFEST.json", previous / "MANIFEST.json")
    (tmp_path / "out" / "bundle").symlink_to("previous")
    proc = build(bundle_env, fixtures, "http://127.0.0.1:9", tmp_path / "out", bundle_cache,
                 "-e", json.dumps({"bundle_installers": FIXTURE_INSTALLERS, "bundle_trust_on_first_download": True,
                                   "bundle_archive": False}), timeout=1200, prefix=unshare_n)
    assert proc.returncode == 0, output_of(proc)[-6000:]
    for task in ("Windows wheels are downloaded into the cache for Python 3.12",
                 "Control-node wheels are downloaded or built into the cache"):
        assert re.search(rf"TASK \[{re.escape(task)}[^\]]*\] \**\nok: ", proc.stdout), f"{task}: not taken from the cache"
    assert not re.search(r"TASK \[Installers missing from the local directory and the cache are downloaded\] \**\n"
                         r"(skipping: .*\n)*(ok|changed|failed): ", proc.stdout), "an installer was downloaded again"
    assert (tmp_path / "out" / "bundle" / "SHA256SUMS").is_file()


@pytest.mark.slow
def test_missing_windows_wheel_fails_the_build(built, bundle, tmp_path: Path, bundle_env, fixtures, installer_server,
                                               bundle_cache) -> None:
    """Same build, a copy of the warm cache with one wheel removed: the offline dry run must stop it."""
    cache = tmp_path / "cache"
    assert run(["cp", "-al", str(bundle_cache), str(cache)], timeout=300).returncode == 0
    # The entry of the current lock: the newest (an older lock's entry stays in a long-lived cache).
    entry = max((p for p in (cache / "windows").glob("py312-*") if (p / "complete").is_file()),
                key=lambda p: (p / "complete").stat().st_mtime)
    (pywin32,) = (entry / "wheels").glob("pywin32-*.whl")
    pywin32.unlink()
    proc = build(bundle_env, fixtures, installer_server, tmp_path / "out", cache,
                 "-e", json.dumps({"bundle_installers": ["python-3.12"]}), timeout=1200)
    assert proc.returncode != 0
    out = output_of(proc)
    assert "cannot install" in out and "pywin32" in out, out[-4000:]
    assert not (entry / "complete").exists(), "the incomplete cache entry must not be reused"
    assert not list((tmp_path / "out").glob("enclave-prefect-*[0-9]")), "no bundle may be published"


def test_installer_digest_mismatch_shows_both_digests(tmp_path: Path, bundle_env, fixtures, installer_server) -> None:
    cache = tmp_path / "cache"
    proc = build(bundle_env, fixtures, installer_server, tmp_path / "out", cache,
                 "-e", json.dumps({"bundle_installers": ["wrong-digest"]}), timeout=600)
    assert proc.returncode != 0
    out = error_text(proc)
    assert "wrong-digest.msi" in out and "0" * 64 in out, out[-3000:]
    assert sha256(fixtures.served / "wrong-digest.msi") in out, out[-3000:]
    assert not (cache / "installers" / "wrong-digest.msi").exists(), "a mismatching download must not stay in the cache"


def test_installers_without_digest_are_refused_before_any_download(tmp_path: Path, bundle_env, fixtures,
                                                                   installer_server) -> None:
    cache = tmp_path / "cache"
    proc = build(bundle_env, fixtures, installer_server, tmp_path / "out", cache,
                 "-e", json.dumps({"bundle_installers": ["python-3.12", "unpinned-tool"]}), timeout=600)
    assert proc.returncode != 0
    out = output_of(proc)
    assert re.search(r"no sha256 for \['unpinned-tool'\]", out), out[-3000:]
    assert "bundle_trust_on_first_download" in out and "Nothing was downloaded" in out
    assert not cache.exists(), "nothing may be fetched or created"


def test_installer_catalogue_is_well_formed() -> None:
    """The real catalogue: what the build and the Windows roles read."""
    catalogue = yaml.safe_load((REPO / "roles/common/vars/main/installers.yml").read_text())["prefect_installers"]
    expected = {"python-3.11", "python-3.12", "python-3.13", "nssm", "url-rewrite", "arr", "postgresql-16", "postgresql-17"}
    assert expected <= set(catalogue)
    for name, item in catalogue.items():
        assert {"version", "url", "filename", "kind", "signer", "sha256"} <= set(item), name
        assert item["kind"] == {"exe": "pe", "msi": "msi", "zip": "zip"}[item["filename"].rsplit(".", 1)[1]], name
        assert isinstance(item["signer"], str), name
        assert item["url"].startswith("https://"), name
        assert item["url"].rsplit("/", 1)[1] == item["filename"], name
        assert isinstance(item["sha256"], str) and re.fullmatch(r"([0-9a-f]{64})?", item["sha256"]), name
        assert bool(item["sha256"]) == bool(item.get("sha256_source")), f"{name}: a digest needs its source"
    for minor in ("3.11", "3.12", "3.13"):
        assert catalogue[f"python-{minor}"]["version"].startswith(minor + ".")
        assert catalogue[f"python-{minor}"]["filename"].endswith("-amd64.exe")
    signers = {name: item["signer"] for name, item in catalogue.items()}
    assert {signers[f"python-{minor}"] for minor in ("3.11", "3.12", "3.13")} == {"Python Software Foundation"}
    assert signers["url-rewrite"] == signers["arr"] == "Microsoft Corporation"
    assert signers["postgresql-16"] == signers["postgresql-17"] == "EnterpriseDB Corporation"
    # NSSM publishes no signature: its digest is the only check (docs/bundle-layout.md).
    assert signers["nssm"] == ""


# --- the install inside the enclave ------------------------------------------------------------------

@pytest.fixture(scope="module")
def installed(bundle: Path, unshare_n: list[str], tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("enclave")
    prefix, home = root / "venv", root / "home"
    home.mkdir()
    env = clean_env(home)
    proc = run([*unshare_n, "bash", str(bundle / "install-control-node.sh"), "--prefix", str(prefix)],
               timeout=1800, cwd=root, env=env)
    assert proc.returncode == 0, output_of(proc)[-6000:]
    assert "bundle verified" in proc.stdout
    return prefix, env


@pytest.mark.slow
def test_control_node_installs_with_no_network(installed) -> None:
    prefix, env = installed
    proc = run([str(prefix / "bin/python"), "-c",
                "import ansible, winrm, pypsrp, spnego, requests_ntlm, gssapi, krb5; print(ansible.__version__)"],
               timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("2.19.")
    listing = run([str(prefix / "bin/ansible-galaxy"), "collection", "list"], timeout=120, cwd=prefix, env=env)
    assert listing.returncode == 0, listing.stderr
    for fqcn in ("enclave.prefect", "ansible.windows", "community.windows", "microsoft.iis", "community.postgresql"):
        assert re.search(rf"^{re.escape(fqcn)}\s", listing.stdout, re.M), fqcn
    assert str(prefix) in listing.stdout, "collections must come from the installed environment"


@pytest.mark.slow
def test_install_again_updates_in_place(installed, bundle: Path, unshare_n) -> None:
    prefix, env = installed
    proc = run([*unshare_n, "bash", str(bundle / "install-control-node.sh"), "--prefix", str(prefix)],
               timeout=1800, cwd=prefix.parent, env=env)
    assert proc.returncode == 0, output_of(proc)[-4000:]
    assert "updating the virtual environment" in proc.stdout
    assert "enclave.prefect:" in proc.stdout and "installed successfully" in proc.stdout


@pytest.mark.slow
def test_installed_collection_documents_work_pool(installed, unshare_n) -> None:
    prefix, env = installed
    proc = run([*unshare_n, str(prefix / "bin/ansible-doc"), "enclave.prefect.work_pool"], timeout=300, cwd=prefix, env=env)
    assert proc.returncode == 0, output_of(proc)
    assert "enclave.prefect.work_pool" in proc.stdout
    assert str(prefix) in proc.stdout, "ansible-doc must read the installed copy, not the checkout"


@pytest.mark.slow
def test_installed_collection_site_playbook_syntax(installed, unshare_n) -> None:
    prefix, env = installed
    proc = run([*unshare_n, str(prefix / "bin/ansible-playbook"), "-i", "localhost,", "--syntax-check", "enclave.prefect.site"],
               timeout=300, cwd=prefix, env=env)
    assert proc.returncode == 0, output_of(proc)
    assert str(prefix) in proc.stdout


def _damaged_copy(bundle: Path, tmp_path: Path) -> Path:
    """A hard-linked copy: files are replaced (never edited in place), so the built bundle stays intact."""
    copy = tmp_path / bundle.name
    assert run(["cp", "-al", str(bundle), str(copy)], timeout=300).returncode == 0
    return copy


@pytest.mark.parametrize("damage", ["changed", "missing", "unlisted"])
def test_install_refuses_a_damaged_bundle(bundle: Path, tmp_path: Path, unshare_n, damage: str) -> None:
    copy = _damaged_copy(bundle, tmp_path)
    contract = layout()
    if damage == "changed":
        (tarball,) = (copy / contract["collections_dir"]).glob("enclave-prefect-*.tar.gz")
        named = tarball.relative_to(copy).as_posix()
        content = tarball.read_bytes()
        tarball.unlink()
        tarball.write_bytes(content + b"\0")
    elif damage == "missing":
        (wheel,) = (copy / contract["control_node_wheels_dir"]).glob("pypsrp-*.whl")
        named = wheel.relative_to(copy).as_posix()
        wheel.unlink()
    else:
        extra = copy / contract["control_node_wheels_dir"] / "evil-1.0-py3-none-any.whl"
        extra.write_bytes(b"not a wheel")
        named = extra.relative_to(copy).as_posix()
    prefix = tmp_path / "venv"
    proc = run([*unshare_n, "bash", str(copy / "install-control-node.sh"), "--prefix", str(prefix)],
               timeout=300, cwd=tmp_path, env=clean_env(tmp_path))
    assert proc.returncode != 0
    assert named in proc.stderr, proc.stderr
    assert "nothing was installed" in proc.stderr
    assert not prefix.exists(), "the install must refuse before changing anything"
