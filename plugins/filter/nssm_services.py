# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the nssm_services role puts on a host, derived from its variables in one place.

The role's vars/main.yml hands the role variables to ``nssm_services_plan`` and reads plain values from the
result: service definitions, accounts, directory rules, NSSM settings, pools and the input errors. The
decisions that need host state (which running service must restart, whether a worker is online) are
``nssm_services_restarts`` and ``nssm_services_verify_problems``.
"""
from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timezone
from urllib.parse import quote

from ansible_collections.enclave.prefect.plugins.filter.database_url import database_url_errors
from ansible_collections.enclave.prefect.plugins.filter.input_errors import input_errors, privileged_account, win_path_relation

DOCUMENTATION = r"""
name: nssm_services_plan
short_description: Service definitions, accounts, directory rules and input errors of the nssm_services role
version_added: 0.1.0
description:
  - Takes the C(nssm_services_plan_input) mapping the role builds from its variables (roles/nssm_services/vars/main.yml)
    and returns C(services), C(accounts), C(logon), C(dirs), C(pools), C(absent_workers), C(nssm_defaults) and
    C(errors) (one message per bad or inconsistent value; empty when the input is good).
  - Internal to the role; its shape follows the role's needs.
positional: _input
options:
  _input:
    description: The role's C(nssm_services_plan_input).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Show the service names the role would manage
  ansible.builtin.debug:
    msg: "{{ nssm_services_plan.services | map(attribute='name') | list }}"
"""

RETURN = r"""
_value:
  description: The plan (see description).
  type: dict
"""

# NSSM 2.24-101 (commit 897c7ad) settings.cpp `settings[]`: the value NSSM uses when a setting is absent from the
# service's Parameters key. `nssm set` to this value deletes the registry value (setting_set_number) and `nssm get` of
# an absent value prints it (get_setting presets it); nssm_settings.ps1 reads the registry itself, in one pass for all
# settings, and treats an absent value as this default.
NSSM_DEFAULTS = {
    "AppParameters": "",
    "AppDirectory": "",
    "AppStdout": "",
    "AppStderr": "",
    "AppNoConsole": 0,
    "AppRestartDelay": 0,
    "AppStdoutCreationDisposition": 4,   # OPEN_ALWAYS
    "AppStderrCreationDisposition": 4,
    "AppStopMethodSkip": 0,
    "AppStopMethodConsole": 1500,
    "AppStopMethodWindow": 1500,
    "AppStopMethodThreads": 1500,
    "AppKillProcessTree": 1,
    "AppThrottle": 1500,
    "AppRotateFiles": 0,
    "AppRotateOnline": 0,
    "AppRotateSeconds": 0,
    "AppRotateBytes": 0,
}
NSSM_EXIT_DEFAULT = "Restart"

# Environment variables whose values are secrets: masked in every result and diff.
SECRET_ENV = ["PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING",
              "PREFECT_CLIENT_CUSTOM_HEADERS", "PREFECT_SERVER_DOCKET_URL"]
# roles/common/vars/main/secrets.yml common_secret_name_pattern, the list the scripts on the hosts use (a unit test keeps
# the two equal).
SECRET_NAME_PATTERN = (r"PASSWORD|PASSWD|_PASS$|^PASS$|_PWD$|SECRET|TOKEN|CREDENTIAL|AUTH_STRING|APIKEY|API_KEY|_KEY$|^KEY$"
                       r"|_DSN$|^DSN$|CONNECTION_URL$|DATABASE_URL$|WEBHOOK|CUSTOM_HEADERS$")
SECRET_NAME = re.compile(SECRET_NAME_PATTERN, re.IGNORECASE)
LOOPBACK_URL = re.compile(r"^https?://(127\.0\.0\.1|localhost|\[::1\])[:/]")
PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# What IIS Basic authentication checks on the machine path: a Windows account and its password.
# account:password (a local account the iis_proxy role makes on the proxy host) or DOMAIN\\account:password.
WORKER_CREDENTIAL = re.compile(r"^([^\\/:*?\"<>|@\s]+\\)?[^\\/:*?\"<>|@\s]+:\S.*$")


def _origin(url):
    """scheme://host[:port] of an absolute http(s) URL, as a browser sends it in Origin; '' otherwise."""
    match = re.match(r"^(https?://[^/?#]+)", str(url or ""), re.IGNORECASE)
    return match.group(1).lower() if match else ""


def _short(account):
    """Account name without a leading '.\\' (local); domain accounts keep DOMAIN\\."""
    return account[2:] if account.startswith(".\\") else account


def _lookup(account):
    """The name the scripts resolve: a local account as .\\name, which they turn into COMPUTERNAME\\name, so that the
    lookup never leaves the local account database (LookupAccountName goes on to the domain for a bare name it does not
    find locally, e.g. in check mode before the account exists)."""
    return ".\\" + _short(account) if _kind(account) == "local" else _short(account)


