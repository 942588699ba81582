"""Real Prefect servers, PostgreSQL clusters and workers on 127.0.0.1 for the integration tests and benchmarks.

Everything here is started from the pinned Prefect in .venv-prefect (built by
`bash scripts/setup.sh --with-test-servers`), listens on loopback only, keeps its state in a temporary
directory and is stopped (whole process group) by `stop()`.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from urllib.parse import quote
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREFECT_VENV_BIN = REPO / ".venv-prefect" / "bin"
# An older Prefect 3 (requirements/prefect-old-linux-py311.lock) whose databases the upgrade tests migrate.
OLD_PREFECT_VENV_BIN = REPO / ".venv-prefect-old" / "bin"
# The Prefect this release deploys (requirements/prefect.in) and the previous release's (prefect-old-linux-py311.in).
PINNED_PREFECT = re.search(r"^prefect==(\S+)$", (REPO / "requirements" / "prefect.in").read_text(), re.M).group(1)
OLD_PREFECT = re.search(r"^prefect==(\S+)$", (REPO / "requirements" / "prefect-old-linux-py311.in").read_text(), re.M).group(1)
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
FLOWS_DIR = REPO / "tests" / "fixtures" / "flows"
# A deadline, not a wait: a server migrating an empty database on a machine whose other test processes keep both cores
# busy has taken over a minute; a healthy one answers in seconds.
SERVER_READY_TIMEOUT = 180
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
# What Prefect's client retries (PREFECT_CLIENT_MAX_RETRIES defaults to 5); the test helpers do the same.
API_RETRY_STATUSES, API_RETRIES = (429, 502, 503), 5
AIR_GAP_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused
# SQLite databases migrated to the head of the pinned Prefect, one per lock (see seed_sqlite_home).
SQLITE_TEMPLATES = REPO / "build" / "prefect-sqlite-template"
PREFECT_LOCK = REPO / "requirements" / "prefect-linux-py311.lock"


class Unavailable(RuntimeError):
    """A prerequisite (binary, package) is missing: callers skip or fail with this message."""


def prefect_bin(name: str = "prefect", venv_bin: Path = PREFECT_VENV_BIN) -> str:
    path = venv_bin / name
    if not path.exists():
        raise Unavailable(
            f"{path} is missing: build the test Prefects with `bash scripts/setup.sh --with-test-servers`"
        )
    return str(path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed_sqlite_home(home: Path) -> None:
    """Put a SQLite database migrated to the pinned Prefect's head into an empty PREFECT_HOME.

    A new server migrates an empty database at start (about a hundred Alembic revisions, most of its start-up time);
    `prefect server database upgrade -y` does the same once, into a template kept under build/ for the lock it was made
    with, and every new server of the pinned Prefect starts on a copy of it, where its own migration at start finds
    nothing to do. Made under a file lock: parallel test processes wait for the first. Only for a home without a
    database: servers that test migrations (older Prefect, a copied or restored database) never get one."""
    if (home / "prefect.db").exists():
        return
    digest = hashlib.sha256(PREFECT_LOCK.read_bytes()).hexdigest()[:16]
    template = SQLITE_TEMPLATES / digest / "prefect.db"
    SQLITE_TEMPLATES.mkdir(parents=True, exist_ok=True)
    with open(SQLITE_TEMPLATES / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.exists():
            work = Path(tempfile.mkdtemp(dir=SQLITE_TEMPLATES))
            try:
                proc = subprocess.run([prefect_bin(), "server", "database", "upgrade", "-y"],
                                      env=clean_env(PREFECT_HOME=str(work)), cwd=work, capture_output=True, text=True,
                                      stdin=subprocess.DEVNULL, timeout=300)
                if proc.returncode != 0 or list(work.glob("prefect.db-*")):
                    raise RuntimeError(f"could not migrate a template database ({proc.returncode}):\n{proc.stdout[-3000:]}"
                                       f"\n{proc.stderr[-3000:]}")
                template.parent.mkdir(exist_ok=True)
                os.replace(work / "prefect.db", template)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, home / "prefect.db")


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without PREFECT_* settings or proxies, plus `extra`.

    Nothing leaks in from a profile, and the Prefect processes cannot reach the internet.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k.lower() not in PROXY_VARS}
    env.update({"PYTHONUTF8": "1", "PYTHONIOENCODING": "UTF-8", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    # Like an enclave: anything bound for the internet (the collection registry) fails at once, loopback works.
    env.update({"HTTP_PROXY": AIR_GAP_PROXY, "HTTPS_PROXY": AIR_GAP_PROXY, "ALL_PROXY": AIR_GAP_PROXY,
                "NO_PROXY": "127.0.0.1,localhost"})
    env.update(extra)
    return env


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


# Seconds a Prefect worker of the tests gets to exit after SIGTERM before SIGKILL.
WORKER_STOP_SECONDS = 3


def stop_groups(procs, timeout: float = 20) -> None:
    """SIGTERM the process groups started with start_new_session, all at once, then SIGKILL any that lingers past
    timeout (a Prefect worker on a loaded machine can take longer than that to shut down: a teardown must not fail).
    With ENCLAVE_TEST_CPU set (tests/conftest.py), a stop that took over 2 s is logged there, with what was stopped."""
    procs = [p for p in procs if p is not None and p.poll() is None]
    started = time.monotonic()
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = started + timeout
    killed = []
    for proc in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            killed.append(proc)
            proc.wait(10)
    log = os.environ.get("ENCLAVE_TEST_CPU")
    if log and time.monotonic() - started > 2:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"stop": [" ".join(map(str, p.args[:6])) for p in procs],
                                     "killed": [" ".join(map(str, p.args[:6])) for p in killed],
                                     "seconds": round(time.monotonic() - started, 1),
                                     "test": os.environ.get("PYTEST_CURRENT_TEST", "")}) + "\n")


def _stop_group(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """SIGTERM the process group started with start_new_session, SIGKILL it if it lingers."""
    stop_groups([proc], timeout)


def http(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 10):
    """One plain HTTP call (no Prefect or Ansible code involved). Returns (status, parsed JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode("utf-8", errors="replace")
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port> with a `prefect` role owning a `prefect` DB."""

    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    root: Path | None = None
    bin_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://prefect:{self.password}@127.0.0.1:{self.port}/prefect"

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            log = _tail(self.root / "postgres.log") if self.root else ""
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n{log}")
        return res

    def start(self) -> "PostgresCluster":
        found = [d for d in PG_BIN_DIRS if (d / "initdb").exists() and (d / "pg_ctl").exists()]
        if not found:
            raise Unavailable("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed")
        self.bin_dir = found[0]
        if os.geteuid() == 0 and (shutil.which("runuser") is None or _uid("postgres") is None):
            raise Unavailable("running as root needs `runuser` and the `postgres` system user")
        # Not under pytest's tmp dir: that is private to root and the postgres user could not enter it.
        self.root = Path(tempfile.mkdtemp(prefix="prefect-itest-pg-"))
        if os.geteuid() == 0:
            os.chown(self.root, _uid("postgres"), -1)
        self.port = free_port()
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                "-c fsync=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.root / "postgres.log"), "-o", opts, "-w", "-t", "60",
                  "start")
        psql = ("psql", "-h", str(self.root), "-p", str(self.port), "-v", "ON_ERROR_STOP=1", "-q")
        self._run(*psql, "-d", "postgres", "-c", f"CREATE ROLE prefect LOGIN PASSWORD '{self.password}'")
        self._run(*psql, "-d", "postgres", "-c", "CREATE DATABASE prefect OWNER prefect")
        self._run(*psql, "-U", "prefect", "-d", "prefect", "-c", "CREATE EXTENSION IF NOT EXISTS pg_trgm")
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        if self.bin_dir is not None and (self.root / "data" / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def psql(self, database: str, sql: str) -> str:
        """Run one SQL statement as the superuser; returns psql's unaligned, tuples-only output."""
        return self._run("psql", "-h", str(self.root), "-p", str(self.port), "-v", "ON_ERROR_STOP=1", "-q", "-A", "-t",
                         "-d", database, "-c", sql).stdout.strip()

    def create_database(self, name: str) -> str:
        """Another database owned by `prefect` (with pg_trgm), for a server of its own. Returns its URL."""
        self.psql("postgres", f"CREATE DATABASE {name} OWNER prefect")
        self.psql(name, "CREATE EXTENSION IF NOT EXISTS pg_trgm")
        return self.url.rsplit("/", 1)[0] + "/" + name


def _uid(user: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


@dataclass
class PrefectServer:
    """`prefect server start` on 127.0.0.1:<free port>, SQLite by default.

    database_url: a PostgreSQL URL (see PostgresCluster.url) instead of SQLite in PREFECT_HOME.
    auth_string:  "user:password" for PREFECT_SERVER_API_AUTH_STRING (Basic auth on the API).
    csrf:         PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED.
    """

    root: Path
    database_url: str | None = None
    auth_string: str | None = None
    csrf: bool = False
    services: bool = True
    port: int = 0
    proc: subprocess.Popen | None = None
    extra_env: dict = field(default_factory=dict)
    venv_bin: Path = PREFECT_VENV_BIN  # OLD_PREFECT_VENV_BIN for the older Prefect of the upgrade tests

    @property
    def database(self) -> str:
        return "postgresql" if self.database_url else "sqlite"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def auth_headers(self) -> dict[str, str]:
        if not self.auth_string:
            return {}
        return {"Authorization": "Basic " + base64.b64encode(self.auth_string.encode()).decode()}

    def client_env(self, home: Path | None = None) -> dict[str, str]:
        """Environment for Prefect clients (CLI, worker, flow deploys) talking to this server."""
        extra = {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(home or self.root / "client-home")}
        if self.auth_string:
            extra["PREFECT_API_AUTH_STRING"] = self.auth_string
        return clean_env(**extra)

    def server_env(self) -> dict[str, str]:
        """Environment of the server process, and of `prefect server database ...` on its database."""
        env = clean_env(
            PREFECT_HOME=str(self.root / "home"),
            PREFECT_SERVER_API_HOST="127.0.0.1",
            PREFECT_SERVER_API_PORT=str(self.port),
            PREFECT_UI_ENABLED="false",
            PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED="true" if self.csrf else "false",
            **self.extra_env,
        )
        if self.database_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.database_url
        if self.auth_string:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth_string
        return env

    def database_command(self, *args: str, venv_bin: Path | None = None, timeout: float = 300):
        """`prefect server database <args>` on this server's database (Prefect of `venv_bin`, default the server's)."""
        argv = [prefect_bin("prefect", venv_bin or self.venv_bin), "server", "database", *args]
        return subprocess.run(argv, env=self.server_env(), cwd=self.root, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)

    @property
    def seeded(self) -> bool:
        """Whether a new database may start from the migrated template: SQLite, the pinned Prefect, default migration."""
        return (not self.database_url and self.venv_bin == PREFECT_VENV_BIN
                and not any(k.startswith("PREFECT_SERVER_DATABASE") or k == "PREFECT_HOME" for k in self.extra_env))

    def start(self) -> "PrefectServer":
        prefect = prefect_bin("prefect", self.venv_bin)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        env = self.server_env()
        if self.seeded:
            seed_sqlite_home(Path(env["PREFECT_HOME"]))
        argv = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        if not self.services:
            argv.append("--no-services")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = SERVER_READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.proc.returncode}:\n{_tail(self.log_path)}")
            try:
                status, body = http("GET", f"{self.api_url}/ready", timeout=5)
                if status == 200:
                    return
                last = f"HTTP {status} {body}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"prefect server on port {self.port} not ready after {timeout}s ({last}):\n"
                           f"{_tail(self.log_path)}")

    def api(self, method: str, path: str, body=None):
        """Call the API directly (Basic auth and CSRF handled), for verifying what the modules did.

        Retries what Prefect's own client retries (prefect/client/base.py: 429, 502 and 503, five times, backing
        off): a SQLite server answers 503 when the database is busy (a flow run and a worker writing at once)."""
        headers = dict(self.auth_headers)
        if self.csrf and method in ("POST", "PATCH", "PUT", "DELETE"):
            client = "itest-verify"
            status, token = http("GET", f"{self.api_url}/csrf-token?client={client}", headers=headers)
            if status != 200:
                raise RuntimeError(f"CSRF token request failed: HTTP {status} {token}")
            headers.update({"Prefect-Csrf-Token": token["token"], "Prefect-Csrf-Client": client})
        for attempt in range(API_RETRIES + 1):
            status, answer = http(method, f"{self.api_url}{path}", body=body, headers=headers)
            if status not in API_RETRY_STATUSES or attempt == API_RETRIES:
                return status, answer
            time.sleep(min(2 ** attempt, 10) * (0.5 + secrets.randbelow(1000) / 1000))
        return status, answer

    def pool(self, name: str):
        status, body = self.api("GET", f"/work_pools/{quote(name, safe='')}")
        return body if status == 200 else None

    def queues(self, pool: str) -> dict[str, dict]:
        status, body = self.api("POST", f"/work_pools/{quote(pool, safe='')}/queues/filter", {})
        if status != 200:
            raise RuntimeError(f"queue filter for {pool}: HTTP {status} {body}")
        return {q["name"]: q for q in body}

    def stop(self) -> None:
        _stop_group(self.proc)
        self.proc = None


