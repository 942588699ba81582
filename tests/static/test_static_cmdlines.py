"""No secret on a command line: every process the roles and playbooks start on a Windows host is listed with what its
arguments are made of (tests/static/cmdlines.py), and none is made of a Vault value. The tracer itself is held to
scripts that do and do not put a password on a command line."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cmdlines  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.static


@pytest.fixture(scope="module")
def found():
    return cmdlines.findings()


def test_no_process_the_collection_starts_carries_a_secret(found):
    listing, problems = found
    assert problems == [], "\n".join(problems)


def test_the_listing_covers_every_program_the_data_layer_starts(found):
    """Every script and module known to start a program is in the listing, so that a new one is traced too."""
    listing, _ = found
    text = "\n".join(listing)
    for where in ("pg_backup_role.ps1", "backup_restore.ps1", "database_upgrade.ps1", "prefect_objects.ps1",
                  "postgresql_reload.ps1", "superuser_password.ps1", "nssm_settings.ps1", "venv_build.ps1",
                  "venv_switch.ps1", "smoke_deploy.ps1", "PostgreSQL is installed silently",
                  "Python is installed for all users", "scheduled task action"):
        assert where in text, where
    # The restore's psql as the superuser: its names are on the command line, its password is not.
    swap = [line for line in listing if "backup_restore.ps1" in line and "ProcessStartInfo" in line]
    assert swap and all("superuserpassword" not in line and "database" in line for line in swap), swap
    # One migration script for the restore, the upgrade and the first start of HA replicas: every task that migrates
    # starts Prefect through the same file.
    migrate = {line.split(":", 1)[0] for line in listing if "database_upgrade.ps1:" in line}
    assert {Path(m).name for m in migrate} == {"restore_upgrade.yml", "upgrade_migrate.yml", "service.yml"}, migrate


SCRIPT = r"""
[CmdletBinding()]
param (
    [Parameter(Mandatory)][string]$Psql,
    [Parameter(Mandatory)][string]$User,
    [Parameter(Mandatory)][string]$Password
)

function Invoke-Tool {
    param([string]$FilePath, [string[]]$Arguments)
    $output = & $FilePath @Arguments 2>&1
    $output
}

function Invoke-Quiet {
    param([string]$Secret, [string]$Sql)
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = $Psql
    $info.Arguments = "-U $User -c `"$Sql`""
    $info.EnvironmentVariables['PGPASSWORD'] = $Secret
    $process = [System.Diagnostics.Process]::Start($info)
}

$connect = @('-U', $User)
Invoke-Quiet -Secret $Password -Sql 'SELECT 1'
{call}
"""


@pytest.mark.parametrize("call, leaks", [
    ("Invoke-Tool -FilePath $Psql -Arguments ($connect + @('-c', 'SELECT 1'))", False),
    ("$pair = \"user=$User password=$Password\"\nInvoke-Tool -FilePath $Psql -Arguments @('-d', $pair)", True),
    ("Invoke-Tool $Psql @('-W', $Password)", True),
    ("$info2 = 1\n$x.Arguments = \"-p $Password\"", True),
])
def test_the_tracer_finds_a_password_that_reaches_a_command_line(tmp_path, call, leaks):
    script = tmp_path / "tool.ps1"
    script.write_text(SCRIPT.replace("{call}", call))
    reach = set().union(*(start.parameters for start in cmdlines.script_starts(script)))
    assert ("password" in reach) == leaks, [(s.line, s.kind, s.parameters) for s in cmdlines.script_starts(script)]
    # The names are on the command line; so is the program a wrapper starts (& $FilePath @Arguments).
    assert "user" in reach and ("psql" in reach) == ("Invoke-Tool" in call)
