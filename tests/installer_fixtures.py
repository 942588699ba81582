"""Installer fixtures built at test time: a throwaway CA and code-signing certificates (openssl), a minimal PE image
(an EXE) and a minimal OLE compound file (the container of an MSI), signed with `osslsigncode sign`, and the
stand-in installer catalogue the bundle tests build with.

Nothing here is a real installer: the files only have to be what osslsigncode, the build's kind check and Windows'
signature APIs take them for. Importable from every test level (`from installer_fixtures import ...`); run
`python tests/installer_fixtures.py DIR` to write the bundle fixtures into DIR (docs/bundle-report.md).
"""
from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

# Subject common names of the fixture signers (the catalogue's `signer` for the fixture items).
GOOD_SIGNER = "Enclave Test Publisher"
OTHER_SIGNER = "Someone Else Ltd"
HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"


@dataclass(frozen=True)
class Signing:
    """A throwaway CA (ca_file trusts it) and two code-signing certificates it issued."""

    root: Path
    ca_file: Path
    good: tuple[Path, Path]  # (certificate, key) with CN=GOOD_SIGNER
    other: tuple[Path, Path]  # (certificate, key) with CN=OTHER_SIGNER
    untrusted: tuple[Path, Path]  # CN=GOOD_SIGNER, issued by a CA that ca_file does not hold


def _run(*argv: str | Path, cwd: Path | None = None) -> None:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, timeout=120, cwd=cwd)
    assert proc.returncode == 0, f"{' '.join(map(str, argv))}\n{proc.stdout}\n{proc.stderr}"


def needs_tools() -> None:
    missing = [tool for tool in ("openssl", "osslsigncode") if not shutil.which(tool)]
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not installed: run `bash scripts/setup.sh --with-test-servers` "
                           f"(Debian packages {' '.join(missing)})")


def _ca(root: Path, name: str) -> tuple[Path, Path]:
    slug = name.lower().replace(" ", "-")
    key, cert = root / f"{slug}.key", root / f"{slug}.pem"
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "30",
         "-subj", f"/O=Enclave Test/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _leaf(root: Path, name: str, common_name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, cert, ext = (root / f"{name}{suffix}" for suffix in (".key", ".csr", ".pem", ".ext"))
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n")
    _run("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", f"/C=US/O={common_name}/CN={common_name}")
    _run("openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-out", cert,
         "-days", "30", "-extfile", ext)
    return cert, key


def make_signing(root: Path) -> Signing:
    needs_tools()
    root.mkdir(parents=True, exist_ok=True)
    ca = _ca(root, "Enclave Test Root CA")
    rogue = _ca(root, "Rogue Root CA")
    return Signing(root=root, ca_file=ca[0], good=_leaf(root, "good", GOOD_SIGNER, ca),
                   other=_leaf(root, "other", OTHER_SIGNER, ca), untrusted=_leaf(root, "untrusted", GOOD_SIGNER, rogue))