def _kind(account):
    name = _short(account)
    if name.endswith("$"):
        return "gmsa"
    return "domain" if "\\" in name else "local"


def _same_account(a, b, computer=""):
    """Whether two names are the same account: '.\\name', 'name' and 'COMPUTER\\name' are one local account."""
    def key(name):
        name = _short(str(name).strip()).lower()
        if computer and name.startswith(computer.lower() + "\\"):
            name = name.split("\\", 1)[1]
        return name
    return key(a) == key(b)


# Settings the role derives from its own, checked variables (where Prefect listens and with what, which database and
# how it is reached, which CA the client trusts): an extra environment variable would bypass those checks.
PROTECTED_ENV = {
    "PREFECT_HOME": "prefect_home / nssm_services_worker_home", "PREFECT_API_URL": "prefect_api_url / the worker's api_url",
    "PREFECT_SERVER_API_HOST": "prefect_server_host", "PREFECT_SERVER_API_PORT": "prefect_server_port",
    "PREFECT_SERVER_DATABASE_CONNECTION_URL": "prefect_database_url or the composed database settings",
    "PREFECT_API_DATABASE_CONNECTION_URL": "prefect_database_url or the composed database settings",
    "PREFECT_SERVER_API_AUTH_STRING": "prefect_api_auth_string", "PREFECT_API_AUTH_STRING": "prefect_worker_api_auth_string",
    "PREFECT_API_SSL_CERT_FILE": "prefect_api_ca_cert", "PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "prefect_api_ca_cert",
    "PREFECT_CLIENT_CUSTOM_HEADERS": "prefect_worker_api_auth_string (the machine path's Authorization on websocket upgrades)",
}
# High availability (prefect_ha): what Prefect 3.9.1 keeps in one process's memory unless told otherwise, each set to
# its Redis implementation (prefect-redis 0.3.0), and the schema migration kept out of the replicas' start
# (prefect/settings/models/server/events.py 123-146, concurrency.py 14-17, docket.py 23-33, worker_channel.py 18-27,
# database.py 253-261; prefect_redis/client.py 20-98, cleanup_queue.py 74-124; proven with two replicas and a services
# process in tests/integration/test_ha_replicas.py).
HA_BACKENDS = {
    "PREFECT_SERVER_EVENTS_MESSAGING_BROKER": "prefect_redis.messaging",
    "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": "prefect_redis.messaging",
    "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
    "PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE": "prefect_redis.cleanup_queue",
}
HA_PROTECTED = dict.fromkeys(list(HA_BACKENDS) + ["PREFECT_SERVER_DOCKET_URL"]
                             + ["PREFECT_REDIS_MESSAGING_%s" % k for k in ("HOST", "PORT", "DB", "PASSWORD", "URL")]
                             + ["PREFECT_REDIS_WORKER_CLEANUP_QUEUE_%s" % k for k in ("HOST", "PORT", "DB", "PASSWORD", "URL")],
                             "prefect_ha and prefect_redis_* (every process must use the same Redis)")
PROTECTED_ENV.update(HA_PROTECTED)
REDIS_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^[0-9a-fA-F:]+$")


def _ha_env(cfg):
    """The environment every process of an HA deployment shares (API replicas and background services)."""
    redis = cfg.get("redis") or {}
    host, port, password = str(redis.get("host") or ""), int(redis.get("port") or 6379), str(redis.get("password") or "")
    auth = ":%s@" % quote(password, safe="") if password else ""
    netloc = "[%s]" % host if ":" in host else host
    env = dict(HA_BACKENDS, PREFECT_SERVER_DATABASE_MIGRATE_ON_START="false",
               PREFECT_SERVER_DOCKET_URL="redis://%s%s:%d/%d" % (auth, netloc, port, int(redis.get("docket_db", 1))),
               PREFECT_REDIS_MESSAGING_HOST=host, PREFECT_REDIS_MESSAGING_PORT=str(port),
               PREFECT_REDIS_MESSAGING_DB=str(int(redis.get("messaging_db", 0))),
               PREFECT_REDIS_WORKER_CLEANUP_QUEUE_HOST=host, PREFECT_REDIS_WORKER_CLEANUP_QUEUE_PORT=str(port),
               PREFECT_REDIS_WORKER_CLEANUP_QUEUE_DB=str(int(redis.get("cleanup_db", 2))))
    if password:
        env["PREFECT_REDIS_MESSAGING_PASSWORD"] = password
        env["PREFECT_REDIS_WORKER_CLEANUP_QUEUE_PASSWORD"] = password
    return env


