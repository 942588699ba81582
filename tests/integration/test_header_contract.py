"""The header contract of the front door, against a real server of the pinned Prefect started with the environment the
nssm_services role writes (roles_env.py).

IIS ARR forwards a request with X-Forwarded-Proto/Host/For added, the client's Host kept and the client's
Authorization header passed on as it came: `Negotiate <token>` from a person's browser after Windows
authentication, `Basic base64(DOMAIN\\account:password)` from a remote worker after IIS Basic authentication, or
none. With Prefect's own auth string off (the design) every one of them gets the documented answer, for the API,
the UI's settings and the websocket endpoints Prefect's clients use. With PREFECT_SERVER_API_AUTH_STRING set (what
the role refuses on proxy hosts) a person is locked out.

The second half runs real Prefect clients through arr_proxy.py demanding Basic, as the machine path does, and
records what they send on the HTTP requests and on the websocket upgrades.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import subprocess
import time
import uuid
import zlib

import pytest

from arr_proxy import ArrProxy
from roles_env import DATABASE, HOST_SPECIFIC, VAULT, server_plan
from servers import PINNED_PREFECT, REPO, clean_env, copy_flows, deploy_flow, http, prefect_bin, stop_groups, WORKER_STOP_SECONDS

PERSON = "Negotiate " + base64.b64encode(b"NTLMSSP\x00\x03\x00\x00\x00" + os.urandom(48)).decode()
WORKER_CREDENTIAL = "CORP\\svc_prefect_api:" + uuid.uuid4().hex
WORKER = "Basic " + base64.b64encode(WORKER_CREDENTIAL.encode()).decode()
CLIENTS = {"person-negotiate": PERSON, "worker-basic": WORKER, "none": None}
ARR = {"Host": "prefect.corp.local", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "prefect.corp.local",
       "X-Forwarded-For": "10.20.5.7"}
# Every websocket route of the 3.8.8 API (prefect/server/api: events.py, logs.py, task_runs.py, workers.py).
SOCKETS = ["/api/events/in", "/api/events/out", "/api/logs/out", "/api/task_runs/subscriptions/scheduled",
           "/api/work_pools/{pool}/workers/connect"]
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _headers(authorization: str | None) -> dict[str, str]:
    return dict(ARR, **({"Authorization": authorization} if authorization else {}))


# --------------------------------------------------------------------------- a minimal websocket client (RFC 6455)


class RawSocket:
    """Just enough of a websocket client to see the upgrade's status and Prefect's in-band auth answer."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.file = self.sock.makefile("rb")
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: prefect",
                 *(f"{k}: {v}" for k, v in headers.items())]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.status = int(self.file.readline().split()[1])
        reply = {}
        while (line := self.file.readline().decode().strip()):
            name, _, value = line.partition(":")
            reply[name.strip().lower()] = value.strip()
        if self.status == 101:
            expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            assert reply.get("sec-websocket-accept") == expected, reply

    def send_json(self, value) -> None:
        payload = json.dumps(value).encode()
        mask = os.urandom(4)
        size = bytes([0x80 | len(payload)]) if len(payload) < 126 else b"\xfe" + struct.pack(">H", len(payload))
        self.sock.sendall(b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self) -> tuple[str, object]:
        """("text", parsed JSON) or ("close", (code, reason))."""
        first, second = self.file.read(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack(">H", self.file.read(2))[0]
        elif size == 127:
            size = struct.unpack(">Q", self.file.read(8))[0]
        payload = self.file.read(size)
        if first & 0x0F == 0x8:
            return "close", (struct.unpack(">H", payload[:2])[0], payload[2:].decode())
        return "text", json.loads(payload)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _socket_answer(port: int, path: str, authorization: str | None, token: str | None):
    """Upgrade status, then what the server answers Prefect's in-band auth message."""
    ws = RawSocket(port, path, _headers(authorization))
    try:
        if ws.status != 101:
            return ws.status, None
        ws.send_json({"type": "auth", "token": token})
        return ws.status, ws.receive()
    finally:
        ws.close()


@pytest.fixture(scope="module")
def contract_pool(roles_server) -> str:
    name = f"itest-contract-{uuid.uuid4().hex[:6]}"
    status, body = roles_server.api("POST", "/work_pools/", {"name": name, "type": "process"})
    assert status == 201, body
    return name


# --------------------------------------------------------------------------- the design: Prefect's auth string off


def test_the_server_runs_what_the_role_writes(roles_plan, roles_server):
    """Only Windows paths, the port and the database differ from the role's plan; Prefect's auth is off and the UI's
    API URL is relative."""
    env = roles_plan["environment"]
    assert HOST_SPECIFIC <= env.keys()
    assert "PREFECT_SERVER_API_AUTH_STRING" not in env and env["PREFECT_UI_API_URL"] == "/api"
    running = roles_server.environment
    kept = HOST_SPECIFIC | DATABASE
    assert {k: v for k, v in running.items() if k not in kept} == {k: v for k, v in env.items() if k not in kept}
    assert roles_plan["parameters"].endswith(f"--port {roles_plan['environment']['PREFECT_SERVER_API_PORT']}")


def test_an_idle_keep_alive_connection_outlives_uvicorns_default(roles_server):
    """ARR reuses pooled back-end connections; uvicorn closes an idle one after 5 s unless told otherwise, and a reused
    closed connection is a 502.3 at IIS. With the environment the role writes, a connection idle for 7 s still answers."""
    import http.client
    assert int(roles_server.environment["PREFECT_SERVER_API_KEEPALIVE_TIMEOUT"]) > 300
    conn = http.client.HTTPConnection("127.0.0.1", roles_server.port, timeout=30)
    try:
        conn.request("GET", "/api/health", headers=ARR)
        assert conn.getresponse().read() == b"true"
        time.sleep(7)
        # The server has not closed its end: no EOF waiting on the socket (uvicorn would have sent FIN at 5 s).
        conn.sock.setblocking(False)
        try:
            eof = conn.sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            eof = False
        conn.sock.setblocking(True)
        assert not eof, "the server closed the idle keep-alive connection"
        conn.request("GET", "/api/health", headers=ARR)
        assert conn.getresponse().read() == b"true"
    finally:
        conn.close()


def test_no_other_origin_may_read_the_api(roles_server):
    """Prefect's CORS default is Access-Control-Allow-Origin: * (settings/models/server/api.py cors_allowed_origins): a
    page that a browser on the server host opens could read the loopback API, which asks for no credentials, CSRF token
    included. With the environment the role writes, the server names no other origin: a simple request from another
    origin gets no Access-Control-Allow-Origin (the browser withholds the answer) and its preflight is refused."""
    import urllib.error
    import urllib.request
    base = f"http://127.0.0.1:{roles_server.port}"
    allowed = roles_server.environment["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"]
    assert allowed and "*" not in allowed

    def ask(method, origin, **more):
        req = urllib.request.Request(f"{base}/api/csrf-token?client=cors-test", method=method,
                                     headers={"Origin": origin, **more})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.headers.get("Access-Control-Allow-Origin")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Access-Control-Allow-Origin")

    assert ask("GET", "https://elsewhere.example")[1] is None
    preflight = {"Access-Control-Request-Method": "PATCH", "Access-Control-Request-Headers": "prefect-csrf-token"}
    assert ask("OPTIONS", "https://elsewhere.example", **preflight) == (400, None)
    # The origin the role names is answered as before.
    assert ask("GET", allowed)[1] == allowed


@pytest.mark.parametrize("client", CLIENTS)
def test_api_and_ui_answer_every_client_shape(roles_server, contract_pool, client):
    base = f"http://127.0.0.1:{roles_server.port}"
    headers = _headers(CLIENTS[client])
    assert http("GET", f"{base}/api/health", headers=headers) == (200, True)
    assert http("GET", f"{base}/api/admin/version", headers=headers) == (200, PINNED_PREFECT)
    # CSRF protection is on (the role's plan): a state-changing call without the token is refused, with the token the
    # client fetched from this server it passes, as the UI and Prefect's client do it.
    status, _body = http("POST", f"{base}/api/work_pools/filter", body={}, headers=headers)
    assert status == 403, status
    status, token = http("GET", f"{base}/api/csrf-token?client=itest-{client}", headers=headers)
    assert status == 200, token
    status, pools = http("POST", f"{base}/api/work_pools/filter", body={},
                         headers=dict(headers, **{"Prefect-Csrf-Token": token["token"], "Prefect-Csrf-Client": f"itest-{client}"}))
    assert status == 200 and contract_pool in [p["name"] for p in pools]
    # The UI's first call: /ui-settings beside /api (not under it); Prefect's auth off, the relative API URL served as is.
    status, settings = http("GET", f"{base}/ui-settings", headers=headers)
    assert status == 200 and (settings["api_url"], settings["auth"]) == ("/api", None), settings
    status, page = http("GET", f"{base}/", headers=dict(headers, Accept="text/html"))
    assert status == 200 and "<html" in page


@pytest.mark.parametrize("path", SOCKETS)
@pytest.mark.parametrize("client", CLIENTS)
def test_websockets_accept_every_client_shape(roles_server, contract_pool, client, path):
    """101 on the upgrade, then auth_success for Prefect's in-band auth message, whatever the worker's token is."""
    token = WORKER_CREDENTIAL if client == "worker-basic" else None
    status, answer = _socket_answer(roles_server.port, path.format(pool=contract_pool), CLIENTS[client], token)
    assert (status, answer) == (101, ("text", {"type": "auth_success"}))


# --------------------------------------------------------------------------- the lock-out the role refuses


def test_a_server_auth_string_locks_people_out(roles_lockout_server, contract_pool):
    base = f"http://127.0.0.1:{roles_lockout_server.port}"
    person = _headers(PERSON)
    for path in ("/api/admin/version", "/api/ui-settings", "/api/csrf-token?client=itest-person"):
        assert http("GET", base + path, headers=person) == (401, {"exception_message": "Unauthorized"}), path
    # A state-changing call is refused before the auth check by CSRF protection (the role's plan turns it on), and the
    # person cannot get a token (401 above): locked out either way.
    status, body = http("POST", f"{base}/api/work_pools/filter", body={}, headers=person)
    assert status == 403 and "CSRF" in str(body), (status, body)
    # The UI loads, learns that Prefect wants its own password, and every API call of the person's browser gets 401.
    status, settings = http("GET", f"{base}/ui-settings", headers=person)
    assert status == 200 and settings["auth"] == "BASIC"
    # A websocket upgrade passes (no HTTP middleware there), the in-band auth without Prefect's token does not.
    status, answer = _socket_answer(roles_lockout_server.port, "/api/events/out", PERSON, None)
    assert status == 101 and answer == ("close", (1008, "Auth required but no token provided"))
    # Control: Prefect's own Basic string passes, so the 401s above are the auth check and nothing else.
    admin = _headers(roles_lockout_server.auth_headers["Authorization"])
    assert http("GET", f"{base}/api/admin/version", headers=admin) == (200, PINNED_PREFECT)


# --------------------------------------------------------------------------- what Prefect's clients send

EMITTER = """
import sys
from prefect import flow, get_run_logger
from prefect.events import emit_event

@flow(name="header-contract")
def contract(marker: str):
    get_run_logger().info("header contract %s", marker)
    emit_event(event="itest.header-contract", resource={"prefect.resource.id": "itest." + marker})

contract(sys.argv[1])
"""


@pytest.fixture
def basic_front(roles_server):
    """The machine path: only `Authorization: Basic` of the worker's Windows credential gets through."""
    proxy = ArrProxy(roles_server.port, basic={WORKER_CREDENTIAL}).start()
    yield proxy
    proxy.stop()


def _client_env(tmp_path, proxy: ArrProxy) -> dict[str, str]:
    return clean_env(PREFECT_API_URL=f"{proxy.url}/api", PREFECT_API_AUTH_STRING=WORKER_CREDENTIAL,
                     PREFECT_HOME=str(tmp_path / "client-home"), PREFECT_WORKER_QUERY_SECONDS="2",
                     PREFECT_WORKER_PREFETCH_SECONDS="2")


@pytest.mark.slow
def test_flow_run_clients_send_basic_on_http_and_on_the_events_socket(roles_server, basic_front, tmp_path):
    """A flow run's HTTP client and its events client (websocket /api/events/in) both send Authorization: Basic
    from PREFECT_API_AUTH_STRING (prefect/events/clients.py PrefectEventsClient.__init__): the event arrives."""
    marker = uuid.uuid4().hex[:10]
    script = tmp_path / "emit.py"
    script.write_text(EMITTER)
    run = subprocess.run([prefect_bin("python"), str(script), marker], env=_client_env(tmp_path, basic_front),
                         cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    seen = basic_front.reset()
    refused = [(s.method, s.path) for s in seen if s.status == 401]
    assert refused == [], refused
    sockets = [s for s in seen if s.upgrade]
    assert [s.path for s in sockets] and all(s.path == "/api/events/in" for s in sockets), [s.path for s in sockets]
    assert all(s.authorization == WORKER for s in seen), "a request without the worker's Basic header"
    assert all(s.status == 101 for s in sockets)
    assert sum(1 for s in seen if not s.upgrade) >= 3  # flow run creation, state changes, logs
    # The event and the log line reached the server through the proxy.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, page = roles_server.api("POST", "/events/filter", {"filter": {"event": {"name": ["itest.header-contract"]},
                                                                               "any_resource": {"id": [f"itest.{marker}"]}}})
        if status == 200 and page["events"]:
            break
        time.sleep(1)
    assert status == 200 and page["events"], page
    status, logs = roles_server.api("POST", "/logs/filter", {"logs": {"level": {"ge_": 0}}, "limit": 200, "sort": "TIMESTAMP_DESC"})
    assert any(marker in entry["message"] for entry in logs), "the flow's log line did not arrive"