@dataclass
class PrefectWorker:
    """`prefect worker start --type process` polling every 2 s; creates its pool if it does not exist."""

    server: PrefectServer
    pool: str
    root: Path
    name: str = "itest-worker"
    proc: subprocess.Popen | None = None
    venv_bin: Path = PREFECT_VENV_BIN

    @property
    def log_path(self) -> Path:
        return self.root / f"worker-{self.name}.log"

    def start(self, timeout: float = 60) -> "PrefectWorker":
        self.root.mkdir(parents=True, exist_ok=True)
        env = self.server.client_env(self.root / "worker-home")
        env.update(PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="2")
        argv = [prefect_bin("prefect", self.venv_bin), "worker", "start", "--pool", self.pool, "--type", "process", "--name", self.name]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect worker exited with {self.proc.returncode}:\n{_tail(self.log_path)}")
            status, workers = self.server.api("POST", f"/work_pools/{self.pool}/workers/filter", {})
            if status == 200 and any(w["name"] == self.name and w["status"] == "ONLINE" for w in workers):
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"worker {self.name} not ONLINE in pool {self.pool} after {timeout}s:\n"
                           f"{_tail(self.log_path)}")

    def stop(self) -> None:
        # A process worker that ran flows does not exit on SIGTERM (Prefect 3.9.1: every stop of the suite waited for the
        # SIGKILL), so the test's worker gets little time: nothing of it is needed after its test.
        _stop_group(self.proc, timeout=WORKER_STOP_SECONDS)
        self.proc = None


def deploy_flow(server: PrefectServer, source_dir: Path, entrypoint: str, deployment: str, pool: str,
                home: Path) -> str:
    """Register a deployment of `entrypoint` from `source_dir` with the pinned Prefect. Returns its id."""
    script = (
        "import sys\n"
        "from prefect import flow\n"
        "src, entry, name, pool = sys.argv[1:5]\n"
        "dep_id = flow.from_source(source=src, entrypoint=entry).deploy(\n"
        "    name=name, work_pool_name=pool, print_next_steps=False)\n"
        "print('DEPLOYMENT_ID', dep_id)\n"
    )
    res = subprocess.run([prefect_bin("python"), "-c", script, str(source_dir), entrypoint, deployment, pool],
                         env=server.client_env(home), cwd=source_dir, capture_output=True, text=True, timeout=180)
    for line in res.stdout.splitlines():
        if line.startswith("DEPLOYMENT_ID "):
            return line.split(" ", 1)[1].strip()
    raise RuntimeError(f"deploying {entrypoint} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")


def copy_flows(dest: Path) -> Path:
    """The fixture flows in a scratch directory (the worker runs them there, leaving the checkout clean)."""
    shutil.copytree(FLOWS_DIR, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest
