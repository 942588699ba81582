"""The UI in a real browser, through a reverse proxy, with the UI API URL the nssm_services role writes.

Headless Chromium (Debian's `chromium`, installed by `scripts/setup.sh --with-test-servers`) opens the UI on the
proxy's origin, as people open https://prefect.corp.local: the page, /ui-settings and every API call must go
through the proxy. The pools are created by the collection's enclave.prefect.work_pool module. The negative
control runs the same server with the previous default, a loopback API URL, which from a person's machine names
their own computer: the browser, which reaches the server only through the proxy, then shows no pool.
"""
from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest

from arr_proxy import ArrProxy
from playbooks import connection, module_task
from roles_env import RolesServer
from servers import clean_env, free_port

pytestmark = pytest.mark.slow

PAGES = ["/work-pools", "/v2/work-pools"]  # the v1 UI and the v2 UI (3.8.8's default at /)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium is missing: `bash scripts/setup.sh --with-test-servers` installs it", pytrace=False)
    return found


def render(url: str, profile, done, attempts: int = 3) -> str:
    """The DOM after the single-page app ran (network included) for 20 s of virtual time; on a busy machine the
    app may not have finished, so it is loaded again until done(dom) or `attempts` runs."""
    argv = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-proxy-server",
            "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
            "--virtual-time-budget=20000", "--dump-dom", url]
    for _ in range(attempts):
        proc = subprocess.run(argv, env=clean_env(HOME=str(profile)), capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        if done(proc.stdout):
            break
    return proc.stdout


def _create_pools(playbook, server, names: list[str]) -> None:
    tasks = [module_task(f"pool {n}", "work_pool", connection(server, name=n, type="process",
                                                              description="browser test")) for n in names]
    result = playbook.run(tasks)
    assert result.rc == 0, result.explain()
    assert all(result.task(f"pool {n}")["changed"] for n in names), result.explain()


@pytest.fixture(scope="module")
def front(roles_server):
    """ARR-like proxy: the only origin the browser uses."""
    proxy = ArrProxy(roles_server.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def own_loopback():
    """What a person's browser finds at a loopback URL: its own machine, with no Prefect. A recording listener that
    forwards to a port nothing listens on (502), so the test sees that the UI sent its API calls there."""
    sink = ArrProxy(free_port()).start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def loopback_ui_server(prefect_venv, roles_plan, own_loopback, tmp_path_factory):
    """The role's server with the previous default kind of PREFECT_UI_API_URL: a loopback URL."""
    server = RolesServer(tmp_path_factory.mktemp("prefect-loopback-ui"), plan=roles_plan,
                         extra_env={"PREFECT_UI_API_URL": f"{own_loopback.url}/api"})
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(f"could not start the Prefect server: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.mark.parametrize("page", PAGES)
def test_ui_through_the_proxy_shows_the_pools(roles_server, front, playbook, tmp_path, page):
    names = [f"itest-ui-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    _create_pools(playbook, roles_server, names)
    front.reset()
    dom = render(f"{front.url}{page}", tmp_path / "profile", lambda d: all(n in d for n in names))
    seen = front.reset()
    assert all(n in dom for n in names), f"pools {names} not on the page; requests {[(s.path, s.status) for s in seen]}"
    # The browser asked the proxy's origin for the settings and the pools (relative /api), nothing else exists for it.
    paths = [s.path for s in seen]
    assert "/ui-settings" in paths and "/api/work_pools/filter" in paths, paths
    assert all(s.headers.get("host") == f"127.0.0.1:{front.port}" for s in seen)


def test_a_loopback_ui_api_url_shows_no_pool_through_the_proxy(loopback_ui_server, own_loopback, playbook, tmp_path):
    names = [f"itest-ui-{uuid.uuid4().hex[:8]}"]
    _create_pools(playbook, loopback_ui_server, names)
    proxy = ArrProxy(loopback_ui_server.port).start()
    own_loopback.reset()
    try:
        dom = render(f"{proxy.url}/v2/work-pools", tmp_path / "profile",
                     lambda d: any(s.path.startswith("/api/") for s in own_loopback.seen))
        seen = proxy.reset()
    finally:
        proxy.stop()
    paths, elsewhere = [s.path for s in seen], [s.path for s in own_loopback.reset()]
    # The app started (its settings came through the proxy) and sent its API calls to the loopback URL, not here.
    assert "/ui-settings" in paths, paths
    assert not [p for p in paths if p.startswith("/api/")], paths
    # (With CSRF protection on, the app's first API calls are /api/health and /api/csrf-token; the browser's own machine
    # has no Prefect, so it goes no further.)
    assert any(p.startswith("/api/") for p in elsewhere), elsewhere
    assert not any(n in dom for n in names)
    # Control: the pool exists and the server answers; only the browser's API URL is wrong.
    assert loopback_ui_server.pool(names[0]) is not None
