# Read-only (playbooks/failover.yml, before anything is stopped): whether this host is a standby and streams, and
# how far it has received and replayed WAL. The superuser password arrives as a SecureString (win_powershell's
# sensitive_parameters) and reaches psql.exe in its process environment only.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$BinDir,
    [Parameter(Mandatory)][int]$Port,
    [Parameter(Mandatory)][string]$Superuser,
    [Parameter(Mandatory)][SecureString]$SuperuserPassword
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$info = New-Object System.Diagnostics.ProcessStartInfo
$info.FileName = Join-Path $BinDir 'psql.exe'
$info.Arguments = "-X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $Port -U `"$Superuser`" -d postgres"
$info.UseShellExecute = $false
$info.RedirectStandardInput = $true
$info.RedirectStandardOutput = $true
$info.RedirectStandardError = $true
$info.EnvironmentVariables['PGPASSWORD'] = (New-Object System.Net.NetworkCredential('', $SuperuserPassword)).Password
$info.EnvironmentVariables['PGCONNECT_TIMEOUT'] = '15'
$process = [System.Diagnostics.Process]::Start($info)
$stdout = $process.StandardOutput.ReadToEndAsync()
$stderr = $process.StandardError.ReadToEndAsync()
$process.StandardInput.Write(@"
SELECT pg_is_in_recovery()::text || '|' || coalesce((SELECT status FROM pg_stat_wal_receiver), 'none') || '|'
       || coalesce(pg_last_wal_receive_lsn()::text, '') || '|' || coalesce(pg_last_wal_replay_lsn()::text, '') || '|'
       || coalesce(pg_last_xact_replay_timestamp()::text, '');
"@)
$process.StandardInput.Close()
$process.WaitForExit()
if ($process.ExitCode -ne 0) {
    throw "psql.exe as $Superuser on port $Port failed ($($process.ExitCode)): $($stderr.Result.Trim())"
}
$recovery, $receiver, $received, $replayed, $replayedAt = ([string]$stdout.Result).Trim().Split('|')
$Ansible.Result = @{ in_recovery = ($recovery -eq 'true'); receiver = $receiver; received_lsn = $received
                     replayed_lsn = $replayed; replayed_at = $replayedAt }
