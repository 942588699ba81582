#!/usr/bin/env bash
# The whole test suite: static checks, plugin unit tests, real-server integration tests, the offline
# bundle, molecule scenarios. Sets up what it needs first (idempotent), then hands over to pytest, whose
# summary ends the output with the time per tier. Extra arguments go to pytest, e.g.
#   bash scripts/test.sh -m fast        the fast tier (static checks, unit tests, filters, stand-in checks)
#   TEST_WORKERS=0 bash scripts/test.sh  one process (pytest-xdist off), for debugging
# Tests run in TEST_WORKERS parallel processes (default: one per core and one more, for the tests against real servers
# and flows that wait; on two cores, three processes took 15 % less time and 16 % less CPU than four, which contend),
# one test module per process at a time (tests/conftest.py).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/setup.sh --with-test-servers
workers=${TEST_WORKERS:-$(( $(nproc) + 1 ))}
exec .venv/bin/pytest -n "$workers" "$@"
