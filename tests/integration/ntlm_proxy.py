"""A small authenticating reverse proxy on 127.0.0.1, standing in for IIS with Windows authentication.

It forwards any method, path and body to an upstream HTTP server (a Prefect API here) and relays the answer.
With `auth="ntlm"` it behaves like IIS with Windows authentication: requests without credentials get
401 `WWW-Authenticate: NTLM` / `Negotiate`, the NTLM handshake runs on pyspnego's acceptor side, and an
authenticated TCP connection stays authenticated (NTLM authenticates connections, so HTTP/1.1 keep-alive
is required). Users come from a credential file in the `DOMAIN:USER:PASSWORD` format that pyspnego reads
through the NTLM_USER_FILE environment variable (process wide: one NTLM user file per test process). With `allowed`
(DOMAIN\\user names) it authorizes as IIS URL Authorization does: a user who signed in but is not allowed gets 401
(IIS logs it as 401.2) and nothing reaches the upstream.

With `tls` (an ssl.SSLContext) it listens on HTTPS, which the TLS tests use with a self-signed certificate.
It counts what it forwards, which the benchmark uses to count HTTP requests per work pool, and can answer
the next requests with an error status (`fail_next`) to test retries.
"""
from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import os
import ssl
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "content-length", "host",
}
SCHEMES = {"ntlm": "NTLM", "negotiate": "Negotiate"}


@dataclass
class Forwarded:
    method: str
    path: str
    status: int
    user: str | None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def setup(self) -> None:
        super().setup()
        self.auth_ctx = None
        self.auth_scheme: str | None = None
        self.user: str | None = None

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        return  # keep test output clean; Forwarded records are the log

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _challenge(self, message: str, token: str | None = None) -> None:
        if token is not None and self.auth_scheme:
            offers = [("WWW-Authenticate", f"{self.auth_scheme} {token}")]
        else:
            offers = [("WWW-Authenticate", "NTLM"), ("WWW-Authenticate", "Negotiate")]
        self.server.proxy.record(self.command, self.path, 401, None)
        self._reply(401, message.encode(), [*offers, ("Content-Type", "text/plain")])

    def _authenticate(self) -> bool:
        """Advance the handshake on this connection; True once the connection is authenticated."""
        import spnego
        from spnego.exceptions import SpnegoError

        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in SCHEMES or not token:
            self.auth_ctx = None
            self._challenge("401 Unauthorized: Windows authentication (NTLM or Negotiate) is required")
            return False
        if self.auth_ctx is None or self.auth_scheme != SCHEMES[scheme.lower()]:
            self.auth_scheme = SCHEMES[scheme.lower()]
            self.auth_ctx = spnego.server(protocol=scheme.lower(), channel_bindings=self.server.proxy.channel_bindings)
        try:
            out = self.auth_ctx.step(base64.b64decode(token.strip()))
        except (SpnegoError, ValueError) as exc:
            self.auth_ctx = None
            self._challenge(f"401 Unauthorized: Windows authentication failed: {exc}")
            return False
        if not self.auth_ctx.complete:
            self._challenge("401 Unauthorized: continue the handshake", base64.b64encode(out or b"").decode())
            return False
        self.user = str(self.auth_ctx.client_principal or "")
        self.auth_ctx = None
        return True

    def _forward(self) -> None:
        body = self._body()
        proxy = self.server.proxy
        if proxy.auth and self.user is None and not self._authenticate():
            return
        if proxy.allowed is not None and (self.user or "").lower() not in {a.lower() for a in proxy.allowed}:
            proxy.record(self.command, self.path, 401, self.user)
            self._reply(401, b"401 - Unauthorized: Access is denied due to server configuration.",
                        [("Content-Type", "text/plain")])
            return
        injected = proxy.take_injected_failure()
        if injected:
            proxy.record(self.command, self.path, injected, self.user)
            self._reply(injected, f"{injected} injected by the test proxy".encode(), [("Content-Type", "text/plain")])
            return
        upstream = proxy.upstream
        conn_cls = http.client.HTTPSConnection if upstream.scheme == "https" else http.client.HTTPConnection
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if proxy.auth:
            headers.pop("Authorization", None)
        headers["Host"] = upstream.netloc
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        try:
            conn = conn_cls(upstream.hostname, upstream.port, timeout=120)
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            relay = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            status = resp.status
            conn.close()
        except OSError as exc:
            status, data, relay = 502, f"502 Bad Gateway: {exc}".encode(), [("Content-Type", "text/plain")]
        proxy.record(self.command, self.path, status, self.user)
        self._reply(status, data, relay)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: "AuthProxy"


class AuthProxy:
    """Reverse proxy from http(s)://127.0.0.1:<port> to `upstream` (e.g. http://127.0.0.1:4200).

    auth:  None (pass through) or "ntlm" (NTLM / Negotiate-wrapped NTLM, users from `users`).
    users: [(domain, user, password)] written to the NTLM_USER_FILE credential store in `state_dir`.
    tls:   a server-side ssl.SSLContext to listen on HTTPS.
    allowed: DOMAIN\\user names let through after signing in (IIS URL Authorization); None lets every one through.
    epa_cert: with tls, the listening certificate (PEM): the handshake then requires the client's channel bindings
              for it (RFC 5929 tls-server-end-point), as IIS Extended Protection with tokenChecking Require does;
              pyspnego's acceptor refuses a token without them or with others.
    """

    def __init__(self, upstream: str, *, auth: str | None = None, users=(), state_dir: Path | None = None,
                 tls: ssl.SSLContext | None = None, allowed=None, epa_cert: Path | None = None) -> None:
        if auth not in (None, "ntlm"):
            raise ValueError(f"unsupported auth {auth!r}")
        self.upstream = urllib.parse.urlsplit(upstream)
        self.auth = auth
        self.tls = tls
        self.channel_bindings = None
        if epa_cert is not None:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from spnego.channel_bindings import GssChannelBindings
            cert = x509.load_pem_x509_certificate(Path(epa_cert).read_bytes())
            der = cert.public_bytes(serialization.Encoding.DER)
            algorithm = cert.signature_hash_algorithm
            digest = hashes.Hash(hashes.SHA256() if algorithm is None or algorithm.name in ("md5", "sha1") else algorithm)
            digest.update(der)
            self.channel_bindings = GssChannelBindings(application_data=b"tls-server-end-point:" + digest.finalize())
        self.users = list(users)
        # DOMAIN\\user names let through after signing in; None: every account that signs in (no authorization).
        self.allowed = None if allowed is None else list(allowed)
        self.forwarded: list[Forwarded] = []
        self._lock = threading.Lock()
        self._failures: list[int] = []
        if auth:
            if state_dir is None or not users:
                raise ValueError("NTLM needs users and a state_dir for the credential file")
            store = Path(state_dir) / "ntlm-users"
            store.write_text("".join(f"{d}:{u}:{p}\n" for d, u, p in users))
            store.chmod(0o600)
            os.environ["NTLM_USER_FILE"] = str(store)
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.proxy = self
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="auth-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def record(self, method: str, path: str, status: int, user: str | None) -> None:
        with self._lock:
            self.forwarded.append(Forwarded(method, path, status, user))

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next `count` requests with `status` instead of forwarding them (a restarting backend)."""
        with self._lock:
            self._failures = [status] * count

    def take_injected_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop() if self._failures else None

    def reset(self) -> list[Forwarded]:
        with self._lock:
            seen, self.forwarded = self.forwarded, []
        return seen

    def start(self) -> "AuthProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)


def self_signed_cert(directory: Path, common_name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost. Returns (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
