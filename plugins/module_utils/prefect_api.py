# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP client for the Prefect 3 REST API, shared by every enclave.prefect API plugin.

The client is transport-agnostic: a transport sends one HTTP request and returns a `Response`
(see prefect_transport.py for the controller and the Windows-host transports). The client adds
what every call needs: URL building, JSON, CSRF tokens, bounded retries and errors that say what
was asked, what came back and what to check, with secrets removed.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

from ansible.module_utils.basic import env_fallback

AUTH_MODES = ("none", "basic", "ntlm", "negotiate", "kerberos")
WINDOWS_AUTH_MODES = ("ntlm", "negotiate", "kerberos")
API_FROM_CHOICES = ("auto", "controller", "target")
# Shell families of connections to a Windows host (winrm/psrp: powershell; OpenSSH: powershell or cmd).
WINDOWS_SHELLS = ("powershell", "cmd")
MUTATING_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# Statuses worth another attempt: the proxy or server was briefly unavailable.
RETRY_STATUSES_ANY = (502, 503)
# Also retried for requests that are safe to repeat (reads, PATCH, DELETE): the request may have
# reached Prefect (gateway timeout) or failed on a transient database error (SQLite "locked").
RETRY_STATUSES_IDEMPOTENT = (500, 504)
BODY_EXCERPT_CHARS = 300
REDACTED = "********"


def common_argument_spec():
    """Options shared by every plugin; documented in the enclave.prefect.prefect_api doc fragment."""
    return dict(
        api_url=dict(type="str", required=True, fallback=(env_fallback, ["PREFECT_API_URL"])),
        api_from=dict(type="str", default="auto", choices=list(API_FROM_CHOICES)),
        auth=dict(type="str", default="none", choices=list(AUTH_MODES)),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        auth_string=dict(type="str", no_log=True, fallback=(env_fallback, ["PREFECT_API_AUTH_STRING"])),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        request_timeout=dict(type="int", default=30),
        retries=dict(type="int", default=3),
    )


class PrefectError(Exception):
    """Any failure a plugin reports. `result` carries extra keys for the task result (e.g. checks)."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.message = message
        self.result = result or {}


class PrefectValidationError(PrefectError):
    """Bad input, found before any request is sent."""


class TransportError(Exception):
    """A request that got no HTTP answer.

    kind: connect (nothing was sent: refused, DNS, unreachable), tls, timeout (sent, no answer in
    time), lost (connection dropped after sending), host (the Windows host or win_uri failed), other.
    """

    def __init__(self, kind, detail):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class Response:
    """One HTTP answer: status, text body, lower-cased headers, elapsed seconds."""

    def __init__(self, status, text="", headers=None, elapsed=None):
        self.status = int(status)
        self.text = text or ""
        self.headers = {str(k).lower(): str(v) for k, v in (headers or {}).items()}
        self.elapsed = elapsed

    def json(self):
        if not self.text.strip():
            return None
        return json.loads(self.text)


class PrefectApiError(PrefectError):
    """The API answered something other than what the caller expected, or did not answer at all."""

    def __init__(self, method, url, status=None, body="", hint="", reason="", result=None):
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        self.hint = hint
        self.reason = reason
        if status is not None:
            what = "answered HTTP %s" % status
            if body:
                what += ": %s" % body
        else:
            what = "got no answer: %s" % reason
        message = "%s %s %s" % (method, url, what)
        if hint:
            message += ". Check: %s" % hint
        super().__init__(message, result)


def safe_url(url):
    """The URL without user:password@ (never shown in messages)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += ":%s" % parts.port
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def secret_variants(params):
    """Every form in which a secret option could leak: raw, base64 (Basic header), URL-quoted."""
    password = params.get("password")
    auth_string = params.get("auth_string")
    username = params.get("username") or ""
    raw = {password, auth_string}
    if auth_string and ":" in auth_string:
        raw.add(auth_string.split(":", 1)[1])
    raw.discard(None)
    found = set(raw) | {quote(value, safe="") for value in raw}
    if auth_string:
        found.add(base64.b64encode(auth_string.encode("utf-8")).decode("ascii"))
    if password:
        found.add(base64.b64encode(("%s:%s" % (username, password)).encode("utf-8")).decode("ascii"))
    # Very short values would blank out ordinary text; they are still never put into output.
    return sorted((s for s in found if s and len(s) >= 3), key=len, reverse=True)


