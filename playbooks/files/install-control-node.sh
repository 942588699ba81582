#!/usr/bin/env bash
# Installs an enclave control node from this offline bundle, with no network at all.
#
#   bash install-control-node.sh --prefix /opt/enclave-prefect [--python python3.11]
#   bash install-control-node.sh --verify-only
#
# 1. Verifies every file of the bundle against SHA256SUMS and refuses, naming the file, a bundle with a
#    missing, changed or unlisted file. Nothing is created before this check passes.
# 2. Creates (or updates) a virtual environment at PREFIX and installs the control-node wheels with
#    `pip install --no-index --require-hashes` from the bundle only.
# 3. Loads every compiled module of those wheels (gssapi, krb5, cryptography, ...) and, when one does not
#    load, names the system package it needs (the MIT Kerberos libraries: libkrb5-3 / krb5-libs).
# 4. Installs the collections from their tarballs with `ansible-galaxy collection install --offline`
#    into that environment, so `PREFIX/bin/ansible-playbook` finds enclave.prefect with no configuration,
#    and runs `ansible --version` from it.
# Paths inside the bundle come from MANIFEST.json (the layout contract, docs/bundle-layout.md).
set -euo pipefail

prog=install-control-node
bundle=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf '[%s] %s\n' "$prog" "$*"; }
die() { printf '%s: ERROR: %s\n' "$prog" "$*" >&2; exit 1; }
usage() {  # the comment block at the top of this file, and nothing else
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"
}

