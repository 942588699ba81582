"""A recording reverse proxy on 127.0.0.1 that forwards like IIS ARR, websockets included.

Each request's head is read, recorded (method, path, headers, whether it asks for a websocket upgrade) and sent to
the upstream with X-Forwarded-Proto/Host/For added and the client's Host and Authorization headers kept, as ARR
does with preserveHostHeader. After the head, bytes are relayed both ways unchanged until either side closes, so
an upgraded websocket keeps working through it. Plain requests go upstream with `Connection: close`, one request
per client connection (the client reconnects; nothing is buffered or rewritten).

`basic`: a set of "user:password" strings; a request without one of them as `Authorization: Basic` gets 401 with
`WWW-Authenticate: Basic`, like an IIS site with only Basic authentication on, the websocket upgrade included.

`rules` (none by default): the inbound rules of a rendered web.config (url_rewrite.RewriteRules). Each request goes
through them first, as URL Rewrite runs in BeginRequest before authentication: a CustomResponse, Redirect or
AbortRequest is answered here, a Rewrite goes on (authentication, then the upstream); `Seen.rule` names the rule. A
web.config the model cannot evaluate is answered with 500 and the reason. `tls`: a server-side ssl.SSLContext to
listen on HTTPS (`url` then starts with https).

`record_upgraded` (off by default): keep what the upstream sends on an upgraded connection (its 101 head and every
frame after it, as relayed) in `Seen.downstream`, so that a test can read what a websocket delivered.

`close_with_upstream` (off by default): when the upstream closes a connection, close the client's too instead of only
half-closing it. A TLS connection cannot be half-closed, so without it a websocket client behind `tls` waits out its
close timeout (10 s in Prefect's) after every close handshake, for the end of a connection the upstream has ended.

`upstreams` (none by default): several upstream ports instead of `upstream_port`, like a load balancer in front of API
replicas: each client connection goes to the next in turn (round robin); one that refuses the connection is skipped for
the next, and a client gets 502 only when all refuse. `Seen.upstream` names the port that served the request.
`set_upstreams()` changes the list while the proxy runs (new connections only).
"""
from __future__ import annotations

import asyncio
import base64
import ssl
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from url_rewrite import RewriteRules

MAX_HEAD = 64 * 1024


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    upgrade: bool = False
    rule: str = ""  # the web.config rule that applied (only with ArrProxy(rules=...))
    upstream: int = 0  # the upstream port that served the request (only with ArrProxy(upstreams=...))
    # The upstream's bytes on an upgraded connection, as relayed (only with ArrProxy(record_upgraded=True)).
    downstream: bytearray = field(default_factory=bytearray)

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")


@dataclass
class ArrProxy:
    upstream_port: int
    basic: set[str] | None = None
    forwarded_proto: str = "https"
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    record_upgraded: bool = False
    rules: "RewriteRules | None" = None
    tls: ssl.SSLContext | None = None
    close_with_upstream: bool = False
    upstreams: list[int] | None = None

    def __post_init__(self) -> None:
        self._turn = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="arr-proxy", daemon=True)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> "ArrProxy":
        self._thread.start()
        serving = asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.tls)
        future = asyncio.run_coroutine_threadsafe(serving, self._loop)
        self._server = future.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close():
            self._server.close()
            # Open websockets and long polls end with the proxy.
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set_upstreams(self, ports: list[int]) -> None:
        with self._lock:
            self.upstreams = list(ports)

    async def _open_upstreams(self, record: Seen):
        """Round robin over `upstreams`, skipping one that refuses; raises OSError when every one refuses."""
        with self._lock:
            ports = list(self.upstreams)
            start, self._turn = self._turn, self._turn + 1
        error: OSError = OSError("no upstream")
        for i in range(len(ports)):
            port = ports[(start + i) % len(ports)]
            try:
                opened = await asyncio.open_connection("127.0.0.1", port)
            except OSError as exc:
                error = exc
                continue
            record.upstream = port
            return opened
        raise error

    def reset(self) -> list[Seen]:
        with self._lock:
            seen, self.seen = self.seen, []
        return seen

    def _accepts(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            return base64.b64decode(token.strip(), validate=True).decode("utf-8") in self.basic
        except ValueError:
            return False

    async def _rewrite(self, record: Seen, writer: asyncio.StreamWriter) -> bool:
        """Apply the web.config's rules; True when the request goes on to the upstream."""
        from url_rewrite import NotModelled
        try:
            outcome = self.rules.apply(record.path, record.headers, https=self.tls is not None)
        except NotModelled as exc:
            status, reason, extra, body = 500, "Internal Server Error", b"", str(exc).encode()
        else:
            record.rule = outcome.rule
            if outcome.action == "Rewrite":
                return True
            if outcome.action == "AbortRequest":
                record.status = -1
                writer.transport.abort()
                return False
            if not outcome.action:  # no rule applied: IIS would serve the URL from disk, where this site has nothing
                status, reason, extra, body = 404, "Not Found", b"", b""
            else:
                status, reason, body = outcome.status, outcome.reason, outcome.body.encode()
                extra = b"Location: %s\r\n" % outcome.location.encode() if outcome.location else b""
                reason = reason or "Redirect"
        record.status = status
        writer.write(b"HTTP/1.1 %d %s\r\n%sContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close"
                     b"\r\n\r\n%s" % (status, reason.encode(), extra, len(body), body))
        await writer.drain()
        writer.close()
        return False

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, path, version = lines[0].split(" ", 2)
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if ":" in line]
        lowered = {k.lower(): v for k, v in headers}
        upgrade = lowered.get("upgrade", "").lower() == "websocket"
        record = Seen(method, path, lowered, upgrade=upgrade)
        with self._lock:
            self.seen.append(record)
        if self.rules is not None and not await self._rewrite(record, writer):
            return
        if self.basic is not None and not self._accepts(lowered.get("authorization", "")):
            record.status = 401
            body = b"401 Unauthorized: Basic authentication required"
            writer.write(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"prefect\"\r\nContent-Type: text/plain"
                         b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            writer.close()
            return
        client_ip = writer.get_extra_info("peername")[0]
        keep = [(k, v) for k, v in headers if k.lower() not in ("connection", "keep-alive", "x-forwarded-for",
                                                                 "x-forwarded-proto", "x-forwarded-host")]
        keep += [("Connection", "Upgrade" if upgrade else "close"), ("X-Forwarded-Proto", self.forwarded_proto),
                 ("X-Forwarded-Host", lowered.get("host", "")), ("X-Forwarded-For", client_ip)]
        try:
            if self.upstreams is not None:
                up_reader, up_writer = await self._open_upstreams(record)
            else:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        up_writer.write((f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in keep) + "\r\n")
                        .encode("latin-1"))
        await up_writer.drain()

        async def relay(src: asyncio.StreamReader, dst: asyncio.StreamWriter, first: bool) -> None:
            try:
                while True:
                    chunk = await src.read(65536)
                    if not chunk:
                        break
                    if first and not record.status:
                        record.status = int(chunk.split(b" ", 2)[1])
                    if first and record.upgrade and self.record_upgraded:
                        record.downstream.extend(chunk)
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, ValueError, IndexError):
                pass
            finally:
                if first and self.close_with_upstream:
                    dst.close()
                elif dst.can_write_eof():
                    try:
                        dst.write_eof()
                    except (OSError, RuntimeError):
                        pass

        await asyncio.gather(relay(reader, up_writer, False), relay(up_reader, writer, True))
        for w in (up_writer, writer):
            w.close()