@contextlib.contextmanager
def _online_workers(server, pool: str, envs: dict[str, dict], tmp_path, queues: bool = False):
    """One process worker of `pool` per entry of `envs` (worker name: environment, its API URL a proxy), started together,
    each polling only the queue of its own name when `queues`; all ONLINE when the block starts, every worker's process
    group stopped at its end."""
    procs, logs = {}, {}
    try:
        for name, env in envs.items():
            logs[name] = tmp_path / f"{name}.log"
            with open(logs[name], "wb") as out:
                procs[name] = subprocess.Popen(
                    [prefect_bin(), "worker", "start", "--pool", pool, "--type", "process", "--name", name,
                     *(["--work-queue", name] if queues else [])],
                    env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True)
        deadline, waiting = time.monotonic() + 60, set(envs)
        while time.monotonic() < deadline and waiting:
            for name in waiting:
                assert procs[name].poll() is None, logs[name].read_text()[-3000:]
            status, workers = server.api("POST", f"/work_pools/{pool}/workers/filter", {})
            waiting -= {w["name"] for w in workers if w["status"] == "ONLINE"} if status == 200 else set()
            time.sleep(0.5)
        assert not waiting, "\n".join(logs[name].read_text()[-3000:] for name in waiting)
        yield logs
    finally:
        stop_groups(procs.values(), WORKER_STOP_SECONDS)


