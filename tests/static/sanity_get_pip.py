"""Offline stand-in for the get-pip.py bootstrap script that `ansible-test --venv` downloads.

ansible-test fetches get-pip.py from ci-files.testing.ansible.com to put pip into each virtual
environment it creates; that host is unreachable from the networks this collection targets.
This script does the same job from the standard library: ensurepip installs the pip bundled
with Python, which then installs the exact pip version ansible-test asked for (`pip==X.Y`)
from the configured package index or mirror. Arguments are those of get-pip.py.
"""
import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> int:
    # In a child process: ensurepip points PIP_CONFIG_FILE at /dev/null in its own environment,
    # which would hide pip.conf (index mirror, CA bundle) from the install below.
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
    return subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade", *args])


if __name__ == "__main__":
    sys.exit(main())
