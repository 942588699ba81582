"""Prefect in high availability on 127.0.0.1: Redis, API replicas without services, one background-services process.

The settings an HA deployment needs, each read in the pinned Prefect 3.9.1 and prefect-redis 0.3.0 as installed in
.venv-prefect (paths under site-packages; env names from `build_settings_config(<path>)`, which makes the prefix
PREFECT_<PATH>_ at prefect/settings/base.py:252, plus the fields' validation aliases):

Six backends that default to the memory of one process (MEMORY_DEFAULTS):
- PREFECT_SERVER_EVENTS_MESSAGING_BROKER=prefect_redis.messaging: prefect/settings/models/server/events.py:123-131
  (field messaging_broker, default prefect.server.utilities.messaging.memory; alias PREFECT_MESSAGING_BROKER)
- PREFECT_SERVER_EVENTS_MESSAGING_CACHE=prefect_redis.messaging: events.py:133-141 (messaging_cache, same default;
  alias PREFECT_MESSAGING_CACHE)
- PREFECT_SERVER_EVENTS_CAUSAL_ORDERING=prefect_redis.ordering: events.py:143-146 (causal_ordering, default
  prefect.server.events.ordering.memory)
- PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect_redis.lease_storage: prefect/settings/models/server/concurrency.py:14-17
  (lease_storage, default prefect.server.concurrency.lease_storage.memory)
- PREFECT_SERVER_DOCKET_URL=redis://:<password>@127.0.0.1:<port>/1: prefect/settings/models/server/docket.py:23-33
  (url, default memory://; redis://, rediss:// and the Sentinel schemes accepted). The password can only travel in
  this URL: Docket has no separate password setting.
- PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE=prefect_redis.cleanup_queue:
  prefect/settings/models/server/worker_channel.py:18-27 (cleanup_queue_storage, default
  prefect.server.worker_communication.cleanup_queue.memory)

Redis connection of prefect_redis.messaging, ordering and lease_storage (one client, prefect_redis/client.py:20-98
RedisMessagingSettings, `build_settings_config(("redis", "messaging"))`; `url` would take precedence over the rest):
PREFECT_REDIS_MESSAGING_HOST, _PORT, _DB (0), _USERNAME (default "default", Redis' default ACL user), _PASSWORD.
The cleanup queue's own client (prefect_redis/cleanup_queue.py:74-124 RedisWorkerCleanupQueueSettings,
`build_settings_config(("redis", "worker_cleanup_queue"))`, built at cleanup_queue.py:1194-1223):
PREFECT_REDIS_WORKER_CLEANUP_QUEUE_HOST, _PORT, _DB, _PASSWORD (its key_prefix prefect:worker-cleanup keeps it apart
in a shared database).

Migrations once: PREFECT_SERVER_DATABASE_MIGRATE_ON_START=false on every process
(prefect/settings/models/server/database.py:253-261, default true, read by the web app's lifespan at
prefect/server/api/server.py:897-903), after one `prefect server database upgrade -y`.

What runs where (read in the same source): `prefect server start --no-services` serves the API and still runs, in each
web process, the event and log distributors of the websockets (prefect/server/events/stream.py:139,
prefect/server/logs/stream.py:220: RunInWebservers) and a Docket worker with the API's background tasks
(prefect/server/api/server.py:939-951, background_workers.py:60-80, docket name `PREFECT_SERVER_DOCKET_NAME`, default
prefect-server). `prefect server services start` runs every other service and its own Docket worker on a docket named
"prefect" whatever that setting says (prefect/cli/_server_utils.py:408-423). `prefect server start --workers N>1`
refuses four of the six in-memory defaults (broker, cache, ordering, lease storage: _server_utils.py:199-242), not
Docket nor the cleanup queue.

The processes run what the roles write (`role_plans`): the nssm_services plan of inventories/ha's first API replica
(prefect-api01, kind server) and services host (prefect-svc01, kind services), asked from Ansible by
roles_env.server_plan with Redis and the database pointed at the test's loopback instances through the inventory's
own variables (prefect_redis_host and _port, and the Vault names it reads: vault_prefect_redis_password,
vault_prefect_database_url). Each process is the plan's `python <AppParameters>` with its AppEnvironmentExtra; only
what cannot exist here is replaced, as roles_env.RolesServer does: the Windows paths (PREFECT_HOME, the UI's static
directory) and port 4200 (PREFECT_SERVER_API_PORT, PREFECT_API_URL, `--port`). The services process also gets
PREFECT_SERVER_LOGGING_LEVEL=INFO, the one variable added, so that the test sees when it has scheduled its services.

Nothing here passes a secret on a command line: redis-server reads its password from a configuration file written
0600, Prefect gets the URL and password in its environment, Ansible the test's values in an extra-vars file.
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from roles_env import DATABASE, HOST_SPECIFIC, RolesServer, server_plan
from servers import REPO, PrefectServer, _stop_group, _tail, clean_env, free_port, http, prefect_bin

# The example HA inventory and the hosts whose plans the processes run.
HA_INVENTORY = REPO / "inventories" / "ha" / "hosts.yml"
API_HOST = "prefect-api01.corp.local"
SERVICES_HOST = "prefect-svc01.corp.local"
# What each process changes in its plan's environment: the replicas what roles_env.RolesServer replaces (Windows paths,
# port 4200), the services process its PREFECT_HOME; and the one variable the test adds to the services process (the
# role leaves Prefect's server logging at WARNING, where it says nothing once its services are scheduled).
REPLICA_REPLACED = frozenset(HOST_SPECIFIC)
SERVICES_REPLACED = frozenset({"PREFECT_HOME"})
SERVICES_ADDED = {"PREFECT_SERVER_LOGGING_LEVEL": "INFO"}

# The setting, its in-memory default and the Redis-backed value (the Docket URL is made per Redis server).
MEMORY_DEFAULTS = {
    "PREFECT_SERVER_EVENTS_MESSAGING_BROKER": ("prefect.server.utilities.messaging.memory", "prefect_redis.messaging"),
    "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": ("prefect.server.utilities.messaging.memory", "prefect_redis.messaging"),
    "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": ("prefect.server.events.ordering.memory", "prefect_redis.ordering"),
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": ("prefect.server.concurrency.lease_storage.memory",
                                                 "prefect_redis.lease_storage"),
    "PREFECT_SERVER_DOCKET_URL": ("memory://", None),
    "PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE": ("prefect.server.worker_communication.cleanup_queue.memory",
                                                            "prefect_redis.cleanup_queue"),
}
# Where each setting lands in Prefect's settings objects (for the check that the names are the ones Prefect reads).
SETTING_PATHS = {
    "PREFECT_SERVER_EVENTS_MESSAGING_BROKER": "server.events.messaging_broker",
    "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": "server.events.messaging_cache",
    "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "server.events.causal_ordering",
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "server.concurrency.lease_storage",
    "PREFECT_SERVER_DOCKET_URL": "server.docket.url",
    "PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE": "server.worker_channel.cleanup_queue_storage",
    "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "server.database.migrate_on_start",
}
REDIS_DATABASES = {"messaging": 0, "docket": 1, "cleanup": 2}


class RedisError(RuntimeError):
    pass


@dataclass
class RedisServer:
    """Debian's redis-server on 127.0.0.1:<free port>, password from a 0600 configuration file, nothing persisted."""

    root: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "redis.log"

    def url(self, db: int) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 20) -> "RedisServer":
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            from servers import Unavailable
            raise Unavailable("redis-server is not installed (bash scripts/setup.sh --with-test-servers)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.root / "redis.conf"
        text = (f"bind 127.0.0.1\nprotected-mode yes\nport {self.port}\nrequirepass {self.password}\n"
                f"daemonize no\ndir {self.root}\nlogfile {self.log_path}\nsave \"\"\nappendonly no\ndatabases 16\n")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        self.proc = subprocess.Popen([binary, str(conf)], cwd=self.root, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{_tail(self.log_path)}")
            try:
                if self.command("PING") == "PONG":
                    return self
            except (OSError, RedisError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"redis-server not answering on {self.port} after {timeout}s:\n{_tail(self.log_path)}")

    def command(self, *args: str, db: int = 0, password: str | None = None):
        """One command after AUTH and SELECT, over RESP2; returns the parsed reply."""
        pw = self.password if password is None else password
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            stream = sock.makefile("rwb")
            for cmd in (("AUTH", pw), ("SELECT", str(db)), args):
                stream.write(b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode())
                                                              for a in cmd))
            stream.flush()
            replies = [_read_reply(stream) for _ in range(3)]
        for reply in replies:
            if isinstance(reply, RedisError):
                raise reply
        return replies[2]

    def keys(self, db: int) -> list[str]:
        return sorted(self.command("KEYS", "*", db=db))

    def stop(self) -> None:
        _stop_group(self.proc, timeout=10)
        self.proc = None


