"""Release tooling: the collection tarball, its offline install, the rendered documentation, the changelog and the
execution environment's build context (README "Use it from AAP/AWX"; galaxy.yml; execution-environment.yml).

The tarball is built once per module with `ansible-galaxy collection build` from the checkout, as at a release, and
installed with `--offline` into an empty collections path: what Galaxy users and the enclave get. `ansible-test
sanity` (test_static_sanity.py) runs on sanity_tree.collection_files(); the first test proves that this is exactly
the tarball's file list, so sanity is not run a second time on the tarball.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

import sanity_tree
from toolchain import REPO, VENV_BIN, tool

pytestmark = pytest.mark.static

GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text(encoding="utf-8"))
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"
TARBALL_NAME = f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
# Written by ansible-galaxy into every tarball, from galaxy.yml (which it leaves out).
GENERATED = {"MANIFEST.json", "FILES.json"}
REPLACED = {"galaxy.yml"}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600, **kwargs)


def clean_env(home: Path, collections: Path | None = None) -> dict[str, str]:
    """No ansible.cfg of the checkout, no user configuration: only what the command line and `collections` give."""
    env = {key: value for key, value in __import__("os").environ.items() if not key.startswith("ANSIBLE_")}
    env.update(HOME=str(home), ANSIBLE_NOCOLOR="1", PATH=f"{VENV_BIN}:{env.get('PATH', '')}")
    if collections is not None:
        env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    return env


def offline() -> list[str]:
    """`unshare -n` (no network at all) where this machine allows it."""
    return ["unshare", "-n"] if run(["unshare", "-n", "true"]).returncode == 0 else []


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release")
    proc = run([tool("ansible-galaxy"), "collection", "build", "--output-path", str(out), str(REPO)],
               cwd=out, env=clean_env(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / TARBALL_NAME


@pytest.fixture(scope="module")
def members(tarball: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tarball) as archive:
        return {member.name: member for member in archive.getmembers()}


@pytest.fixture(scope="module")
def installed(tarball: Path, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The tarball installed offline into an empty collections path. Its dependencies (galaxy.yml) are found, not
    downloaded: the `ansible` package of the toolchain carries them, as the control node's does."""
    root = tmp_path_factory.mktemp("installed")
    path = root / "collections"
    env = clean_env(root, path)
    proc = run([*offline(), tool("ansible-galaxy"), "collection", "install", "--offline", str(tarball), "-p", str(path)],
               cwd=root, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{FQCN}:{GALAXY['version']} was installed successfully" in proc.stdout, proc.stdout
    return path, env


# --- the tarball ---------------------------------------------------------------------------------------

def test_tarball_is_what_sanity_checks(members: dict[str, tarfile.TarInfo]) -> None:
    shipped = {name for name, member in members.items() if member.isfile() or member.issym()} - GENERATED
    checked = set(sanity_tree.collection_files()) - REPLACED
    assert not shipped - checked, f"in the tarball, not in the sanity tree (build_ignore them): {sorted(shipped - checked)[:20]}"
    assert not checked - shipped, f"in the sanity tree, not in the tarball: {sorted(checked - shipped)[:20]}"


def test_tarball_leaves_out_local_state(members: dict[str, tarfile.TarInfo]) -> None:
    names = set(members)
    local = [name for name in names
             if re.match(r"^(build|dist|context|\.venv[^/]*|\.git|\.cache|\.pytest_cache|\.ansible|molecule|scripts|benchmarks)(/|$)", name)
             or re.match(r"^tests/(static|integration|roles|bundle|fixtures|jinja_cache|output)(/|$)", name)
             or "__pycache__" in name.split("/") or name.endswith((".pyc", ".tar.gz", ".lock"))]
    assert not local, sorted(local)[:20]
    for needed in ("COPYING", "README.md", "meta/runtime.yml", "execution-environment.yml", "requirements.txt",
                   "bindep.txt", "changelogs/changelog.yaml", "changelogs/config.yaml", "playbooks/site.yml"):
        assert needed in names, needed


def test_galaxy_metadata_is_complete(tarball: Path) -> None:
    with tarfile.open(tarball) as archive:
        info = json.load(archive.extractfile("MANIFEST.json"))["collection_info"]
    for key in ("repository", "documentation", "homepage", "issues"):
        assert re.match(r"^https://\S+$", info[key] or ""), f"galaxy.yml {key}: {info[key]!r}"
    assert info["license"] == ["GPL-3.0-or-later"]
    assert (REPO / "COPYING").read_text(encoding="utf-8").lstrip().startswith("GNU GENERAL PUBLIC LICENSE")
    assert "Version 3, 29 June 2007" in (REPO / "COPYING").read_text(encoding="utf-8")[:200]
    assert info["dependencies"] == GALAXY["dependencies"]


def test_tarball_installs_offline_into_a_clean_path(installed) -> None:
    path, env = installed
    root = path / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    assert (root / "MANIFEST.json").is_file() and (root / "roles" / "common" / "meta" / "argument_specs.yml").is_file()
    listing = run([tool("ansible-galaxy"), "collection", "list", FQCN, "-p", str(path)], cwd=path, env=env)
    assert listing.returncode == 0, listing.stderr
    assert re.search(rf"^{re.escape(FQCN)}\s+{re.escape(GALAXY['version'])}\s*$", listing.stdout, re.M), listing.stdout
    assert str(path) in listing.stdout


# --- role entry points and the rendered documentation -------------------------------------------------

ROLE_SPECS = {path.parts[-3]: list(yaml.safe_load(path.read_text(encoding="utf-8"))["argument_specs"])
              for path in sorted(REPO.glob("roles/*/meta/argument_specs.yml"))}


def test_every_entry_point_shows_in_ansible_doc(installed) -> None:
    path, env = installed
    listing = run([tool("ansible-doc"), "-t", "role", "-l", FQCN], cwd=path, env=env)
    assert listing.returncode == 0, listing.stderr
    listed: dict[str, set[str]] = {}
    role = None
    for line in listing.stdout.splitlines():
        if re.match(rf"^{re.escape(FQCN)}\.\w+:$", line):
            role = line[len(FQCN) + 1:-1]
            listed[role] = set()
        elif role and (match := re.match(r"^\s{4}(\w+)\s*:", line)):
            listed[role].add(match.group(1))
    assert listed == {role: set(entries) for role, entries in ROLE_SPECS.items()}, listing.stdout
    names = [f"{FQCN}.{role}" for role in ROLE_SPECS]
    shown = run([tool("ansible-doc"), "-t", "role", "-j", *names], cwd=path, env=env)
    assert shown.returncode == 0, shown.stderr
    docs = json.loads(shown.stdout)
    for role, entries in ROLE_SPECS.items():
        doc = docs[f"{FQCN}.{role}"]
        assert str(path) in doc["path"], doc["path"]
        assert sorted(doc["entry_points"]) == sorted(entries), role
        for entry in entries:
            assert doc["entry_points"][entry].get("short_description"), f"{role}:{entry} has no short_description"
    text = run([tool("ansible-doc"), "-t", "role", names[0]], cwd=path, env=env)
    assert text.returncode == 0 and all(f"ENTRY POINT: *{entry}*" in text.stdout for entry in ROLE_SPECS[names[0].rsplit('.', 1)[1]]), text.stdout[:2000]


@pytest.fixture(scope="module")
def docsite(installed, tmp_path_factory) -> Path:
    """scripts/docs.sh on the installed tarball, with no network."""
    path, env = installed
    dest = tmp_path_factory.mktemp("docs") / "site"
    proc = run([*offline(), "bash", str(REPO / "scripts" / "docs.sh"), str(dest)], cwd=REPO,
               env=dict(env, DOCS_COLLECTIONS_PATH=str(path)))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert "WARNING" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-6000:]
    return dest / "html"


