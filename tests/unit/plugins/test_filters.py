"""The filter plugins: input formats, and what the nssm_services role puts on a host (services, accounts, directory
rules, NSSM settings, restarts, verify verdicts), as ordinary Python tests."""
from __future__ import annotations

import copy

import pytest

from ansible_collections.enclave.prefect.plugins.filter.input_errors import (
    input_errors,
    win_path_relation,
    win_paths_not_inside,
)
from ansible_collections.enclave.prefect.plugins.filter.nssm_services import (
    NSSM_DEFAULTS,
    nssm_services_plan,
    nssm_services_restarts,
    nssm_services_settings_input,
    nssm_services_verify_problems,
    nssm_services_workers_online,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("kind, good, bad", [
    ("win_path", ["C:\\Prefect", "C:\\Program Files\\Python312", "D:\\"], ["Prefect", "C:/Prefect", "C:\\a%b", "C:\\a|b", "\\\\fs\\x"]),
    ("unc_path", ["\\\\fs\\software\\ep"], ["C:\\x", "\\\\fs", "//fs/x"]),
    ("url", ["https://prefect.corp.local/api", "http://127.0.0.1:4200/api"], ["prefect.corp.local/api", "https://a b/", "ftp://x"]),
    ("sha256", ["ab" * 32], ["ab" * 31, "g" * 64, ""]),
    ("sha256?", ["", "AB" * 32], ["abc"]),
    ("account", ["svc_prefect", ".\\svc_prefect", "CORP\\svc_prefect", "CORP\\gmsa_prefect$", "svc prefect"],
     ["{'x': 1}", "CORP\\a$b", "a:b", "a@corp", "a\\b\\c", "", ".hidden"]),
    ("service_name", ["PrefectWorker-etl", "Prefect.W_1"], ["Prefect Worker", "-W", "W/x", "x" * 81]),
    ("plain_name", ["windows-etl"], ["my pool", "p'q"]),
    ("version", ["3.8.8", "3.9.0rc1"], ["latest", "3.8"]),
    ("python_minor", ["3.12"], ["3.12.1", "312"]),
])
def test_input_kinds(kind, good, bad):
    for value in good:
        assert input_errors([["v", kind, value]]) == [], (kind, value)
    for value in bad:
        [message] = input_errors([["v", kind, value]])
        assert message.startswith("v must be ") and repr(value) in message, message


@pytest.mark.parametrize("kind, value, words", [
    # Windows resolves '.' and '..' and strips a trailing dot or space: the checked path would not be the used one.
    ("win_path", "C:\\Prefect\\..", "'.' or '..' segments"),
    ("win_path", "C:\\Prefect\\.\\staging", "'.' or '..' segments"),
    ("win_path", "C:\\Prefect\\staging\\..\\..\\Windows", "'.' or '..' segments"),
    ("win_path", "C:\\Prefect.", "ending in a dot or a space"),
    ("win_path", "C:\\Prefect \\data", "ending in a dot or a space"),
    ("unc_path", "\\\\fs\\share\\..\\other", "'.' or '..' segments"),
    # A root the roles protect: its broad groups would be purged.
    ("win_root", "C:\\", "not a drive root"),
    ("win_root", "D:", "an absolute Windows path"),
    ("win_root", "C:\\ProgramData", "not Windows"),
    ("win_root", "c:\\program files\\", "not Windows"),
    ("win_root", "C:\\Program Files (x86)", "not Windows"),
    ("win_root", "C:\\Users", "not Windows"),
    ("win_root", "C:\\Windows", "not Windows"),
    ("win_root", "C:\\WINDOWS\\Temp\\prefect", "not Windows"),
    ("win_root", "C:\\Prefect\\..", "'.' or '..' segments"),
])
def test_paths_that_name_another_directory_or_a_system_one_are_refused(kind, value, words):
    [message] = input_errors([["prefect_root", kind, value]])
    assert message.startswith("prefect_root must be ") and words in message, message


@pytest.mark.parametrize("value", ["C:\\Prefect", "D:\\Prefect\\data", "C:\\Program Files\\Python312",
                                   "C:\\ProgramData\\Prefect", "C:\\Users\\Public\\prefect", "E:\\Backups\\prefect"])
def test_directories_of_their_own_are_accepted_as_roots(value):
    assert input_errors([["prefect_root", "win_root", value]]) == []


def test_path_relations_compare_as_windows_does():
    assert win_path_relation("C:\\Prefect\\data", "c:\\prefect\\") == "inside"
    assert win_path_relation("c:\\PREFECT\\", "C:\\Prefect") == "same"
    assert win_path_relation("C:\\Prefect", "C:\\Prefect\\data") == "contains"
    # A string prefix is not containment.
    assert win_path_relation("C:\\Prefect\\backups", "C:\\Prefect\\backup") == "apart"
    assert win_path_relation("C:\\Prefectx", "C:\\Prefect") == "apart"
    assert win_path_relation("D:\\x", "D:\\") == "inside"
    assert win_paths_not_inside(["C:\\Prefect\\data", "C:\\Prefect", "C:\\Prefect2\\logs"], "C:\\Prefect") == [
        "C:\\Prefect", "C:\\Prefect2\\logs"]


def test_input_of_another_type_is_named_not_converted():
    assert input_errors([["nssm_services_account", "account", {"x": 1}]]) == [
        "nssm_services_account must be an account name: name, .\\name, DOMAIN\\name or DOMAIN\\gmsa$, not a mapping "
        "(got {'x': 1})"]
    assert "not a list" in input_errors([["p", "win_path", ["C:\\x"]]])[0]
    assert "not a boolean" in input_errors([["p", "win_path", True]])[0]
    with pytest.raises(ValueError):
        input_errors([["p", "no_such_kind", "x"]])


def _cfg(**over):
    cfg = {
        "host": "prefect-aio",
        "server_enabled": True,
        "proxy_host": True,
        "worker_api_auth_string": "",
        "server": {"service": "PrefectServer", "display_name": "Prefect Server", "description": "d", "start_mode": "auto",
                   "ui_api_url": "/api", "ui_static_dir": "C:\\Prefect\\data\\ui", "env": {}, "restart_delay_ms": 10000,
                   "stop_timeout_ms": 15000, "failure_delays_ms": [10000, 30000, 60000]},
        "account": "svc_prefect", "account_password": "S3rver-pw", "worker_account": "svc_prefect_worker",
        "worker_account_password": "W0rker-pw", "shared_account_allowed": False,
        "workers": [{"service": "PrefectWorker", "pool": "windows-process", "limit": 4, "queues": ["default", "critical"]}],
        "worker_api_url": "http://127.0.0.1:4200/api", "worker_home": "C:\\Prefect\\worker-data",
        "worker_restart_delay_ms": 15000, "worker_stop_timeout_ms": 60000, "worker_failure_delays_ms": [15000],
        "pools": [], "rotate_bytes": 10485760, "rotate_seconds": 0, "rotate_online": True, "throttle_ms": 5000,
        "nssm_sha256": "ab" * 32, "nssm_archive": "nssm-2.24-101-g897c7ad.zip",
        "prefect": {"version": "3.8.8", "root": "C:\\Prefect", "home": "C:\\Prefect\\data", "logs_dir": "C:\\Prefect\\logs",
                    "flows_dir": "C:\\Prefect\\flows", "venvs_dir": "C:\\Prefect\\venvs",
                    "venv_python": "C:\\Prefect\\venvs\\current\\Scripts\\python.exe", "api_url": "http://127.0.0.1:4200/api",
                    "server_host": "127.0.0.1", "server_port": 4200, "api_auth_string": "", "database_url": "",
                    "ca_host_path": ""},
    }
    for key, value in over.items():
        target = cfg
        *path, last = key.split("__")
        for part in path:
            target = target[part]
        target[last] = value
    return cfg


def test_all_in_one_plan():
    plan = nssm_services_plan(_cfg())
    assert plan["errors"] == []
    server, worker = plan["services"]
    assert server["parameters"] == "-P -m prefect server start --host 127.0.0.1 --port 4200"
    assert worker["parameters"] == ("-P -m prefect worker start --pool windows-process --name PrefectWorker-prefect-aio "
                                    "--work-queue default --work-queue critical --limit 4")
    assert (server["logon"], worker["logon"]) == (".\\svc_prefect", ".\\svc_prefect_worker")
    assert worker["dependencies"] == ["PrefectServer"] and worker["local"]
    assert worker["environment"]["PREFECT_HOME"] == "C:\\Prefect\\worker-data"
    assert server["environment"]["PREFECT_HOME"] == "C:\\Prefect\\data"
    # NSSM settings: the five at NSSM's default are still asked for (and read as absent = default on the host).
    asked = ("AppStdoutCreationDisposition", "AppStopMethodWindow", "AppKillProcessTree", "AppNoConsole")
    assert {k: server["params"][k] for k in asked} == {"AppStdoutCreationDisposition": "4", "AppStopMethodWindow": "1500",
                                                       "AppKillProcessTree": "1", "AppNoConsole": "0"}
    assert set(server["params"]) <= set(NSSM_DEFAULTS)
    assert [a["name"] for a in plan["accounts"]] == ["svc_prefect", "svc_prefect_worker"]
    rules = {d["path"]: d["rules"] for d in plan["dirs"]["directories"]}
    exclusive = [d["path"] for d in plan["dirs"]["directories"] if d.get("exclusive")]
    assert exclusive == ["C:\\Prefect\\data", "C:\\Prefect\\logs"]
    assert rules["C:\\Prefect\\logs"] == [{"account": ".\\svc_prefect", "rights": "Modify"}]
    assert rules["C:\\Prefect\\logs\\workers"] == [{"account": ".\\svc_prefect_worker", "rights": "Modify"}]
    assert worker["stderr"] == "C:\\Prefect\\logs\\workers\\PrefectWorker.err.log"
    assert rules["C:\\Prefect\\data"] == [{"account": ".\\svc_prefect", "rights": "Modify"}]
    assert rules["C:\\Prefect\\flows"] == [{"account": ".\\svc_prefect_worker", "rights": "Modify"}]
    assert rules["C:\\Prefect\\worker-data"] == [{"account": ".\\svc_prefect_worker", "rights": "Modify"}]
    assert plan["pools"] == [{"name": "windows-process", "type": "process"}]
    assert plan["account_kinds"] == [{"name": ".\\svc_prefect", "kind": "local", "roles": ["server"]},
                                     {"name": ".\\svc_prefect_worker", "kind": "local", "roles": ["worker"]}]
    settings = nssm_services_settings_input(plan)
    assert settings[0]["application"] == "C:\\Prefect\\venvs\\current\\Scripts\\python.exe"
    assert "password" not in settings[0]
    # Local accounts reach the scripts qualified, so that resolving them never leaves the local account database.
    assert [x["account"] for x in settings] == [".\\svc_prefect", ".\\svc_prefect_worker"]


def test_NSSM_defaults_are_those_of_the_bundled_build():
    """settings.cpp at 897c7ad: what `nssm set` deletes and NSSM uses when absent (also FINDINGS.md)."""
    assert {k: NSSM_DEFAULTS[k] for k in ("AppStdoutCreationDisposition", "AppStderrCreationDisposition",
                                          "AppStopMethodConsole", "AppStopMethodWindow", "AppStopMethodThreads",
                                          "AppThrottle", "AppKillProcessTree", "AppNoConsole", "AppRotateFiles")} == {
        "AppStdoutCreationDisposition": 4, "AppStderrCreationDisposition": 4, "AppStopMethodConsole": 1500,
        "AppStopMethodWindow": 1500, "AppStopMethodThreads": 1500, "AppThrottle": 1500, "AppKillProcessTree": 1,
        "AppNoConsole": 0, "AppRotateFiles": 0}


def test_remote_worker_with_https_gets_the_ca_and_no_server_account():
    cfg = _cfg(server_enabled=False, worker_api_url="https://prefect.corp.local/api",
               worker_account="CORP\\gmsa_prefect$", worker_account_password="",
               prefect__ca_host_path="C:\\Prefect\\tools\\enclave-ca.pem", worker_api_auth_string="CORP\\api:pw")
    plan = nssm_services_plan(cfg)
    assert plan["errors"] == []
    [worker] = plan["services"]
    assert worker["environment"]["PREFECT_API_AUTH_STRING"] == "CORP\\api:pw"
    assert worker["environment"]["PREFECT_API_SSL_CERT_FILE"] == "C:\\Prefect\\tools\\enclave-ca.pem"
    assert worker["dependencies"] == [] and not worker["local"] and worker["logon"] == "CORP\\gmsa_prefect$"
    assert plan["https"] and plan["accounts"] == [
        {"name": "CORP\\gmsa_prefect$", "lookup": "CORP\\gmsa_prefect$", "kind": "gmsa", "roles": ["worker"], "password": ""}]
    paths = [d["path"] for d in plan["dirs"]["directories"]]
    assert paths == ["C:\\Prefect\\logs", "C:\\Prefect\\logs\\workers", "C:\\Prefect\\flows", "C:\\Prefect\\worker-data",
                     "C:\\Prefect\\venvs"]
    groups = nssm_services_workers_online(plan, {"PrefectWorker": {"app_started": "2026-01-01T00:00:00.000Z"}})
    assert "CORP\\api:pw" not in repr(groups)
    assert groups == [{"api_url": "https://prefect.corp.local/api", "local": False, "credential": "worker",
                       "workers": [{"pool": "windows-process", "name": "PrefectWorker-prefect-aio",
                                    "heartbeat_after": "2026-01-01T00:00:00.000Z"}]}]


@pytest.mark.parametrize("over, words", [
    ({"worker_account": "svc_prefect"}, "runs both the Prefect server and a worker"),
    ({"worker_api_url": "https://prefect.corp.local/api"}, "PREFECT_API_SSL_CERT_FILE"),
    ({"account_password": ""}, "Account svc_prefect needs a password"),
    ({"account": "CORP\\Administrator"}, "unprivileged account"),
    ({"account": "NT AUTHORITY\\LocalService"}, "unprivileged account"),
    ({"workers": [{"service": "W", "pool": "p"}, {"service": "w", "pool": "q"}]}, "service names must be unique"),
    ({"workers": [{"service": "PrefectServer", "pool": "p"}]}, "must differ from the server's"),
    ({"server_enabled": False, "worker_api_url": ""}, "has no API URL"),
    # People behind IIS Windows auth would get 401 from Prefect's own auth.
    ({"prefect__api_auth_string": "admin:pw"}, "prefect_api_auth_string must be empty on a host of the prefect_proxy group"),
    ({"server_enabled": False, "worker_api_url": "https://prefect.corp.local:8443/api", "prefect__ca_host_path": "C:\\Prefect\\ca.pem"},
     "it needs prefect_worker_api_auth_string"),
    ({"server_enabled": False, "worker_api_url": "https://prefect.corp.local:8443/api", "prefect__ca_host_path": "C:\\Prefect\\ca.pem",
      "worker_api_auth_string": "svc api:S3rver-pw"}, "prefect_worker_api_auth_string must be account:password"),
    ({"server_enabled": False, "worker_api_url": "https://prefect.corp.local:8443/api", "prefect__ca_host_path": "C:\\Prefect\\ca.pem",
      "worker_api_auth_string": "CORP\\svc_api:"}, "prefect_worker_api_auth_string must be account:password"),
    ({"server_enabled": False, "worker_api_url": "http://prefect.corp.local:8080/api", "worker_api_auth_string": "CORP\\a:S3rver-pw"},
     "in clear text"),
    ({"worker_home": "D:\\w"}, "nssm_services_worker_home must be under prefect_root"),
    ({"worker_failure_delays_ms": [0]}, "nssm_services_worker_failure_delays_ms"),
    ({"account": {"x": 1}}, "nssm_services_account must be an account name"),
    ({"rotate_bytes": 5 * 2 ** 30}, "nssm_services_rotate_bytes must be a whole number from 0 to 4294967295"),
    ({"worker_stop_timeout_ms": -1}, "nssm_services_worker_stop_timeout_ms must be a whole number"),
])
def test_plan_errors(over, words):
    errors = nssm_services_plan(_cfg(**over))["errors"]
    assert any(words in e for e in errors), errors
    for secret in ("%USERNAME%", "%TEMP%", "S3rver-pw", "W0rker-pw"):
        assert not any(secret in e for e in errors), errors


def test_credentials_follow_the_path_a_worker_takes():
    """Loopback workers send nothing (or the local server's own string off proxy hosts); remote ones the machine path's."""
    design = nssm_services_plan(_cfg(worker_api_auth_string="CORP\\svc_api:W0rker-pw"))
    assert design["errors"] == []
    server, worker = design["services"]
    assert "PREFECT_API_AUTH_STRING" not in worker["environment"] and worker["local"]
    assert "PREFECT_SERVER_API_AUTH_STRING" not in server["environment"]
    off_proxy = nssm_services_plan(_cfg(proxy_host=False, prefect__api_auth_string="admin:S3rver-pw"))
    assert off_proxy["errors"] == []
    server, worker = off_proxy["services"]
    assert server["environment"]["PREFECT_SERVER_API_AUTH_STRING"] == worker["environment"]["PREFECT_API_AUTH_STRING"] == "admin:S3rver-pw"
    # A worker-only host never gets the server's string, even when one is set for the inventory.
    remote = nssm_services_plan(_cfg(server_enabled=False, worker_api_url="https://prefect.corp.local:8443/api",
                                     prefect__ca_host_path="C:\\Prefect\\ca.pem", prefect__api_auth_string="admin:S3rver-pw",
                                     worker_api_auth_string="CORP\\svc_api:W0rker-pw"))
    assert remote["errors"] == []
    assert remote["services"][0]["environment"]["PREFECT_API_AUTH_STRING"] == "CORP\\svc_api:W0rker-pw"
    # Two remote workers, one shape error.
    two = [{"service": "A", "pool": "p"}, {"service": "B", "pool": "p"}]
    bad = nssm_services_plan(_cfg(server_enabled=False, workers=two, worker_api_url="https://prefect.corp.local:8443/api",
                                  prefect__ca_host_path="C:\\Prefect\\ca.pem", worker_api_auth_string="nobody"))
    assert [e for e in bad["errors"] if "DOMAIN" in e] == [bad["errors"][0]] and len(bad["errors"]) == 1
    assert not any("nobody" in e for e in bad["errors"])


def test_url_encoded_password_is_left_to_the_host():
    """Whether NSSM would expand a '%NAME%' depends on the names defined on the host: nssm_settings.ps1 decides there
    (tests/roles/test_noop_rerun.py), so the plan accepts any encoded password."""
    for url in ("postgresql+asyncpg://prefect:p%40ss@db/prefect", "postgresql+asyncpg://prefect:Xy%409%23kL%212q@db/prefect"):
        assert nssm_services_plan(_cfg(prefect__database_url=url))["errors"] == []


def test_shared_account_can_be_allowed_explicitly():
    plan = nssm_services_plan(_cfg(worker_account="svc_prefect", shared_account_allowed=True))
    assert plan["errors"] == [] and plan["accounts"][0]["roles"] == ["server", "worker"]


def test_local_workers_stop_before_and_start_after_their_server_restarts():
    plan = nssm_services_plan(_cfg())
    report = {"PrefectServer": {"restart": True, "was_running": True}, "PrefectWorker": {"restart": True, "was_running": True}}
    assert nssm_services_restarts(plan, report) == {"restart": ["PrefectServer"], "dependents": ["PrefectWorker"]}
    # A worker that was stopped when the settings were read has been started by the service task since.
    stopped = dict(report, PrefectWorker={"restart": False, "was_running": False})
    assert nssm_services_restarts(plan, stopped) == {"restart": ["PrefectServer"], "dependents": ["PrefectWorker"]}
    assert nssm_services_restarts(plan, {"PrefectWorker": {"restart": True, "was_running": True}}) == {
        "restart": ["PrefectWorker"], "dependents": []}
    assert nssm_services_restarts(plan, {}) == {"restart": [], "dependents": []}
    remote = nssm_services_plan(_cfg(worker_api_url="http://127.0.0.2:4200/api"))
    assert nssm_services_restarts(remote, report) == {"restart": ["PrefectServer", "PrefectWorker"], "dependents": []}


def test_verify_problems():
    plan = nssm_services_plan(_cfg())
    good = {"exists": True, "state": "Running", "app_running": True, "restarted_during_settle": False}
    status = {"PrefectServer": dict(good, account=".\\svc_prefect"), "PrefectWorker": dict(good, account=".\\svc_prefect_worker")}
    assert nssm_services_verify_problems(plan, status, 20) == []
    cases = [
        ({"state": "Paused"}, "PrefectWorker is PAUSED: NSSM throttles it"),
        ({"state": "Stopped"}, "PrefectWorker is Stopped, expected Running"),
        ({"restarted_during_settle": True}, "application restarted within 20 s"),
        ({"app_running": False}, "application is not running within 20 s"),
        ({"account": "LocalSystem"}, "runs as LocalSystem, expected .\\svc_prefect_worker"),
        ({"exists": False}, "PrefectWorker is not installed"),
    ]
    for change, words in cases:
        broken = copy.deepcopy(status)
        broken["PrefectWorker"].update(change)
        [problem] = nssm_services_verify_problems(plan, broken, 20)
        assert words in problem and ("PrefectWorker.err.log" in problem or "state" not in change and "app_running" not in change
                                     and "restarted_during_settle" not in change), problem


def test_one_list_of_secret_names_serves_the_filter_and_the_scripts():
    """roles/common/vars/main/secrets.yml is what nssm_settings.ps1, diagnose.ps1 and the migrations get; the filter
    holds the same text."""
    import re
    from pathlib import Path

    import yaml

    from ansible_collections.enclave.prefect.plugins.filter import nssm_services

    common = yaml.safe_load((Path(nssm_services.__file__).parents[2] / "roles/common/vars/main/secrets.yml").read_text())
    assert common["common_secret_name_pattern"] == nssm_services.SECRET_NAME_PATTERN
    for name in ("DB_PASS", "PGPASSWORD", "SENTRY_DSN", "SLACK_WEBHOOK_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL",
                 "PREFECT_API_AUTH_STRING", "prefect_api_key", "MY_TOKEN", "AWS_SECRET_ACCESS_KEY", "DATABASE_URL"):
        assert nssm_services.is_secret(name), name
    for name in ("PREFECT_HOME", "PREFECT_API_URL", "PYTHONUTF8", "PREFECT_SERVER_API_PORT", "HTTPS_PROXY"):
        assert not nssm_services.is_secret(name), name
    url = re.compile(common["common_secret_url_pattern"])
    masked = url.sub(r"\1********@", "HTTPS_PROXY=http://svc:Px%40Se:cret@proxy01:8080 and https://host/x@y")
    assert masked == "HTTPS_PROXY=http://svc:********@proxy01:8080 and https://host/x@y"


@pytest.mark.parametrize("kind, value", [
    ("url", "http://prefect.corp.local:99999/api"), ("url", "http://::::/api"), ("https_url", "https://[fd00::5/api"),
    ("account", "CORP\\Administrator "), ("account", "svc_prefect\n"), ("plain_name", "pool\n"),
    ("win_path", "C:\\PROGRA~1\\Prefect"), ("win_path", "C:\\Prefect\\NUL"), ("win_path", "C:\\Prefect\\com1.txt"),
    ("file_name", ".."), ("file_name", "CON"), ("win_root", "C:\\Users\\Administrator"),
    ("win_root", "C:\\ProgramData\\Microsoft\\Crypto"),
], ids=lambda v: repr(v)[:30])
def test_what_an_audit_found_accepted_is_refused(kind, value):
    """Ports beyond 65535, hosts made of colons, trailing spaces and line breaks ('$' alone accepts one), 8.3 and device
    names, a profile or Windows' own ProgramData\\Microsoft as a root the roles would protect."""
    assert input_errors([["v", kind, value]]), (kind, value)


@pytest.mark.parametrize("kind, value", [
    ("url", "https://[fd00::5]:8443/api"), ("url", "http://127.0.0.1:4200/api"), ("win_root", "C:\\Users\\Public\\prefect"),
    ("win_path", "D:\\Data\\Console\\x"), ("file_name", "python-3.12.10-amd64.exe")])
def test_their_good_neighbours_pass(kind, value):
    assert input_errors([["v", kind, value]]) == [], (kind, value)


def test_server_service_depends_on_the_local_postgresql_when_given():
    """nssm_services_server_dependencies (default: the local PostgreSQL service on its own database host) becomes the
    server's DependOnService; none by default in the plan input."""
    assert _plan_server(nssm_services_plan(_cfg()))["dependencies"] == []
    plan = nssm_services_plan(_cfg(server__dependencies=["postgresql-x64-17"]))
    assert _plan_server(plan)["dependencies"] == ["postgresql-x64-17"]
    assert not plan["errors"]


def _plan_server(plan):
    return next(s for s in plan["services"] if s["kind"] == "server")


def test_iis_worker_credentials_split_local_and_domain_accounts():
    from ansible_collections.enclave.prefect.plugins.filter.iis import iis_worker_credentials
    got = iis_worker_credentials(["prefect_machine:One-1", "CORP\\svc_api:Two-2", "", "PREFECT_MACHINE:One-1",
                                  "x+y:Bad-3", "a" * 21 + ":Long-4", "..:Dots-5", "other:Pw-6", "other:Pw-7"])
    assert got["local"] == [{"name": "other", "password": "Pw-6"}, {"name": "prefect_machine", "password": "One-1"}]
    assert got["domain"] == ["CORP\\svc_api"]
    assert got["conflicts"] == ["other"]
    assert got["bad"] == ["..", "a" * 21, "x+y"]


def test_iis_worker_account_clashes_name_both_sides():
    from ansible_collections.enclave.prefect.plugins.filter.iis import iis_worker_account_clashes, iis_worker_credentials
    deny = ["SeDenyBatchLogonRight"]
    local = iis_worker_credentials(["prefect_machine:pw"])
    assert iis_worker_account_clashes(local, [["backup_account", "svc_prefect_backup", deny]]) == []
    found = iis_worker_account_clashes(local, [["nssm_services_account", ".\\Prefect_Machine", []]])
    assert len(found) == 1 and "prefect_machine is also nssm_services_account (.\\Prefect_Machine)" in found[0]
    # A domain service account of the same name is another account.
    assert iis_worker_account_clashes(local, [["nssm_services_account", "CORP\\prefect_machine", deny]]) == []
    domain = iis_worker_credentials(["CORP\\svc_api:pw"])
    assert iis_worker_account_clashes(domain, [["nssm_services_account", "corp\\SVC_API", []]]) == []
    found = iis_worker_account_clashes(domain, [["nssm_services_account", "corp\\SVC_API", deny]])
    assert len(found) == 1 and "denied batch logon" in found[0] and "pw" not in found[0].replace("password", "")