def redact(value, secrets):
    """Replace every secret in a string, or in the strings of a nested dict/list."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    return value


def excerpt(text, secrets=(), limit=BODY_EXCERPT_CHARS):
    text = " ".join(redact(text or "", secrets).split())  # redact first: a secret may contain whitespace
    if len(text) > limit:
        return text[:limit] + "..."
    return text


def quote_segment(value):
    """One path segment (a pool or queue name) safely quoted."""
    return quote(str(value), safe="")


def status_hint(status, method, path, headers, body, auth_mode, api_from):
    """What the user should check for an unexpected status. Pure: unit-tested."""
    body_l = (body or "").lower()
    challenge = (headers or {}).get("www-authenticate", "").lower()
    if 300 <= status < 400:
        location = (headers or {}).get("location", "")
        return ("the server redirects%s: set api_url to the final address (redirects are not followed, and "
                "credentials would not be sent across them)" % (" to %s" % safe_url(location) if location else ""))
    if status == 401:
        if "negotiate" in challenge or "ntlm" in challenge:
            if auth_mode in WINDOWS_AUTH_MODES:
                hint = ("the proxy refused the Windows credentials: check username (DOMAIN\\user or user@REALM) "
                        "and password; for kerberos also the HTTP/<host> SPN and a valid ticket")
                if api_from == "target":
                    hint += ("; without username the account Ansible logged on with is used, which Windows hands on "
                             "only with CredSSP, Kerberos delegation or become")
                return hint
            return ("the proxy demands Windows authentication (WWW-Authenticate: %s): set auth: ntlm or negotiate "
                    "with username and password" % (headers or {}).get("www-authenticate", ""))
        if "basic" in challenge and auth_mode != "basic":
            return "the server demands basic authentication: set auth: basic with username/password or auth_string"
        if auth_mode == "basic":
            return ("the credentials were refused: check auth_string (user:password) matches the server's "
                    "PREFECT_SERVER_API_AUTH_STRING")
        return ("the Prefect server demands its own authentication: set auth: basic and auth_string to the "
                "server's PREFECT_SERVER_API_AUTH_STRING")
    if status == 403:
        if "csrf" in body_l or "client identifier" in body_l:
            return ("the server's CSRF protection refused the request even with a fresh token: check that the proxy "
                    "passes the Prefect-Csrf-Token and Prefect-Csrf-Client headers")
        if "reserved" in body_l:
            return "names starting with 'prefect' are reserved by the server: choose another name"
        return "the account is not allowed to do this: check the proxy's authorization rules"
    if status == 404:
        return ("the object does not exist, or api_url is wrong: it must end with /api "
                "(e.g. http://127.0.0.1:4200/api)")
    if status == 405:
        return "api_url must point to the Prefect API and end with /api"
    if status == 409:
        return "an object with this name already exists"
    if status == 422:
        return "the server rejected the request body: see the answer above"
    if status in (502, 503, 504):
        if "database" in body_l:
            return "the server cannot reach its database: check the database service and its connection URL"
        return ("the server or the proxy in front of it is not available: check the Prefect server service "
                "and the proxy's backend address")
    if status >= 500:
        return "the server failed: look at the Prefect server log"
    return ""


def transport_hint(kind, auth_mode, api_from):
    where = "the Windows host" if api_from == "target" else "the control node"
    if kind == "tls":
        if api_from == "target":
            return ("the Windows host does not trust the server certificate: import the enclave CA into the "
                    "host's Trusted Root store, or set validate_certs: false for a test")
        return "set ca_path to the enclave CA bundle (PEM), or validate_certs: false for a test"
    if kind == "connect":
        hint = ("is the Prefect server running and listening on that address, and does the firewall allow "
                "connections from %s?" % where)
        if api_from == "controller":
            hint += " If the API is only reachable on the host itself, use api_from: target."
        return hint
    if kind == "auth":
        return ("run kinit for the account (or give username and password), and check that the control node "
                "reaches the KDC and that the HTTP/<host> SPN exists")
    if kind == "timeout":
        return "the server did not answer in time: check it is not overloaded, or raise request_timeout"
    if kind == "lost":
        return "the connection dropped: check the proxy and server logs"
    if kind == "host":
        return "the Windows host could not run ansible.windows.win_uri: check the connection to the host"
    return ""


class PrefectClient:
    """Talks to one Prefect API through a transport. One instance per task."""

    def __init__(self, transport, api_url, retries=3, backoff=0.5, max_backoff=10.0, sleep=time.sleep,
                 secrets=(), auth_mode="none", api_from="controller"):
        self.transport = transport
        self.api_url = api_url.rstrip("/")
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.secrets = list(secrets)
        self.auth_mode = auth_mode
        self.api_from = api_from
        self.csrf_client = str(uuid.uuid4())
        self.csrf_token = None
        self.requests_sent = 0

    def url(self, path):
        return "%s/%s" % (self.api_url, path.lstrip("/"))

    def backoff_delay(self, attempt):
        """Delay before retry number `attempt` (0-based): exponential, capped, with a little jitter."""
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        return delay + random.uniform(0, delay / 10.0)

    def _send_once(self, method, url, body, headers):
        self.requests_sent += 1
        return self.transport.send(method, url, headers=headers, body=body)

    def _send(self, method, url, body, headers, idempotent):
        """Send with retries. Returns a Response or raises TransportError after the last attempt."""
        attempt = 0
        while True:
            try:
                response = self._send_once(method, url, body, headers)
            except TransportError as exc:
                retryable = exc.kind == "connect" or (idempotent and exc.kind in ("timeout", "lost"))
                if not retryable or attempt >= self.retries:
                    exc.attempts = attempt + 1
                    raise
            else:
                retry_on = RETRY_STATUSES_ANY + (RETRY_STATUSES_IDEMPOTENT if idempotent else ())
                if response.status not in retry_on or attempt >= self.retries:
                    return response
            self.sleep(self.backoff_delay(attempt))
            attempt += 1

    def fetch_csrf_token(self):
        """Ask the server for a CSRF token; returns False when CSRF protection is off (422)."""
        url = self.url("csrf-token?client=%s" % self.csrf_client)
        response = self._call("GET", url, None, {"Accept": "application/json"}, True)
        if response.status == 422:
            return False
        if response.status != 200:
            raise self._error("GET", url, response)
        token = (response.json() or {}).get("token")
        if not token:
            raise PrefectApiError("GET", safe_url(url), response.status, excerpt(response.text, self.secrets),
                                  "the server answered without a CSRF token")
        self.secrets.append(token)
        self.csrf_token = token
        return True

    def _call(self, method, url, body, headers, idempotent):
        try:
            return self._send(method, url, body, headers, idempotent)
        except TransportError as exc:
            attempts = getattr(exc, "attempts", 1)
            reason = "%s error: %s" % (exc.kind, excerpt(exc.detail, self.secrets))
            if attempts > 1:
                reason += " (after %d attempts)" % attempts
            raise PrefectApiError(method, safe_url(url), None, "",
                                  transport_hint(exc.kind, self.auth_mode, self.api_from), reason)

    def _error(self, method, url, response, path=""):
        return PrefectApiError(
            method, safe_url(url), response.status, excerpt(response.text, self.secrets),
            status_hint(response.status, method, path, response.headers, response.text, self.auth_mode,
                        self.api_from))

    def request(self, method, path, body=None, expect=(200,), idempotent=None):
        """Send one API call. Returns the Response when its status is in `expect`, else raises PrefectApiError.

        idempotent: whether repeating the call is harmless (default: everything except POST).
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method != "POST"
        url = self.url(path)
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        csrf_refreshed = False
        while True:
            if method in MUTATING_METHODS and self.csrf_token:
                headers["Prefect-Csrf-Token"] = self.csrf_token
                headers["Prefect-Csrf-Client"] = self.csrf_client
            response = self._call(method, url, payload, headers, idempotent)
            if (response.status == 403 and method in MUTATING_METHODS and not csrf_refreshed
                    and "csrf" in response.text.lower() and self.fetch_csrf_token()):
                csrf_refreshed = True
                continue
            break
        if response.status not in expect:
            raise self._error(method, url, response, path)
        return response

    def probe(self, path):
        """One GET without retries or status checks, for polling: (Response, None) or (None, problem)."""
        url = self.url(path)
        try:
            return self._send_once("GET", url, None, {"Accept": "application/json"}), None
        except TransportError as exc:
            hint = transport_hint(exc.kind, self.auth_mode, self.api_from)
            return None, "%s error: %s (check: %s)" % (exc.kind, excerpt(exc.detail, self.secrets), hint)

    def get_json(self, path, allow_404=False):
        """GET and parse; None when allow_404 and the object does not exist."""
        expect = (200, 404) if allow_404 else (200,)
        response = self.request("GET", path, expect=expect)
        if response.status == 404:
            if route_not_found(response):
                raise self._error("GET", self.url(path), response, path)
            return None
        return self._parse(response, "GET", path)

    def post_json(self, path, body, expect=(200, 201), idempotent=None):
        response = self.request("POST", path, body=body, expect=expect, idempotent=idempotent)
        return self._parse(response, "POST", path)

    def read(self, path, body=None):
        """A read-only POST (the API's /filter endpoints): safe to retry."""
        return self.post_json(path, body if body is not None else {}, expect=(200,), idempotent=True)

    def _parse(self, response, method, path):
        try:
            return response.json()
        except ValueError:
            raise PrefectApiError(method, safe_url(self.url(path)), response.status,
                                  excerpt(response.text, self.secrets),
                                  "the answer is not JSON: api_url must point to the Prefect API and end with /api")

    def read_all(self, path, body=None, page=200):
        """All results of a /filter endpoint, page by page."""
        results = []
        offset = 0
        while True:
            request = dict(body or {})
            request.update(limit=page, offset=offset)
            chunk = self.read(path, request) or []
            results.extend(chunk)
            if len(chunk) < page:
                return results
            offset += page


