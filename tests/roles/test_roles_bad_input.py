"""Bad input to the Windows roles fails on the control node, names the variable, and touches no host.

Each case applies one role to localhost (connection local). A Windows module cannot run there, so a case
that got past validation would fail on its first host task instead; every case asserts that the failing
task is a controller-side check and that no task reached the host.
"""
from __future__ import annotations

import pytest

from rolerun import REPO, VALIDATION_ACTIONS, run_cases

pytestmark = pytest.mark.simulated

SERVER = {"nssm_services_server_enabled": True, "nssm_services_account_password": "not-checked-here",
          "nssm_services_worker_account_password": "not-checked-either"}
CA = str(REPO / "tests" / "fixtures" / "roles" / "enclave-ca.pem")
# Not a variable: puts the case's host in the prefect_proxy group (IIS with Windows authentication in front).
IN_PROXY_GROUP = {"<group>": "prefect_proxy"}
# A proxy host's input that passes (the certificate's thumbprint in the proxy's store).
THUMB = "5E0C1D7A9B3F4E2D8C6A1B0F9E8D7C6B5A4F3E2D"
PROXY = {**IN_PROXY_GROUP, "prefect_public_host": "prefect.corp.local", "iis_proxy_certificate_thumbprint": THUMB,
         "iis_proxy_allowed_groups": ["CORP\\Prefect Users"]}

