"""The action plugins' shared path: argument validation, mode selection, both transports, redaction.

Controller mode is exercised with the real `requests` transport against the fake API served on
127.0.0.1 (plain HTTP and HTTPS with a throwaway CA); target mode with the real win_uri transport and
a stand-in for ansible.windows.win_uri in front of the same fake.
"""
from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
from http.server import ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from fake_prefect import AUTH_STRING, PASSWORD, FakeClock, FakePrefect, HttpHandler, fake_win_uri

from ansible_collections.enclave.prefect.plugins.module_utils import flow_runs, health_checks, work_pools
from ansible_collections.enclave.prefect.plugins.module_utils.prefect_runner import run_action
from ansible_collections.enclave.prefect.plugins.module_utils.prefect_transport import (
    WinUriTransport,
    win_uri_error_kind,
)

pytestmark = pytest.mark.unit


class FakeAction:
    """The attributes of an ActionBase that run_action uses."""

    def __init__(self, args, connection="ansible.builtin.local", shell="sh", check_mode=False, diff=False,
                 execute=None):
        self._task = SimpleNamespace(args=args)
        self._connection = SimpleNamespace(_load_name=connection, _shell=SimpleNamespace(SHELL_FAMILY=shell))
        self._play_context = SimpleNamespace(check_mode=check_mode, diff=diff)
        self.execute = execute
        self.executed = []

    def _execute_module(self, module_name, module_args, task_vars):
        self.executed.append((module_name, module_args))
        return self.execute(module_args)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    d = tmp_path_factory.mktemp("tls")
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")

    def run(*argv):
        subprocess.run(argv, cwd=d, check=True, capture_output=True)

    run("openssl", "req", "-x509", *key, "-days", "2", "-subj", "/CN=Unit Test CA", "-keyout", "ca.key",
        "-out", "ca.pem")
    run("openssl", "req", *key, "-subj", "/CN=127.0.0.1", "-keyout", "srv.key", "-out", "srv.csr")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "ext.cnf", "-out", "srv.pem")
    return d


@pytest.fixture
def https_fake(tls_files):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), HttpHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files / "srv.pem", tls_files / "srv.key")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.fake = FakePrefect()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd.fake, "https://127.0.0.1:%d/api" % httpd.server_address[1], tls_files / "ca.pem"
    httpd.shutdown()
    httpd.server_close()


def run(action, spec, logic):
    clock = FakeClock()
    return run_action(action, {}, spec, logic, clock=clock, sleep=clock.sleep)


def assert_no_secret(result):
    text = json.dumps(result)
    for secret in (PASSWORD, AUTH_STRING, "YWRtaW46Q29ycjNjdC1Ib3JzZS1CYXR0ZXJ5"):
        assert secret not in text


# --- controller mode over real HTTP -----------------------------------------------------------------

def test_controller_mode_create_and_idempotence_over_http(http_fake):
    fake, api_url = http_fake
    args = dict(api_url=api_url, auth="basic", auth_string=AUTH_STRING, name="etl", description="ETL",
                queues=[{"name": "high", "priority": 1}])
    first = run(FakeAction(args, diff=True), work_pools.argument_spec(), work_pools.reconcile)
    assert first["changed"] and not first.get("failed") and first["api_from"] == "controller"
    assert "diff" in first and fake.pools["etl"]["description"] == "ETL"
    second = run(FakeAction(args), work_pools.argument_spec(), work_pools.reconcile)
    assert not second["changed"] and "diff" not in second
    assert_no_secret(first)
    assert_no_secret(second)


def test_wrong_credentials_over_http(http_fake):
    fake, api_url = http_fake
    args = dict(api_url=api_url, auth="basic", auth_string="admin:not-" + PASSWORD, name="etl")
    result = run(FakeAction(args), work_pools.argument_spec(), work_pools.reconcile)
    assert result["failed"] and "HTTP 401" in result["msg"] and "check auth_string" in result["msg"]
    assert PASSWORD not in json.dumps(result)