def _read_reply(stream):
    line = stream.readline()
    if not line:
        raise OSError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else stream.read(size + 2)[:-2].decode()
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_read_reply(stream) for _ in range(size)]
    raise OSError(f"unexpected reply {line!r}")


def ha_environment(redis: RedisServer, in_memory: tuple[str, ...] = ()) -> dict[str, str]:
    """What every API replica and services process gets (besides the database URL): the six backends on Redis, the
    Redis connections, migrate-on-start off. `in_memory` leaves the named settings at their defaults (negative
    controls)."""
    env = {name: redis_value for name, (_, redis_value) in MEMORY_DEFAULTS.items() if redis_value}
    env["PREFECT_SERVER_DOCKET_URL"] = redis.url(REDIS_DATABASES["docket"])
    for prefix, db in (("PREFECT_REDIS_MESSAGING_", REDIS_DATABASES["messaging"]),
                       ("PREFECT_REDIS_WORKER_CLEANUP_QUEUE_", REDIS_DATABASES["cleanup"])):
        env.update({prefix + "HOST": "127.0.0.1", prefix + "PORT": str(redis.port), prefix + "DB": str(db),
                    prefix + "PASSWORD": redis.password})
    env["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] = "false"
    for name in in_memory:
        env.pop(name)
    return env


def effective_settings(env: dict[str, str]) -> dict[str, object]:
    """What the pinned Prefect reads from `env`: each HA setting's value in its settings object, and the two Redis
    connection blocks prefect-redis builds (password replaced by whether it is set)."""
    script = (
        "import json, sys\n"
        "from prefect.settings import get_current_settings\n"
        "from prefect_redis.client import RedisMessagingSettings\n"
        "from prefect_redis.cleanup_queue import RedisWorkerCleanupQueueSettings\n"
        "s = get_current_settings()\n"
        "out = {}\n"
        "for name, path in json.loads(sys.argv[1]).items():\n"
        "    value = s\n"
        "    for part in path.split('.'):\n"
        "        value = getattr(value, part)\n"
        "    out[name] = value\n"
        "for key, cls in (('redis_messaging', RedisMessagingSettings), ('redis_cleanup', RedisWorkerCleanupQueueSettings)):\n"
        "    c = cls()\n"
        "    out[key] = {'host': c.host, 'port': c.port, 'db': c.db, 'username': c.username,\n"
        "                'password_set': bool(c.password), 'url': c.url}\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([prefect_bin("python"), "-c", script, json.dumps(SETTING_PATHS)], env=clean_env(**env),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"reading Prefect's settings failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass
class ServicesProcess:
    """The services host's plan (`python -P -m prefect server services start`: every enabled background service in one
    process) with its environment, PREFECT_HOME made local and SERVICES_ADDED."""

    root: Path
    plan: dict
    proc: subprocess.Popen | None = None
    argv: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.root / "services.log"

    @property
    def environment(self) -> dict[str, str]:
        return {**self.plan["environment"], "PREFECT_HOME": str(self.root / "home"), **SERVICES_ADDED}

    def start(self) -> "ServicesProcess":
        self.root.mkdir(parents=True, exist_ok=True)
        self.argv = [prefect_bin("python"), *shlex.split(self.plan["parameters"])]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=clean_env(**self.environment), cwd=self.root, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait_running(self, marker: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server services start exited with {self.proc.returncode}:\n"
                                   f"{_tail(self.log_path)}")
            if marker in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.3)
        raise RuntimeError(f"services did not log {marker!r} within {timeout}s:\n{_tail(self.log_path)}")

    def stop(self) -> None:
        _stop_group(self.proc)
        self.proc = None


def role_plans(tmp: Path, redis: RedisServer, database_url: str) -> dict[str, dict]:
    """The nssm_services plans of inventories/ha for its first API replica ("server") and its services host
    ("services"), with Redis and the database the test's: asked from Ansible side by side."""
    extra = {"prefect_redis_host": "127.0.0.1", "prefect_redis_port": redis.port,
             "vault_prefect_redis_password": redis.password, "vault_prefect_database_url": database_url}
    with ThreadPoolExecutor(2) as pool:
        futures = {kind: pool.submit(server_plan, tmp / kind, host=host, kind=kind, extra_vars=extra,
                                     inventory=HA_INVENTORY)
                   for kind, host in (("server", API_HOST), ("services", SERVICES_HOST))}
        return {kind: future.result() for kind, future in futures.items()}


@dataclass
class Replica(RolesServer):
    """One API replica: the plan's `python -P -m prefect server start --host 127.0.0.1 --port <free> --no-services` with
    its environment, database URL included (RolesServer would put SQLite in its place)."""

    argv: list[str] = field(default_factory=list)

    @property
    def environment(self) -> dict[str, str]:
        env = super().environment
        env.update({k: v for k, v in self.plan["environment"].items() if k in DATABASE})
        env.update(self.extra_env)
        return env

    def start(self) -> "Replica":
        try:
            super().start()
        finally:
            self.argv = list(self.proc.args) if self.proc else []
        return self

    def migrate(self, timeout: float = 300) -> subprocess.CompletedProcess:
        """`python -m prefect server database upgrade -y` with this replica's environment, as the role makes the schema
        once with the first API host's service program and environment (roles/backup/files/database_upgrade.ps1)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return subprocess.run([prefect_bin("python"), "-m", "prefect", "server", "database", "upgrade", "-y"],
                              env=clean_env(**self.environment), cwd=self.root, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)


def replica(root: Path, plan: dict, in_memory: tuple[str, ...] = ()) -> Replica:
    """One API replica of `plan` on a free loopback port (not started). `in_memory` removes the named settings from the
    plan's environment, leaving them at Prefect's in-memory defaults (negative controls)."""
    env = {k: v for k, v in plan["environment"].items() if k not in in_memory}
    return Replica(root, plan=dict(plan, environment=env))


def kill(server: PrefectServer) -> None:
    """SIGKILL a replica's whole process group at once (a crash, not a shutdown)."""
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)
    server.proc = None


