"""The shared client: mode selection, common option checks, retries, CSRF, errors and redaction."""
from __future__ import annotations

import pytest
from fake_prefect import API, FakePrefect

from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import (
    PrefectApiError,
    PrefectClient,
    PrefectValidationError,
    Response,
    TransportError,
    excerpt,
    redact,
    safe_url,
    secret_variants,
    select_api_from,
    status_hint,
    transport_hint,
    validate_common,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("api_from, connection, shell, expected", [
    ("auto", "local", "sh", "controller"),
    ("auto", "ansible.builtin.local", "sh", "controller"),
    ("auto", "ansible.legacy.local", "sh", "controller"),
    ("auto", "winrm", "powershell", "target"),
    ("auto", "ansible.builtin.psrp", "powershell", "target"),
    ("auto", "ssh", "powershell", "target"),
    ("auto", "ssh", "cmd", "target"),
    ("controller", "winrm", "powershell", "controller"),
    ("controller", "ssh", "sh", "controller"),
    ("target", "psrp", "powershell", "target"),
])
def test_select_api_from(api_from, connection, shell, expected):
    assert select_api_from(api_from, connection, shell) == expected


@pytest.mark.parametrize("api_from, connection, shell, words", [
    ("auto", "ssh", "sh", ["delegate_to: localhost", "api_from: controller"]),
    ("target", "local", "sh", ["needs a Windows host"]),
    ("target", "ssh", "sh", ["needs a Windows host"]),
])
def test_select_api_from_refuses_what_it_cannot_do(api_from, connection, shell, words):
    with pytest.raises(PrefectValidationError) as err:
        select_api_from(api_from, connection, shell)
    for word in words:
        assert word in err.value.message


def _common(**kw):
    params = dict(api_url=API, api_from="controller", auth="none", username=None, password=None,
                  auth_string=None, request_timeout=30, retries=3)
    params.update(kw)
    return params


@pytest.mark.parametrize("overrides, expected", [
    ({}, None),
    ({"api_url": "127.0.0.1:4200/api"}, "http:// or https://"),
    ({"api_url": "ftp://host/api"}, "http:// or https://"),
    ({"api_url": "http://admin:s3cret@host/api"}, "must not contain credentials"),
    ({"auth": "basic"}, "auth: basic needs auth_string"),
    ({"auth": "basic", "auth_string": "nocolon"}, "user:password"),
    ({"auth": "basic", "auth_string": "admin:pw"}, None),
    ({"auth": "basic", "username": "admin", "password": "pw"}, None),
    ({"auth": "ntlm"}, "needs username and password"),
    ({"auth": "ntlm", "api_from": "target"}, None),
    ({"auth": "ntlm", "username": "CORP\\svc"}, "needs password"),
    ({"auth": "kerberos", "username": "svc@CORP.LOCAL"}, None),
    ({"password": "pw"}, "password is set but username is not"),
    ({"request_timeout": 0}, "request_timeout"),
    ({"retries": -1}, "retries"),
])
def test_validate_common(overrides, expected):
    problems = validate_common(_common(**overrides))
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems
        assert all("s3cret" not in p and "nocolon" not in p for p in problems)


def test_safe_url_drops_credentials():
    assert safe_url("https://u:p@host:8443/api/x") == "https://host:8443/api/x"
    assert safe_url(API) == API


# --- retries ---------------------------------------------------------------------------------------

class ScriptedTransport:
    """Answers from a list: an int is an HTTP status, a str a TransportError kind."""

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.sent = []

    def send(self, method, url, headers=None, body=None):
        self.sent.append((method, url))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, str):
            raise TransportError(outcome, "scripted %s" % outcome)
        return Response(outcome, '{"detail": "scripted"}' if outcome >= 400 else "true")


def _client(outcomes, clock, retries=3):
    transport = ScriptedTransport(outcomes)
    return PrefectClient(transport, API, retries=retries, sleep=clock.sleep), transport


def test_retries_503_then_succeeds_with_exponential_backoff(clock):
    client, transport = _client([503, 502, 200], clock)
    assert client.request("GET", "health").status == 200
    assert len(transport.sent) == 3
    assert len(clock.sleeps) == 2
    assert 0.5 <= clock.sleeps[0] <= 0.55 and 1.0 <= clock.sleeps[1] <= 1.1