def test_unreachable_url_over_http():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = dict(api_url="http://127.0.0.1:%d/api" % port, name="etl", retries=1)
    result = run(FakeAction(args), work_pools.argument_spec(), work_pools.reconcile)
    assert result["failed"] and "connect error" in result["msg"] and "after 2 attempts" in result["msg"]
    assert "is the Prefect server running" in result["msg"]


def test_tls_failure_points_to_ca_path(https_fake):
    fake, api_url, ca = https_fake
    result = run(FakeAction(dict(api_url=api_url, name="etl")), work_pools.argument_spec(), work_pools.reconcile)
    assert result["failed"] and "tls error" in result["msg"] and "set ca_path" in result["msg"]
    ok = run(FakeAction(dict(api_url=api_url, name="etl", ca_path=str(ca))), work_pools.argument_spec(),
             work_pools.reconcile)
    assert ok["changed"] and not ok.get("failed")
    unchecked = run(FakeAction(dict(api_url=api_url, name="etl", validate_certs=False)),
                    work_pools.argument_spec(), work_pools.reconcile)
    assert not unchecked["changed"] and not unchecked.get("failed")


# --- target mode through win_uri ------------------------------------------------------------------

def test_target_mode_sends_every_request_through_win_uri():
    fake = FakePrefect(auth_string=AUTH_STRING)
    execute = fake_win_uri(fake)
    args = dict(api_url="http://127.0.0.1:4200/api", auth="basic", auth_string=AUTH_STRING, name="etl")
    action = FakeAction(args, connection="ansible.builtin.psrp", shell="powershell", execute=execute)
    result = run(action, work_pools.argument_spec(), work_pools.reconcile)
    assert result["changed"] and result["api_from"] == "target" and "etl" in fake.pools
    assert {name for name, _args in action.executed} == {"ansible.windows.win_uri"}
    assert len(action.executed) == len(fake.calls)
    for module_args in execute.seen:
        # the secret travels only in url_password, which win_uri itself marks no_log
        assert module_args["url_username"] == "admin" and module_args["url_password"] == PASSWORD
        assert module_args["force_basic_auth"] is True
        assert PASSWORD not in json.dumps({k: v for k, v in module_args.items() if k != "url_password"})
        assert module_args["return_content"] is True and 404 in module_args["status_code"]
    assert_no_secret(result)
    again = run(FakeAction(args, connection="winrm", shell="powershell", execute=execute),
                work_pools.argument_spec(), work_pools.reconcile)
    assert not again["changed"]


def test_target_mode_windows_auth_uses_the_logon_account_without_username():
    fake = FakePrefect()
    execute = fake_win_uri(fake)
    args = dict(api_url="http://127.0.0.1:4200/api", auth="negotiate")
    result = run(FakeAction(args, connection="winrm", shell="powershell", execute=execute),
                 health_checks.argument_spec(), health_checks.check)
    assert result["healthy"] and all(a.get("use_default_credential") for a in execute.seen)


def test_target_mode_connection_refused_names_the_windows_host():
    fake = FakePrefect()
    fake.health_after = 10 ** 6
    args = dict(api_url="http://127.0.0.1:4200/api", timeout=4, interval=2)
    result = run(FakeAction(args, connection="psrp", shell="powershell", execute=fake_win_uri(fake)),
                 health_checks.argument_spec(), health_checks.check)
    assert result["failed"] and "check 'health' failed" in result["msg"]
    assert "connections from the Windows host" in result["msg"]
    assert result["checks"][-1] == {"name": "health", "ok": False, "detail": result["checks"][-1]["detail"]}


