# A backup now (playbooks/backup.yml): starts the scheduled task, so that the run uses the task's own account, program
# and settings, waits for it to finish and reports its last result, the newest backup and the log's last line.
# Check mode starts nothing and reports what the task last did.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$TaskFolder,
    [Parameter(Mandatory)][string]$TaskName,
    [Parameter(Mandatory)][string]$BackupDir,
    [Parameter(Mandatory)][string]$Pattern,
    [Parameter(Mandatory)][string]$LogPath,
    [int]$TimeoutSeconds = 3600
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
$taskPath = $TaskFolder.TrimEnd('\') + '\'

function Get-NewestBackup {
    if (-not (Test-Path -LiteralPath $BackupDir)) { return $null }
    Get-ChildItem -LiteralPath $BackupDir -File | Where-Object { $_.Name -match $Pattern } |
        Sort-Object -Property Name -Descending | Select-Object -First 1
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
Start-ScheduledTask -InputObject $task
$deadline = [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
do {
    Start-Sleep -Seconds 2
    $state = [string](Get-ScheduledTask -TaskPath $taskPath -TaskName $TaskName).State
    $info = Get-ScheduledTaskInfo -TaskPath $taskPath -TaskName $TaskName
    $finished = $state -ne 'Running' -and $info.LastRunTime -ne $before.LastRunTime
} until ($finished -or [DateTime]::UtcNow -gt $deadline)
$newest = Get-NewestBackup
$Ansible.Changed = $true
$Ansible.Failed = -not $finished -or [int64]$info.LastTaskResult -ne 0
$Ansible.Result = @{
    started = $true
    exists = $true
    finished = $finished
    last_result = [int64]$info.LastTaskResult
    file = if ($newest) { $newest.FullName } else { '' }
    bytes = if ($newest) { $newest.Length } else { 0 }
    log = Get-LastLogLine
}
