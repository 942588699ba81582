# Reads, never changes: what playbooks/upgrade.yml checks on a host before it stops anything. Free space on the drive of
# the Prefect root, the venv the `current` junction points to (the rollback target), and the newest file in the backup
# directory with its age.
[CmdletBinding()]
param (
    [Parameter(Mandatory)][string]$Root,
    [Parameter(Mandatory)][string]$Link,
    [string]$BackupDir = ''
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$drive = [IO.Path]::GetPathRoot($Root).TrimEnd('\')
$disk = Get-CimInstance -ClassName Win32_LogicalDisk -Filter "DeviceID='$drive'"
$current = ''
$item = Get-Item -LiteralPath $Link -Force -ErrorAction SilentlyContinue
if ($item -and $item.LinkType -eq 'Junction') {
    $current = (@($item.Target)[0]).TrimEnd('\')
}
$newest = $null
if ($BackupDir -and (Test-Path -LiteralPath $BackupDir -PathType Container)) {
    $newest = Get-ChildItem -LiteralPath $BackupDir -File | Sort-Object -Property LastWriteTimeUtc -Descending | Select-Object -First 1
}
$Ansible.Result = @{
    drive = $drive
    free_bytes = if ($disk) { [long]$disk.FreeSpace } else { [long]0 }
    current_venv = $current
    backup_file = if ($newest) { $newest.FullName } else { '' }
    backup_age_hours = if ($newest) { [Math]::Round(([DateTime]::UtcNow - $newest.LastWriteTimeUtc).TotalHours, 1) } else { -1 }
}
