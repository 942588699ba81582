"""Offline stand-in for the get-pip.py bootstrap script that `ansible-test --venv` downloads.

ansible-test fetches get-pip.py from ci-files.testing.ansible.com to put pip into each virtual
environment it creates; that host is unreachable from the networks this collection targets.
This script does the same job without it. The test harness (tests/static/test_static_sanity.py) sets
UV to the toolchain's uv when it copies this file: uv installs the exact packages ansible-test asked for
(`pip==X.Y`) in about a second, from its cache after the first environment. Without uv, or if uv fails
(for example an index mirror configured for pip only), ensurepip installs the pip bundled with Python,
which then installs the requested pip from the configured package index or mirror.
Arguments are those of get-pip.py.
"""
import os
import subprocess
import sys

UV = ""  # replaced by the test harness
# The harness's variables uv needs (ansible-test passes few variables on): TLS trust, proxies, its cache.
UV_ENV: dict = {}  # replaced by the test harness
GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> int:
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
    packages = [arg for arg in args if not arg.startswith("-")]
    if UV and os.access(UV, os.X_OK) and packages:
        env = dict(os.environ, **UV_ENV)
        if subprocess.call([UV, "pip", "install", "--quiet", "--python", sys.executable, *packages], env=env) == 0:
            return 0
    # In a child process: ensurepip points PIP_CONFIG_FILE at /dev/null in its own environment,
    # which would hide pip.conf (index mirror, CA bundle) from the install below.
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
    return subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade", *args])


if __name__ == "__main__":
    sys.exit(main())