def _worker_comes_online(server, tag: str, env: dict, tmp_path) -> None:
    """A process worker of a new pool started with `env` (its API URL a proxy), left running until ONLINE and 5 s more
    (the cancellation observer subscribes after the first sync), then stopped."""
    pool = f"itest-{tag}-{uuid.uuid4().hex[:6]}"
    status, body = server.api("POST", "/work_pools/", {"name": pool, "type": "process"})
    assert status == 201, body
    with _online_workers(server, pool, {f"{tag}-worker-{uuid.uuid4().hex[:6]}": env}, tmp_path):
        time.sleep(5)


@pytest.mark.slow
def test_a_worker_behind_basic_runs_on_rest_while_its_channel_and_subscriber_upgrades_carry_no_header(
        roles_server, basic_front, tmp_path):
    """The pinned Prefect's worker channel (/api/work_pools/{pool}/workers/connect, workers/_worker_channel/_transport.py)
    opens its websocket without an Authorization header, and so does an event subscriber (/api/events/out,
    events/clients.py PrefectEventSubscriber) when one is opened; behind IIS Basic they get 401 and the worker falls
    back to REST heartbeats and polling. The worker must still be ONLINE. (Measured: a 3.8.8 worker opened a subscriber
    within 5 s of its first sync; an idle 3.9.1 worker opens none.) If this test fails on the header assertions, a
    newer Prefect sends it: update docs/architecture.md ("What Prefect's clients send")."""
    _worker_comes_online(roles_server, "basic", _client_env(tmp_path, basic_front), tmp_path)
    seen = basic_front.reset()
    http_requests = [s for s in seen if not s.upgrade]
    assert http_requests and all(s.authorization == WORKER and s.status != 401 for s in http_requests)
    channel = [s for s in seen if s.upgrade and s.path.endswith("/workers/connect")]
    subscriber = [s for s in seen if s.upgrade and s.path == "/api/events/out"]
    assert channel, [(s.path, s.upgrade) for s in seen]
    assert all(s.authorization == "" and s.status == 401 for s in channel + subscriber), \
        [(s.path, bool(s.authorization), s.status) for s in channel + subscriber]


