#!/usr/bin/env bash
# The Windows acceptance run in one command: `molecule test -s windows` against your own Windows Server 2019/2022 VM
# (site.yml twice, verify.yml, uninstall.yml), then a Markdown report to send back to the project, secrets masked.
#
#   scripts/windows-acceptance.sh [REPORT_DIR] [molecule test options...]
#   scripts/windows-acceptance.sh ~/reports --destroy never     # keep the deployment on the VM afterwards
#
# The VM is named by the MOLECULE_WINDOWS_* variables (molecule/windows/README.md). Without the required ones this
# stops before any connection, listing them. Passwords of what the run creates are generated when not set.
# Writes windows-acceptance-<host>-<UTC timestamp>.md to REPORT_DIR (default: the current directory), and beside it
# the full log (.log, NOT masked: keep it to yourself, send the .md). Exits with molecule's exit code.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out_dir=.
if [[ $# -gt 0 && $1 != -* ]]; then
    out_dir=$1
    shift
fi

required=(MOLECULE_WINDOWS_HOST MOLECULE_WINDOWS_USER MOLECULE_WINDOWS_PASSWORD MOLECULE_WINDOWS_BUNDLE_DIR
          MOLECULE_WINDOWS_HOST_ADDRESS MOLECULE_WINDOWS_CONTROL_NODE_ADDRESS MOLECULE_WINDOWS_CERT_THUMBPRINT)
generated=(MOLECULE_WINDOWS_SERVICE_PASSWORD MOLECULE_WINDOWS_DB_PASSWORD MOLECULE_WINDOWS_DB_SUPERUSER_PASSWORD
           MOLECULE_WINDOWS_BACKUP_PASSWORD MOLECULE_WINDOWS_BACKUP_DB_PASSWORD)

missing=()
for name in "${required[@]}"; do
    [[ -n ${!name:-} ]] || missing+=("$name")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "windows-acceptance: not set: ${missing[*]}" >&2
    echo "See molecule/windows/README.md. Nothing was run and no host was contacted." >&2
    exit 2
fi

if [[ ! -x $repo/.venv/bin/molecule ]]; then
    echo "windows-acceptance: $repo/.venv/bin/molecule not found: set up the control node first (README)." >&2
    exit 2
fi
if ! mkdir -p "$out_dir" || ! out_dir=$(cd "$out_dir" && pwd); then
    echo "windows-acceptance: cannot write to report directory $out_dir" >&2
    exit 2
fi

# Fresh, distinct passwords for the accounts and logins the run creates, unless given (3 character classes).
for name in "${generated[@]}"; do
    if [[ -z ${!name:-} ]]; then
        value=$("$repo/.venv/bin/python" -c 'import secrets; print(f"Mol-{secrets.token_urlsafe(18)}9a")') || exit 2
        export "$name=$value"
    fi
done

# molecule runs ansible-playbook from PATH and writes the scenario's own ansible configuration.
# shellcheck source=/dev/null
source "$repo/.venv/bin/activate"
unset ANSIBLE_CONFIG
export NO_COLOR=1 PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1

host_tag=$(printf '%s' "$MOLECULE_WINDOWS_HOST" | tr -c 'A-Za-z0-9._-' '_')
base="$out_dir/windows-acceptance-$host_tag-$(date -u +%Y%m%dT%H%M%SZ)"
log="$base.log"
report="$base.md"
( umask 077 && : > "$log" )

echo "windows-acceptance: molecule test -s windows $* (log: $log)"
# Ctrl-C stops molecule; the report is still written from what ran.
trap 'echo "windows-acceptance: interrupted" >&2' INT
cd "$repo" || exit 2
molecule test -s windows "$@" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
trap - INT

if python "$repo/scripts/acceptance_report.py" --host "$MOLECULE_WINDOWS_HOST" --exit-code "$rc" -o "$report" "$log"; then
    echo "windows-acceptance: report written to $report (molecule exit code $rc)"
else
    echo "windows-acceptance: the report could not be written; the full log is $log" >&2
fi
exit "$rc"