CASES = [
    # role, vars, words the message must contain
    ("python", {"python_state": "latest"}, ["python_state", "present, absent", "latest"]),
    ("python", {"python_prepend_path": "sometimes"}, ["python_prepend_path", "bool"]),
    ("python", {"python_extra_arguments": {"Include_doc": 0}}, ["python_extra_arguments", "list"]),
    ("python", {"python_version": "3.11.9"}, ["python_version 3.11.9", "3.12"]),
    ("python", {"prefect_artifact_delivery": "ftp"}, ["prefect_artifact_delivery", "push, share, url", "ftp"]),
    ("python", {"prefect_artifact_delivery": "share"}, ["prefect_bundle_share"]),
    ("python", {"prefect_artifact_delivery": "url", "prefect_bundle_url": "nexus.corp.local/prefect"},
     ["prefect_bundle_url", "http"]),
    ("python", {"prefect_server_host": "0.0.0.0"}, ["prefect_server_host", "loopback", "0.0.0.0"]),
    ("python", {"prefect_server_port": "http"}, ["prefect_server_port", "int"]),
    ("prefect_venv", {"prefect_venv_keep": "all"}, ["prefect_venv_keep", "int"]),
    ("prefect_venv", {"prefect_venv_keep": -1}, ["prefect_venv_keep must be 0 to 20", "(got -1)"]),
    ("prefect_venv", {"prefect_venv_name": "current"}, ["prefect_venv_name", "current"]),
    ("prefect_venv", {"prefect_venv_lock_sha256": "ab" * 32},
     ["ab" * 32, "requirements/windows/prefect-py312.lock", "prefect_venv_check_committed_lock=false"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W"}]},
     ["missing required arguments: pool", "nssm_services_workers"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"pool": "p"}]},
     ["missing required arguments: service", "nssm_services_workers"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "p", "queue": "high"}]},
     ["nssm_services_workers.queue", "queues"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "p", "start_mode": "boot"}]},
     ["start_mode", "auto, delayed, manual, disabled", "boot"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "p", "limit": "many"}]},
     ["limit", "int"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": "PrefectWorker"}, ["nssm_services_workers", "dict"]),
    ("nssm_services", {**SERVER, "nssm_services_server_start_mode": "boot"},
     ["nssm_services_server_start_mode", "boot"]),
    ("nssm_services", {**SERVER, "nssm_services_rotate_bytes": "10MB"}, ["nssm_services_rotate_bytes", "int"]),
    ("nssm_services", {**SERVER, "nssm_services_server_env": ["PREFECT_X=1"]}, ["nssm_services_server_env", "dict"]),
    ("nssm_services", {**SERVER, "nssm_services_pools": [{"type": "process"}]},
     ["missing required arguments: name", "nssm_services_pools"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "p"}, {"service": "W", "pool": "q"}]},
     ["service names must be unique"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "PrefectServer", "pool": "p"}]},
     ["differ from the server's (PrefectServer)"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "my pool"}]},
     ["no spaces or quotes", "my pool"]),
    ("nssm_services", {"nssm_services_account_password": "x", "nssm_services_worker_api_url": "",
                       "nssm_services_workers": [{"service": "W", "pool": "p"}]},
     ["worker W has no API URL", "nssm_services_worker_api_url"]),
    ("nssm_services", {**SERVER, "nssm_services_account": "Administrator"}, ["unprivileged account", "got Administrator"]),
    ("nssm_services", {**SERVER, "nssm_services_account": "LocalSystem"}, ["unprivileged account", "got LocalSystem"]),
    ("nssm_services", {**SERVER, "nssm_services_account": "CORP\\Administrator"}, ["unprivileged account", "CORP\\Administrator"]),
    ("nssm_services", {**SERVER, "nssm_services_account": "NT AUTHORITY\\NetworkService"}, ["unprivileged account"]),
    ("python", {"prefect_server_host": "::1"}, ["prefect_server_host", "127.0.0.1 or localhost", "::1"]),
    ("nssm_services", {"nssm_services_server_enabled": True}, ["Account svc_prefect needs a password"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "p", "account": "CORP\\svc_w"}]},
     ["Account CORP\\svc_w needs a password"]),
    ("prefect_venv", {"prefect_venv_lock_sha256": "abc123"}, ["prefect_venv_lock_sha256", "64 hexadecimal", "abc123"]),
    ("prefect_venv", {"prefect_venv_wheelhouse_sha256": "g" * 64},
     ["prefect_venv_wheelhouse_sha256", "64 hexadecimal", "g" * 64]),
    ("nssm_services", {**SERVER, "nssm_services_server_failure_delays_ms": []},
     ["nssm_services_server_failure_delays_ms", "at least one", "(got [])"]),
    ("nssm_services", {**SERVER, "nssm_services_worker_failure_delays_ms": [15000, 0]},
     ["nssm_services_worker_failure_delays_ms", "greater than 0", "(got [15000, 0])"]),
    # Formats the argument specs cannot check: a mapping given for a str option arrives as its text.
    ("nssm_services", {**SERVER, "nssm_services_account": {"x": 1}}, ["nssm_services_account must be text, not a mapping"]),
    ("nssm_services", {**SERVER, "nssm_services_worker_account": "CORP\\a$b"}, ["'$' only at the end of a gMSA"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "Prefect Worker", "pool": "p"}]},
     ["nssm_services_workers[0].service must be a Windows service name", "Prefect Worker"]),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "p", "api_url": "prefect.corp.local/api"}]},
     ["nssm_services_workers[0].api_url must be an http:// or https:// URL"]),
    ("nssm_services", {**SERVER, "nssm_services_nssm_sha256": "abc"}, ["nssm_services_nssm_sha256 must be a SHA256"]),
    ("nssm_services", {**SERVER, "nssm_services_worker_home": "D:\\prefect-worker"},
     ["nssm_services_worker_home must be under prefect_root"]),
    ("nssm_services", {**SERVER, "nssm_services_account_deny_rights": ["DenyNetwork"]},
     ["nssm_services_account_deny_rights", "SeDeny", "DenyNetwork"]),
    # Least privilege: flow code must not run as the server's account.
    ("nssm_services", {**SERVER, "nssm_services_worker_account": "svc_prefect", "nssm_services_workers": [{"service": "W", "pool": "p"}]},
     ["svc_prefect runs both the Prefect server and a worker", "nssm_services_shared_account_allowed"]),
    # Prefect's client ignores the Windows certificate store.
    ("nssm_services", {"nssm_services_worker_account_password": "x", "nssm_services_worker_api_url": "https://prefect.corp.local/api",
                       "nssm_services_workers": [{"service": "W", "pool": "p"}]},
     ["PREFECT_API_SSL_CERT_FILE", "prefect_api_ca_cert"]),
    ("nssm_services", {"nssm_services_worker_account_password": "x", "nssm_services_worker_api_url": "https://prefect.corp.local/api",
                       "prefect_worker_api_auth_string": "CORP\\svc_api:x",
                       "prefect_api_ca_cert": str(REPO / "README.md"), "nssm_services_workers": [{"service": "W", "pool": "p"}]},
     ["prefect_api_ca_cert must be the enclave CA's PEM file"]),
    # The CA file is copied to every host: one that carries a private key (a PEM bundle exported with it) is refused.
    ("nssm_services", {"nssm_services_worker_account_password": "x", "nssm_services_worker_api_url": "https://prefect.corp.local/api",
                       "prefect_worker_api_auth_string": "CORP\\svc_api:x",
                       "prefect_api_ca_cert": str(REPO / "tests/fixtures/roles/enclave-ca-with-key.pem"),
                       "nssm_services_workers": [{"service": "W", "pool": "p"}]},
     ["prefect_api_ca_cert must be the enclave CA's PEM file", "it holds a PRIVATE KEY block"]),
    # The front door: Prefect's own auth would lock out people behind IIS Windows authentication; remote workers send
    # a Windows account's credential (IIS Basic) over https only. The refused secrets are never shown.
    ("nssm_services", {**SERVER, "prefect_api_auth_string": "prefect:Lock-Out-2f4a", **IN_PROXY_GROUP},
     ["prefect_api_auth_string must be empty on a host of the prefect_proxy group", "401", "locked out"]),
    ("nssm_services", {"nssm_services_worker_account_password": "x", "prefect_api_ca_cert": CA,
                       "nssm_services_workers": [{"service": "W", "pool": "p"}]},
     ["worker W calls https://", ":8443/api", "it needs prefect_worker_api_auth_string"]),
    ("nssm_services", {"nssm_services_worker_account_password": "x", "prefect_api_ca_cert": CA,
                       "prefect_worker_api_auth_string": "CORP\\svc_api\\x:Two-Slashes-6a0e", "nssm_services_workers": [{"service": "W", "pool": "p"}]},
     ["prefect_worker_api_auth_string must be account:password", "or DOMAIN\\account:password", "value hidden here"]),
    ("nssm_services", {"nssm_services_worker_account_password": "x", "nssm_services_worker_api_url": "http://prefect.corp.local:8080/api",
                       "prefect_worker_api_auth_string": "CORP\\svc_api:Clear-Text-91cd", "nssm_services_workers": [{"service": "W", "pool": "p"}]},
     ["would send a Windows password (Basic) to http://prefect.corp.local:8080/api in clear text"]),
    ("nssm_services", {**SERVER, "nssm_services_events_retention": "604800"},
     ["nssm_services_events_retention and nssm_services_flow_run_retention must be ISO 8601 durations", "604800"]),
    ("nssm_services", {**SERVER, "nssm_services_flow_run_retention": "1 year"}, ["ISO 8601 durations", "1 year"]),
    ("python", {"prefect_root": {"drive": "C"}}, ["prefect_root must be text, not a mapping"]),
    ("python", {"prefect_logs_dir": "D:\\logs"}, ["must be under prefect_root", "D:\\logs"]),
    ("python", {"prefect_version": "latest"}, ["prefect_version must be a version", "latest"]),
    ("python", {"prefect_artifact_delivery": "url", "prefect_bundle_url": "https://nexus corp/x"},
     ["prefect_bundle_url must be an http:// or https:// URL"]),
    ("prefect_venv", {"prefect_venvs_dir": "venvs"}, ["prefect_venvs_dir must be an absolute Windows path"]),
    ("python", {"python_target_dir": "Python312"}, ["python_target_dir must be an absolute Windows path", "'Python312'"]),
    ("python", {"python_target_dir": {"dir": "C:\\Python312"}}, ["python_target_dir must be text, not a mapping"]),
    ("python", {"python_target_dir": "C:\\Program Files\\Py\"thon"}, ["python_target_dir must be", "Py\"thon"]),
    ("python", {"python_installer_sha256": "abc123"}, ["python_installer_sha256 must be a SHA256 digest", "'abc123'"]),
    ("python", {"python_installer_filename": "installers/python-3.12.10-amd64.exe"},
     ["python_installer_filename must be a file name", "installers/python-3.12.10-amd64.exe"]),
    ("python", {"python_version": "3.12"}, ["python_version must be a version such as", "'3.12'"]),
    ("python", {"python_version": ["3.12.10"]}, ["python_version must be text, not a list"]),
    ("python", {"python_extra_arguments": ["Include_doc=0", 'SimpleInstallDescription="Prefect only"']},
     ["python_extra_arguments must be a list of installer options", "without quotes or line breaks",
      'SimpleInstallDescription=\\"Prefect only\\"']),
    ("python", {"python_extra_arguments": ["Include_doc=0\nInclude_dev=0"]},
     ["python_extra_arguments must be", "Include_doc=0\\nInclude_dev=0"]),
    ("python", {"python_extra_arguments": [{"Include_doc": 0}]}, ["python_extra_arguments[0] must be text, not a mapping"]),
    # Paths: Windows resolves '.' and '..' and strips trailing dots, so a string check is not a path check; a root the
    # roles protect (broad groups purged) is never a drive root or a directory of Windows itself.
    ("python", {"prefect_root": "C:\\Prefect\\.."}, ["prefect_root must be", "'.' or '..' segments", "C:\\Prefect\\.."]),
    ("python", {"prefect_root": "C:\\ProgramData"}, ["prefect_root must be", "ProgramData", "access rules"]),
    ("python", {"prefect_root": "D:\\"}, ["prefect_root must be", "not a drive root"]),
    ("python", {"prefect_root": "C:\\Windows\\Prefect"}, ["prefect_root must be", "not Windows"]),
    ("python", {"prefect_root": "C:\\Prefect."}, ["prefect_root must be", "ending in a dot"]),
    ("python", {"prefect_staging_dir": "C:\\Prefect\\..\\Windows\\Temp"}, ["prefect_staging_dir must be", "'..'"]),
    ("python", {"prefect_logs_dir": "C:\\Prefect2\\logs"}, ["must be under prefect_root", "C:\\Prefect2\\logs"]),
    ("python", {"prefect_home": "C:\\Prefect"}, ["must be under prefect_root"]),
    ("python", {"python_target_dir": "C:\\Program Files"}, ["python_target_dir must be", "Program Files"]),
    ("prefect_venv", {"prefect_venvs_dir": "C:\\Prefect\\venvs\\..\\.."}, ["prefect_venvs_dir must be", "'..'"]),
    # Every str option of every role refuses a mapping, a list or a boolean (plugins/action/role_input.py), every problem
    # at once, each naming the variable and never its value; whole numbers outside the range where they can be right.
    ("python", {"prefect_public_host": {"name": "x"}, "prefect_database_password": {"secret": "Map-Secret-77aa"}},
     ["prefect_public_host must be text, not a mapping", "prefect_database_password must be text, not a mapping"]),
    ("python", {"python_installer_signer": ["Python Software Foundation"]}, ["python_installer_signer must be text, not a list"]),
    ("python", {"prefect_worker_port": 0, "prefect_database_port": 65536},
     ["prefect_worker_port must be 1 to 65535 (got 0)", "prefect_database_port must be 1 to 65535 (got 65536)"]),
    ("prefect_venv", {"prefect_venv_switch_version": True}, ["prefect_venv_switch_version must be text, not a boolean"]),
    ("nssm_services", {**SERVER, "nssm_services_server_description": ["a", "b"], "nssm_services_server_ui_api_url": {"u": 1},
                       "nssm_services_workers": [{"service": "W", "pool": {"name": "p"}}]},
     ["nssm_services_server_description must be text, not a list", "nssm_services_server_ui_api_url must be text, not a mapping",
      "nssm_services_workers[0].pool must be text, not a mapping"]),
    ("nssm_services", {**SERVER, "nssm_services_server_stop_timeout_ms": 0, "nssm_services_log_retention_days": 100000,
                       "nssm_services_workers": [{"service": "W", "pool": "p", "limit": 0}],
                       "nssm_services_pools": [{"name": "p", "concurrency_limit": -5}]},
     ["nssm_services_server_stop_timeout_ms must be 1000 to 3600000 (got 0)", "nssm_services_log_retention_days must be 0 to 3650",
      "nssm_services_workers[0].limit must be 1 to 10000 (got 0)", "nssm_services_pools[0].concurrency_limit must be 0 to 100000"]),
    # An independent audit's inputs that got through before: privileged principals and groups in any spelling, a
    # trailing space or line break, the root itself as a worker's home, environment entries that bypass the role's
    # checks or add a line to NSSM's list, zero retention, 8.3 names, device names, profiles, reserved venv names.
    ("nssm_services", {**SERVER, "nssm_services_account": "BUILTIN\\Administrators"}, ["unprivileged account", "BUILTIN\\Administrators"]),
    ("nssm_services", {**SERVER, "nssm_services_account": "CORP\\Domain Admins"}, ["unprivileged account", "Domain Admins"]),
    ("nssm_services", {**SERVER, "nssm_services_account": "CORP\\Administrator "}, ["nssm_services_account must be an account name"]),
    ("nssm_services", {**SERVER, "nssm_services_account": "svc_prefect\n"}, ["nssm_services_account must be an account name"]),
    ("nssm_services", {**SERVER, "nssm_services_worker_home": "C:\\Prefect\\", "nssm_services_workers": [{"service": "W", "pool": "p"}]},
     ["nssm_services_worker_home must be under prefect_root", "not prefect_root itself"]),
    ("nssm_services", {**SERVER, "nssm_services_server_env": {"PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "true",
                                                             "PREFECT_SERVER_DATABASE_CONNECTION_URL": "sqlite+aiosqlite:///x.db"}},
     ["nssm_services_server_env must not set PREFECT_API_TLS_INSECURE_SKIP_VERIFY", "from prefect_api_ca_cert",
      "nssm_services_server_env must not set PREFECT_SERVER_DATABASE_CONNECTION_URL"]),
    ("nssm_services", {**SERVER, "nssm_services_server_env": {"PREFECT_X": "1\nPATH=C:\\evil"}}, ["'PREFECT_X' cannot be stored", "line break"]),
    ("nssm_services", {**SERVER, "nssm_services_events_retention": "P0D"}, ["ISO 8601 durations longer than zero", "P0D"]),
    ("nssm_services", {**SERVER, "nssm_services_flow_run_retention": "P7D\n"}, ["RETENTION_PERIOD", "line break"]),
    ("python", {"prefect_root": "C:\\PROGRA~1\\Prefect"}, ["prefect_root must be", "8.3 short names"]),
    ("python", {"prefect_root": "C:\\Users\\Administrator"}, ["prefect_root must be", "a profile in it"]),
    ("python", {"prefect_logs_dir": "C:\\Prefect\\NUL"}, ["prefect_logs_dir must be", "device name"]),
    # The roles write the CA file there and an uninstall deletes it: never a file outside the root.
    ("python", {"prefect_api_ca_host_path": "C:\\Windows\\System32\\drivers\\etc\\hosts"},
     ["these paths must be under prefect_root", "C:\\Windows\\System32\\drivers\\etc\\hosts"]),
    ("prefect_venv", {"prefect_venv_lock_sha256": "ab" * 32 + "\n"}, ["prefect_venv_lock_sha256"]),
    ("python", {"python_installer_filename": ".."}, ["python_installer_filename must be a file name", "not '.' or '..'"]),
    ("prefect_venv", {"prefect_venv_name": "CURRENT"}, ["prefect_venv_name must be a plain directory name other than 'current'"]),
    ("prefect_venv", {"prefect_venv_name": "v1."}, ["not ending in a dot"]),
    # prefect_database_url as Prefect 3 takes it; the password (Clear-Text-91cd) never in the message.
    ("nssm_services", {**SERVER, "prefect_database_url": "postgresql://prefect:Clear-Text-91cd@db01:5432/prefect"},
     ["prefect_database_url must start with postgresql+asyncpg://", "'postgresql'"]),
    ("nssm_services", {**SERVER, "prefect_database_url": "postgresql+asyncpg://prefect:Clear-Text-91cd@db01.corp.local:5432/prefect"},
     ["prefect_database_url names the remote database host db01.corp.local without ?ssl=verify-full"]),
    ("nssm_services", {**SERVER, "prefect_database_url": "postgresql+asyncpg://prefect:Clear-Text-91cd@db01/prefect?ssl=require"},
     ["prefect_database_url names the remote database host db01 without ?ssl=verify-full"]),
    ("nssm_services", {**SERVER, "prefect_database_url": "postgresql+asyncpg://prefect:Clear-Text-91cd@127.0.0.1:5432"},
     ["prefect_database_url names no database"]),
    # Two problems of one check: one line each (MULTI below).
    ("python", {"prefect_logs_dir": "C:\\Prefect\\NUL", "prefect_flows_dir": "C:\\Prefect\\..\\flows"},
     ["prefect_logs_dir must be", "prefect_flows_dir must be"]),
    # The proxy (tests/roles/test_iis_proxy.py runs two more through iis_proxy.yml).
    ("iis_proxy", {**PROXY, "iis_proxy_certificate_thumbprint": ""}, ["iis_proxy_certificate_thumbprint must be"]),
    ("iis_proxy", {**PROXY, "iis_proxy_certificate_thumbprint": THUMB + "\n"}, ["iis_proxy_certificate_thumbprint must be"]),
    ("iis_proxy", {**PROXY, "prefect_worker_port": 443}, ["must be different TCP ports"]),
    ("iis_proxy", {**PROXY, "prefect_public_port": 70000}, ["prefect_public_port must be 1 to 65535 (got 70000)"]),
    ("iis_proxy", {**PROXY, "prefect_public_port": 4200}, ["none of them prefect_server_port"]),
    ("iis_proxy", {**PROXY, "prefect_public_host": "10.20.1.10"}, ["prefect_public_host must be the DNS name"]),
    ("iis_proxy", {**PROXY, "prefect_public_host": "prefect corp"}, ["prefect_public_host must be the DNS name"]),
    ("iis_proxy", {**PROXY, "prefect_public_host": "localhost"}, ["not an address nor localhost"]),
    ("iis_proxy", {**PROXY, "iis_proxy_feature_source": "D:\\sources\\sxs\\..\\..\\Windows"},
     ["iis_proxy_feature_source must be", "'..' segments"]),
    ("iis_proxy", {**PROXY, "iis_proxy_arr_timeout": "00:00:30"}, ["iis_proxy_arr_timeout must be"]),
    ("iis_proxy", {**PROXY, "iis_proxy_app_pool_account": "CORP\\svc_web"}, ["iis_proxy_app_pool_account must be"]),
    ("iis_proxy", {**PROXY, "iis_proxy_app_pool_account": "NT AUTHORITY\\SYSTEM", "iis_proxy_app_pool_password": "x"},
     ["iis_proxy_app_pool_account must be an unprivileged domain account"]),
    ("iis_proxy", {**PROXY, "iis_proxy_site_dir": "inetpub\\x"}, ["iis_proxy_site_dir must be"]),
    ("iis_proxy", {**PROXY, "iis_proxy_certificate_pfx": "/nonexistent/x.pfx"}, ["iis_proxy_certificate_pfx must be"]),
]


