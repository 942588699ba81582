# Reads, never changes: the state of each Prefect service and of the application NSSM runs for it.
# NSSM keeps a service RUNNING while it restarts a crashing application, and shows it PAUSED while it throttles
# the restarts (service.cpp throttle_restart), so the service state alone proves nothing. The application must
# be the same process before and after a settle time counted from its start; the wait is only what remains of
# that time, so a service that has been up for long costs no wait.
[CmdletBinding()]
param (
    [Parameter(Mandatory)][string[]]$Services,
    [int]$SettleSeconds = 20
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

function Get-Snapshot {
    $snapshot = @{}
    foreach ($name in $Services) {
        $service = Get-CimInstance -ClassName Win32_Service -Filter "Name='$name'"
        if (-not $service) { $snapshot[$name] = @{ exists = $false }; continue }
        $app = $null
        if ([int]$service.ProcessId -gt 0) {
            foreach ($child in @(Get-CimInstance -ClassName Win32_Process -Filter "ParentProcessId=$([int]$service.ProcessId)")) {
                if ($child.Name -ne 'conhost.exe') { $app = $child; break }
            }
        }
        $snapshot[$name] = @{
            exists = $true
            state = [string]$service.State
            account = [string]$service.StartName
            app_pid = if ($app) { [int]$app.ProcessId } else { 0 }
            app_started_utc = if ($app) { $app.CreationDate.ToUniversalTime() } else { $null }
        }
    }
    $snapshot
}

$first = Get-Snapshot
$youngest = [DateTime]::MinValue
foreach ($entry in $first.Values) {
    if ($entry.app_started_utc -and $entry.app_started_utc -gt $youngest) { $youngest = $entry.app_started_utc }
}
$wait = 0
if ($youngest -gt [DateTime]::MinValue) {
    $wait = [Math]::Min($SettleSeconds, [Math]::Ceiling(($youngest.AddSeconds($SettleSeconds) - [DateTime]::UtcNow).TotalSeconds))
}
if ($wait -gt 0) { Start-Sleep -Seconds $wait }
$second = if ($wait -gt 0) { Get-Snapshot } else { $first }

$report = @{}
foreach ($name in $Services) {
    $now = $second[$name]
    $then = $first[$name]
    if (-not $now.exists) { $report[$name] = @{ exists = $false }; continue }
    $report[$name] = @{
        exists = $true
        state = $now.state
        account = $now.account
        app_running = $now.app_pid -gt 0
        # Round-trip format: ISO 8601 whatever the host's culture.
        app_started = if ($now.app_started_utc) { $now.app_started_utc.ToString('o') } else { '' }
        restarted_during_settle = $now.app_pid -ne $then.app_pid -or ($now.app_pid -eq 0)
    }
}
$Ansible.Result = @{ services = $report; waited_seconds = [Math]::Max($wait, 0) }
