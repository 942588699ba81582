"""install-control-node.sh, function by function, on small bundles made here (no build, no network).

The script is sourced for its functions (verify_bundle, check_compiled_modules) and run for its arguments;
tests/bundle/test_bundle.py installs a real bundle end to end.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import shutil
import subprocess
from pathlib import Path

import pytest

from toolchain import REPO, VENV_BIN

pytestmark = pytest.mark.bundle

SCRIPT = REPO / "playbooks" / "files" / "install-control-node.sh"
BUILT_ON = "Debian GNU/Linux 12 (bookworm) (CPython 3.11.2, glibc 2.36)"


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, cwd=cwd, env=env)


def call(function: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One function of the script, sourced."""
    return run(["bash", "-c", f'source "{SCRIPT}"; {function} "$@"', function, *args], cwd=cwd, env=env)


def small_bundle(root: Path) -> Path:
    """A bundle of three files and the script, with a correct SHA256SUMS."""
    bundle = root / "bundle"
    (bundle / "control-node" / "wheels").mkdir(parents=True)
    files = {"MANIFEST.json": b"{}\n", "control-node/wheels/demo-1.0-py3-none-any.whl": b"wheel",
             "control-node/control-node.lock": b"demo==1.0\n"}
    for name, content in files.items():
        (bundle / name).write_bytes(content)
    shutil.copy(SCRIPT, bundle / "install-control-node.sh")
    write_sums(bundle)
    return bundle


def write_sums(bundle: Path) -> None:
    names = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    (bundle / "SHA256SUMS").write_text(
        "".join(f"{hashlib.sha256((bundle / n).read_bytes()).hexdigest()}  {n}\n" for n in names))


# --- arguments ---------------------------------------------------------------------------------------

def test_help_prints_only_the_help(tmp_path: Path) -> None:
    proc = run(["bash", str(SCRIPT), "--help"], cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0] == "Installs an enclave control node from this offline bundle, with no network at all."
    assert lines[-1].startswith("Paths inside the bundle come from MANIFEST.json")
    assert not [line for line in lines if line.startswith(("#", "set ", "prog="))], proc.stdout


