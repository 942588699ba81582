#!/usr/bin/env bash
# Recompiles every lock from its .in file with the pinned uv. Run after editing requirements/*.in,
# then run the test suite; commit the .in and .lock files together.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
uv=${UV:-$top/.venv/bin/uv}
compile() { "$uv" pip compile --quiet --generate-hashes "$@"; }
compile requirements/bootstrap.in --python-version 3.11 -o requirements/bootstrap.lock
compile requirements/control-node.in --python-version 3.11 -o requirements/control-node.lock
compile requirements/dev.in --python-version 3.11 -o requirements/dev.lock
# The lowest supported ansible-core, tested in its own venv (tests/static/test_core_versions.py).
for core_in in requirements/ansible-core-*.in; do compile "$core_in" --python-version 3.11 -o "${core_in%.in}.lock"; done
compile requirements/prefect.in --python-version 3.11 -o requirements/prefect-linux-py311.lock
compile requirements/prefect-old-linux-py311.in --python-version 3.11 -o requirements/prefect-old-linux-py311.lock
for py in 3.11 3.12 3.13; do
  in="requirements/prefect.in requirements/windows/extra.in"
  # shellcheck disable=SC2086
  compile $in --python-platform x86_64-pc-windows-msvc --python-version "$py" -o "requirements/windows/prefect-py${py/./}.lock"
done
echo "locks refreshed: review 'git diff requirements/'"