# --- 1. the bundle is complete and unchanged -------------------------------------------------------
verify_bundle() {  # verify_bundle DIR: each missing, changed or unlisted file is named once, then refused
  local dir=$1 sums=SHA256SUMS line path want have problems=0
  local -A listed=()
  [ -f "$dir/$sums" ] || die "$sums is missing from $dir: refusing an incomplete bundle"
  while IFS= read -r line || [ -n "$line" ]; do
    [[ $line =~ ^([0-9a-f]{64})\ [\ *](.+)$ ]] || die "$sums has a malformed line: '$line': refusing the bundle"
    want=${BASH_REMATCH[1]} path=${BASH_REMATCH[2]}
    case $path in /*|..|../*|*/..|*/../*) die "$sums names a path outside the bundle: '$path'" ;; esac
    [ -z "${listed[$path]+set}" ] || die "$sums lists '$path' twice: refusing the bundle"
    listed[$path]=1
    if [ ! -f "$dir/$path" ]; then
      printf '%s: missing file: %s\n' "$prog" "$path" >&2
      problems=1
      continue
    fi
    # Digests compared here, not by parsing `sha256sum --check`, whose words change with the locale.
    have=$(sha256sum < "$dir/$path")
    if [ "${have%% *}" != "$want" ]; then
      printf '%s: digest mismatch (file changed): %s\n' "$prog" "$path" >&2
      problems=1
    fi
  done < "$dir/$sums"
  [ ${#listed[@]} -gt 0 ] || die "$sums lists no files: refusing the bundle"
  # Files nobody listed (a wheel slipped into the wheel directory would otherwise be installable).
  while IFS= read -r -d '' path; do
    [ -n "${listed[$path]+set}" ] && continue
    printf '%s: file not listed in %s: %s\n' "$prog" "$sums" "$path" >&2
    problems=1
  done < <(cd "$dir" && find . -type f ! -path "./$sums" -printf '%P\0' | LC_ALL=C sort -z)
  [ "$problems" = 0 ] || die "bundle $dir failed verification against $sums (see the files named above): nothing was installed"
  say "bundle verified: ${#listed[@]} files match $sums"
}

# --- 3. the compiled modules load ------------------------------------------------------------------
check_compiled_modules() {  # check_compiled_modules PYTHON WHEELS_DIR BUILD_DESCRIPTION
  # Every extension module of the platform wheels (not *-none-any), imported by PYTHON; on failure, what to install.
  "$1" - "$2" "$3" <<'PY'
import importlib
import importlib.machinery
import importlib.metadata
import os
import platform
import re
import sys

wheels_dir, built_on = sys.argv[1], sys.argv[2]
suffixes = sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True)
# A shared library a module needs -> (what it is, Debian/Ubuntu packages, RHEL packages).
LIBRARIES = [
    (r"lib(gssapi_krb5|krb5|k5crypto|krb5support|com_err)\.so", "the MIT Kerberos libraries",
     "libkrb5-3 libgssapi-krb5-2", "krb5-libs"),
    (r"lib(ssl|crypto)\.so", "OpenSSL", "libssl3", "openssl-libs"),
    (r"libffi\.so", "libffi", "libffi8", "libffi"),
]

dists = []
for name in sorted(os.listdir(wheels_dir)):
    tags = name[:-len(".whl")].split("-") if name.endswith(".whl") else []
    if len(tags) >= 5 and tags[-1] != "any":  # name-version[-build]-python-abi-platform
        dists.append(tags[0])

modules, failures = [], []
for dist in dists:
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        failures.append((dist, "not installed in this environment"))
        continue
    for file in files:
        path = str(file)
        suffix = next((s for s in suffixes if path.endswith(s)), None)
        parts = path[:-len(suffix)].split("/") if suffix else []
        if parts and all(part.isidentifier() for part in parts):  # vendored libraries (cffi.libs/...) are not modules
            modules.append(".".join(parts))
for module in modules:
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, OSError, ...: each reported below, one line per module
        failures.append((module, f"{type(exc).__name__}: {exc}"))

if not failures:
    print(f"compiled modules load: {len(modules)} of {', '.join(dists) or 'no platform wheel'}")
    sys.exit(0)

print("these compiled modules of the installed packages do not load:")
for module, error in failures:
    print(f"  {module}: {error}")
text = "\n".join(error for _, error in failures)
missing = sorted(set(re.findall(r"([\w.+-]+\.so[.\d]*): cannot open shared object file", text)))
wanted = {}
for library in missing:
    for pattern, what, debian, rhel in LIBRARIES:
        if re.match(pattern, library):
            entry = wanted.setdefault(what, [[], debian, rhel])
            entry[0].append(library)
            break
    else:
        print(f"Missing system library {library}: find its package with `apt-file search {library}` (Debian/Ubuntu)"
              f" or `dnf provides '*/{library}'` (RHEL).")
for what, (libraries, debian, rhel) in wanted.items():
    print(f"Missing: {what} ({', '.join(libraries)}). Install them from your distribution's repository, then run"
          f" this script again (the environment stays and is updated):")
    print(f"  Debian/Ubuntu: apt-get install {debian}")
    print(f"  RHEL/Rocky/Alma: dnf install {rhel}")
if re.search(r"GLIBC_[\d.]+' not found|undefined symbol", text):
    print("A library of this system is older than the one the wheels were built against: build the bundle on the"
          " control node's distribution (docs/bundle-layout.md, bundle_control_node_python).")
try:
    here = platform.freedesktop_os_release().get("PRETTY_NAME", "unknown")
except OSError:
    here = "unknown"
print(f"The wheels were built on {built_on}; this system is {here}"
      f" (CPython {platform.python_version()}, {' '.join(platform.libc_ver())}).")
sys.exit(1)
PY
}

