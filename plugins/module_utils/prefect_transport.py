# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The two ways a request reaches the Prefect API.

RequestsTransport: from the control node with `requests` (NTLM via requests-ntlm, Negotiate and
Kerberos via pyspnego). WinUriTransport: from the Windows host, one ansible.windows.win_uri call per
request. Both return prefect_api.Response or raise prefect_api.TransportError.
"""

from __future__ import annotations

import base64
import re
import warnings
from urllib.parse import urlsplit

from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import (
    Response,
    TransportError,
    basic_auth_header,
)

try:
    import requests
    from requests.auth import AuthBase

    HAS_REQUESTS = True
except ImportError:  # reported by build_requests_transport()
    requests = None
    AuthBase = object
    HAS_REQUESTS = False

try:
    from requests_ntlm import HttpNtlmAuth

    HAS_REQUESTS_NTLM = True
except ImportError:
    HttpNtlmAuth = None
    HAS_REQUESTS_NTLM = False

try:
    import spnego
    from spnego.exceptions import SpnegoError

    HAS_SPNEGO = True
except ImportError:
    spnego = None
    HAS_SPNEGO = False

    class SpnegoError(Exception):
        """Stand-in so that `except SpnegoError` works without pyspnego."""

USER_AGENT = "enclave.prefect"
# Every status win_uri may return without failing: the client decides what is an error.
ALL_STATUSES = list(range(100, 600))


def _channel_bindings(response):
    """Channel bindings of the TLS connection a 401 came on (RFC 5929 tls-server-end-point: the hash of the server's
    certificate, SHA-256 for an MD5 or SHA-1 signature), which IIS checks with Extended Protection for Windows
    authentication (tokenChecking Require refuses a Negotiate or NTLM token without them); None on plain HTTP."""
    try:
        sock = response.raw._fp.fp.raw._sock  # pylint: disable=protected-access
        certificate = sock.getpeercert(True)
    except AttributeError:
        return None
    if not certificate:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from spnego.channel_bindings import GssChannelBindings
    try:
        algorithm = x509.load_der_x509_certificate(certificate).signature_hash_algorithm
    except Exception:  # pylint: disable=broad-except
        algorithm = None
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate)
    return GssChannelBindings(application_data=b"tls-server-end-point:" + digest.finalize())


class SpnegoAuth(AuthBase):
    """HTTP Negotiate (Kerberos, or NTLM inside SPNEGO) for requests, with pyspnego.

    Without username/password the current Kerberos ticket cache (kinit) is used.
    """

    def __init__(self, username=None, password=None, protocol="negotiate", service="HTTP"):
        self.username = username
        self.password = password
        self.protocol = protocol
        self.service = service

    def __call__(self, request):
        request.headers["Connection"] = "Keep-Alive"
        request.register_hook("response", self._on_response)
        return request

    def _on_response(self, response, **kwargs):
        if response.status_code != 401:
            return response
        offered = _challenge(response.headers.get("www-authenticate", ""), "Negotiate")
        if offered is None or "Authorization" in response.request.headers:
            return response
        host = urlsplit(response.url).hostname
        context = spnego.client(self.username, self.password, hostname=host, service=self.service,
                                protocol=self.protocol, channel_bindings=_channel_bindings(response))
        token = context.step(None)
        kwargs = dict(kwargs, stream=False)
        while True:
            response.content  # pylint: disable=pointless-statement
            response.raw.release_conn()
            retry = response.request.copy()
            retry.headers["Authorization"] = "Negotiate " + base64.b64encode(token).decode("ascii")
            next_response = response.connection.send(retry, **kwargs)
            next_response.history.append(response)
            response = next_response
            offered = _challenge(response.headers.get("www-authenticate", ""), "Negotiate")
            if response.status_code != 401 or not offered or context.complete:
                if offered and not context.complete:
                    context.step(base64.b64decode(offered))  # mutual authentication of the server
                return response
            token = context.step(base64.b64decode(offered))
            if not token:
                return response


def _challenge(header, scheme):
    """The token after `scheme` in a WWW-Authenticate header: '' when bare, None when not offered."""
    for part in header.split(","):
        part = part.strip()
        if part.lower() == scheme.lower():
            return ""
        if part.lower().startswith(scheme.lower() + " "):
            return part[len(scheme) + 1:].strip()
    return None


class RequestsTransport:
    """Requests from the control node."""

    def __init__(self, session, timeout):
        self.session = session
        self.timeout = timeout

    def send(self, method, url, headers=None, body=None):
        try:
            with warnings.catch_warnings():
                # validate_certs: false is the user's explicit choice; do not print urllib3's warning per request
                warnings.simplefilter("ignore")
                # Never follow redirects: requests turns POST/PATCH/DELETE into GET on 301/302 and drops the
                # credentials on a change of host or port. A redirect is reported with its Location instead.
                answer = self.session.request(method, url, headers=headers, data=body, timeout=self.timeout,
                                              allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            raise TransportError("tls", str(exc))
        except requests.exceptions.ConnectTimeout as exc:
            raise TransportError("connect", "connect timeout: %s" % exc)
        except requests.exceptions.Timeout as exc:
            raise TransportError("timeout", str(exc))
        except requests.exceptions.ConnectionError as exc:
            raise TransportError(_connection_error_kind(str(exc)), str(exc))
        except requests.exceptions.RequestException as exc:
            raise TransportError("other", str(exc))
        except PermissionError as exc:  # requests-ntlm: no NTLM challenge in the answer
            raise TransportError("other", str(exc))
        except SpnegoError as exc:  # no Kerberos ticket, KDC unreachable, unknown SPN, refused password
            raise TransportError("auth", "%s authentication could not start on the control node: %s"
                                 % (getattr(self.session.auth, "protocol", "negotiate"), exc))
        except OSError as exc:  # after requests' own errors (they are OSErrors): e.g. ca_path cannot be read
            raise TransportError("tls", str(exc))
        return Response(answer.status_code, answer.text, dict(answer.headers), answer.elapsed.total_seconds())


def _connection_error_kind(text):
    """'connect' when nothing reached the server (safe to retry any request), else 'lost'."""
    markers = ("NewConnectionError", "Connection refused", "Name or service not known", "nodename nor servname",
               "No route to host", "Network is unreachable", "Failed to resolve", "getaddrinfo failed",
               "Temporary failure in name resolution")
    return "connect" if any(m in text for m in markers) else "lost"


def build_requests_transport(params):
    """The control-node transport for the validated common options."""
    if not HAS_REQUESTS:
        raise TransportError("other", "the Python library 'requests' is required on the control node")
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.trust_env = False  # no proxy or netrc credentials from the environment: air-gapped, explicit
    if params.get("ca_path"):
        session.verify = params["ca_path"] if params.get("validate_certs", True) else False
    else:
        session.verify = bool(params.get("validate_certs", True))
    auth = params.get("auth") or "none"
    if auth == "basic":
        auth_string = params.get("auth_string") or "%s:%s" % (params.get("username"), params.get("password"))
        session.headers["Authorization"] = basic_auth_header(auth_string)
    elif auth == "ntlm":
        if not HAS_REQUESTS_NTLM:
            raise TransportError("other", "auth: ntlm needs the Python library 'requests-ntlm' on the control node")
        session.auth = HttpNtlmAuth(params.get("username"), params.get("password"))
    elif auth in ("negotiate", "kerberos"):
        if not HAS_SPNEGO:
            raise TransportError("other", "auth: %s needs the Python library 'pyspnego' on the control node" % auth)
        session.auth = SpnegoAuth(params.get("username"), params.get("password"), protocol=auth)
    return RequestsTransport(session, params.get("request_timeout") or 30)


class WinUriTransport:
    """Requests from the Windows host: each one is an ansible.windows.win_uri run.

    execute(module_args) runs win_uri on the host and returns its result dict.
    """

    def __init__(self, execute, params):
        self.execute = execute
        self.base_args = win_uri_auth_args(params)
        self.base_args.update(
            validate_certs=bool(params.get("validate_certs", True)),
            url_timeout=int(params.get("request_timeout") or 30),
            return_content=True,
            status_code=ALL_STATUSES,
            follow_redirects="none",  # as from the control node: a redirect is reported, never followed
            use_proxy=False,
            http_agent=USER_AGENT,
        )

    def module_args(self, method, url, headers=None, body=None):
        args = dict(self.base_args)
        args.update(url=url, method=method)
        extra = {k: v for k, v in (headers or {}).items() if k.lower() != "content-type"}
        if extra:
            args["headers"] = extra
        if body is not None:
            args["body"] = body
            args["content_type"] = "application/json"
        return args

    def send(self, method, url, headers=None, body=None):
        result = self.execute(self.module_args(method, url, headers, body))
        if result.get("unreachable"):
            raise TransportError("host", "the Windows host is unreachable: %s" % result.get("msg", ""))
        status = result.get("status_code")
        # Every status is accepted, so a failed result with a status is still an HTTP answer.
        if isinstance(status, int) and status > 0 and ("content" in result or not result.get("failed")):
            return Response(status, result.get("content", ""), win_uri_headers(result), result.get("elapsed"))
        raise TransportError(win_uri_error_kind(result.get("msg", "")), result.get("msg") or "win_uri failed")


def win_uri_auth_args(params):
    """win_uri options for the auth mode. Secrets go only into url_password (no_log in win_uri)."""
    auth = params.get("auth") or "none"
    if auth == "basic":
        if params.get("auth_string"):
            user, _sep, password = params["auth_string"].partition(":")
        else:
            user, password = params.get("username"), params.get("password")
        return dict(url_username=user, url_password=password, force_basic_auth=True)
    if auth in ("ntlm", "negotiate", "kerberos"):
        if params.get("username"):
            return dict(url_username=params["username"], url_password=params.get("password"))
        # The account Ansible logged on with: needs CredSSP, Kerberos delegation or become.
        return dict(use_default_credential=True)
    return {}


def win_uri_headers(result):
    """win_uri returns response headers as snake_case result keys; rebuild the ones the client reads."""
    headers = {}
    for key, name in (("www_authenticate", "www-authenticate"), ("content_type", "content-type"),
                      ("location", "location")):
        if isinstance(result.get(key), str):
            headers[name] = result[key]
    return headers


_WIN_ERROR_KINDS = (
    ("tls", re.compile(r"SSL|TLS|trust relationship|certificate", re.I)),
    ("connect", re.compile(r"Unable to connect|actively refused|could not be resolved|No such host|"
                           r"No connection could be made|remote name could not be resolved", re.I)),
    ("timeout", re.compile(r"timed out|timeout", re.I)),
    ("lost", re.compile(r"underlying connection was closed|forcibly closed|connection was reset", re.I)),
)


def win_uri_error_kind(message):
    for kind, pattern in _WIN_ERROR_KINDS:
        if pattern.search(message or ""):
            return kind
    return "host"
