# A backup now (playbooks/backup.yml): starts the scheduled task, so that the run uses the task's own account, program
# and settings, waits for it to finish and reports its last result, the newest backup and the log's last line. A run
# already going (the nightly one) is waited for first, within the same time limit. With DrillRequest (backup.yml -e
# backup_drill=true) the request file is written first, so that the run ends with a drill whatever the day; the drill
# record (DrillRecord) is returned when this run wrote it. Check mode starts nothing and reports what the task last did.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$TaskFolder,
    [Parameter(Mandatory)][string]$TaskName,
    [Parameter(Mandatory)][string]$BackupDir,
    [Parameter(Mandatory)][string]$Pattern,
    [Parameter(Mandatory)][string]$LogPath,
    [int]$TimeoutSeconds = 3600,
    [string]$DrillRecord = '',
    [string]$DrillRequest = ''
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
$taskPath = $TaskFolder.TrimEnd('\') + '\'

function Get-NewestBackup {
    if (-not (Test-Path -LiteralPath $BackupDir)) { return $null }
    Get-ChildItem -LiteralPath $BackupDir -File | Where-Object { $_.Name -match $Pattern } |
        Sort-Object -Property Name -Descending | Select-Object -First 1
}

function Get-DrillRecord {
    # The drill record, when it was written after Since (a drill of this run), else $null.
    param([DateTime]$Since)
    if (-not $DrillRecord -or -not (Test-Path -LiteralPath $DrillRecord)) { return $null }
    $item = Get-Item -LiteralPath $DrillRecord
    if ($item.LastWriteTimeUtc -lt $Since) { return $null }
    Get-Content -LiteralPath $DrillRecord -Raw | ConvertFrom-Json
}

function Get-LastLogLine {
    if (-not (Test-Path -LiteralPath $LogPath)) { return '' }
    [string](Get-Content -LiteralPath $LogPath -Tail 1)
}

$task = Get-ScheduledTask -TaskPath $taskPath -TaskName $TaskName -ErrorAction SilentlyContinue
if (-not $task) {
    $Ansible.Failed = -not $WhatIfPreference
    $Ansible.Result = @{ started = $false; exists = $false; last_result = -1; file = ''; bytes = 0; log = '' }
    return
}
$before = Get-ScheduledTaskInfo -InputObject $task
if (-not $PSCmdlet.ShouldProcess("$taskPath$TaskName", 'start')) {
    $newest = Get-NewestBackup
    $Ansible.Result = @{ started = $false; exists = $true; last_result = [int64]$before.LastTaskResult
        file = if ($newest) { $newest.FullName } else { '' }; bytes = if ($newest) { $newest.Length } else { 0 }
        log = Get-LastLogLine }
    return
}
$deadline = [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
# A run already going (the nightly one): the task starts no second instance (MultipleInstances IgnoreNew), so the
# start below would be ignored. Wait for that run to end, then start this one.
$waited = $false
while ([string](Get-ScheduledTask -TaskPath $taskPath -TaskName $TaskName).State -eq 'Running') {
    $waited = $true
    if ([DateTime]::UtcNow -gt $deadline) {
        $Ansible.Failed = $true
        $Ansible.Result = @{ started = $false; exists = $true; finished = $false; waited = $true
            last_result = [int64]$before.LastTaskResult; file = ''; bytes = 0; log = Get-LastLogLine }
        return
    }
    Start-Sleep -Seconds 2
}
if ($waited) { $before = Get-ScheduledTaskInfo -TaskPath $taskPath -TaskName $TaskName }
$started = [DateTime]::UtcNow
if ($DrillRequest) {
    Set-Content -LiteralPath $DrillRequest -Value "requested $($started.ToString('o'))" -Encoding UTF8
}
Start-ScheduledTask -InputObject $task
do {
    Start-Sleep -Seconds 2
    $state = [string](Get-ScheduledTask -TaskPath $taskPath -TaskName $TaskName).State
    $info = Get-ScheduledTaskInfo -TaskPath $taskPath -TaskName $TaskName
    $finished = $state -ne 'Running' -and $info.LastRunTime -ne $before.LastRunTime
} until ($finished -or [DateTime]::UtcNow -gt $deadline)
# A request the run did not use up (its backup failed before the drill) must not make the next nightly run drill.
if ($DrillRequest) { Remove-Item -LiteralPath $DrillRequest -Force -ErrorAction SilentlyContinue }
$newest = Get-NewestBackup
$Ansible.Changed = $true
$Ansible.Failed = -not $finished -or [int64]$info.LastTaskResult -ne 0
$Ansible.Result = @{
    started = $true
    exists = $true
    waited = $waited
    finished = $finished
    last_result = [int64]$info.LastTaskResult
    file = if ($newest) { $newest.FullName } else { '' }
    bytes = if ($newest) { $newest.Length } else { 0 }
    log = Get-LastLogLine
    drill = Get-DrillRecord -Since $started
}