@pytest.mark.parametrize("message, kind", [
    ("Unhandled exception ... Exception: Unable to connect to the remote server", "connect"),
    ("No connection could be made because the target machine actively refused it 127.0.0.1:4200", "connect"),
    ("The underlying connection was closed: Could not establish trust relationship for the SSL/TLS secure "
     "channel.", "tls"),
    ("The operation has timed out.", "timeout"),
    ("The underlying connection was closed: An unexpected error occurred on a receive.", "lost"),
    ("The term 'Invoke-Foo' is not recognized", "host"),
])
def test_win_uri_error_kinds(message, kind):
    assert win_uri_error_kind(message) == kind


def test_win_uri_transport_module_args():
    transport = WinUriTransport(lambda a: a, dict(auth="ntlm", username="CORP\\svc", password=PASSWORD,
                                                  validate_certs=False, request_timeout=7))
    headers = {"Prefect-Csrf-Token": "t", "Content-Type": "application/json"}
    args = transport.module_args("PATCH", "https://p/api/work_pools/etl", headers, '{"a": 1}')
    assert args["url"] == "https://p/api/work_pools/etl" and args["method"] == "PATCH"
    assert args["headers"] == {"Prefect-Csrf-Token": "t"} and args["content_type"] == "application/json"
    assert args["url_username"] == "CORP\\svc" and args["url_password"] == PASSWORD
    assert "force_basic_auth" not in args and args["validate_certs"] is False and args["url_timeout"] == 7


# --- validation and selection in the runner -------------------------------------------------------

def test_argument_errors_never_echo_secrets():
    args = dict(api_url="http://127.0.0.1:4200/api", auth="basic", auth_string=AUTH_STRING, name="etl",
                concurrency_limit="many")
    result = run(FakeAction(args), work_pools.argument_spec(), work_pools.reconcile)
    assert result["failed"] and "concurrency_limit" in result["msg"]
    assert_no_secret(result)


def test_auto_mode_refuses_a_linux_ssh_host():
    result = run(FakeAction(dict(api_url="http://127.0.0.1:4200/api", name="etl"), connection="ssh", shell="sh"),
                 work_pools.argument_spec(), work_pools.reconcile)
    assert result["failed"] and "delegate_to: localhost" in result["msg"]


def test_target_mode_on_a_local_connection_is_refused():
    args = dict(api_url="http://127.0.0.1:4200/api", name="etl", api_from="target")
    result = run(FakeAction(args), work_pools.argument_spec(), work_pools.reconcile)
    assert result["failed"] and "needs a Windows host" in result["msg"]


def test_common_option_problems_are_reported_before_any_request():
    fake = FakePrefect()
    args = dict(api_url="http://admin:%s@127.0.0.1:4200/api" % PASSWORD, name="etl")
    action = FakeAction(args, connection="winrm", shell="powershell", execute=fake_win_uri(fake))
    result = run(action, work_pools.argument_spec(), work_pools.reconcile)
    assert result["failed"] and "must not contain credentials" in result["msg"]
    assert action.executed == [] and PASSWORD not in json.dumps(result)


def test_api_url_falls_back_to_the_environment(monkeypatch):
    fake = FakePrefect()
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    action = FakeAction(dict(name="etl"), connection="psrp", shell="powershell", execute=fake_win_uri(fake))
    assert run(action, work_pools.argument_spec(), work_pools.reconcile)["changed"]


def test_flow_run_failure_result_keeps_state_and_logs_and_hides_secrets():
    fake = FakePrefect(auth_string=AUTH_STRING)
    fake.add_deployment("etl", "prod", states=["FAILED"], logs=["password was %s" % PASSWORD])
    args = dict(api_url="http://127.0.0.1:4200/api", auth="basic", auth_string=AUTH_STRING,
                deployment="etl/prod", poll_interval=1)
    result = run(FakeAction(args, connection="psrp", shell="powershell", execute=fake_win_uri(fake)),
                 flow_runs.argument_spec(), flow_runs.run)
    assert result["failed"] and result["flow_run"]["state_type"] == "FAILED"
    assert result["logs"] == ["2026-01-12T08:15:00.000000Z INFO password was ********"]
    assert_no_secret(result)