@pytest.fixture(scope="module")
def wrk01_plan(tmp_path_factory) -> dict:
    """The worker service nssm_services plans for the example inventory's remote worker prefect-wrk01 (asked from
    Ansible), with the example's CA placeholder replaced by a real PEM file (the role refuses a worker on https://
    without one)."""
    ca = str(REPO / "tests" / "fixtures" / "roles" / "enclave-ca.pem")
    return server_plan(tmp_path_factory.mktemp("wrk01-plan"), host="prefect-wrk01.corp.local", kind="worker",
                       extra_vars={"prefect_api_ca_cert": ca})


def _remote_worker_env(plan: dict, proxy: ArrProxy, home, custom_headers: bool = True) -> dict[str, str]:
    """A worker's environment with the machine path's credentials as the role writes them (PREFECT_API_AUTH_STRING and,
    unless told otherwise, PREFECT_CLIENT_CUSTOM_HEADERS), its API URL the proxy."""
    names = ("PREFECT_API_AUTH_STRING", "PREFECT_CLIENT_CUSTOM_HEADERS") if custom_headers else ("PREFECT_API_AUTH_STRING",)
    return clean_env(PREFECT_API_URL=f"{proxy.url}/api", PREFECT_HOME=str(home), PREFECT_WORKER_QUERY_SECONDS="2",
                     PREFECT_WORKER_PREFETCH_SECONDS="2", **{k: plan["environment"][k] for k in names})


