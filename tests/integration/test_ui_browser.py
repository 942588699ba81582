"""The UI in a real browser, through a reverse proxy, with the UI API URL the nssm_services role writes.

Headless Chromium (Debian's `chromium`, installed by `scripts/setup.sh --with-test-servers`) opens the UI on the
proxy's origin, as people open https://prefect.corp.local: the page, /ui-settings and every API call must go
through the proxy. The pools are created by the collection's enclave.prefect.work_pool module. The negative
control runs the same server with the previous default, a loopback API URL, which from a person's machine names
their own computer: the browser, which reaches the server only through the proxy, then shows no pool.

Browser-borne requests (the front door's threat model in docs/architecture.md): a second proxy listens on HTTPS and
applies the URL Rewrite rules of the role's rendered web.config (public URL https://127.0.0.1:<its port>), and
Chromium, driven over the DevTools protocol (cdp_pipe.py), runs one websocket probe in a page of the public origin
(the UI) and in a page of another origin (the same address, another port): the second is refused by the proxy, and
that page cannot read a CSRF token either. Both UIs then pause a work pool, a write that passes only with the CSRF
token the UI fetches for itself, since the server runs with the CSRF protection the role turns on. Not shown here:
Windows authentication (the browser is not signed in) and IIS itself (url_rewrite.py models URL Rewrite).
"""
from __future__ import annotations

import http.server
import json
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote

import pytest

from arr_proxy import ArrProxy
from cdp_pipe import Browser, spki_hash
from ntlm_proxy import self_signed_cert, tls_context
from playbooks import connection, module_task
from roles_env import RolesServer
from servers import REPO, clean_env, free_port
from url_rewrite import RewriteRules

sys.path.insert(0, str(REPO / "tests" / "static"))
import webconfig  # noqa: E402  pylint: disable=wrong-import-position

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


# --------------------------------------------------------------------------- browser-borne requests, over TLS

# One websocket to Prefect's log stream, as a page's own script opens it; what happened is written into the page too.
PROBE = """new Promise(resolve => {
  const seen = [], done = () => { document.body.dataset.probe = seen.join("; "); resolve(seen.join("; ")); };
  const socket = new WebSocket(%s, "prefect");
  socket.onopen = () => { seen.push("open"); socket.send(JSON.stringify({type: "auth", token: null})); };
  socket.onmessage = event => { seen.push("message " + event.data); socket.close(1000); };
  socket.onerror = () => seen.push("error");
  socket.onclose = event => { seen.push("close " + event.code); done(); };
  setTimeout(() => { seen.push("timeout"); done(); }, 20000);
})"""


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def public_front(roles_server, certificate):
    """The people's site: HTTPS, and the rules of the role's web.config rendered for https://127.0.0.1:<port>."""
    proxy = ArrProxy(roles_server.port, tls=tls_context(*certificate)).start()
    role, template = webconfig.xml_templates()[0]
    text, _allowed = webconfig.render(role, template, prefect_public_host="127.0.0.1", prefect_public_port=proxy.port)
    proxy.rules = RewriteRules.from_web_config(text)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def other_origin(certificate):
    """Another site the person visits: the same address and certificate, another port (so another origin)."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b"<!doctype html><title>elsewhere</title><body>another site</body>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    server.socket = tls_context(*certificate).wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(certificate, tmp_path_factory):
    """Headless Chromium that trusts the test certificate's key, and nothing else untrusted."""
    profile = tmp_path_factory.mktemp("chromium")
    with Browser(_chromium(), profile, clean_env(HOME=str(profile)),
                 [f"--ignore-certificate-errors-spki-list={spki_hash(certificate[0])}"]) as chromium:
        yield chromium


def _pool(server, name: str) -> None:
    """A pool made over the API directly (the module's own part is shown above)."""
    status, body = server.api("POST", "/work_pools/", {"name": name, "type": "process"})
    assert status == 201, body


def _showing(name: str) -> str:
    return f"document.body !== null && document.body.innerText.includes({json.dumps(name)})"