def test_retries_are_bounded_and_the_error_says_how_many(clock):
    client, transport = _client(["connect"] * 5, clock, retries=2)
    with pytest.raises(PrefectApiError) as err:
        client.request("GET", "work_pools/etl")
    assert len(transport.sent) == 3
    assert "after 3 attempts" in err.value.message
    assert "is the Prefect server running" in err.value.message


def test_backoff_is_capped(clock):
    client = PrefectClient(ScriptedTransport([]), API, backoff=0.5, max_backoff=10.0)
    assert client.backoff_delay(0) < client.backoff_delay(3) <= 11.0
    assert 10.0 <= client.backoff_delay(12) <= 11.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_4xx_is_never_retried(clock, status):
    client, transport = _client([status, 200], clock)
    with pytest.raises(PrefectApiError) as err:
        client.request("GET", "work_pools/etl")
    assert len(transport.sent) == 1 and clock.sleeps == []
    assert err.value.status == status


def test_post_is_not_retried_on_500_or_timeout_but_get_is(clock):
    client, transport = _client([500, 200], clock)
    with pytest.raises(PrefectApiError):
        client.request("POST", "deployments/x/create_flow_run", body={})
    assert len(transport.sent) == 1
    client, transport = _client(["timeout", 200], clock)
    with pytest.raises(PrefectApiError) as err:
        client.request("POST", "deployments/x/create_flow_run", body={})
    assert "raise request_timeout" in err.value.message
    client, transport = _client([500, "timeout", 504, 200], clock)
    assert client.request("GET", "work_pools/etl").status == 200
    assert len(transport.sent) == 4


def test_post_is_retried_when_nothing_reached_the_server(clock):
    client, transport = _client(["connect", 503, 201], clock)
    assert client.request("POST", "work_pools/", body={}, expect=(201,)).status == 201


def test_read_only_post_is_retried_on_500(make_client, server):
    server.faults.append(("POST", "work_pools/filter", 500))
    assert make_client(server).read("work_pools/filter") == []
    assert [p for _m, p, _b, _h in server.calls] == ["work_pools/filter", "work_pools/filter"]


# --- CSRF ------------------------------------------------------------------------------------------

def test_csrf_token_is_fetched_on_demand_and_reused(make_client):
    server = FakePrefect(csrf=True)
    client = make_client(server)
    client.post_json("work_pools/", {"name": "etl", "type": "process"}, expect=(201,))
    client.request("PATCH", "work_pools/etl", body={"description": "x"}, expect=(204,))
    paths = [(m, p.split("?")[0]) for m, p, _b, _h in server.calls]
    assert paths == [("POST", "work_pools/"), ("GET", "csrf-token"), ("POST", "work_pools/"),
                     ("PATCH", "work_pools/etl")]
    patch_headers = server.calls[-1][3]
    assert patch_headers["prefect-csrf-client"] == client.csrf_client
    assert patch_headers["prefect-csrf-token"] == client.csrf_token


def test_no_csrf_round_trip_when_protection_is_off(make_client, server):
    client = make_client(server)
    client.post_json("work_pools/", {"name": "etl", "type": "process"}, expect=(201,))
    assert [p for _m, p, _b, _h in server.calls] == ["work_pools/"]


def test_a_403_that_is_not_about_csrf_does_not_fetch_a_token(make_client, server):
    client = make_client(server)
    with pytest.raises(PrefectApiError) as err:
        client.post_json("work_pools/", {"name": "prefect-x", "type": "process"}, expect=(201,))
    assert err.value.status == 403 and "reserved" in err.value.message
    assert len(server.calls) == 1


def test_fetch_csrf_token_reports_disabled_protection(make_client, server):
    assert make_client(server).fetch_csrf_token() is False


# --- errors, hints, secrets ------------------------------------------------------------------------

def test_error_names_request_answer_and_hint(make_client):
    server = FakePrefect(auth_string="admin:Tr0ub4dor")
    with pytest.raises(PrefectApiError) as err:
        make_client(server).get_json("work_pools/etl")
    message = err.value.message
    assert message.startswith("GET %s/work_pools/etl answered HTTP 401" % API)
    assert '"exception_message": "Unauthorized"' in message
    assert "auth: basic and auth_string" in message


def test_wrong_auth_string_hint(make_client):
    server = FakePrefect(auth_string="admin:Tr0ub4dor")
    with pytest.raises(PrefectApiError) as err:
        make_client(server, auth="basic", auth_string="admin:wrong").get_json("work_pools/etl")
    assert "check auth_string" in err.value.message


