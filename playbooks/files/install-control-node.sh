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
# 3. Installs the collections from their tarballs with `ansible-galaxy collection install --offline`
#    into that environment, so `PREFIX/bin/ansible-playbook` finds enclave.prefect with no configuration.
# Paths inside the bundle come from MANIFEST.json (the layout contract, docs/bundle-layout.md).
set -euo pipefail

prog=install-control-node
bundle=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prefix=""
python=python3
verify_only=0

say() { printf '[%s] %s\n' "$prog" "$*"; }
die() { printf '%s: ERROR: %s\n' "$prog" "$*" >&2; exit 1; }
usage() {
  sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; python=$2; shift 2 ;;
    --python=*) python=${1#*=}; shift ;;
    --verify-only) verify_only=1; shift ;;
    -h|--help) usage 0 ;;
    *) printf '%s: unknown argument: %s\n' "$prog" "$1" >&2; usage 2 ;;
  esac
done
[ "$verify_only" = 1 ] || [ -n "$prefix" ] || die "--prefix DIR is required (where the virtual environment goes)"

# --- 1. the bundle is complete and unchanged -------------------------------------------------------
verify_bundle() {
  local sums=SHA256SUMS listed unlisted problems=0 line path
  cd "$bundle"
  [ -f "$sums" ] || die "$sums is missing from $bundle: refusing an incomplete bundle"
  listed=$(mktemp); unlisted=$(mktemp)
  trap 'rm -f "$listed" "$unlisted"' RETURN
  while IFS= read -r line; do
    if ! [[ $line =~ ^[0-9a-f]{64}\ [\ *](.+)$ ]]; then
      die "$sums has a malformed line: '$line': refusing the bundle"
    fi
    path=${BASH_REMATCH[1]}
    case $path in /*|../*|*/../*) die "$sums names a path outside the bundle: '$path'" ;; esac
    printf '%s\n' "$path" >> "$listed"
    if [ ! -f "$path" ]; then
      printf '%s: missing file: %s\n' "$prog" "$path" >&2
      problems=1
    fi
  done < "$sums"
  [ -s "$listed" ] || die "$sums lists no files: refusing the bundle"
  # Changed files: sha256sum names each one that does not match.
  while IFS= read -r line; do
    case $line in
      *': FAILED') printf '%s: digest mismatch (file changed): %s\n' "$prog" "${line%: FAILED}" >&2; problems=1 ;;
    esac
  done < <(sha256sum --check --quiet "$sums" 2>/dev/null || true)
  # Files nobody listed (a wheel slipped into the wheel directory would otherwise be installable).
  find . -type f ! -path ./"$sums" -printf '%P\n' | LC_ALL=C sort > "$unlisted"
  while IFS= read -r path; do
    printf '%s: file not listed in %s: %s\n' "$prog" "$sums" "$path" >&2
    problems=1
  done < <(LC_ALL=C comm -23 "$unlisted" <(LC_ALL=C sort "$listed"))
  [ "$problems" = 0 ] || die "bundle $bundle failed verification against $sums (see the files named above): nothing was installed"
  say "bundle verified: $(wc -l < "$listed") files match $sums"
}
verify_bundle
[ "$verify_only" = 1 ] && exit 0

# --- 2. the interpreter fits the wheels ------------------------------------------------------------
command -v "$python" >/dev/null 2>&1 || die "Python interpreter '$python' not found: pass --python /path/to/python3.X"
# Layout paths and the Python the wheels were built for, read from the verified MANIFEST.json.
manifest_values=$("$python" - "$bundle/MANIFEST.json" <<'PY'
import json, shlex, sys
m = json.load(open(sys.argv[1], encoding="utf-8"))
cn = m["control_node"]
for key, value in (("want_python", cn["python_version"]), ("wheels_dir", cn["wheels_dir"]),
                   ("lock", cn["lock"]), ("collections_dir", cn["collections_dir"]),
                   ("collections_requirements", cn["collections_requirements"]),
                   ("bundle_name", m["bundle"])):
    print(f"{key}={shlex.quote(str(value))}")
PY
) || die "cannot read MANIFEST.json with $python"
# Declared here so that a MANIFEST.json without one of them fails the checks below, not silently.
want_python="" wheels_dir="" lock="" collections_dir="" collections_requirements="" bundle_name=""
eval "$manifest_values"
have_python=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$have_python" = "$want_python" ] || die "the control-node wheels are built for Python $want_python but $python is $have_python: pass --python pythonX.Y (X.Y = $want_python)"
"$python" -c 'import ensurepip, venv' 2>/dev/null || die "$python cannot create virtual environments (install the python3-venv / python3X-libs package of your distribution)"

# --- 3. the virtual environment --------------------------------------------------------------------
if [ -e "$prefix" ] && [ ! -f "$prefix/pyvenv.cfg" ] && [ -n "$(ls -A "$prefix" 2>/dev/null)" ]; then
  die "$prefix exists and is not a virtual environment: choose an empty or new directory"
fi
# The bundle is the only package source: ignore pip settings of the machine and the user.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^PIP_' || true)
export PIP_CONFIG_FILE=/dev/null PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -x "$prefix/bin/python" ]; then
  say "updating the virtual environment at $prefix"
else
  say "creating the virtual environment at $prefix"
  "$python" -m venv "$prefix"
fi
say "installing the control-node packages from $wheels_dir (no index, hashes required)"
"$prefix/bin/python" -m pip install --quiet --no-index --find-links "$bundle/$wheels_dir" \
  --require-hashes -r "$bundle/$lock"
"$prefix/bin/python" -m pip check >/dev/null || die "pip check found broken requirements in $prefix"

# --- 4. the collections ----------------------------------------------------------------------------
# Into the environment's site-packages: ansible finds collections there (like those the `ansible`
# package carries), so no ansible.cfg or ANSIBLE_COLLECTIONS_PATH is needed. --force: a re-run with a
# newer bundle of the same collection version must still leave exactly the bundle's collections.
site=$("$prefix/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
say "installing the collections offline into $site/ansible_collections"
cd "$bundle/$collections_dir"  # no ansible.cfg here; tarball names in requirements.yml are relative to it
ANSIBLE_COLLECTIONS_PATH="$site" \
  "$prefix/bin/ansible-galaxy" collection install --offline --force -r "$bundle/$collections_requirements" -p "$site"
listing=$("$prefix/bin/ansible-galaxy" collection list enclave.prefect 2>/dev/null || true)
[[ $listing == *$'\n'"enclave.prefect "* ]] \
  || die "enclave.prefect is not visible to $prefix/bin/ansible-galaxy after the install"

version=$("$prefix/bin/ansible" --version)
say "control node ready from $bundle_name: ${version%%$'\n'*}"
say "use it with: source $prefix/bin/activate && ansible-doc -l enclave.prefect"