def test_a_page_of_another_origin_cannot_open_prefects_websockets(roles_server, public_front, other_origin, browser):
    """Cross-site websocket hijacking, and the CSRF token's side: a credentialed read (Windows authentication needs
    the browser's credentials) of another origin is withheld from the page, since Prefect answers CORS with `*`."""
    name = f"itest-ws-{uuid.uuid4().hex[:8]}"
    _pool(roles_server, name)
    socket_url = json.dumps(f"wss://127.0.0.1:{public_front.port}/api/logs/out")
    public_front.reset()
    # The UI on the public origin works through the rules, then the probe runs in it.
    with browser.open(f"{public_front.url}/v2/work-pools") as ui:
        assert ui.wait_for(_showing(name)), ui.evaluate("document.body.innerText")[:2000]
        assert ui.evaluate(PROBE % socket_url) == 'open; message {"type":"auth_success"}; close 1000'
    # The same script in a page of another origin: refused at the upgrade, the page learns nothing.
    with browser.open(other_origin) as elsewhere:
        assert elsewhere.wait_for(_showing("another site"))
        assert elsewhere.evaluate(PROBE % socket_url) == "error; close 1006"
        assert elsewhere.evaluate("document.body.dataset.probe") == "error; close 1006"
        token = json.dumps(f"{public_front.url}/api/csrf-token?client=elsewhere")
        read = f"fetch({token}, {{credentials: 'include'}}).then(r => r.text()).then(t => 'read ' + t, e => e.name)"
        assert elsewhere.evaluate(read) == "TypeError"  # the fetch fails as a CORS error
    # (The server did answer it: the browser kept the answer from the page.)
    assert [s.status for s in public_front.seen if s.path.startswith("/api/csrf-token?client=elsewhere")] == [200]
    upgrades = [(s.headers.get("origin"), s.status, s.rule) for s in public_front.reset() if s.upgrade]
    assert upgrades == [(public_front.url, 101, "Prefect websockets"),
                        (other_origin, 403, "Prefect websockets from other origins")], upgrades


@pytest.mark.parametrize("ui", ["", "/v2"])
def test_the_ui_pauses_a_pool_with_csrf_protection_on(roles_plan, roles_server, public_front, certificate, browser, ui,
                                                     request):
    """A write through the UI (v1, v2): the pool's pause switch sends PATCH /api/work_pools/<name>, which the server
    takes only with the CSRF token the UI fetched for itself."""
    assert roles_plan["environment"]["PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED"] == "true"
    assert roles_server.environment["PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED"] == "true"
    name = f"itest-csrf-{uuid.uuid4().hex[:8]}"
    _pool(roles_server, name)
    path = f"/api/work_pools/{name}"
    # Control: the same write without the token is refused by this server.
    refused = urllib.request.Request(f"{public_front.url}{path}", data=b'{"is_paused": true}', method="PATCH",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(refused, context=ssl.create_default_context(cafile=str(certificate[0])),
                               timeout=30)
    assert denied.value.code == 403 and b"Missing CSRF token" in denied.value.read()
    assert roles_server.pool(name)["status"] != "PAUSED"
    public_front.reset()
    page = browser.open(f"{public_front.url}{ui}/work-pools/work-pool/{quote(name)}")
    request.addfinalizer(page.close)
    switch = "document.querySelector('[role=switch]')"
    assert page.wait_for(f"{_showing(name)} && {switch} !== null"), page.evaluate("document.body.innerText")[:2000]
    page.evaluate(f"{switch}.click()")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(s.method == "PATCH" and s.status for s in public_front.seen):
        time.sleep(0.2)
    seen = public_front.reset()
    writes = [(s.method, s.path, s.status, bool(s.headers.get("prefect-csrf-token"))) for s in seen
              if s.method == "PATCH"]
    assert writes == [("PATCH", path, 204, True)], [(s.method, s.path, s.status) for s in seen]
    assert any(s.path.startswith("/api/csrf-token?client=") and s.status == 200 for s in seen)
    assert roles_server.pool(name)["status"] == "PAUSED"
    assert page.wait_for(f"{switch}.getAttribute('aria-checked') === 'false'", timeout=10)  # the UI shows it