def _ha_errors(cfg, database_url):
    """Why this host cannot run an HA deployment as configured (empty when it can, or when prefect_ha is off)."""
    if not cfg.get("ha"):
        return []
    errors = []
    redis = cfg.get("redis") or {}
    host = str(redis.get("host") or "")
    if not host:
        errors.append("prefect_ha: several Prefect processes (prefect_server hosts %s, prefect_services hosts %s) share "
                      "events, ordering, concurrency leases, Docket and the worker-channel queue only through Redis: set "
                      "prefect_redis_host (and prefect_redis_password from Vault)"
                      % (", ".join(cfg.get("server_hosts") or []) or "none", ", ".join(cfg.get("services_hosts") or []) or "none"))
    elif "," in host or "://" in host or not REDIS_HOST.match(host):
        errors.append("prefect_redis_host must be one host name or address of a standalone Redis (prefect-redis speaks to "
                      "one endpoint; a Redis Cluster is refused by it), got %r" % host)
    try:
        port = int(redis.get("port") or 0)
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        errors.append("prefect_redis_port must be a TCP port (1-65535), got %r" % (redis.get("port"),))
    dbs = [redis.get(k) for k in ("messaging_db", "docket_db", "cleanup_db")]
    if any(not str(d).isdigit() for d in dbs) or len({int(d) for d in dbs if str(d).isdigit()}) != 3:
        errors.append("prefect_redis_messaging_db, prefect_redis_docket_db and prefect_redis_cleanup_db must be three "
                      "different Redis database numbers, got %s" % dbs)
    # playbooks/upgrade.yml sets it to false for its own restarts; anything else would migrate from every replica at once.
    migrate = str(((cfg.get("server") or {}).get("env") or {}).get("PREFECT_SERVER_DATABASE_MIGRATE_ON_START", "false"))
    if migrate.lower() != "false":
        errors.append("nssm_services_server_env must not set PREFECT_SERVER_DATABASE_MIGRATE_ON_START with prefect_ha: Prefect "
                      "has no lock around its migrations, so the replicas never migrate at start (the role makes the schema "
                      "once; playbooks/upgrade.yml migrates with every replica stopped)")
    if not database_url or database_url.startswith("sqlite"):
        errors.append("prefect_ha: several Prefect processes need one PostgreSQL database (a prefect_database host or "
                      "prefect_database_url); SQLite lives in one host's PREFECT_HOME")
    return errors


def _protected_env(where, env):
    return ["%s must not set %s: the role sets it from %s, which it checks (set that instead)" % (where, key, PROTECTED_ENV[key])
            for key in sorted(env or {}) if str(key).upper() in PROTECTED_ENV]


def is_secret(name):
    return name in SECRET_ENV or bool(SECRET_NAME.search(name))


def rules(names, rights):
    return [{"account": n, "rights": rights} for n in names]


def _failure_actions(delays):
    return [{"type": "restart", "delay_ms": int(d)} for d in delays]


def _settings(cfg, svc, restart_delay_ms, stop_timeout_ms):
    """NSSM parameters of one service (runbook 000 Phase 5), as the strings `nssm set` takes."""
    return {
        "AppParameters": svc["parameters"],
        "AppDirectory": svc["directory"],
        "AppStdout": svc["stdout"],
        "AppStderr": svc["stderr"],
        # Append to the log after a restart (OPEN_ALWAYS): the log of a crash is the one an administrator needs.
        "AppStdoutCreationDisposition": "4",
        "AppStderrCreationDisposition": "4",
        "AppRotateFiles": "1",
        "AppRotateOnline": "1" if cfg["rotate_online"] else "0",
        "AppRotateSeconds": str(int(cfg["rotate_seconds"])),
        "AppRotateBytes": str(int(cfg["rotate_bytes"])),
        "AppThrottle": str(int(cfg["throttle_ms"])),
        "AppRestartDelay": str(int(restart_delay_ms)),
        # Stop: Ctrl-C first (a worker shuts down cleanly on it), then the window and thread methods, then kill the
        # whole process tree so that no flow-run process outlives its worker.
        "AppStopMethodSkip": "0",
        "AppStopMethodConsole": str(int(stop_timeout_ms)),
        "AppStopMethodWindow": "1500",
        "AppStopMethodThreads": "1500",
        "AppKillProcessTree": "1",
        # Keep NSSM's console: Prefect cancels a process flow run with CTRL_BREAK_EVENT, which needs one.
        "AppNoConsole": "0",
    }