@pytest.mark.slow
def test_a_remote_worker_as_the_role_writes_it_authenticates_its_websocket_upgrades(roles_server, wrk01_plan, tmp_path):
    """The environment the nssm_services role writes for a remote worker (the example inventory's prefect-wrk01, its
    plan asked from Ansible) holds PREFECT_CLIENT_CUSTOM_HEADERS with the machine path's Basic header, which Prefect adds
    to every websocket upgrade (prefect/_internal/websockets.py): behind a front demanding that header, the worker
    channel's upgrade carries it and gets 101, and no request of the worker is refused."""
    credential = VAULT["vault_prefect_worker_api_auth_string"]
    assert wrk01_plan["environment"]["PREFECT_API_AUTH_STRING"] == credential
    header = "Basic " + base64.b64encode(credential.encode()).decode()
    assert json.loads(wrk01_plan["environment"]["PREFECT_CLIENT_CUSTOM_HEADERS"]) == {"Authorization": header}
    proxy = ArrProxy(roles_server.port, basic={credential}).start()
    try:
        _worker_comes_online(roles_server, "wrk01", _remote_worker_env(wrk01_plan, proxy, tmp_path / "client-home"),
                             tmp_path)
        seen = proxy.reset()
    finally:
        proxy.stop()
    assert [s for s in seen if s.status == 401] == [], [(s.path, s.upgrade, s.status) for s in seen if s.status == 401]
    channel = [s for s in seen if s.upgrade and s.path.endswith("/workers/connect")]
    assert channel and all(s.authorization == header and s.status == 101 for s in channel), \
        [(s.path, bool(s.authorization), s.status) for s in channel]
    assert all(s.authorization == header for s in seen)


def _server_messages(raw: bytes) -> list:
    """The text messages a websocket server sent, parsed as JSON, from the bytes relayed after the upgrade request (the
    101 head, then unmasked frames; permessage-deflate undone when the server accepted it, RFC 7692)."""
    head, _, rest = bytes(raw).partition(b"\r\n\r\n")
    extensions = [line.split(b":", 1)[1].decode().strip() for line in head.split(b"\r\n")[1:]
                  if line.lower().startswith(b"sec-websocket-extensions:")]
    deflate = any(e.startswith("permessage-deflate") for e in extensions)
    takeover = not any("server_no_context_takeover" in e for e in extensions)
    inflater, messages, parts, compressed, at = zlib.decompressobj(-15), [], [], False, 0
    while at + 2 <= len(rest):
        first, second = rest[at], rest[at + 1]
        size, at = second & 0x7F, at + 2
        if size == 126:
            size, at = struct.unpack(">H", rest[at:at + 2])[0], at + 2
        elif size == 127:
            size, at = struct.unpack(">Q", rest[at:at + 8])[0], at + 8
        payload, at = rest[at:at + size], at + size
        if len(payload) < size:
            break  # the connection ended inside a frame
        opcode = first & 0x0F
        if opcode in (0x1, 0x2):
            parts, compressed = [payload], bool(first & 0x40)
        elif opcode == 0x0:
            parts.append(payload)
        else:
            continue  # ping, pong, close
        if first & 0x80:  # FIN: the message is complete
            data = b"".join(parts)
            if compressed and deflate:
                if not takeover:
                    inflater = zlib.decompressobj(-15)
                data = inflater.decompress(data + b"\x00\x00\xff\xff")
            if opcode == 0x1:
                messages.append(json.loads(data))
    return messages