def test_docsite_has_every_plugin_and_role_entry_point(docsite: Path) -> None:
    assert (docsite / "index.html").is_file()
    index = (docsite / "index.html").read_text(encoding="utf-8")
    for role, entries in ROLE_SPECS.items():
        page = (docsite / f"{role}_role.html").read_text(encoding="utf-8")
        for entry in entries:
            assert f'id="ansible-collections-enclave-prefect-{role.replace("_", "-")}-role-entrypoint-{entry}"' in page, (role, entry)
        assert f"{role}_role.html" in index, role
    for module in sorted(REPO.glob("plugins/modules/*.py")):
        assert (docsite / f"{module.stem}_module.html").is_file(), module.stem
        assert f"{module.stem}_module.html" in index, module.stem


def test_docsite_has_every_guide_of_docs_with_working_role_links(docsite: Path) -> None:
    """The Markdown guides of docs/ are pages of the site, listed on its index; a guide's link to a role's README is a
    link to that role's page (the build fails on a link that resolves nowhere: test_docsite_fails_on_a_broken_reference)."""
    index = (docsite / "index.html").read_text(encoding="utf-8")
    for guide in sorted(REPO.glob("docs/*.md")):
        page = docsite / "guides" / f"{guide.stem}.html"
        assert page.is_file(), guide.name
        assert f"guides/{guide.stem}.html" in index, guide.name
    roles = (docsite / "guides" / "roles.html").read_text(encoding="utf-8")
    for role in ROLE_SPECS:
        assert f'href="../{role}_role.html"' in roles, role