def test_unknown_argument_is_refused_with_the_help_on_stderr(tmp_path: Path) -> None:
    proc = run(["bash", str(SCRIPT), "--prefx", "/opt/x"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("install-control-node: unknown argument: --prefx\n")
    assert "bash install-control-node.sh --verify-only" in proc.stderr


def test_verify_only_accepts_an_intact_bundle(tmp_path: Path) -> None:
    bundle = small_bundle(tmp_path)
    proc = run(["bash", str(bundle / "install-control-node.sh"), "--verify-only"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[install-control-node] bundle verified: 4 files match SHA256SUMS\n"


# --- verification: each problem named once ------------------------------------------------------------

def refusal(bundle: Path) -> list[str]:
    proc = call("verify_bundle", str(bundle), cwd=bundle.parent)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[-1].endswith("(see the files named above): nothing was installed"), proc.stderr
    return lines[:-1]


def test_tampered_digest_in_sha256sums_is_reported_once(tmp_path: Path) -> None:
    bundle = small_bundle(tmp_path)
    sums = bundle / "SHA256SUMS"
    sums.write_text(sums.read_text().replace(hashlib.sha256(b"wheel").hexdigest(), "0" * 64))
    assert refusal(bundle) == ["install-control-node: digest mismatch (file changed): "
                               "control-node/wheels/demo-1.0-py3-none-any.whl"]


def test_changed_missing_and_unlisted_files_are_each_named_once(tmp_path: Path) -> None:
    bundle = small_bundle(tmp_path)
    (bundle / "control-node" / "control-node.lock").write_bytes(b"demo==2.0\n")
    (bundle / "MANIFEST.json").unlink()
    (bundle / "control-node" / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"not a wheel")
    assert sorted(refusal(bundle)) == [
        "install-control-node: digest mismatch (file changed): control-node/control-node.lock",
        "install-control-node: file not listed in SHA256SUMS: control-node/wheels/evil-1.0-py3-none-any.whl",
        "install-control-node: missing file: MANIFEST.json",
    ]


def test_verification_does_not_depend_on_the_locale(tmp_path: Path) -> None:
    """`sha256sum --check` says FEHLSCHLAG, not FAILED, in German (coreutils' own translation, LANGUAGE=de): a
    script that parsed its words let a changed file through. This one compares the digests itself."""
    bundle = small_bundle(tmp_path)
    (bundle / "MANIFEST.json").write_bytes(b"{}\n\n")
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANGUAGE": "de"}
    proc = call("verify_bundle", str(bundle), cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert "digest mismatch (file changed): MANIFEST.json" in proc.stderr


@pytest.mark.parametrize(("line", "message"), [
    ("not a digest  MANIFEST.json", "has a malformed line"),
    (f"{'a' * 64}  ../etc/passwd", "names a path outside the bundle"),
    (f"{'a' * 64}  MANIFEST.json", "lists 'MANIFEST.json' twice"),
])
def test_a_bad_sha256sums_line_refuses_the_bundle(tmp_path: Path, line: str, message: str) -> None:
    bundle = small_bundle(tmp_path)
    with (bundle / "SHA256SUMS").open("a") as sums:
        sums.write(line + "\n")
    proc = call("verify_bundle", str(bundle), cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr, proc.stderr
    assert proc.stderr.count("ERROR") == 1


# --- compiled modules ---------------------------------------------------------------------------------

def wheels_dir(root: Path, *names: str) -> Path:
    """A wheel directory whose file names are all the check reads."""
    wheels = root / "wheels"
    wheels.mkdir()
    for name in names:
        (wheels / name).write_bytes(b"")
    return wheels


def test_compiled_modules_of_the_wheelhouse_load(tmp_path: Path) -> None:
    """The toolchain's own gssapi, krb5 and cryptography, named as the bundle's wheels are."""
    wheels = wheels_dir(tmp_path, "gssapi-1.12.0-cp311-abi3-linux_x86_64.whl", "krb5-0.10.0-cp311-abi3-linux_x86_64.whl",
                        "cryptography-50.0.2-cp311-abi3-manylinux_2_34_x86_64.whl", "ansible-12.3.0-py3-none-any.whl")
    proc = call("check_compiled_modules", str(VENV_BIN / "python"), str(wheels), BUILT_ON, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("compiled modules load: ")
    assert proc.stdout.rstrip().endswith(" of cryptography, gssapi, krb5"), proc.stdout


def fake_distribution(root: Path, library: str) -> Path:
    """site/ with an installed distribution `fakekrb` whose extension module needs `library`, which is absent."""
    gcc = shutil.which("gcc")
    if not gcc:
        pytest.skip("gcc is needed to build the stand-in extension module (bash scripts/setup.sh installs it)")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    site, stub = root / "site", root / "stub"
    (site / "fakekrb").mkdir(parents=True)
    (site / "fakekrb-1.0.dist-info").mkdir()
    stub.mkdir()
    (root / "stub.c").write_text("int stub(void) { return 1; }\n")
    (root / "ext.c").write_text("extern int stub(void);\nint use(void) { return stub(); }\n")
    for argv in ([gcc, "-shared", "-fPIC", f"-Wl,-soname,{library}", "-o", str(stub / library), str(root / "stub.c")],
                 [gcc, "-shared", "-fPIC", "-o", str(site / "fakekrb" / f"_ext{suffix}"), str(root / "ext.c"),
                  f"-L{stub}", f"-l:{library}"]):
        assert run(argv, cwd=root).returncode == 0
    shutil.rmtree(stub)  # the library the module needs is now missing, as on a control node without it
    (site / "fakekrb" / "__init__.py").write_text("")
    (site / "fakekrb-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: fakekrb\nVersion: 1.0\n")
    (site / "fakekrb-1.0.dist-info" / "RECORD").write_text(
        f"fakekrb/__init__.py,,\nfakekrb/_ext{suffix},,\nfakekrb-1.0.dist-info/METADATA,,\n")
    return site


def test_missing_kerberos_library_names_the_packages(tmp_path: Path) -> None:
    site = fake_distribution(tmp_path, "libgssapi_krb5.so.99")
    wheels = wheels_dir(tmp_path, "fakekrb-1.0-cp311-abi3-linux_x86_64.whl")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}
    proc = call("check_compiled_modules", str(VENV_BIN / "python"), str(wheels), BUILT_ON, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    out = proc.stdout
    assert "fakekrb._ext: ImportError: libgssapi_krb5.so.99: cannot open shared object file" in out
    assert "Missing: the MIT Kerberos libraries (libgssapi_krb5.so.99)" in out
    assert "Debian/Ubuntu: apt-get install libkrb5-3 libgssapi-krb5-2" in out
    assert "RHEL/Rocky/Alma: dnf install krb5-libs" in out
    assert f"The wheels were built on {BUILT_ON}; this system is " in out


def test_unknown_missing_library_says_how_to_find_its_package(tmp_path: Path) -> None:
    site = fake_distribution(tmp_path, "libenclave-absent.so.1")
    wheels = wheels_dir(tmp_path, "fakekrb-1.0-cp311-abi3-linux_x86_64.whl")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}
    proc = call("check_compiled_modules", str(VENV_BIN / "python"), str(wheels), BUILT_ON, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert "apt-file search libenclave-absent.so.1" in proc.stdout
    assert "dnf provides '*/libenclave-absent.so.1'" in proc.stdout


def test_platform_wheel_that_is_not_installed_is_reported(tmp_path: Path) -> None:
    wheels = wheels_dir(tmp_path, "nosuchdist-1.0-cp311-cp311-linux_x86_64.whl")
    proc = call("check_compiled_modules", str(VENV_BIN / "python"), str(wheels), BUILT_ON, cwd=tmp_path)
    assert proc.returncode == 1
    assert "  nosuchdist: not installed in this environment" in proc.stdout
