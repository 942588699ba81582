# roles/postgresql/tasks/replication.yml on the standby (prefect_database_standby_host): seeds the data directory once
# from the primary with pg_basebackup through the primary's slot, then starts it as a streaming standby.
# A data directory with standby.signal is a standby already: nothing to do (its WAL receiver's status is reported),
# unless Reseed. Otherwise only a cluster that is not in recovery and has no Prefect database (the installer's) is
# seeded over without Reseed; a primary holding the Prefect database (a promoted standby with a stale inventory, or an
# old primary back on the network) is refused and left as it is: it may be the only primary.
# Nothing is deleted: the data directory is renamed to <DataDir>.before-standby-<time> and kept; if anything fails
# after the stop, the new directory is moved aside, the kept one put back, and the service started again if it ran.
# The replication password is read by pg_basebackup from PassFile (the connection string names no password); the
# superuser's arrives as a SecureString (sensitive_parameters) and reaches psql.exe in its process environment only.
# The role's own files of this host (KeepFiles: configuration with primary_conninfo, pg_hba.conf, server.crt and .key)
# replace the primary's copies that pg_basebackup brought.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$BinDir,
    [Parameter(Mandatory)][string]$DataDir,
    [Parameter(Mandatory)][string]$ServiceName,
    [Parameter(Mandatory)][int]$Port,
    [Parameter(Mandatory)][string]$Superuser,
    [Parameter(Mandatory)][SecureString]$SuperuserPassword,
    [Parameter(Mandatory)][string]$Database,
    # libpq keyword/value connection string to the primary, without a password.
    [Parameter(Mandatory)][string]$Conninfo,
    [Parameter(Mandatory)][string]$PassFile,
    [Parameter(Mandatory)][string]$Slot,
    [string[]]$KeepFiles = @('postgresql.conf', 'pg_hba.conf', 'pg_ident.conf', 'conf.d', 'server.crt', 'server.key'),
    [bool]$Reseed = $false,
    # This host's inventory name, for the messages.
    [string]$HostName = $env:COMPUTERNAME,
    [int]$StreamingTimeout = 120
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
$DataDir = $DataDir.TrimEnd('\')
$password = (New-Object System.Net.NetworkCredential('', $SuperuserPassword)).Password

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

function Invoke-LocalSql {
    # One value from the local server, as the superuser over loopback; $null when it does not answer.
    param([string]$Sql)
    $run = Invoke-Program -Name 'psql.exe' -Environment @{ PGPASSWORD = $password } -Stdin $Sql `
        -Arguments "-X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $Port -U `"$Superuser`" -d postgres"
    if ($run.rc -ne 0) {
        return $null
    }
    return $run.stdout
}

$receiverSql = "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none');"
$signal = Join-Path $DataDir 'standby.signal'
if ((Test-Path -LiteralPath $signal) -and -not $Reseed) {
    $Ansible.Result = @{ seeded = $false; kept = ''; receiver = [string](Invoke-LocalSql -Sql $receiverSql) }
    return
}
$wasRunning = (Get-Service -Name $ServiceName).Status -eq 'Running'
if (-not $Reseed) {
    if (-not $wasRunning) {
        throw ("PostgreSQL ($ServiceName) is not running, so whether $DataDir holds the Prefect database cannot be " +
               "read: start it, or seed this standby anyway with -e postgresql_reseed=true (the directory is kept, renamed).")
    }
    $sql = "SELECT pg_is_in_recovery()::text || '|' || EXISTS (SELECT 1 FROM pg_database WHERE datname = '$Database')::text;"
    $state = Invoke-LocalSql -Sql $sql
    # Left running: with a stale inventory it is the only primary (failover.yml promoted it).
    if ($state -eq 'false|true') {
        throw ("This host is a primary with the $Database database, not a standby; nothing was changed. If " +
               "playbooks/failover.yml promoted it, swap prefect_database_host and prefect_database_standby_host in the " +
               "inventory. If it is a former primary back on the network, stop it now (it is a second primary); to make " +
               "it the standby of the other host, run this playbook with --limit $HostName -e postgresql_reseed=true.")
    }
    if ($state -ne 'false|false') {
        throw "PostgreSQL ($ServiceName) did not say what $DataDir holds (got '$state'): nothing was seeded."
    }
}
$Ansible.Diff = @{ before = "$DataDir`n"; after = "$DataDir (standby seeded from the primary; the old directory kept)`n" }
if (-not $PSCmdlet.ShouldProcess($DataDir, 'Seed from the primary as a streaming standby')) {
    $Ansible.Changed = $true
    $Ansible.Result = @{ seeded = $true; kept = ''; receiver = '' }
    return
}

$stamp = Get-Date -Format 'yyyyMMddHHmmss'
$kept = '{0}.before-standby-{1}' -f $DataDir, $stamp
Stop-Service -Name $ServiceName -Force
$Ansible.Changed = $true
try {
    Rename-Item -LiteralPath $DataDir -NewName (Split-Path -Path $kept -Leaf)
    # The new directory gets the old one's access rules (the role's: the service account, Administrators, SYSTEM);
    # what pg_basebackup writes inherits them.
    $access = [System.Security.AccessControl.AccessControlSections]::Access
    $security = New-Object System.Security.AccessControl.DirectorySecurity
    $security.SetSecurityDescriptorSddlForm((Get-Acl -LiteralPath $kept).GetSecurityDescriptorSddlForm($access), $access)
    $null = [System.IO.Directory]::CreateDirectory($DataDir, $security)

    $backup = Invoke-Program -Name 'pg_basebackup.exe' -Environment @{ PGPASSFILE = $PassFile } `
        -Arguments "-D `"$DataDir`" -X stream -c fast -S `"$Slot`" -w -d `"$Conninfo`""
    if ($backup.rc -ne 0) {
        throw "pg_basebackup.exe from the primary failed ($($backup.rc)): $($backup.stderr)"
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
}
catch {
    $reason = $_.Exception.Message
    # The data directory as it was: whatever the failed seed left is moved aside, not deleted.
    if ((Test-Path -LiteralPath $kept) -and (Test-Path -LiteralPath $DataDir)) {
        Rename-Item -LiteralPath $DataDir -NewName ('{0}.failed-seed-{1}' -f (Split-Path -Path $DataDir -Leaf), $stamp)
    }
    if (Test-Path -LiteralPath $kept) {
        Rename-Item -LiteralPath $kept -NewName (Split-Path -Path $DataDir -Leaf)
    }
    if ($wasRunning) {
        Start-Service -Name $ServiceName
    }
    throw "Seeding $DataDir from the primary failed; the data directory is back as it was before the seed: $reason"
}
# A former primary that failover.yml fenced (disabled) starts with Windows again, now as the standby.
Set-Service -Name $ServiceName -StartupType Automatic
Start-Service -Name $ServiceName

$deadline = (Get-Date).AddSeconds($StreamingTimeout)
$status = ''
do {
    Start-Sleep -Seconds 1
    $status = [string](Invoke-LocalSql -Sql $receiverSql)
} while ($status -ne 'streaming' -and (Get-Date) -lt $deadline)
if ($status -ne 'streaming') {
    throw ("The standby was seeded and started but does not stream from the primary after $StreamingTimeout s " +
           "(WAL receiver: '$status'); its log in the log directory says why. The old data directory is kept in $kept.")
}
$Ansible.Result = @{ seeded = $true; kept = $kept; receiver = $status }