MULTI = [i for i, c in enumerate(CASES) if set(c[1]) == {"prefect_logs_dir", "prefect_flows_dir"}]


@pytest.mark.parametrize("index", MULTI)
def test_several_problems_are_one_line_each(bad_runs, index):
    """ansible-core 2.19 keeps the backslash of a '\\n' written inside a template in YAML: the messages join with a
    real line break, so that the preflight prints one problem per line."""
    message = bad_runs[f"case{index}"].failed()[1]["msg"]
    assert "\\n" not in message, message
    assert len(message.splitlines()) >= 2, message


def _ids(cases):
    return [f"{c[0]}-{i}-{'-'.join(sorted(c[1].keys() - SERVER.keys())) or 'defaults'}" for i, c in enumerate(cases)]


@pytest.fixture(scope="module")
def role_runs(tmp_path_factory, ansible_env):
    """One ansible-playbook run per role for all its bad-input cases and its good-input cases (GOOD below): hosts fail
    independently, a bad one at its check, a good one at its first host task."""
    runs = {}
    for role in sorted({c[0] for c in CASES} | {c[0] for c in GOOD}):
        cases = {f"case{i}": {k: v for k, v in c[1].items() if k not in IN_PROXY_GROUP}
                 for i, c in enumerate(CASES) if c[0] == role}
        cases.update({f"good{i}": c[1] for i, c in enumerate(GOOD) if c[0] == role})
        proxy = [f"case{i}" for i, c in enumerate(CASES) if c[0] == role and IN_PROXY_GROUP.items() <= c[1].items()]
        # A proxy host is a server host too (the proxy forwards to its own loopback).
        runs.update(run_cases(tmp_path_factory.mktemp(role), ansible_env, role, cases,
                              groups={"prefect_proxy": proxy, "prefect_server": proxy}))
    return runs