def test_windows_auth_challenge_hint(make_client):
    server = FakePrefect(windows_auth=True)
    with pytest.raises(PrefectApiError) as err:
        make_client(server).get_json("work_pools/etl")
    assert "set auth: ntlm or negotiate" in err.value.message


@pytest.mark.parametrize("status, headers, body, auth, words", [
    (401, {"www-authenticate": "Negotiate, NTLM"}, "", "ntlm", "refused the Windows credentials"),
    (401, {"www-authenticate": "Basic realm=x"}, "", "none", "set auth: basic"),
    (403, {}, '{"detail": "Invalid CSRF token or client identifier."}', "none", "Prefect-Csrf-Token"),
    (404, {}, "", "none", "end with /api"),
    (503, {}, '{"message":"Database is not available"}', "none", "database"),
    (502, {}, "Bad Gateway", "none", "proxy"),
    (500, {}, "", "none", "Prefect server log"),
])
def test_status_hints(status, headers, body, auth, words):
    assert words in status_hint(status, "GET", "x", headers, body, auth, "controller")


def test_transport_hints():
    assert "ca_path" in transport_hint("tls", "none", "controller")
    assert "Trusted Root" in transport_hint("tls", "none", "target")
    assert "api_from: target" in transport_hint("connect", "none", "controller")
    assert "from the Windows host" in transport_hint("connect", "none", "target")


def test_secret_variants_cover_raw_base64_and_quoted_forms():
    variants = secret_variants({"auth_string": "admin:p@ss word", "password": "Hunter22", "username": "svc"})
    assert "admin:p@ss word" in variants
    assert "YWRtaW46cEBzcyB3b3Jk" in variants  # base64("admin:p@ss word"), the Basic header
    assert "p@ss word" in variants and "p%40ss%20word" in variants
    assert "c3ZjOkh1bnRlcjIy" in variants  # base64("svc:Hunter22")


def test_redact_nested_and_excerpt():
    secrets = secret_variants({"password": "Hunter22", "username": "svc"})
    data = {"msg": "bad Hunter22", "list": ["x Hunter22 y", {"Hunter22": 1}], "n": 5}
    assert redact(data, secrets) == {"msg": "bad ********", "list": ["x ******** y", {"********": 1}], "n": 5}
    long = "a" * 500
    assert excerpt(long).endswith("...") and len(excerpt(long)) == 303


def test_server_echoing_a_secret_is_redacted_in_errors(make_client):
    server = FakePrefect()
    server.faults.append(("GET", "work_pools", 400))
    client = make_client(server, secrets=secret_variants({"password": "Hunter22", "username": "svc"}))
    original = server.handle

    def echo(method, url, headers=None, body=None):
        response = original(method, url, headers, body)
        response.text = '{"detail": "user svc with password Hunter22 (c3ZjOkh1bnRlcjIy) refused"}'
        return response

    server.handle = echo
    with pytest.raises(PrefectApiError) as err:
        client.get_json("work_pools/etl")
    assert "Hunter22" not in err.value.message and "c3ZjOkh1bnRlcjIy" not in err.value.message
    assert "********" in err.value.message


def test_read_all_pages_through_filter_results(make_client, server):
    client = make_client(server)
    for i in range(5):
        client.post_json("work_pools/", {"name": "pool-%d" % i, "type": "process"}, expect=(201,))
    assert [p["name"] for p in client.read_all("work_pools/filter", page=2)] == ["pool-%d" % i for i in range(5)]


@pytest.mark.parametrize("body, route", [
    ('{"detail":"Not Found"}', True),            # Prefect's router: no such endpoint (api_url without /api)
    ("<html>404</html>", True),                  # a proxy or web server
    ('{"detail":"Work pool \\"etl\\" not found."}', False),
    ('{"detail":"Deployment not found"}', False),
])
def test_route_not_found_tells_a_wrong_api_url_from_a_missing_object(body, route):
    from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import Response, route_not_found
    assert route_not_found(Response(404, body)) is route


def test_non_ascii_basic_credentials_are_refused_in_target_mode():
    from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import validate_common
    params = dict(api_url="http://127.0.0.1:4200/api", auth="basic", auth_string="admin:Pässwort")
    assert not validate_common(dict(params, api_from="controller"))
    problems = validate_common(dict(params, api_from="target"))
    assert any("ASCII" in p for p in problems) and not any("Pässwort" in p for p in problems)