def test_docsite_links_options_of_the_common_role(docsite: Path) -> None:
    # O(prefect_home) in nssm_services' spec is the common role's option: scripts/docs_sphinx_ext.py links it there.
    page = (docsite / "nssm_services_role.html").read_text(encoding="utf-8")
    assert 'href="common_role.html#ansible-collections-enclave-prefect-common-role-parameter-main-prefect-home"' in page


def test_docsite_fails_on_a_broken_reference(tmp_path: Path) -> None:
    """A reference inside the collection that resolves nowhere fails the build (so the checks above can fail). A
    one-role collection of the same name keeps it short."""
    root = tmp_path / "collections" / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    (root / "roles" / "probe" / "meta").mkdir(parents=True)
    (root / "galaxy.yml").write_text(yaml.safe_dump({key: GALAXY[key] for key in ("namespace", "name", "version",
                                                                                   "readme", "authors")}))
    (root / "meta").mkdir()
    (root / "meta" / "runtime.yml").write_text((REPO / "meta" / "runtime.yml").read_text(encoding="utf-8"))
    (root / "roles" / "probe" / "meta" / "argument_specs.yml").write_text(yaml.safe_dump({"argument_specs": {"main": {
        "short_description": "Probe", "description": ["A probe."], "options": {"probe_value": {
            "type": "str", "description": "Like O(no_such_option_anywhere)."}}}}}))
    proc = run(["bash", str(REPO / "scripts" / "docs.sh"), str(tmp_path / "site")], cwd=REPO,
               env=dict(clean_env(tmp_path), DOCS_COLLECTIONS_PATH=str(tmp_path / "collections")))
    assert proc.returncode != 0
    assert "no_such_option_anywhere" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "site" / "html").exists()


# --- changelog ----------------------------------------------------------------------------------------

def test_changelog_fragments_lint() -> None:
    """The fragments of the next release lint; galaxy.yml's version is released: changelogs/changelog.yaml records it
    with its summary and CHANGELOG.rst shows its notes (antsibull-changelog release)."""
    proc = run([tool("antsibull-changelog"), "lint"], cwd=REPO)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
    releases = yaml.safe_load((REPO / "changelogs" / "changelog.yaml").read_text(encoding="utf-8"))["releases"]
    assert GALAXY["version"] in releases, sorted(releases)
    changes = releases[GALAXY["version"]]["changes"]
    assert changes.get("release_summary") and changes.get("major_changes"), sorted(changes)
    assert f"v{GALAXY['version']}\n" in (REPO / "CHANGELOG.rst").read_text(encoding="utf-8")


# --- execution environment ----------------------------------------------------------------------------

def lock_pins(lock: Path) -> dict[str, str]:
    return {name.lower(): version for name, version in
            re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text(encoding="utf-8"), re.M)}


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)$", line)
            assert match, f"requirements.txt: not an exact pin: {line!r}"
            pins[match.group(1).lower()] = match.group(3)
    return pins


def test_ee_python_requirements_follow_the_control_node_lock() -> None:
    locked = lock_pins(REPO / "requirements/control-node.lock")
    pins = requirement_pins(REPO / "requirements.txt")
    assert {name: locked.get(name) for name in pins} == pins
    direct = {re.split(r"[\[<>=!~ ]", line, 1)[0].lower() for line in
              (REPO / "requirements/control-node.in").read_text(encoding="utf-8").splitlines()
              if line.strip() and not line.startswith("#")}
    assert direct - {"ansible", "ansible-core"} <= set(pins), direct - set(pins)
    assert {"gssapi", "krb5"} <= set(pins)  # the Kerberos libraries pyspnego[kerberos] compiles against
    ee = yaml.safe_load((REPO / "execution-environment.yml").read_text(encoding="utf-8"))
    assert ee["dependencies"]["ansible_core"]["package_pip"] == f"ansible-core=={locked['ansible-core']}"