@pytest.fixture(scope="module")
def bad_runs(role_runs):
    return role_runs


@pytest.mark.parametrize("index", range(len(CASES)), ids=_ids(CASES))
def test_bad_input_is_rejected_before_the_host(bad_runs, index):
    role, role_vars, words = CASES[index]
    run = bad_runs[f"case{index}"]
    task, result = run.failed()
    assert result.get("action") in VALIDATION_ACTIONS, (task, result.get("msg"), run.summary)
    for word in words:
        assert word in result.get("msg", ""), (word, result.get("msg"))
    assert run.host_actions() == [], run.host_actions()
    # The refused secrets are named, never shown.
    for secret in ("Pa%PATH%ss-7d1e", "Lock-Out-2f4a", "No-Domain-6a0e", "Clear-Text-91cd", "Map-Secret-77aa"):
        assert secret not in run.output


GOOD = [
    ("python", {}, "Installed Python version and location are known"),
    ("prefect_venv", {}, "Lock of the current venv is known"),
    ("nssm_services", {**SERVER, "nssm_services_workers": [{"service": "W", "pool": "p", "queues": ["a", "b"], "limit": 2}],
                       "nssm_services_pools": [{"name": "p", "queues": [{"name": "a", "priority": 1}]}]},
     "NSSM executable presence is known"),
    ("nssm_services", {"nssm_services_worker_account": "CORP\\gmsa_prefect$", "nssm_services_worker_api_url": "https://prefect.corp.local/api",
                       "prefect_worker_api_auth_string": "CORP\\svc_api:Good-4e7b",
                       "prefect_api_ca_cert": CA, "nssm_services_workers": [{"service": "W", "pool": "p"}]},
     "NSSM executable presence is known"),
    # A worker-only host on the default machine path (prefect_worker_api_url).
    ("nssm_services", {"nssm_services_worker_account": "CORP\\gmsa_prefect$", "prefect_worker_api_auth_string": "CORP\\svc_api:Good-4e7b",
                       "prefect_api_ca_cert": CA, "nssm_services_workers": [{"service": "W", "pool": "p"}]},
     "NSSM executable presence is known"),
    ("iis_proxy", {"prefect_public_host": "prefect.corp.local", "iis_proxy_certificate_thumbprint": THUMB,
                   "iis_proxy_allowed_groups": ["CORP\\Prefect Users"]},
     "Windows installation type is known"),
]