def _errors(cfg):
    """Input errors the argument specs cannot express, each naming the variable."""
    p = cfg["prefect"]
    triples = [
        ["nssm_services_account", "account", cfg["account"]],
        ["nssm_services_worker_account", "account", cfg["worker_account"]],
        ["nssm_services_server_service", "service_name", cfg["server"]["service"]],
        ["nssm_services_nssm_sha256", "sha256?", cfg["nssm_sha256"]],
        ["nssm_services_nssm_archive", "file_name", cfg["nssm_archive"]],
        ["nssm_services_server_ui_static_dir", "win_path", cfg["server"]["ui_static_dir"]],
        ["nssm_services_worker_home", "win_path", cfg["worker_home"]],
        ["nssm_services_worker_api_url", "url?", cfg["worker_api_url"]],
        ["nssm_services_server_ui_api_url", "url_or_path", cfg["server"]["ui_api_url"]],
    ]
    for i, w in enumerate(cfg["workers"]):
        where = "nssm_services_workers[%d]" % i
        triples.append([where + ".service", "service_name", w.get("service")])
        if w.get("account") is not None:
            triples.append([where + ".account", "account", w["account"]])
        if w.get("api_url") is not None:
            triples.append([where + ".api_url", "url", w["api_url"]])
        for key in ("pool", "name"):
            if w.get(key) is not None:
                triples.append(["%s.%s" % (where, key), "plain_name", w[key]])
        for q in w.get("queues") or []:
            triples.append([where + ".queues[]", "plain_name", q])
    for i, pool in enumerate(cfg["pools"]):
        triples.append(["nssm_services_pools[%d].name" % i, "plain_name", pool.get("name")])
    errors = input_errors(triples)
    if bool(cfg["server_enabled"]):
        errors += database_url_errors(p.get("database_url_override", ""))

    for name, path in (("nssm_services_worker_home", cfg["worker_home"]), ("nssm_services_server_ui_static_dir", cfg["server"]["ui_static_dir"])):
        if isinstance(path, str) and win_path_relation(path, p["root"]) != "inside":
            errors.append("%s must be under prefect_root (%s), whose hardened rules cover it, and not prefect_root itself "
                          "(got %r)" % (name, p["root"], path))
    services = [w.get("service") for w in cfg["workers"]]
    lowered = [str(s).lower() for s in services]
    if len(set(lowered)) != len(lowered):
        errors.append("nssm_services_workers: service names must be unique (got %s)" % services)
    if str(cfg["server"]["service"]).lower() in lowered:
        errors.append("nssm_services_workers: service names must differ from the server's (%s)" % cfg["server"]["service"])
    # NSSM parses numbers into a 32-bit unsigned long (nssm.cpp str_number): anything else would be stored as another
    # number and differ on every run.
    for name, value in (("nssm_services_rotate_bytes", cfg["rotate_bytes"]), ("nssm_services_rotate_seconds", cfg["rotate_seconds"]),
                        ("nssm_services_throttle_ms", cfg["throttle_ms"]),
                        ("nssm_services_server_restart_delay_ms", cfg["server"]["restart_delay_ms"]),
                        ("nssm_services_server_stop_timeout_ms", cfg["server"]["stop_timeout_ms"]),
                        ("nssm_services_worker_restart_delay_ms", cfg["worker_restart_delay_ms"]),
                        ("nssm_services_worker_stop_timeout_ms", cfg["worker_stop_timeout_ms"])):
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if not 0 <= number <= 4294967295:
            errors.append("%s must be a whole number from 0 to 4294967295 (got %r)" % (name, value))
    for name, delays in (("server", cfg["server"]["failure_delays_ms"]), ("worker", cfg["worker_failure_delays_ms"])):
        if not delays or any(int(d) <= 0 for d in delays):
            errors.append("nssm_services_%s_failure_delays_ms must list at least one restart delay in milliseconds, every one "
                          "greater than 0, e.g. [10000, 30000, 60000] (got %s)" % (name, delays))
    return errors


