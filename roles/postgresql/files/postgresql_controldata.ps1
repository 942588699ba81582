# Read-only (roles/postgresql/tasks/failover_fence.yml): the stopped old primary's last checkpoint, from
# pg_controldata.exe. The service manager can report the service stopped while the postmaster still writes its
# shutdown checkpoint (pg_ctl's service stops waiting after 12 checks of 5 s): this waits for "shut down".
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$BinDir,
    [Parameter(Mandatory)][string]$DataDir,
    [int]$WaitSeconds = 120
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$env:LC_ALL = 'C'
$deadline = (Get-Date).AddSeconds($WaitSeconds)
do {
    $lines = @(& (Join-Path $BinDir 'pg_controldata.exe') -D $DataDir.TrimEnd('\'))
    if ($LASTEXITCODE -ne 0) {
        throw "pg_controldata.exe -D $DataDir failed ($LASTEXITCODE): $($lines -join ' ')"
    }
    $values = @{}
    foreach ($line in $lines) {
        if ($line -match '^([^:]+):\s+(.*)$') {
            $values[$Matches[1].Trim()] = $Matches[2].Trim()
        }
    }
    $state = [string]$values['Database cluster state']
    if ($state -eq 'shut down' -or (Get-Date) -ge $deadline) {
        break
    }
    Start-Sleep -Seconds 2
} while ($true)
$Ansible.Result = @{ state = $state; checkpoint_lsn = [string]$values['Latest checkpoint location'] }