SLEEPY_SECONDS = 600  # far longer than the test: the run ends only when it is cancelled


@pytest.mark.slow
def test_a_cancellation_reaches_a_running_flow_of_a_remote_worker_through_the_push_channel(
        roles_server, wrk01_plan, tmp_path):
    """Cancelling a running flow run of a remote worker (the role's environment for prefect-wrk01, behind a front that
    demands its Basic header) kills the flow's process, and the cancellation travels through the push channel: the
    websocket /api/events/out, whose upgrade carries the header only thanks to PREFECT_CLIENT_CUSTOM_HEADERS.

    Who observes a cancellation in the pinned Prefect (3.9.1, site-packages/prefect/):
    - workers/process.py:165, ProcessWorker.run: each flow run runs in a FlowRunExecutorContext, in the worker's
      process; runner/_flow_run_executor.py:315 enters a FlowRunCancellingObserver with the default polling interval,
      10 s (_internal/observers.py:211; no setting reaches it), whose callback kills the run's process
      (runner/_cancellation_manager.py cancel_by_id) and sets CANCELLED.
    - _internal/observers.py:362: the observer hands delivery to ObservationDelivery with an events subscriber
      (events/clients.py:693 PrefectEventSubscriber, websocket /api/events/out, filter prefect.flow-run.Cancelling).
      _internal/_observation_delivery.py:136 start(): when the subscriber connects, STREAMING, which owns only the
      consumer (line 197), no poller; only when it fails, POLLING (line 208): critical_service_loop every 10 s +-30 %
      of _check_for_cancelled_flow_runs (observers.py:308), i.e. POST /api/flow_runs/filter, while the websocket is
      retried with backoff.
    - The worker's own observer (workers/base.py:1432) is off by default (PREFECT_WORKER_ENABLE_CANCELLATION) and
      cancels only runs that never started (line 1896). The flow run's process opens one more subscriber,
      FlowRunSuspendingObserver (_flow_run_suspension.py:106, /api/events/out), which polls the same route on failure.
    Timing cannot tell the two apart (polling may come 0 to 13 s after the cancel; with the header removed, a run was
    once cancelled by polling in 4.8 s), the wire can: the proxy keeps what the server sent down each /api/events/out
    socket, where the Cancelling event of this run must be, and no POST /api/flow_runs/filter may pass it, nor may
    the worker log that polling found the run.

    Negative control, beside it on the same pool (its own queue and proxy): the same worker without
    PREFECT_CLIENT_CUSTOM_HEADERS. Its subscribers' upgrades get 401, and its run is cancelled too, by polling. The
    cancellation is set as the UI does it: state CANCELLING through POST /api/flow_runs/{id}/set_state. About 25 to 32 s
    on two cores (the flow runs' start is most of it), with the roles' server and the plan shared with the tests above."""
    credential = VAULT["vault_prefect_worker_api_auth_string"]
    header = "Basic " + base64.b64encode(credential.encode()).decode()
    pool = f"itest-cancel-{uuid.uuid4().hex[:6]}"
    status, body = roles_server.api("POST", "/work_pools/", {"name": pool, "type": "process"})
    assert status == 201, body
    push, poll = f"push-{uuid.uuid4().hex[:6]}", f"poll-{uuid.uuid4().hex[:6]}"
    for queue in (push, poll):
        status, body = roles_server.api("POST", f"/work_pools/{pool}/queues", {"name": queue})
        assert status == 201, body
    flows = copy_flows(tmp_path / "flows")
    deployment = deploy_flow(roles_server, flows, "sleepy.py:sleepy", "itest-cancel", pool, tmp_path / "deploy-home")
    proxies = {push: ArrProxy(roles_server.port, basic={credential}, record_upgraded=True).start(),
               poll: ArrProxy(roles_server.port, basic={credential}).start()}
    envs = {push: _remote_worker_env(wrk01_plan, proxies[push], tmp_path / "push-home"),
            poll: _remote_worker_env(wrk01_plan, proxies[poll], tmp_path / "poll-home", custom_headers=False)}
    runs, pids, cancelled_after = {}, {}, {}
    try:
        with _online_workers(roles_server, pool, envs, tmp_path, queues=True) as logs:
            for queue in (push, poll):
                status, run = roles_server.api("POST", f"/deployments/{deployment}/create_flow_run",
                                               {"parameters": {"seconds": SLEEPY_SECONDS}, "work_queue_name": queue})
                assert status == 201, run
                runs[queue] = run["id"]
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and len(pids) < len(runs):
                for queue, run_id in runs.items():
                    _status, run = roles_server.api("GET", f"/flow_runs/{run_id}")
                    assert run["state"]["type"] in ("SCHEDULED", "PENDING", "RUNNING"), (queue, run["state"])
                    if run["state"]["type"] == "RUNNING" and run["infrastructure_pid"]:
                        pids[queue] = int(run["infrastructure_pid"].rsplit(":", 1)[-1])
                time.sleep(0.5)
            assert len(pids) == len(runs), {q: logs[q].read_text()[-3000:] for q in runs if q not in pids}
            assert all(os.path.exists(f"/proc/{pid}") for pid in pids.values())
            started = time.monotonic()
            for run_id in runs.values():
                status, answer = roles_server.api("POST", f"/flow_runs/{run_id}/set_state", {
                    "state": {"type": "CANCELLING", "name": "Cancelling", "message": "itest: cancelled by a person"}})
                assert status == 201 and answer["status"] == "ACCEPT", answer
            while time.monotonic() < started + 40 and len(cancelled_after) < len(runs):
                for queue, run_id in runs.items():
                    _status, run = roles_server.api("GET", f"/flow_runs/{run_id}")
                    if queue not in cancelled_after and run["state"]["type"] == "CANCELLED":
                        cancelled_after[queue] = time.monotonic() - started
                time.sleep(0.25)
            assert cancelled_after.keys() == runs.keys(), \
                ({q: roles_server.api("GET", f"/flow_runs/{r}")[1]["state"] for q, r in runs.items()},
                 {q: logs[q].read_text()[-3000:] for q in runs})
            # The flow's process is gone (killed, and reaped by the worker).
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in pids.values()):
                time.sleep(0.2)
            assert not [pid for pid in pids.values() if os.path.exists(f"/proc/{pid}")], pids
        seen = {queue: proxy.reset() for queue, proxy in proxies.items()}
        # Logged by the cancellation observer's polling only (_internal/observers.py _check_for_cancelled_flow_runs).
        found = {queue: "flow runs awaiting cancellation" in logs[queue].read_text() for queue in runs}
    finally:
        for proxy in proxies.values():
            proxy.stop()
        for pid in pids.values():  # a flow's process that outlived the cancellation (its own process group)
            if os.path.exists(f"/proc/{pid}"):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, 9)

    # The role's environment: nothing refused, every request and upgrade with the header, the subscriber streamed.
    refused = [(s.method, s.path) for s in seen[push] if s.status == 401]
    assert refused == [] and all(s.authorization == header for s in seen[push]), refused
    subscribers = [s for s in seen[push] if s.upgrade and s.path == "/api/events/out"]
    assert subscribers and all(s.status == 101 for s in subscribers), [(s.path, s.status) for s in subscribers]
    delivered = [m["event"] for s in subscribers for m in _server_messages(s.downstream) if m.get("type") == "event"]
    assert any(e["event"] == "prefect.flow-run.Cancelling" and e["resource"]["prefect.resource.id"] ==
               f"prefect.flow-run.{runs[push]}" for e in delivered), [e["event"] for e in delivered]
    assert not [s for s in seen[push] if s.method == "POST" and s.path == "/api/flow_runs/filter"], \
        "an observer polled: its events stream was not up"
    assert not found[push], "the cancellation observer found the run by polling"

    # Negative control, without PREFECT_CLIENT_CUSTOM_HEADERS: the subscriber is refused, polling delivers.
    subscribers = [s for s in seen[poll] if s.upgrade and s.path == "/api/events/out"]
    assert subscribers and all(s.status == 401 and not s.authorization for s in subscribers), \
        [(s.path, s.status, bool(s.authorization)) for s in subscribers]
    assert [s for s in seen[poll] if s.method == "POST" and s.path == "/api/flow_runs/filter"] and found[poll]