def thumbprint(certificate: Path) -> str:
    """SHA1 thumbprint of a PEM certificate, upper-case hex as Windows shows it (X509Certificate2.Thumbprint)."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415

    return x509.load_pem_x509_certificate(certificate.read_bytes()).fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303


def make_pe(path: Path) -> Path:
    """A minimal PE32+ console image (one .text section holding `ret`), with room for a certificate table."""
    file_align, sect_align = 0x200, 0x1000
    dos = bytearray(64)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 60, 64)  # e_lfanew
    coff = struct.pack("<HHIIIHH", 0x8664, 1, 0, 0, 0, 240, 0x0022)  # AMD64, 1 section, executable + large address aware
    optional = bytearray(240)
    struct.pack_into("<HBBIIIIIQIIHHHHHHIIIIHHQQQQII", optional, 0,
                     0x20B, 14, 0,  # PE32+, linker 14.0
                     file_align, 0, 0,  # SizeOfCode, initialized, uninitialized data
                     sect_align, sect_align,  # AddressOfEntryPoint, BaseOfCode
                     0x140000000, sect_align, file_align,  # ImageBase, SectionAlignment, FileAlignment
                     6, 0, 0, 0, 6, 0,  # OS, image, subsystem versions
                     0, 2 * sect_align, file_align, 0,  # Win32VersionValue, SizeOfImage, SizeOfHeaders, CheckSum
                     3, 0x8160,  # console subsystem; DllCharacteristics: high-entropy VA, dynamic base, NX, TS aware
                     0x100000, 0x1000, 0x100000, 0x1000, 0, 16)  # stack/heap reserve and commit, loader flags, 16 dirs
    section = struct.pack("<8sIIIIIIHHI", b".text", 1, sect_align, file_align, file_align, 0, 0, 0, 0, 0x60000020)
    headers = bytes(dos) + b"PE\0\0" + coff + bytes(optional) + section
    code = b"\xc3".ljust(file_align, b"\0")  # ret
    path.write_bytes(headers.ljust(file_align, b"\0") + code)
    return path


def make_msi(path: Path, payload: bytes = b"enclave test package\n") -> Path:
    """A minimal OLE compound file (MS-CFB version 3, 512-byte sectors) holding one 4096-byte stream, stored in
    regular sectors so that no mini stream is needed: the container format of an MSI, as osslsigncode reads it."""
    end, free, fat_mark = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD
    data = payload.ljust(4096, b"\0")
    count = len(data) // 512
    # Sector 0 holds the FAT, sector 1 the directory, sectors 2.. the stream (one chain).
    chain = [fat_mark, end] + [3 + i for i in range(count - 1)] + [end]
    fat = b"".join(struct.pack("<I", v) for v in chain).ljust(512, b"\xff")

    def entry(name: str, kind: int, child: int, start: int, size: int) -> bytes:
        encoded = (name + "\0").encode("utf-16-le") if name else b""
        return (encoded.ljust(64, b"\0") + struct.pack("<HBBIII", len(encoded), kind, 1, free, free, child)
                + bytes(16 + 4 + 8 + 8) + struct.pack("<IQ", start, size))

    directory = (entry("Root Entry", 5, 1, end, 0) + entry("Payload", 2, free, 2, len(data))
                 + entry("", 0, free, 0, 0) * 2)
    header = bytearray(b"\xff" * 512)
    header[0:76] = bytes(76)
    header[0:8] = bytes.fromhex("D0CF11E0A1B11AE1")
    # Minor version, major version 3, little-endian mark, 512-byte sectors, 64-byte mini sectors.
    struct.pack_into("<HHHHH", header, 24, 0x3E, 3, 0xFFFE, 9, 6)
    # Directory sectors (0 in version 3), FAT sectors, first directory sector, transaction signature,
    # mini stream cutoff, first mini FAT sector, mini FAT sectors, first DIFAT sector, DIFAT sectors, DIFAT[0].
    struct.pack_into("<IIIIIIIIII", header, 40, 0, 1, 1, 0, 4096, end, 0, end, 0, 0)
    path.write_bytes(bytes(header) + fat + directory + data)
    return path


def make_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("nssm-stand-in/win64/nssm.exe", b"MZ stand-in\n")
    return path


def sign(source: Path, dest: Path, signer: tuple[Path, Path]) -> Path:
    """`osslsigncode sign` with a certificate and its key (no timestamp: the fixtures verify at the current time)."""
    dest.unlink(missing_ok=True)
    _run("osslsigncode", "sign", "-certs", signer[0], "-key", signer[1], "-h", "sha256", "-n", "Enclave test",
         "-in", source, "-out", dest)
    return dest


def tamper(source: Path, dest: Path) -> Path:
    """The signed file with one byte of its signed content changed (the signature itself left as it is)."""
    content = bytearray(source.read_bytes())
    offset = 0x200 if content[:2] == b"MZ" else len(content) - 1
    if content[:8] == bytes.fromhex("D0CF11E0A1B11AE1"):
        offset = 4 * 512  # inside the payload stream
    content[offset] ^= 0xFF
    dest.write_bytes(bytes(content))
    return dest


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class BundleFixtures:
    """What write_bundle_fixtures made: the catalogue (URLs under {{ bundle_fixture_base_url }}), the directory to
    serve there, the directory for bundle_installers_local_dir and the CA file for bundle_signature_ca_file."""

    catalogue: Path
    served: Path
    local: Path
    ca_file: Path
    entries: dict


def write_bundle_fixtures(dest: Path) -> BundleFixtures:
    """The stand-in installers of tests/bundle, each what its name says (see `items` below)."""
    signing = make_signing(dest / "pki")
    served, local, work = dest / "served", dest / "local", dest / "work"
    for directory in (served, local, work):
        directory.mkdir(parents=True, exist_ok=True)
    pe, msi = make_pe(work / "plain.exe"), make_msi(work / "plain.msi")
    page = work / "page.html"
    page.write_bytes(HTML_PAGE)
    genuine = {"pe": sign(pe, work / "signed.exe", signing.good), "msi": sign(msi, work / "signed.msi", signing.good),
               "zip": make_zip(work / "plain.zip")}
    files = {}  # filename -> content source

    def item(name, filename, source, kind, signer=GOOD_SIGNER, pinned=True, where="served", sha=None, url=None):
        files[(where, filename)] = source
        return name, {
            "description": f"Stand-in: {name}",
            "version": "1.0",
            "url": url or "{{ bundle_fixture_base_url }}/" + filename,
            "filename": filename,
            "kind": kind,
            "signer": signer,
            "sha256": (sha or sha256(source)) if pinned else "",
            "sha256_source": "tests/installer_fixtures.py" if pinned else "",
        }

    entries = dict([
        # The items of a good build: signed EXE and MSI files with pinned digests, NSSM's unsigned zip in the
        # local directory only (its URL does not answer), and one signed MSI without a digest.
        item("python-3.12", "python-3.12.99-amd64.exe", sign(pe, work / "python.exe", signing.good), "pe"),
        item("nssm", "nssm-2.24-101-g897c7ad.zip", genuine["zip"], "zip", signer="", where="local",
             url="http://127.0.0.1:9/nssm-2.24-101-g897c7ad.zip"),
        item("url-rewrite", "rewrite_amd64_en-US.msi", sign(msi, work / "rewrite.msi", signing.good), "msi"),
        item("arr", "requestRouter_amd64.msi", sign(make_msi(work / "arr.msi", b"arr\n"), work / "arr-signed.msi", signing.good),
             "msi"),
        item("postgresql-17", "postgresql-17.99-1-windows-x64.exe", sign(pe, work / "pg.exe", signing.good), "pe"),
        item("unpinned-tool", "unpinned-tool.msi", sign(make_msi(work / "tool.msi", b"tool\n"), work / "tool-signed.msi",
                                                        signing.good), "msi", pinned=False),
        # Refused: a digest that does not match, HTML pages offered as each kind (with and without a digest), and
        # signatures that must not pass.
        item("wrong-digest", "wrong-digest.msi", genuine["msi"], "msi", sha="0" * 64),
        *(item(f"{kind}-html-page", f"{kind}-page.{ext}", page, kind, signer=signer, pinned=False)
          for kind, ext, signer in (("pe", "exe", GOOD_SIGNER), ("msi", "msi", GOOD_SIGNER), ("zip", "zip", ""))),
        *(item(f"{kind}-html-page-pinned", f"{kind}-page-pinned.{ext}", page, kind, signer=signer, sha=sha256(genuine[kind]))
          for kind, ext, signer in (("pe", "exe", GOOD_SIGNER), ("msi", "msi", GOOD_SIGNER), ("zip", "zip", ""))),
        item("wrong-signer", "wrong-signer.exe", sign(pe, work / "other.exe", signing.other), "pe", pinned=False),
        item("tampered", "tampered.msi", tamper(genuine["msi"], work / "tampered.msi"), "msi", pinned=False),
        item("unsigned", "unsigned.exe", pe, "pe", pinned=False),
        item("untrusted-root", "untrusted-root.exe", sign(pe, work / "untrusted.exe", signing.untrusted), "pe", pinned=False),
    ])
    for (where, filename), source in files.items():
        shutil.copyfile(source, (served if where == "served" else local) / filename)
    catalogue = dest / "installers.yml"
    catalogue.write_text("# Stand-in installer catalogue written by tests/installer_fixtures.py: signed with a throwaway CA\n"
                         f"# ({signing.ca_file}), served from {served} at bundle_fixture_base_url.\n"
                         + yaml.safe_dump({"prefect_installers": entries}, sort_keys=False, width=200))
    return BundleFixtures(catalogue=catalogue, served=served, local=local, ca_file=signing.ca_file, entries=entries)


if __name__ == "__main__":
    made = write_bundle_fixtures(Path(sys.argv[1]).resolve())
    print(f"catalogue {made.catalogue}\nserved {made.served}\nlocal {made.local}\nca_file {made.ca_file}")