def route_not_found(response):
    """A 404 for an unknown endpoint (api_url wrong, e.g. without /api), not for a missing object.

    Prefect names the object (`Work pool "x" not found.`, `Deployment not found`); its router answers
    `{"detail": "Not Found"}`, and a proxy or web server answers with HTML.
    """
    try:
        body = response.json()
    except ValueError:
        return True
    return not isinstance(body, dict) or body.get("detail") == "Not Found"


def basic_auth_header(auth_string):
    return "Basic " + base64.b64encode(auth_string.encode("utf-8")).decode("ascii")


def validate_common(params):
    """Checks of the common options that need no server. Returns a list of problems."""
    problems = []
    api_url = params.get("api_url") or ""
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append("api_url must be an http:// or https:// URL ending with /api, e.g. "
                        "http://127.0.0.1:4200/api (got %r)" % safe_url(api_url))
    if parts.username is not None or parts.password is not None:
        problems.append("api_url must not contain credentials: use username/password or auth_string")
    auth = params.get("auth")
    if auth == "basic":
        auth_string = params.get("auth_string")
        if auth_string is not None and ":" not in auth_string:
            problems.append("auth_string must have the form user:password (the value is not shown)")
        if not auth_string and not (params.get("username") and params.get("password")):
            problems.append("auth: basic needs auth_string (user:password) or username and password")
    username, password = params.get("username"), params.get("password")
    if auth == "basic" and params.get("api_from") == "target" and \
            not all(v.isascii() for v in (params.get("auth_string"), username, password) if v):
        problems.append("with api_from: target, ansible.windows.win_uri encodes Basic credentials as ASCII, so "
                        "non-ASCII characters in the user name or password cannot work (the value is not shown): "
                        "use api_from: controller or an ASCII password")
    if password is not None and username is None:
        problems.append("password is set but username is not")
    if auth in ("basic", "ntlm") and username is not None and password is None:
        problems.append("auth: %s with username needs password" % auth)
    if auth == "ntlm" and username is None and params.get("api_from") != "target":
        problems.append("auth: ntlm from the control node needs username and password")
    if params.get("ca_path") and params.get("api_from") != "target" and not os.path.isfile(params["ca_path"]):
        problems.append("ca_path %s is not a file on the control node" % params["ca_path"])
    if params.get("request_timeout") is not None and params["request_timeout"] < 1:
        problems.append("request_timeout must be at least 1 second")
    if params.get("retries") is not None and params["retries"] < 0:
        problems.append("retries must be 0 or more")
    return problems