# ha_load.py's requests with the CSRF token of one client added to every POST: the role turns Prefect's CSRF protection
# on (PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED), and a token fetched from one replica is valid on every one (Prefect
# keeps it in the database). The token travels in the environment, not on the command line.
_LOAD_WITH_CSRF = (
    "import http.client, os, runpy, sys\n"
    "csrf = {'Prefect-Csrf-Token': os.environ.pop('HA_LOAD_CSRF_TOKEN'),\n"
    "        'Prefect-Csrf-Client': os.environ.pop('HA_LOAD_CSRF_CLIENT')}\n"
    "request = http.client.HTTPConnection.request\n"
    "def with_csrf(self, method, url, body=None, headers={}, **kw):\n"
    "    return request(self, method, url, body, {**headers, **csrf} if method == 'POST' else headers, **kw)\n"
    "http.client.HTTPConnection.request = with_csrf\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run_load(url: str, flow_id: str, seconds: float, clients: int, csrf: bool = True) -> dict:
    """ha_load.py in a process of its own (so that its threads do not share the proxy's interpreter lock), with a CSRF
    token when the replicas demand one."""
    here = Path(__file__).resolve().parent
    env = clean_env()
    argv = [sys.executable, str(here / "ha_load.py"), url, flow_id, str(seconds), str(clients)]
    if csrf:
        client = "ha-load-" + secrets.token_hex(4)
        status, token = http("GET", f"{url}/csrf-token?client={client}")
        if status != 200:
            raise RuntimeError(f"CSRF token request failed: HTTP {status} {token}")
        env.update(HA_LOAD_CSRF_TOKEN=token["token"], HA_LOAD_CSRF_CLIENT=client)
        argv[1:1] = ["-c", _LOAD_WITH_CSRF]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)
