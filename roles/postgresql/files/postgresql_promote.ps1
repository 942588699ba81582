# roles/postgresql/tasks/failover_promote.yml (playbooks/failover.yml): promotes this standby to primary with
# pg_promote (waits up to 60 s), then checks that it accepts writes. A host that is no longer in recovery is already a
# primary: nothing to do. The superuser password reaches psql.exe in its process environment only (PGPASSWORD).
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$BinDir,
    [Parameter(Mandatory)][int]$Port,
    [Parameter(Mandatory)][string]$Superuser,
    [Parameter(Mandatory)][string]$SuperuserPassword
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

function Invoke-Psql {
    param([string]$Sql)
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = Join-Path $BinDir 'psql.exe'
    $info.Arguments = "-X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $Port -U `"$Superuser`" -d postgres"
    $info.UseShellExecute = $false
    $info.RedirectStandardInput = $true
    $info.RedirectStandardOutput = $true
    $info.RedirectStandardError = $true
    $info.EnvironmentVariables['PGPASSWORD'] = $SuperuserPassword
    $info.EnvironmentVariables['PGCONNECT_TIMEOUT'] = '15'
    $process = [System.Diagnostics.Process]::Start($info)
    $stdout = $process.StandardOutput.ReadToEndAsync()
    $stderr = $process.StandardError.ReadToEndAsync()
    $process.StandardInput.Write($Sql)
    $process.StandardInput.Close()
    $process.WaitForExit()
    if ($process.ExitCode -ne 0) {
        throw "psql.exe as $Superuser on port $Port failed ($($process.ExitCode)): $($stderr.Result.Trim())"
    }
    return ([string]$stdout.Result).Trim()
}

# The last WAL this standby received and replayed: what it will serve as primary.
$before = Invoke-Psql -Sql "SELECT pg_is_in_recovery()::text || '|' || coalesce(pg_last_wal_replay_lsn()::text, '') || '|' || coalesce(pg_last_xact_replay_timestamp()::text, '');"
$recovery, $replayLsn, $replayTime = $before.Split('|')
$promoted = $false
if ($recovery -eq 'true') {
    $Ansible.Diff = @{ before = "standby`n"; after = "primary`n" }
    if ($PSCmdlet.ShouldProcess('PostgreSQL', 'Promote the standby to primary')) {
        if ((Invoke-Psql -Sql 'SELECT pg_promote(true, 60);') -ne 't') {
            throw 'pg_promote did not complete within 60 s; the server log in the log directory says why.'
        }
        $promoted = $true
    }
    $Ansible.Changed = $true
}
$writable = $false
if ($recovery -ne 'true' -or $promoted) {
    $writable = (Invoke-Psql -Sql "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off';") -eq 't'
}
$Ansible.Result = @{ was_standby = ($recovery -eq 'true'); promoted = $promoted; writable = $writable
                     replayed_lsn = $replayLsn; replayed_at = $replayTime }
