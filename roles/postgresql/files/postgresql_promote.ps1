# roles/postgresql/tasks/failover_promote.yml (playbooks/failover.yml): promotes this standby to primary with
# pg_promote (waits up to 60 s), then checks that it accepts writes. A host that is no longer in recovery is already a
# primary: nothing to do. With MinimumLsn (the stopped primary's shutdown checkpoint), it first waits until it has
# received that far, and refuses to promote short of it unless AcceptDataLoss: nothing the primary wrote is lost.
# The superuser password arrives as a SecureString and reaches psql.exe in its process environment only (PGPASSWORD).
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$BinDir,
    [Parameter(Mandatory)][int]$Port,
    [Parameter(Mandatory)][string]$Superuser,
    [Parameter(Mandatory)][SecureString]$SuperuserPassword,
    [string]$MinimumLsn = '',
    [bool]$AcceptDataLoss = $false,
    [int]$WaitSeconds = 60
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$password = (New-Object System.Net.NetworkCredential('', $SuperuserPassword)).Password

function Invoke-Psql {
    param([string]$Sql)
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = Join-Path $BinDir 'psql.exe'
    $info.Arguments = "-X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $Port -U `"$Superuser`" -d postgres"
    $info.UseShellExecute = $false
    $info.RedirectStandardInput = $true
    $info.RedirectStandardOutput = $true
    $info.RedirectStandardError = $true
    $info.EnvironmentVariables['PGPASSWORD'] = $password
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
$received = ''
if ($recovery -eq 'true' -and $MinimumLsn) {
    # LSNs compared by PostgreSQL (pg_lsn), the old primary's from pg_controldata.
    $lsn = $MinimumLsn -replace "[^0-9A-Fa-f/]", ''
    $sql = "SELECT (coalesce(pg_last_wal_receive_lsn(), '0/0') >= '$lsn'::pg_lsn)::text || '|' || coalesce(pg_last_wal_receive_lsn()::text, '');"
    $deadline = (Get-Date).AddSeconds($WaitSeconds)
    do {
        $caughtUp, $received = (Invoke-Psql -Sql $sql).Split('|')
        if ($caughtUp -eq 'true' -or (Get-Date) -ge $deadline) {
            break
        }
        Start-Sleep -Seconds 1
    } while ($true)
    if ($caughtUp -ne 'true' -and -not $AcceptDataLoss) {
        throw ("The standby received WAL up to $received, short of the stopped primary's last checkpoint $lsn: promoted " +
               "now, it would lose what the primary wrote after that. Nothing was promoted; the primary is stopped and " +
               "disabled. Start it again (Set-Service -StartupType Automatic; Start-Service) and find why the standby " +
               "lags, or promote anyway with failover_accept_data_loss.")
    }
}
if ($recovery -eq 'true') {
    $Ansible.Diff = @{ before = "standby`n"; after = "primary`n" }
    if ($PSCmdlet.ShouldProcess('PostgreSQL', 'Promote the standby to primary')) {
        if ((Invoke-Psql -Sql 'SELECT pg_promote(true, 60);') -ne 't') {
            throw ('pg_promote did not complete within 60 s: the promotion may still complete; run failover.yml again ' +
                   'to check, and read the server log in the log directory.')
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
                     replayed_lsn = $replayLsn; replayed_at = $replayTime; received_lsn = $received }
