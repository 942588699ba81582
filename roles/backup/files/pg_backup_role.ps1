# The PostgreSQL login of the scheduled pg_dump can log in with the PGPASSFILE and holds pg_read_all_data and nothing
# more (files/backup_role_check.sql). Only when it cannot does psql connect as the superuser and apply
# files/backup_role.sql, with the names and the password in this process's environment (psql \getenv) and the
# superuser's password in a PGPASSFILE in a private temporary directory: never on a command line.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$Psql,
    [Parameter(Mandatory)][string]$DbHost,
    [Parameter(Mandatory)][int]$Port,
    [Parameter(Mandatory)][string]$Database,
    [Parameter(Mandatory)][string]$Role,
    [Parameter(Mandatory)][string]$RolePassword,
    [Parameter(Mandatory)][string]$PassFile,
    [Parameter(Mandatory)][string]$SuperUser,
    [string]$SuperPassword = '',
    [Parameter(Mandatory)][string]$CheckSql,
    [Parameter(Mandatory)][string]$ApplySql
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
$encoding = New-Object System.Text.UTF8Encoding $false

function Invoke-Native {
    param([string]$FilePath, [string[]]$Arguments)
    # Native programs write notices to stderr; with Stop that would throw in Windows PowerShell 5.1.
    $ErrorActionPreference = 'Continue'
    $output = & $FilePath @Arguments 2>&1 | ForEach-Object { "$_" }
    [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = ($output -join "`n") }
}

function Test-BackupLogin {
    param([string]$SqlFile)
    $env:PGPASSFILE = $PassFile
    $run = Invoke-Native -FilePath $Psql -Arguments @('-X', '-w', '-q', '-t', '-A', '-h', $DbHost, '-p', "$Port", '-U', $Role,
        '-d', $Database, '-f', $SqlFile)
    [pscustomobject]@{ Ok = ($run.ExitCode -eq 0 -and $run.Output.Trim() -eq 't'); Output = $run.Output }
}

if (-not (Test-Path -LiteralPath $Psql -PathType Leaf)) {
    # Check mode on a host the postgresql role has not installed yet (it installs nothing in check mode): a real run
    # creates the login after PostgreSQL is installed.
    if ($WhatIfPreference) {
        $Ansible.Changed = $true
        $Ansible.Result = @{ error = ''; applied = $false }
        return
    }
    $Ansible.Result = @{ error = "$Psql does not exist: is PostgreSQL installed (postgresql role) and backup_postgresql_bin_dir right?" }
    return
}
$work = Join-Path ([System.IO.Path]::GetTempPath()) ('prefect-backup-' + [guid]::NewGuid().ToString('N'))
New-Item -ItemType Directory -Path $work | Out-Null
try {
    $checkFile = Join-Path $work 'check.sql'
    $applyFile = Join-Path $work 'apply.sql'
    [System.IO.File]::WriteAllText($checkFile, $CheckSql, $encoding)
    [System.IO.File]::WriteAllText($applyFile, $ApplySql, $encoding)
    $before = Test-BackupLogin -SqlFile $checkFile
    if ($before.Ok) {
        $Ansible.Result = @{ error = ''; applied = $false }
        return
    }
    $Ansible.Changed = $true
    if (-not $PSCmdlet.ShouldProcess("$Role on $DbHost`:$Port", 'create or update the backup login')) {
        $Ansible.Result = @{ error = ''; applied = $false }
        return
    }
    if (-not $SuperPassword) {
        $Ansible.Result = @{ error = "the backup login $Role cannot log in or lacks pg_read_all_data, and no superuser password " +
            "is set to fix it (backup_postgresql_superuser_password, default postgresql_superuser_password)" }
        return
    }
    $superPass = Join-Path $work 'pgpass.conf'
    $escaped = $SuperPassword.Replace('\', '\\').Replace(':', '\:')
    [System.IO.File]::WriteAllText($superPass, "$DbHost`:$Port`:*:$SuperUser`:$escaped`n", $encoding)
    $env:PGPASSFILE = $superPass
    $env:BACKUP_ROLE = $Role
    $env:BACKUP_ROLE_PASSWORD = $RolePassword
    $env:BACKUP_DATABASE = $Database
    try {
        $apply = Invoke-Native -FilePath $Psql -Arguments @('-X', '-w', '-q', '-h', $DbHost, '-p', "$Port", '-U', $SuperUser,
            '-d', 'postgres', '-f', $applyFile)
    }
    finally {
        foreach ($name in @('BACKUP_ROLE_PASSWORD', 'BACKUP_ROLE', 'BACKUP_DATABASE')) {
            Remove-Item -LiteralPath "Env:\$name" -ErrorAction SilentlyContinue
        }
    }
    if ($apply.ExitCode -ne 0) {
        $Ansible.Result = @{ error = "psql as $SuperUser could not create the backup login $Role (exit $($apply.ExitCode)): $($apply.Output)" }
        return
    }
    $after = Test-BackupLogin -SqlFile $checkFile
    if (-not $after.Ok) {
        $Ansible.Result = @{ error = "the backup login $Role still cannot log in with $PassFile or lacks pg_read_all_data: " +
            "$($after.Output). Does pg_hba.conf admit it from $DbHost?" }
        return
    }
    $Ansible.Result = @{ error = ''; applied = $true }
}
finally {
    Remove-Item Env:\PGPASSFILE -ErrorAction SilentlyContinue
    Remove-Item -LiteralPath $work -Recurse -Force -ErrorAction SilentlyContinue
}
