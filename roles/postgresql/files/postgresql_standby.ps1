# roles/postgresql/tasks/replication.yml on the standby (prefect_database_standby_host): seeds the data directory once
# from the primary with pg_basebackup through the primary's slot, then starts it as a streaming standby.
# A data directory with standby.signal is a standby already: nothing to do. One that holds the Prefect database and is
# not in recovery is a primary (a promoted standby, or a stale inventory): refused unless Reseed (failover.yml).
# Nothing is deleted: the data directory is renamed to <DataDir>.before-standby-<time> and kept; if pg_basebackup fails,
# it is put back and the service started again if it ran before (a fenced former primary stays stopped). The replication password is read by pg_basebackup from PassFile (the
# connection string names no password), the superuser's reaches psql.exe in its process environment only.
# The role's own files of this host (KeepFiles: pg_hba.conf, conf.d with primary_conninfo, server.crt and .key) replace
# the primary's copies that pg_basebackup brought.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$BinDir,
    [Parameter(Mandatory)][string]$DataDir,
    [Parameter(Mandatory)][string]$ServiceName,
    [Parameter(Mandatory)][int]$Port,
    [Parameter(Mandatory)][string]$Superuser,
    [Parameter(Mandatory)][string]$SuperuserPassword,
    [Parameter(Mandatory)][string]$Database,
    # libpq keyword/value connection string to the primary, without a password.
    [Parameter(Mandatory)][string]$Conninfo,
    [Parameter(Mandatory)][string]$PassFile,
    [Parameter(Mandatory)][string]$Slot,
    [string[]]$KeepFiles = @('postgresql.conf', 'pg_hba.conf', 'pg_ident.conf', 'conf.d', 'server.crt', 'server.key'),
    [bool]$Reseed = $false,
    [int]$StreamingTimeout = 120
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

function Invoke-Program {
    # PGPASSWORD would win over the passfile: psql gets the superuser's, pg_basebackup only the passfile.
    param([string]$Name, [string]$Arguments, [hashtable]$Environment, [string]$Stdin = '')
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = Join-Path $BinDir $Name
    $info.Arguments = $Arguments
    $info.UseShellExecute = $false
    $info.RedirectStandardInput = $true
    $info.RedirectStandardOutput = $true
    $info.RedirectStandardError = $true
    $info.EnvironmentVariables.Remove('PGPASSWORD')
    $info.EnvironmentVariables['PGCONNECT_TIMEOUT'] = '15'
    foreach ($key in $Environment.Keys) {
        $info.EnvironmentVariables[$key] = $Environment[$key]
    }
    $process = [System.Diagnostics.Process]::Start($info)
    $stdout = $process.StandardOutput.ReadToEndAsync()
    $stderr = $process.StandardError.ReadToEndAsync()
    $process.StandardInput.Write($Stdin)
    $process.StandardInput.Close()
    $process.WaitForExit()
    return @{ rc = $process.ExitCode; stdout = $stdout.Result.Trim(); stderr = $stderr.Result.Trim() }
}

function Get-LocalState {
    # 'recovery|has the Prefect database' from the local server, as the superuser over loopback.
    $sql = "SELECT pg_is_in_recovery()::text || '|' || EXISTS (SELECT 1 FROM pg_database WHERE datname = '$Database')::text;"
    $run = Invoke-Program -Name 'psql.exe' -Arguments "-X -q -A -t -h 127.0.0.1 -p $Port -U `"$Superuser`" -d postgres" `
        -Environment @{ PGPASSWORD = $SuperuserPassword } -Stdin $sql
    if ($run.rc -ne 0) {
        throw "psql.exe as $Superuser on port $Port failed ($($run.rc)): $($run.stderr)"
    }
    return $run.stdout
}

