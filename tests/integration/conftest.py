"""Fixtures for the integration level: real Prefect servers, PostgreSQL, a worker, deployments and proxies,
all on 127.0.0.1 and all session-scoped and started lazily (only when a collected test asks for them).

The plugins are driven through real `ansible-playbook` runs (connection local, so `api_from: auto` picks
controller mode); results are read from the ansible.posix.json callback.
"""
from __future__ import annotations

import os
import secrets
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ntlm_proxy import AuthProxy, self_signed_cert, tls_context  # noqa: E402
from playbooks import Playbook  # noqa: E402
from roles_env import RolesServer, server_plan  # noqa: E402
from servers import (  # noqa: E402
    OLD_PREFECT_VENV_BIN,
    REPO,
    PostgresCluster,
    PrefectServer,
    PrefectWorker,
    Unavailable,
    copy_flows,
    deploy_flow,
    prefect_bin,
)

NTLM_USER = ("ENCLAVE", "svc-prefect-deploy", "Ntlm-" + secrets.token_urlsafe(12))
# Signs in, but is not among the accounts the proxy lets through (as a domain user outside iis_proxy_allowed_groups).
NTLM_OTHER = ("ENCLAVE", "someone-else", "Ntlm-" + secrets.token_urlsafe(12))
WORKER_POOL = "itest-process"


def pytest_collection_modifyitems(items):
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().parent == here and "molecule" not in item.keywords:
            item.add_marker(pytest.mark.integration)


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="session")
def prefect_venv() -> Path:
    try:
        return Path(prefect_bin()).parent
    except Unavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def old_prefect_venv() -> Path:
    """The older Prefect 3 of the upgrade tests (.venv-prefect-old)."""
    try:
        return Path(prefect_bin("prefect", OLD_PREFECT_VENV_BIN)).parent
    except Unavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def _start(server: PrefectServer) -> PrefectServer:
    try:
        return server.start()
    except RuntimeError as exc:
        pytest.fail(f"could not start the Prefect server: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def sqlite_server(prefect_venv, tmp_path_factory):
    server = _start(PrefectServer(tmp_path_factory.mktemp("prefect-sqlite")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = PostgresCluster()
    try:
        cluster.start()
    except Unavailable as exc:
        cluster.stop()
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    except RuntimeError as exc:
        cluster.stop()
        pytest.fail(f"could not start the PostgreSQL cluster: {exc}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres_server(prefect_venv, pg_cluster, tmp_path_factory):
    server = _start(PrefectServer(tmp_path_factory.mktemp("prefect-pg"), database_url=pg_cluster.url))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def auth_server(prefect_venv, tmp_path_factory):
    """SQLite server with Basic auth (PREFECT_SERVER_API_AUTH_STRING) and CSRF protection on."""
    server = PrefectServer(tmp_path_factory.mktemp("prefect-auth"),
                           auth_string="admin:" + secrets.token_urlsafe(18), csrf=True)
    yield _start(server)
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql", "auth_csrf"])
def any_server(request):
    """The representative subset runs against each backend: SQLite, PostgreSQL, Basic auth + CSRF."""
    name = {"sqlite": "sqlite_server", "postgresql": "postgres_server", "auth_csrf": "auth_server"}[request.param]
    return request.getfixturevalue(name)


# --------------------------------------------------------------------------- worker and flows


@dataclass
class Deployments:
    pool: str
    worker: PrefectWorker
    flows_dir: Path
    hello: str = "hello/itest-hello"
    failing: str = "failing/itest-failing"


@pytest.fixture(scope="session")
def worker(sqlite_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("worker")
    proc = PrefectWorker(sqlite_server, WORKER_POOL, root)
    try:
        proc.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def deployments(sqlite_server, worker, tmp_path_factory) -> Deployments:
    flows = copy_flows(tmp_path_factory.mktemp("flows") / "flows")
    home = tmp_path_factory.mktemp("deploy-home")
    try:
        deploy_flow(sqlite_server, flows, "hello.py:hello", "itest-hello", WORKER_POOL, home)
        deploy_flow(sqlite_server, flows, "failing.py:failing", "itest-failing", WORKER_POOL, home)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    return Deployments(WORKER_POOL, worker, flows)


# --------------------------------------------------------------------------- proxies


@pytest.fixture(scope="session")
def ntlm_proxy(sqlite_server, tmp_path_factory):
    """IIS-like NTLM front of the SQLite server: http://127.0.0.1:<port>/api demands Windows auth."""
    proxy = AuthProxy(f"http://127.0.0.1:{sqlite_server.port}", auth="ntlm", users=[NTLM_USER, NTLM_OTHER],
                      allowed=[f"{NTLM_USER[0]}\\{NTLM_USER[1]}"],
                      state_dir=tmp_path_factory.mktemp("ntlm")).start()
    yield proxy
    proxy.stop()


@dataclass
class TlsFront:
    proxy: AuthProxy
    cert: Path

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.proxy.port}/api"


@pytest.fixture(scope="session")
def tls_front(sqlite_server, tmp_path_factory):
    """HTTPS with a self-signed certificate in front of the SQLite server."""
    cert, key = self_signed_cert(tmp_path_factory.mktemp("tls"))
    proxy = AuthProxy(f"http://127.0.0.1:{sqlite_server.port}", tls=tls_context(cert, key)).start()
    yield TlsFront(proxy, cert)
    proxy.stop()


# --------------------------------------------------------------------------- the server as the roles write it


@pytest.fixture(scope="session")
def roles_plan(tmp_path_factory) -> dict:
    """The server service the nssm_services role plans for the example inventory's all-in-one host."""
    try:
        return server_plan(tmp_path_factory.mktemp("roles-plan"))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def roles_server(prefect_venv, roles_plan, tmp_path_factory):
    """`prefect server start` with the role's parameters and environment (UI on), paths and port made local."""
    server = _start(RolesServer(tmp_path_factory.mktemp("prefect-roles"), plan=roles_plan))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def roles_lockout_server(prefect_venv, roles_plan, tmp_path_factory):
    """The same plus PREFECT_SERVER_API_AUTH_STRING: what the role refuses on proxy hosts."""
    server = _start(RolesServer(tmp_path_factory.mktemp("prefect-lockout"), plan=roles_plan,
                                extra_env={"PREFECT_SERVER_API_AUTH_STRING": "admin:" + secrets.token_urlsafe(18)}))
    yield server
    server.stop()


# --------------------------------------------------------------------------- ansible-playbook


@pytest.fixture
def playbook(tmp_path, ansible_env) -> Playbook:
    return Playbook(tmp_path, ansible_env)


@pytest.fixture
def pool_name(request) -> str:
    """A pool name unique to the test, so tests sharing a server never see each other's pools."""
    return f"itest-{request.node.name[:30].strip('_').replace('[', '-').replace(']', '')}-{uuid.uuid4().hex[:6]}"


def pytest_report_header(config):
    return [f"integration: Prefect from {REPO / '.venv-prefect'}; servers on 127.0.0.1 only",
            f"integration: os uid {os.geteuid()}"]
