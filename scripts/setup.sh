#!/usr/bin/env bash
# Sets up the control-node / developer toolchain from the committed locks, idempotently.
#   .venv          ansible-core 2.19, WinRM/PSRP libraries, linters, molecule, pytest (requirements/dev.lock)
#   .venv-prefect  the pinned Prefect for the integration tests' real server (requirements/prefect-linux-py311.lock)
#   .venv/collections/ansible_collections/enclave/prefect -> this checkout (found through ./ansible.cfg)
# Usage: bash scripts/setup.sh [--with-test-servers]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
PYTHON=${PYTHON:-python3}
with_servers=0
[ "${1:-}" = "--with-test-servers" ] && with_servers=1

say() { printf '[setup] %s\n' "$*"; }

need_pkgs() {  # system packages: compilers and headers for gssapi (Kerberos), PostgreSQL server for tests
  local deb=(gcc python3-dev python3-venv libkrb5-dev) rpm=(gcc python3-devel krb5-devel)
  # Test-only: PostgreSQL for the integration tests, unshare for the offline install test, shellcheck for sanity.
  if [ "$with_servers" = 1 ]; then deb+=(postgresql util-linux shellcheck); rpm+=(postgresql-server util-linux ShellCheck); fi
  if command -v dpkg-query >/dev/null; then
    local missing=()
    for p in "${deb[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then echo "run as root or install: apt-get install ${missing[*]}" >&2; exit 1; fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v rpm >/dev/null; then
    local missing=()
    for p in "${rpm[@]}"; do rpm -q "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing RPM packages: ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then echo "run as root or install: dnf install ${missing[*]}" >&2; exit 1; fi
    dnf install -y -q "${missing[@]}"
  fi
}

make_venv() {  # make_venv DIR LOCK
  local dir=$1 lock=$2 stamp
  stamp=$(sha256sum "$lock" | cut -c1-16)
  if [ -f "$dir/.lock-stamp" ] && [ "$(cat "$dir/.lock-stamp")" = "$stamp" ]; then return 0; fi
  say "building $dir from $lock"
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  [ -x "$dir/bin/uv" ] || "$dir/bin/python" -m pip install -q --require-hashes -r requirements/bootstrap.lock
  "$dir/bin/uv" pip install -q --python "$dir/bin/python" --require-hashes -r "$lock"
  echo "$stamp" > "$dir/.lock-stamp"
}

need_pkgs
make_venv .venv requirements/dev.lock
[ "$with_servers" = 1 ] && make_venv .venv-prefect requirements/prefect-linux-py311.lock

# The checkout is the collection: expose it as enclave.prefect without copying.
mkdir -p .venv/collections/ansible_collections/enclave
ln -sfn "$top" .venv/collections/ansible_collections/enclave/prefect
say "toolchain ready: $(.venv/bin/ansible --version | head -n1)"
