"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`), no client library.

Chromium reads commands on its file descriptor 3 and writes answers and events on 4, each a JSON text ended by a NUL
byte (the transport Puppeteer's `pipe: true` uses). A page is opened in a fresh target with its own session; scripts
run in the page's own context (`Runtime.evaluate`), so whatever they do carries the page's origin.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import select
import subprocess
import time
from pathlib import Path


def spki_hash(cert_pem: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo)): what --ignore-certificate-errors-spki-list takes to trust one key only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _above_nine(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class Browser:
    def __init__(self, chromium: str, profile: Path, env: dict[str, str], extra_args: list[str] = ()) -> None:
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()
        # Above 9, so that handing them over as 3 and 4 cannot close or overwrite one of them.
        to_child, from_child = (_above_nine(fd) for fd in (to_child, from_child))
        argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-proxy-server",
                "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
                "--remote-debugging-pipe", *extra_args, "about:blank"]
        # The child gets the pipes as its descriptors 3 (commands) and 4 (answers), nothing else of ours.
        shell = f'exec "$0" "$@" 3<&{to_child} 4>&{from_child} {to_child}<&- {from_child}>&-'
        self.proc = subprocess.Popen(["bash", "-c", shell, *argv], pass_fds=(to_child, from_child), env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next = 0

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stderr.close()
        for fd in (self._in, self._out):
            os.close(fd)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited: {self.proc.stderr.read()[-2000:]!r}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        """One command's result; events that arrive meanwhile are dropped (the tests poll the page instead)."""
        self._next += 1
        command = {"id": self._next, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self._out, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline)
            if message.get("id") == self._next:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def open(self, url: str) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session, target)
        page.call("Page.navigate", {"url": url})
        return page


class Page:
    def __init__(self, browser: Browser, session: str, target: str) -> None:
        self.browser, self.session, self.target = browser, session, target

    def close(self) -> None:
        """Closes the tab (a UI left open keeps polling its server)."""
        self.browser.send("Target.closeTarget", {"targetId": self.target})

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def call(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        return self.browser.send(method, params, self.session, timeout)

    def evaluate(self, expression: str, timeout: float = 60):
        """The expression's value (awaited when it is a promise), run in the page as its own script."""
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        """Poll until the expression is truthy in the page; its last value either way."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression, timeout=max(1.0, deadline - time.monotonic()))
            except RuntimeError:
                value = None  # the page is navigating: its context is gone for a moment
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.25)