def test_ee_collections_are_the_bundles() -> None:
    """The collection itself at galaxy.yml's version, and each dependency at the version of the `ansible` wheel the
    bundle takes them from (playbooks/bundle.yml bundle_dependency_collections)."""
    import ansible_collections  # noqa: PLC0415

    ee = yaml.safe_load((REPO / "execution-environment.yml").read_text(encoding="utf-8"))
    names = [item["name"] for item in ee["dependencies"]["galaxy"]["collections"]]
    assert all(item.get("type") == "file" for item in ee["dependencies"]["galaxy"]["collections"])
    bundled = yaml.safe_load((REPO / "playbooks/bundle.yml").read_text(encoding="utf-8"))[0]["vars"]["bundle_dependency_collections"]
    assert set(GALAXY["dependencies"]) <= set(bundled)
    wheel_root = Path(list(ansible_collections.__path__)[-1])
    expected = [f"collections/{TARBALL_NAME}"]
    for fqcn in bundled:
        namespace, name = fqcn.split(".")
        manifest = [Path(p) / namespace / name / "MANIFEST.json" for p in ansible_collections.__path__
                    if (Path(p) / namespace / name / "MANIFEST.json").is_file()]
        assert manifest, f"{fqcn} is not in the toolchain's ansible package ({wheel_root})"
        version = json.loads(manifest[0].read_text(encoding="utf-8"))["collection_info"]["version"]
        expected.append(f"collections/{namespace}-{name}-{version}.tar.gz")
    assert names == expected


def test_ee_bindep_matches_the_readme_table() -> None:
    from bindep.depends import Depends  # noqa: PLC0415

    depends = Depends((REPO / "bindep.txt").read_text(encoding="utf-8"))
    rpm = {rule[0] for rule in depends.active_rules(["platform:rpm", "platform:redhat"])}
    deb = {rule[0] for rule in depends.active_rules(["platform:dpkg", "platform:debian"])}
    build_rpm = {rule[0] for rule in depends.active_rules(["platform:rpm", "platform:redhat", "compile"])} - rpm
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    kerberos = re.search(r"^\| `(libkrb5-3 libgssapi-krb5-2)` \| `(krb5-libs)` \|", readme, re.M)
    tools = re.search(r"^\| `(krb5-user)` \| `(krb5-workstation)` \|", readme, re.M)
    assert kerberos and tools, "README's table of system packages moved"
    assert deb == set(kerberos.group(1).split()) | {tools.group(1)}
    assert rpm == {kerberos.group(2), tools.group(2)}
    assert build_rpm == {"gcc", "krb5-devel", "python3.11-devel"}


@pytest.fixture(scope="module")
def ee_context(tarball: Path, tmp_path_factory) -> Path:
    """`ansible-builder create` as on the connected machine: the definition with its files, and the bundle's
    collections directory holding (here) the tarball built above."""
    work = tmp_path_factory.mktemp("ee")
    for name in ("execution-environment.yml", "requirements.txt", "bindep.txt"):
        shutil.copy(REPO / name, work / name)
    collections = work / "dist" / "bundle" / "control-node" / "collections"
    collections.mkdir(parents=True)
    shutil.copy(tarball, collections / tarball.name)
    proc = run([tool("ansible-builder"), "create", "--output-filename", "Containerfile", "-f", "execution-environment.yml",
                "-c", "context"], cwd=work, env=clean_env(work))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No matches" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return work / "context"


def test_ee_context_holds_the_requirements_and_collections(ee_context: Path, tarball: Path) -> None:
    build = ee_context / "_build"
    assert (build / "requirements.txt").read_text(encoding="utf-8") == (REPO / "requirements.txt").read_text(encoding="utf-8")
    assert (build / "bindep.txt").read_text(encoding="utf-8") == (REPO / "bindep.txt").read_text(encoding="utf-8")
    galaxy = yaml.safe_load((build / "requirements.yml").read_text(encoding="utf-8"))
    ee = yaml.safe_load((REPO / "execution-environment.yml").read_text(encoding="utf-8"))
    assert galaxy == ee["dependencies"]["galaxy"]
    copied = build / "collections" / tarball.name
    assert hashlib.sha256(copied.read_bytes()).digest() == hashlib.sha256(tarball.read_bytes()).digest()


def test_ee_containerfile(ee_context: Path) -> None:
    text = (ee_context / "Containerfile").read_text(encoding="utf-8")
    assert 'ARG EE_BASE_IMAGE="registry.redhat.io/ansible-automation-platform-25/ee-minimal-rhel9:latest"' in text
    assert 'ARG ANSIBLE_GALAXY_CLI_COLLECTION_OPTS="--offline"' in text
    assert 'ARG PYCMD="/usr/bin/python3.11"' in text and 'ARG PKGMGR="/usr/bin/microdnf"' in text
    assert "COPY _build /build" in text and "WORKDIR /build" in text
    assert re.search(r"^RUN .*ansible-galaxy collection install \$ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml",
                     text, re.M), text
    assert "ansible-core==2.19" in text and "RUN /output/scripts/assemble" in text