def nssm_services_plan(cfg):
    p = cfg["prefect"]
    errors = _errors(cfg)
    if errors:
        # Values of the wrong kind: nothing more can be derived from them.
        return dict(services=[], accounts=[], account_kinds=[], dirs={"root": p["root"], "root_rules": [], "directories": []},
                    pools=[], absent_workers=[], https=False, nssm_defaults=NSSM_DEFAULTS, nssm_exit_default=NSSM_EXIT_DEFAULT,
                    secret_env=SECRET_ENV, errors=errors)
    host = cfg["host"]
    server_enabled = bool(cfg["server_enabled"])
    base_env = {"PYTHONUTF8": "1", "PYTHONIOENCODING": "UTF-8", "PYTHONUNBUFFERED": "1"}
    auth_string = p["api_auth_string"] or ""
    worker_credential = cfg["worker_api_auth_string"] or ""
    if server_enabled and auth_string and cfg["proxy_host"]:
        # Measured on Prefect 3.8.8 (docs/architecture.md): with the server's auth string set, the Negotiate header that
        # IIS passes on from a person's browser gets 401, /ui-settings included, so nobody could use the UI or API.
        errors.append("prefect_api_auth_string must be empty on a host of the prefect_proxy group: IIS authenticates people "
                      "with Windows Authentication and passes their 'Authorization: Negotiate' header on, which Prefect "
                      "answers with 401 when PREFECT_SERVER_API_AUTH_STRING is set: every person would be locked out of "
                      "the UI and the API. The API listens on loopback only; remote workers use the machine path with "
                      "prefect_worker_api_auth_string")
    # `-P`: the working directory is not put first on sys.path, so a flow file named like a module the worker
    # imports (yaml.py in the flows directory) cannot shadow it.
    python_args = "-P -m prefect"
    services = []

    errors.extend(_ha_errors(cfg, p["database_url"]) if (server_enabled or cfg.get("services_enabled")) else [])
    ha_env = _ha_env(cfg) if cfg.get("ha") else {}

    if server_enabled:
        srv = cfg["server"]
        env = dict(base_env, PREFECT_HOME=p["home"], PREFECT_API_URL=p["api_url"], PREFECT_SERVER_API_HOST=p["server_host"],
                   PREFECT_SERVER_API_PORT=str(p["server_port"]), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   PREFECT_UI_API_URL=srv["ui_api_url"], PREFECT_UI_STATIC_DIRECTORY=srv["ui_static_dir"],
                   # uvicorn closes an idle keep-alive connection after 5 s by default (prefect/settings/models/server/
                   # api.py keepalive_timeout, "greater than the load balancer's idle timeout" behind one); ARR keeps
                   # idle back-end connections pooled for a time it does not document, and one it reuses after uvicorn
                   # closed it is a 502.3. Well above the usual proxy windows (a few minutes); loopback sockets only.
                   PREFECT_SERVER_API_KEEPALIVE_TIMEOUT="620",
                   # A state-changing request needs a token the page fetched from this server (Prefect's CSRF
                   # protection): a page of another origin that a person visits cannot make their browser, signed in by
                   # Windows authentication, change Prefect. The UI and Prefect's client fetch the token themselves.
                   PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED="true",
                   # Prefect answers CORS with Access-Control-Allow-Origin: * by default (settings/models/server/api.py
                   # cors_allowed_origins): any page a browser on this host opens could read the loopback API, which
                   # asks for no credentials, CSRF token included. The UI is served from its API's own origin and needs
                   # no CORS: only that origin is named.
                   PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS=_origin(srv["ui_api_url"]) or _origin(p["api_url"]))
        if p["database_url"]:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = p["database_url"]
        if auth_string:
            env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
        errors.extend(_protected_env("nssm_services_server_env", srv["env"]))
        env.update({k: str(v) for k, v in (srv["env"] or {}).items()})
        # HA: this host serves the API only (--no-services); the background services run on the prefect_services hosts.
        env.update(ha_env)
        svc = {
            "name": srv["service"], "kind": "server", "account": cfg["account"], "application": p["venv_python"],
            "password": cfg["account_password"],
            "parameters": "%s server start --host %s --port %s%s" % (python_args, p["server_host"], p["server_port"],
                                                                     " --no-services" if cfg.get("ha") else ""),
            "directory": p["home"],
            "display_name": srv["display_name"], "description": srv["description"], "start_mode": srv["start_mode"],
            "dependencies": [str(d) for d in srv.get("dependencies") or []], "environment": env,
            "failure_actions": _failure_actions(srv["failure_delays_ms"]),
        }
        svc["stdout"], svc["stderr"] = (r"%s\%s.out.log" % (p["logs_dir"], svc["name"]), r"%s\%s.err.log" % (p["logs_dir"], svc["name"]))
        svc["params"] = _settings(cfg, svc, srv["restart_delay_ms"], srv["stop_timeout_ms"])
        services.append(svc)

    if cfg.get("services_enabled"):
        # Prefect's background services (scheduler, late runs, cancellation cleanup, event persister, triggers, ...) of an
        # HA deployment, apart from the API replicas: `prefect server services start` (prefect/cli/server.py).
        ssv = cfg.get("services") or {}
        env = dict(base_env, PREFECT_HOME=p["home"], PREFECT_SERVER_ANALYTICS_ENABLED="false")
        env.update({k: str(v) for k, v in (ssv.get("env") or {}).items()})
        if p["database_url"]:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = p["database_url"]
        env.update(ha_env)
        svc = {
            "name": ssv.get("service") or "PrefectServices", "kind": "services", "account": cfg["account"],
            "application": p["venv_python"], "password": cfg["account_password"],
            "parameters": "%s server services start" % python_args, "directory": p["home"],
            "display_name": ssv.get("display_name") or "Prefect background services",
            "description": ssv.get("description") or "Prefect's background services of a high-availability deployment",
            "start_mode": ssv.get("start_mode") or "delayed", "dependencies": [str(d) for d in ssv.get("dependencies") or []],
            "environment": env, "failure_actions": _failure_actions(cfg["server"]["failure_delays_ms"]),
        }
        svc["stdout"], svc["stderr"] = (r"%s\%s.out.log" % (p["logs_dir"], svc["name"]), r"%s\%s.err.log" % (p["logs_dir"], svc["name"]))
        svc["params"] = _settings(cfg, svc, cfg["server"]["restart_delay_ms"], cfg["server"]["stop_timeout_ms"])
        services.append(svc)

    worker_logs = r"%s\workers" % p["logs_dir"]
    present = [w for w in cfg["workers"] if (w.get("state") or "present") == "present"]
    absent = [w["service"] for w in cfg["workers"] if w.get("state") == "absent"]
    for w in present:
        api_url = w.get("api_url") or cfg["worker_api_url"]
        if not api_url:
            errors.append("nssm_services_workers: worker %s has no API URL: nssm_services_worker_api_url (or the worker's "
                          "api_url) is required on hosts without a local server, e.g. the proxy's worker endpoint "
                          "https://prefect.corp.local/api" % w.get("service"))
            api_url = ""
        local = server_enabled and bool(LOOPBACK_URL.match(api_url))
        worker_name = w.get("name") or "%s-%s" % (w["service"], host)
        args = ["%s worker start --pool %s --name %s" % (python_args, w["pool"], worker_name)]
        args += ["--work-queue %s" % q for q in w.get("queues") or []]
        if w.get("limit") is not None:
            args.append("--limit %d" % int(w["limit"]))
        env = dict(base_env, PREFECT_HOME=cfg["worker_home"], PREFECT_API_URL=api_url)
        if local and auth_string:
            # Only off proxy hosts (refused above): the local server itself demands it on loopback.
            env["PREFECT_API_AUTH_STRING"] = auth_string
        elif not local and api_url:
            # The machine path: IIS Basic authentication checks a Windows account; Prefect's own auth is off behind IIS.
            if not worker_credential:
                errors.append("nssm_services_workers: worker %s calls %s, which is not this host's server: it needs "
                              "prefect_worker_api_auth_string (account:password of the proxy host's local account IIS Basic "
                              "authentication checks on the machine path, from Ansible Vault)" % (w["service"], api_url))
            elif not WORKER_CREDENTIAL.match(worker_credential):
                shape = ("prefect_worker_api_auth_string must be account:password (a local account on the proxy host, made by "
                         "the iis_proxy role) or DOMAIN\\account:password, the Windows account IIS Basic "
                         "authentication checks on the machine path (value hidden here)")
                errors.extend([] if shape in errors else [shape])
            elif not api_url.startswith("https://"):
                errors.append("nssm_services_workers: worker %s would send a Windows password (Basic) to %s in clear text: "
                              "remote workers call the machine path over https://, e.g. prefect_worker_api_url"
                              % (w["service"], api_url))
            if worker_credential:
                env["PREFECT_API_AUTH_STRING"] = worker_credential
                # Prefect sends the auth string on HTTP requests only; its websockets (the worker channel, the
                # cancellation observer, log and event subscribers) add PREFECT_CLIENT_CUSTOM_HEADERS to the upgrade
                # (prefect/_internal/websockets.py, where Authorization is not a protected header), so IIS Basic
                # authenticates them too. The HTTP client sets the same header from it (client/base.py).
                env["PREFECT_CLIENT_CUSTOM_HEADERS"] = json.dumps(
                    {"Authorization": "Basic " + base64.b64encode(worker_credential.encode("utf-8")).decode("ascii")})
        # Prefect's client validates TLS with PREFECT_API_SSL_CERT_FILE or certifi, never the Windows store.
        if api_url.startswith("https://") and p["ca_host_path"]:
            env["PREFECT_API_SSL_CERT_FILE"] = p["ca_host_path"]
        errors.extend(_protected_env("nssm_services_workers (service %s) env" % w["service"], w.get("env")))
        env.update({k: str(v) for k, v in (w.get("env") or {}).items()})
        if api_url.startswith("https://") and "PREFECT_API_SSL_CERT_FILE" not in env:
            errors.append("nssm_services_workers: worker %s calls %s, but Prefect's client trusts only certifi's public CAs "
                          "and PREFECT_API_SSL_CERT_FILE, never the Windows certificate store: set prefect_api_ca_cert to the "
                          "enclave CA's PEM file on the control node" % (w["service"], api_url))
        account = w.get("account") or cfg["worker_account"]
        password = w.get("password") if w.get("account") else cfg["worker_account_password"]
        svc = {
            "name": w["service"], "kind": "worker", "account": account, "password": password or "",
            "application": p["venv_python"],
            "parameters": " ".join(args), "directory": p["flows_dir"],
            "display_name": w.get("display_name") or "Prefect Worker %s" % worker_name,
            "description": w.get("description") or "Prefect %s worker %s for work pool %s" % (p["version"], worker_name, w["pool"]),
            "start_mode": w.get("start_mode") or "delayed",
            "dependencies": [cfg["server"]["service"]] if local else [],
            "environment": env, "failure_actions": _failure_actions(cfg["worker_failure_delays_ms"]),
            "pool": w["pool"], "worker_name": worker_name, "api_url": api_url, "local": local,
        }
        svc["stdout"], svc["stderr"] = (r"%s\%s.out.log" % (worker_logs, svc["name"]), r"%s\%s.err.log" % (worker_logs, svc["name"]))
        svc["params"] = _settings(cfg, svc, cfg["worker_restart_delay_ms"], cfg["worker_stop_timeout_ms"])
        services.append(svc)

    for svc in services:
        for key, value in svc["environment"].items():
            if not re.fullmatch(r"[^=\x00\r\n]+", key) or re.search(r"[\x00\r\n]", value):
                errors.append("%s: environment variable %r cannot be stored: a name must not be empty or contain '=' or a "
                              "line break, a value must not contain NUL or a line break (NSSM keeps one NAME=value per "
                              "line)" % (svc["name"], key))
            # NSSM expands %NAME% in these values when NAME is defined on the host: nssm_settings.ps1 decides that there,
            # where the names are known, before it writes anything.
        svc["logon"] = _short(svc["account"]) if _kind(svc["account"]) != "local" else ".\\" + _short(svc["account"])

    # Accounts: one entry per distinct account, with the roles it plays on this host.
    accounts = []
    for svc in services:
        known = [a for a in accounts if _same_account(a["name"], svc["account"], cfg.get("host", ""))]
        if known:
            known[0]["roles"] = sorted(set(known[0]["roles"]) | {svc["kind"]})
            if not known[0]["password"] and svc["password"]:
                known[0]["password"] = svc["password"]
            continue
        kind = _kind(svc["account"])
        accounts.append({"name": _short(svc["account"]), "lookup": _lookup(svc["account"]), "kind": kind, "roles": [svc["kind"]],
                         "password": "" if kind == "gmsa" else svc["password"]})
    for a in accounts:
        if privileged_account(a["name"]):
            errors.append("Every service account must be a dedicated, unprivileged account (not Administrator, LocalSystem, "
                          "NetworkService or LocalService, nor a group such as Administrators or Domain Admins): got %s"
                          % a["name"])
        if a["kind"] != "gmsa" and not a["password"]:
            errors.append("Account %s needs a password (nssm_services_account_password or nssm_services_worker_account_password "
                          "from Ansible Vault, or the worker's password); a gMSA (DOMAIN\\name$) needs none" % a["name"])
        if set(a["roles"]) == {"server", "worker"} and not cfg["shared_account_allowed"]:
            errors.append("%s runs both the Prefect server and a worker on this host: flow code run by the worker could read "
                          "the server's database URL and auth string and change its data. Give workers their own account "
                          "(nssm_services_worker_account) or set nssm_services_shared_account_allowed: true" % a["name"])

    server_accounts = [a["lookup"] for a in accounts if "server" in a["roles"]]
    worker_accounts = [a["lookup"] for a in accounts if "worker" in a["roles"]]
    # The server's data and logs inherit nothing from the root, which every account may read: flow code, run by the
    # worker accounts, must not read the SQLite database or the server's logs. Workers log one level below.
    directories = []
    if server_accounts:
        directories.append({"path": p["home"], "rules": rules(server_accounts, "Modify"), "exclusive": True})
    directories.append({"path": p["logs_dir"], "rules": rules(server_accounts, "Modify"), "exclusive": True})
    if worker_accounts:
        directories.append({"path": worker_logs, "rules": rules(worker_accounts, "Modify")})
        directories.append({"path": p["flows_dir"], "rules": rules(worker_accounts, "Modify")})
        directories.append({"path": cfg["worker_home"], "rules": rules(worker_accounts, "Modify")})
    directories.append({"path": p["venvs_dir"], "rules": []})
    dirs = {"root": p["root"], "root_rules": rules([a["lookup"] for a in accounts], "ReadAndExecute"), "directories": directories}

    listed = [pool["name"] for pool in cfg["pools"]]
    pools = list(cfg["pools"]) + [{"name": n, "type": "process"}
                                  for n in dict.fromkeys(s["pool"] for s in services if s["kind"] == "worker") if n not in listed]

    return {
        "services": services,
        "accounts": accounts,
        "account_kinds": [{"name": a["lookup"], "kind": a["kind"], "roles": a["roles"]} for a in accounts],
        "dirs": dirs,
        "pools": pools,
        "absent_workers": absent,
        "https": any(s["environment"].get("PREFECT_API_SSL_CERT_FILE") == p["ca_host_path"] and p["ca_host_path"] for s in services),
        "nssm_defaults": NSSM_DEFAULTS,
        "nssm_exit_default": NSSM_EXIT_DEFAULT,
        "secret_env": SECRET_ENV,
        "errors": errors,
    }


