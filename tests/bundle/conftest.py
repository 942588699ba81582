"""Fixtures of the bundle tests: the stand-in installers (signed at test time), served on 127.0.0.1, and the
tests' own download cache. No bundle test reads or writes the user's cache (~/.cache/enclave-prefect-bundle):
every build gets bundle_cache_dir explicitly and runs with XDG_CACHE_HOME pointing at an empty directory."""
from __future__ import annotations

import fcntl
import functools
import http.server
import shutil
import socket
import threading

import pytest

from bundlerun import TEST_CACHE, USER_CACHE, tree_state
from installer_fixtures import BundleFixtures, write_bundle_fixtures


@pytest.fixture(scope="session")
def user_cache_before() -> dict[str, tuple[int, int]]:
    """The user's default bundle cache before any bundle test ran (empty if there is none)."""
    return tree_state(USER_CACHE)


@pytest.fixture(scope="session")
def bundle_env(ansible_env, user_cache_before, tmp_path_factory) -> dict[str, str]:
    """ansible_env with XDG_CACHE_HOME at an empty directory: a build that fell back to the default cache would
    write there, where test_builds_leave_the_default_cache_alone looks.

    CFLAGS=-O0 (unless set): the build compiles gssapi and krb5 from their sources (no Linux wheels); unoptimised, a
    first build takes 70 s of CPU instead of 180 on a 2-core machine. The wheels are the tests' own: what the tests
    prove (the build's steps, the offline install, the imports) does not depend on the compiler's optimisation."""
    xdg = tmp_path_factory.mktemp("xdg-cache")
    return dict(ansible_env, XDG_CACHE_HOME=str(xdg), CFLAGS=ansible_env.get("CFLAGS", "-O0"))


@pytest.fixture(scope="session")
def bundle_cache():
    """The tests' cache, one session at a time (a second session waits for the lock)."""
    TEST_CACHE.parent.mkdir(parents=True, exist_ok=True)
    with open(TEST_CACHE.parent / "bundle-test-cache.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(TEST_CACHE / "installers", ignore_errors=True)
        yield TEST_CACHE
        fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory) -> BundleFixtures:
    return write_bundle_fixtures(tmp_path_factory.mktemp("installers"))


@pytest.fixture(scope="session")
def installer_server(fixtures: BundleFixtures):
    """The stand-in installers over http on 127.0.0.1 (the catalogue's bundle_fixture_base_url)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(fixtures.served))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def refusing_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens: a vendor site that cannot be reached, without the internet."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