@pytest.fixture(scope="module")
def good_runs(role_runs):
    return role_runs


@pytest.mark.parametrize("index", range(len(GOOD)), ids=[f"{c[0]}-{i}" for i, c in enumerate(GOOD)])
def test_good_input_passes_validation(good_runs, index):
    """Good input gets through every controller-side check; the run then stops at the first host task,
    because the control node is not Windows."""
    run = good_runs[f"good{index}"]
    task = run.failed()[0]
    assert task.endswith(GOOD[index][2]), (task, run.summary)
    assert run.host_actions() == [task]


SECRETS = {
    "nssm_services_account_password": "PwSecret-8c1f",
    "prefect_api_auth_string": "prefect:AuthSecret-77ab",
    "prefect_database_url": "postgresql+asyncpg://prefect:DbSecret-5e2d@127.0.0.1/prefect",
}


def test_secrets_never_appear_in_output(tmp_path, ansible_env):
    """With -vvv, neither a failing validation nor a run that reaches the host prints a secret."""
    cases = {
        "failing": {"nssm_services_server_enabled": True, **SECRETS,
                    "nssm_services_workers": [{"service": "W", "pool": "p", "password": "WkSecret-1b9e", "start_mode": "boot"}]},
        "passing": {"nssm_services_server_enabled": True, **SECRETS,
                    "nssm_services_workers": [{"service": "W", "pool": "p", "account": "CORP\\w", "password": "WkSecret-1b9e"}]},
    }
    runs = run_cases(tmp_path, ansible_env, "nssm_services", cases, extra_args=["-vvv"])
    assert runs["failing"].failed()[1]["action"] in VALIDATION_ACTIONS
    assert runs["passing"].failed()[0].endswith("NSSM executable presence is known")
    output = runs["failing"].output
    for secret in ["PwSecret-8c1f", "AuthSecret-77ab", "DbSecret-5e2d", "WkSecret-1b9e"]:
        assert secret not in output, f"{secret} leaked"