main() {
  local prefix="" python=python3 verify_only=0
  while [ $# -gt 0 ]; do
    case $1 in
      --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
      --prefix=*) prefix=${1#*=}; shift ;;
      --python) [ $# -ge 2 ] || die "--python needs an interpreter"; python=$2; shift 2 ;;
      --python=*) python=${1#*=}; shift ;;
      --verify-only) verify_only=1; shift ;;
      -h|--help) usage; exit 0 ;;
      *) { printf '%s: unknown argument: %s\n\n' "$prog" "$1"; usage; } >&2; exit 2 ;;
    esac
  done
  [ "$verify_only" = 1 ] || [ -n "$prefix" ] || die "--prefix DIR is required (where the virtual environment goes)"

  verify_bundle "$bundle"
  [ "$verify_only" = 1 ] && exit 0

  # --- 2. the interpreter fits the wheels ----------------------------------------------------------
  command -v "$python" >/dev/null 2>&1 || die "Python interpreter '$python' not found: pass --python /path/to/python3.X"
  # Layout paths and the Python the wheels were built for, read from the verified MANIFEST.json.
  local manifest_values
  manifest_values=$("$python" - "$bundle/MANIFEST.json" <<'PY'
import json, shlex, sys
m = json.load(open(sys.argv[1], encoding="utf-8"))
cn = m["control_node"]
built_on = "%s (CPython %s, %s)" % (cn.get("build_os", "an unrecorded system"), cn["python_full"], cn.get("libc", ""))
for key, value in (("want_python", cn["python_version"]), ("wheels_dir", cn["wheels_dir"]),
                   ("lock", cn["lock"]), ("collections_dir", cn["collections_dir"]),
                   ("collections_requirements", cn["collections_requirements"]),
                   ("bundle_name", m["bundle"]), ("built_on", built_on)):
    print(f"{key}={shlex.quote(str(value))}")
PY
  ) || die "cannot read MANIFEST.json with $python"
  # Declared here so that a MANIFEST.json without one of them fails the checks below, not silently.
  local want_python="" wheels_dir="" lock="" collections_dir="" collections_requirements="" bundle_name="" built_on=""
  eval "$manifest_values"
  local have_python
  have_python=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$have_python" = "$want_python" ] || die "the control-node wheels are built for Python $want_python but $python is $have_python: pass --python pythonX.Y (X.Y = $want_python)"
  "$python" -c 'import ensurepip, venv' 2>/dev/null \
    || die "$python cannot create virtual environments: install python3-venv (Debian/Ubuntu; python$want_python-venv for another version) or python$want_python (RHEL)"

  # --- the virtual environment ---------------------------------------------------------------------
  if [ -e "$prefix" ] && [ ! -f "$prefix/pyvenv.cfg" ] && [ -n "$(ls -A "$prefix" 2>/dev/null)" ]; then
    die "$prefix exists and is not a virtual environment: choose an empty or new directory"
  fi
  # The bundle is the only package source: ignore pip settings of the machine and the user.
  local var
  while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^PIP_' || true)
  export PIP_CONFIG_FILE=/dev/null PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
  if [ -x "$prefix/bin/python" ]; then
    say "updating the virtual environment at $prefix"
  else
    say "creating the virtual environment at $prefix"
    "$python" -m venv "$prefix" || die "$python -m venv $prefix failed (see above)"
  fi
  say "installing the control-node packages from $wheels_dir (no index, hashes required)"
  "$prefix/bin/python" -m pip install --quiet --no-index --find-links "$bundle/$wheels_dir" \
    --require-hashes -r "$bundle/$lock" || die "pip could not install the bundle's wheels into $prefix (see above)"
  "$prefix/bin/python" -m pip check >/dev/null || die "pip check found broken requirements in $prefix"

  # --- 3. the compiled modules ---------------------------------------------------------------------
  local report
  report=$(check_compiled_modules "$prefix/bin/python" "$bundle/$wheels_dir" "$built_on") \
    || die "the packages are installed in $prefix, but ${report}"
  say "$report"

  # --- 4. the collections --------------------------------------------------------------------------
  # Into the environment's site-packages: ansible finds collections there (like those the `ansible`
  # package carries), so no ansible.cfg or ANSIBLE_COLLECTIONS_PATH is needed. --force: a re-run with a
  # newer bundle of the same collection version must still leave exactly the bundle's collections.
  local site listing version
  site=$("$prefix/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  say "installing the collections offline into $site/ansible_collections"
  cd "$bundle/$collections_dir"  # no ansible.cfg here; tarball names in requirements.yml are relative to it
  ANSIBLE_COLLECTIONS_PATH="$site" \
    "$prefix/bin/ansible-galaxy" collection install --offline --force -r "$bundle/$collections_requirements" -p "$site"
  listing=$("$prefix/bin/ansible-galaxy" collection list enclave.prefect 2>/dev/null || true)
  [[ $listing == *$'\n'"enclave.prefect "* ]] \
    || die "enclave.prefect is not visible to $prefix/bin/ansible-galaxy after the install"

  version=$("$prefix/bin/ansible" --version 2>&1) \
    || die "$prefix/bin/ansible --version fails (ansible needs a UTF-8 locale, e.g. LANG=C.UTF-8): ${version}"
  say "control node ready from $bundle_name: ${version%%$'\n'*}"
  say "use it with: source $prefix/bin/activate && ansible-doc -l enclave.prefect"
}

# Sourced (as the tests do): define the functions only.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