$signal = Join-Path $DataDir 'standby.signal'
if (Test-Path -LiteralPath $signal) {
    $Ansible.Result = @{ seeded = $false; kept = '' }
    return
}
$service = Get-Service -Name $ServiceName
$wasRunning = $service.Status -eq 'Running'
if (-not $Reseed) {
    if (-not $wasRunning) {
        throw ("PostgreSQL ($ServiceName) is not running, so whether $DataDir holds the Prefect database cannot be " +
               "read: start it, or seed this standby anyway with postgresql_reseed (the directory is kept, renamed).")
    }
    $recovery, $hasDatabase = (Get-LocalState).Split('|')
    if ($recovery -eq 'false' -and $hasDatabase -eq 'true') {
        throw ("This host is a primary with the $Database database, not a standby: if playbooks/failover.yml promoted " +
               "it, swap prefect_database_host and prefect_database_standby_host in the inventory; to make it a standby " +
               "of the other host again, run playbooks/failover.yml with failover_reseed.")
    }
}
$Ansible.Diff = @{ before = "$DataDir`n"; after = "$DataDir (standby seeded from the primary; the old directory kept)`n" }
if (-not $PSCmdlet.ShouldProcess($DataDir, 'Seed from the primary as a streaming standby')) {
    $Ansible.Changed = $true
    $Ansible.Result = @{ seeded = $true; kept = '' }
    return
}

$kept = '{0}.before-standby-{1}' -f $DataDir, (Get-Date -Format 'yyyyMMddHHmmss')
Stop-Service -Name $ServiceName -Force
Rename-Item -LiteralPath $DataDir -NewName (Split-Path -Path $kept -Leaf)
$Ansible.Changed = $true
# The new directory gets the old one's access rules (the role's: the service account, Administrators, SYSTEM); what
# pg_basebackup writes inherits them.
$access = [System.Security.AccessControl.AccessControlSections]::Access
$security = New-Object System.Security.AccessControl.DirectorySecurity
$security.SetSecurityDescriptorSddlForm((Get-Acl -LiteralPath $kept).GetSecurityDescriptorSddlForm($access), $access)
$null = [System.IO.Directory]::CreateDirectory($DataDir, $security)

$arguments = "-D `"$DataDir`" -X stream -c fast -S `"$Slot`" -w -d `"$Conninfo`""
$backup = Invoke-Program -Name 'pg_basebackup.exe' -Arguments $arguments -Environment @{ PGPASSFILE = $PassFile }
if ($backup.rc -ne 0) {
    Remove-Item -LiteralPath $DataDir -Recurse -Force
    Rename-Item -LiteralPath $kept -NewName (Split-Path -Path $DataDir -Leaf)
    if ($wasRunning) {
        Start-Service -Name $ServiceName
    }
    throw "pg_basebackup.exe from the primary failed ($($backup.rc)); $DataDir is as it was: $($backup.stderr)"
}
foreach ($name in $KeepFiles) {
    $source = Join-Path $kept $name
    if (Test-Path -LiteralPath $source) {
        $target = Join-Path $DataDir $name
        if (Test-Path -LiteralPath $target) {
            Remove-Item -LiteralPath $target -Recurse -Force
        }
        Copy-Item -LiteralPath $source -Destination $target -Recurse
    }
}
[System.IO.File]::WriteAllText($signal, '')
# A former primary that failover.yml fenced (disabled) starts with Windows again, now as the standby.
Set-Service -Name $ServiceName -StartupType Automatic
Start-Service -Name $ServiceName

$deadline = (Get-Date).AddSeconds($StreamingTimeout)
$status = ''
do {
    Start-Sleep -Seconds 1
    $run = Invoke-Program -Name 'psql.exe' -Arguments "-X -q -A -t -h 127.0.0.1 -p $Port -U `"$Superuser`" -d postgres" `
        -Environment @{ PGPASSWORD = $SuperuserPassword } -Stdin "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none');"
    if ($run.rc -eq 0) {
        $status = $run.stdout
    }
} while ($status -ne 'streaming' -and (Get-Date) -lt $deadline)
if ($status -ne 'streaming') {
    throw ("The standby was seeded and started but does not stream from the primary after $StreamingTimeout s " +
           "(wal receiver: $status); its log in the log directory says why. The old data directory is kept in $kept.")
}
$Ansible.Result = @{ seeded = $true; kept = $kept }
