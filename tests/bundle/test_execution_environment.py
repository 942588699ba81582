"""The execution environment (execution-environment.yml) against what the bundle carries, with no network.

No image is built here (no container registry is reachable): the Python requirements of the image resolve from the
bundle's control-node wheels alone, and the image's galaxy stage (`ansible-galaxy collection install
$ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml` in the context's _build directory) runs as the Containerfile
runs it, on the bundle's collection tarballs. Both reuse the bundle tests' cache (tests/bundle/test_bundle.py builds
it first, in the same process): no bundle is built for them.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bundlerun import TEST_CACHE
from toolchain import REPO, VENV_BIN, tool

pytestmark = pytest.mark.bundle

GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text(encoding="utf-8"))
LOCK = REPO / "requirements" / "control-node.lock"


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900, **kwargs)


def offline() -> list[str]:
    return ["unshare", "-n"] if run(["unshare", "-n", "true"]).returncode == 0 else []


@pytest.fixture(scope="module")
def wheels() -> Path:
    """The control-node wheels of the current lock, as playbooks/bundle.yml left them in the tests' cache."""
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()  # what bundle.yml writes into `complete`
    for complete in sorted(TEST_CACHE.glob("control-node/*/complete")):
        if complete.read_text(encoding="utf-8").strip() == digest:
            return complete.parent / "wheels"
    pytest.fail(f"no control-node wheels of {LOCK.name} in {TEST_CACHE}: run tests/bundle/test_bundle.py first "
                "(it builds them; the whole suite runs it before this module)")


def test_ee_python_requirements_resolve_from_the_bundle_wheels(wheels: Path, tmp_path: Path) -> None:
    target = tmp_path / "venv"
    made = run([tool("uv"), "venv", "-q", "--python", str(VENV_BIN / "python"), str(target)])
    assert made.returncode == 0, made.stderr
    proc = run([*offline(), tool("uv"), "pip", "install", "--dry-run", "--no-index", "--offline", "--no-cache",
                "--find-links", str(wheels), "--python", str(target / "bin" / "python"), "-r", str(REPO / "requirements.txt")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    for name in ("gssapi", "krb5", "pypsrp", "pywinrm", "pyspnego", "requests-ntlm"):
        assert re.search(rf"^ \+ {name}==", out, re.M), out


def test_ee_galaxy_stage_installs_the_collections_offline(tmp_path: Path) -> None:
    tarballs = TEST_CACHE / "collections" / "tarballs"
    collections = tmp_path / "dist" / "bundle" / "control-node" / "collections"
    collections.mkdir(parents=True)
    built = run([tool("ansible-galaxy"), "collection", "build", "--output-path", str(collections), str(REPO)], cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    for tarball in tarballs.glob("*.tar.gz"):
        shutil.copy(tarball, collections / tarball.name)
    for name in ("execution-environment.yml", "requirements.txt", "bindep.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    created = run([tool("ansible-builder"), "create", "--output-filename", "Containerfile", "-c", "context"], cwd=tmp_path)
    assert created.returncode == 0 and "No matches" not in created.stdout + created.stderr, created.stdout + created.stderr
    containerfile = (tmp_path / "context" / "Containerfile").read_text(encoding="utf-8")
    options = re.search(r'^ARG ANSIBLE_GALAXY_CLI_COLLECTION_OPTS="([^"]*)"', containerfile, re.M).group(1)
    assert re.search(r"ansible-galaxy collection install \$ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml "
                     r'--collections-path "/usr/share/ansible/collections"', containerfile)
    # The step as the image runs it: in /build (the context's _build), into an empty collections path.
    dest = tmp_path / "image-collections"
    env = {key: value for key, value in __import__("os").environ.items() if not key.startswith("ANSIBLE_")}
    env.update(HOME=str(tmp_path), ANSIBLE_COLLECTIONS_PATH=str(dest), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
    proc = run([*offline(), tool("ansible-galaxy"), "collection", "install", *options.split(), "-r", "requirements.yml",
                "--collections-path", str(dest)], cwd=tmp_path / "context" / "_build", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = {f"{p.parent.name}.{p.name}" for p in (dest / "ansible_collections").glob("*/*") if (p / "MANIFEST.json").is_file()}
    assert installed == {f"{GALAXY['namespace']}.{GALAXY['name']}", *GALAXY["dependencies"], "community.postgresql"}, proc.stdout