def connection_plugin_name(name):
    name = (name or "").strip()
    for prefix in ("ansible.builtin.", "ansible.legacy."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def select_api_from(api_from, connection, shell_family):
    """Where the HTTP calls are made from: 'controller' or 'target'. Pure: unit-tested.

    api_from: the option (auto|controller|target); connection: the task's connection plugin name
    (e.g. 'local', 'ansible.builtin.winrm', 'psrp', 'ssh'); shell_family: that connection's shell
    family ('powershell', 'sh', ...).
    """
    conn = connection_plugin_name(connection)
    shell = (shell_family or "").lower()
    if api_from == "controller":
        return "controller"
    if api_from == "target":
        if conn == "local" or shell not in WINDOWS_SHELLS:
            raise PrefectValidationError(
                "api_from: target sends the requests through ansible.windows.win_uri and needs a Windows host "
                "(connection winrm, psrp or ssh with a PowerShell shell); this task's connection is %r with "
                "shell %r. Use api_from: controller, or run the task against the Windows host." % (conn, shell))
        return "target"
    if api_from != "auto":
        raise PrefectValidationError("api_from must be one of auto, controller, target")
    if conn == "local":
        return "controller"
    if shell in WINDOWS_SHELLS:
        return "target"
    raise PrefectValidationError(
        "api_from: auto cannot choose for connection %r with shell %r: run the task with "
        "delegate_to: localhost (requests from the control node), against a Windows host (requests "
        "through win_uri), or set api_from: controller." % (conn, shell))
