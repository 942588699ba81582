"""Fixtures for the API plugin unit tests: the collection on sys.path, a fake Prefect, a fake action."""
from __future__ import annotations

import os
import sys
import tempfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _collection_root() -> str:
    """A directory holding ansible_collections/enclave/prefect -> this checkout."""
    linked = REPO / ".venv" / "collections"
    if (linked / "ansible_collections" / "enclave" / "prefect" / "plugins").is_dir():
        return str(linked)
    root = Path(tempfile.mkdtemp(prefix="enclave-prefect-unit-"))
    (root / "ansible_collections" / "enclave").mkdir(parents=True)
    os.symlink(REPO, root / "ansible_collections" / "enclave" / "prefect")
    return str(root)


sys.path.insert(0, _collection_root())
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_prefect import API, AUTH_STRING, FakeClock, FakePrefect, FakeTransport, HttpHandler  # noqa: E402

from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import PrefectClient  # noqa: E402
from ansible_collections.enclave.prefect.plugins.module_utils.prefect_runner import Context  # noqa: E402


@pytest.fixture
def server():
    return FakePrefect()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_client(clock):
    def make(server, retries=3, **params):
        return PrefectClient(FakeTransport(server, params), API, retries=retries, sleep=clock.sleep,
                             secrets=params.get("secrets", ()), auth_mode=params.get("auth", "none"))
    return make


@pytest.fixture
def make_ctx(clock):
    def make(raw_args=None, check_mode=False, diff=True, make_client=None):
        return Context(check_mode=check_mode, diff=diff, raw_args=raw_args or {}, make_client=make_client,
                       clock=clock, sleep=clock.sleep)
    return make


@pytest.fixture
def http_fake():
    """(FakePrefect, api_url) served over HTTP on 127.0.0.1."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), HttpHandler)
    httpd.fake = FakePrefect(auth_string=AUTH_STRING)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd.fake, "http://127.0.0.1:%d/api" % httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
