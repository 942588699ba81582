"""Controller-side Windows authentication (auth: ntlm and auth: negotiate) against an IIS-like endpoint.

The endpoint is served on 127.0.0.1 and runs the acceptor side of the handshake with pyspnego, users
from an NTLM credential file (no domain controller needed); Negotiate falls back to NTLM inside SPNEGO
as it does against IIS when Kerberos is not available.
"""
from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fake_prefect import FakePrefect

from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import PrefectApiError, PrefectClient
from ansible_collections.enclave.prefect.plugins.module_utils.prefect_transport import build_requests_transport

spnego = pytest.importorskip("spnego")
pytestmark = pytest.mark.unit

USER, PASSWORD = "ENCLAVE\\svc-ansible", "W1nd0ws-Auth!"


class WindowsAuthHandler(BaseHTTPRequestHandler):
    """Demands NTLM or Negotiate per connection (HTTP/1.1 keep-alive), then serves the fake API."""

    protocol_version = "HTTP/1.1"
    context = None
    user = None

    def _reply(self, status, body, headers=()):
        payload = body.encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else None
        if self.user is None:
            scheme, _sep, token = self.headers.get("Authorization", "").partition(" ")
            if scheme not in ("NTLM", "Negotiate") or not token:
                self.context = None
                return self._reply(401, "Access is denied.", [("WWW-Authenticate", "Negotiate"),
                                                              ("WWW-Authenticate", "NTLM")])
            if self.context is None:
                self.context = spnego.server(protocol=scheme.lower())
            try:
                out = self.context.step(base64.b64decode(token))
            except Exception as exc:  # pylint: disable=broad-except
                self.context = None
                return self._reply(401, "logon failure: %s" % exc, [("WWW-Authenticate", scheme)])
            if not self.context.complete:
                return self._reply(401, "continue", [("WWW-Authenticate", "%s %s" % (
                    scheme, base64.b64encode(out or b"").decode()))])
            self.user = str(self.context.client_principal)
            self.server.users.append(self.user)
        response = self.server.fake.handle(self.command, "http://fake" + self.path, dict(self.headers), body)
        return self._reply(response.status, response.text, list(response.headers.items()))

    do_GET = do_POST = do_PATCH = do_DELETE = _serve

    def log_message(self, *args):
        pass


@pytest.fixture
def iis(tmp_path, monkeypatch):
    store = tmp_path / "ntlm-users"
    domain, user = USER.split("\\")
    store.write_text("%s:%s:%s\n" % (domain, user, PASSWORD))
    monkeypatch.setenv("NTLM_USER_FILE", str(store))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), WindowsAuthHandler)
    httpd.fake, httpd.users = FakePrefect(), []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd, "http://127.0.0.1:%d/api" % httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _client(api_url, auth, password=PASSWORD):
    params = dict(auth=auth, username=USER, password=password, validate_certs=True, request_timeout=10)
    return PrefectClient(build_requests_transport(params), api_url, retries=0, auth_mode=auth)


@pytest.mark.parametrize("auth", ["ntlm", "negotiate"])
def test_windows_auth_reads_and_writes(iis, auth):
    httpd, api_url = iis
    client = _client(api_url, auth)
    assert client.get_json("admin/version") == "3.8.8"
    client.post_json("work_pools/", {"name": "etl", "type": "process"}, expect=(201,))
    assert "etl" in httpd.fake.pools
    assert httpd.users and set(httpd.users) == {USER}


@pytest.mark.parametrize("auth", ["ntlm", "negotiate"])
def test_windows_auth_wrong_password(iis, auth):
    _httpd, api_url = iis
    with pytest.raises(PrefectApiError) as err:
        _client(api_url, auth, password="not-it").get_json("admin/version")
    assert err.value.status == 401 and "not-it" not in err.value.message


def test_no_credentials_against_windows_auth(iis):
    _httpd, api_url = iis
    client = PrefectClient(build_requests_transport(dict(auth="none", request_timeout=10)), api_url, retries=0)
    with pytest.raises(PrefectApiError) as err:
        client.get_json("admin/version")
    assert "set auth: ntlm or negotiate" in err.value.message
