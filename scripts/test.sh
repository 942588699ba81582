#!/usr/bin/env bash
# The whole test suite: static checks, plugin unit tests, real-server integration tests, the offline
# bundle, molecule scenarios. Sets up what it needs first (idempotent), then hands over to pytest, whose
# summary line ends the output. Extra arguments go to pytest, e.g. `bash scripts/test.sh -m static`.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/setup.sh --with-test-servers
exec .venv/bin/pytest "$@"