def nssm_services_settings_input(plan):
    """What nssm_settings.ps1 gets for each service (no Windows-service-level settings)."""
    return [{"name": s["name"], "application": s["application"], "account": _lookup(s["account"]), "exit_action": NSSM_EXIT_DEFAULT,
             "environment": s["environment"], "params": s["params"]} for s in plan["services"]]


def nssm_services_restarts(plan, report):
    """What to restart, from what nssm_settings.ps1 read on the host: {"restart": running services with outdated
    settings, venv or account; "dependents": local workers of a server that restarts, stopped before it and started
    after it}. Restart-Service -Force would stop them with .NET's 30 s limit per dependent (ServiceController.Stop),
    shorter than a worker's clean shutdown, and would not start a paused one again."""
    report = report or {}
    restart = [s["name"] for s in plan["services"] if (report.get(s["name"]) or {}).get("restart")]
    server = [s["name"] for s in plan["services"] if s["kind"] == "server"]
    dependents = []
    if server and server[0] in restart:
        # All of them: the service task before has started every one (state started is what the role wants).
        dependents = [s["name"] for s in plan["services"] if server[0] in s["dependencies"]]
        restart = [n for n in restart if n not in dependents]
    return {"restart": restart, "dependents": dependents}


def _parse_time(value):
    if not value:
        return None
    text = str(value).strip().replace("Z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def nssm_services_verify_problems(plan, status, settle_seconds):
    """One message per service that is not running steadily as its account (nssm_status.ps1's report)."""
    problems = []
    status = status or {}
    for svc in plan["services"]:
        seen = status.get(svc["name"]) or {}
        log = "see %s" % svc["stderr"]
        if not seen.get("exists"):
            problems.append("%s is not installed" % svc["name"])
        elif seen.get("state") == "Paused":
            problems.append("%s is PAUSED: NSSM throttles it because the application exits right after it starts; %s"
                            % (svc["name"], log))
        elif seen.get("state") != "Running":
            problems.append("%s is %s, expected Running; %s" % (svc["name"], seen.get("state"), log))
        elif not seen.get("app_running") or seen.get("restarted_during_settle"):
            problems.append("%s is Running but its application %s within %s s (NSSM restarts it: a crash loop); %s"
                            % (svc["name"], "restarted" if seen.get("app_running") else "is not running", settle_seconds, log))
        elif str(seen.get("account") or "").rsplit("\\", maxsplit=1)[-1].lower() != svc["logon"].rsplit("\\", maxsplit=1)[-1].lower():
            problems.append("%s runs as %s, expected %s" % (svc["name"], seen.get("account"), svc["logon"]))
    return problems


def nssm_services_workers_online(plan, status):
    """The workers_online argument of enclave.prefect.server_health for each API the workers use:
    [{api_url, credential, workers: [{pool, name, heartbeat_after}]}]. credential names the variable whose value the
    workers send ("server": prefect_api_auth_string on loopback, "worker": prefect_worker_api_auth_string on the
    machine path, "": none), never the value: the items of a loop are printed in full by every callback."""
    groups = {}
    for svc in plan["services"]:
        if svc["kind"] != "worker":
            continue
        key = svc["api_url"]
        sends = bool(svc["environment"].get("PREFECT_API_AUTH_STRING"))
        group = groups.setdefault(key, {"api_url": key, "local": svc["local"],
                                        "credential": ("server" if svc["local"] else "worker") if sends else "",
                                        "workers": []})
        started = ((status or {}).get(svc["name"]) or {}).get("app_started")
        group["workers"].append({"pool": svc["pool"], "name": svc["worker_name"], "heartbeat_after": started})
    return list(groups.values())


class FilterModule:
    def filters(self):
        return {
            "nssm_services_plan": nssm_services_plan,
            "nssm_services_settings_input": nssm_services_settings_input,
            "nssm_services_restarts": nssm_services_restarts,
            "nssm_services_verify_problems": nssm_services_verify_problems,
            "nssm_services_workers_online": nssm_services_workers_online,
        }
