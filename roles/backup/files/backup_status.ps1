# The newest backup and the last drill (playbooks/verify.yml through tasks/status.yml), read-only: the newest file
# whose name matches Pattern (its age from the UTC time in its name), and the drill record the scheduled script writes.
[CmdletBinding()]
param (
    [Parameter(Mandatory)][string]$BackupDir,
    [Parameter(Mandatory)][string]$Pattern,
    [Parameter(Mandatory)][string]$DrillRecord
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
$invariant = [System.Globalization.CultureInfo]::InvariantCulture
$styles = [System.Globalization.DateTimeStyles]'AssumeUniversal, AdjustToUniversal'
$now = [DateTime]::UtcNow
$newest = $null
if (Test-Path -LiteralPath $BackupDir) {
    $file = Get-ChildItem -LiteralPath $BackupDir -File | Where-Object { $_.Name -match $Pattern } |
        Sort-Object -Property Name -Descending | Select-Object -First 1
    if ($file -and $file.Name -match '(\d{8}T\d{6}Z)') {
        $made = [DateTime]::ParseExact($Matches[1], "yyyyMMdd'T'HHmmss'Z'", $invariant, $styles)
        $newest = @{ file = $file.Name; bytes = $file.Length; made_at = $made.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", $invariant)
            age_hours = [Math]::Round(($now - $made).TotalHours, 1) }
    }
}
$drill = $null
if (Test-Path -LiteralPath $DrillRecord) {
    $record = Get-Content -LiteralPath $DrillRecord -Raw | ConvertFrom-Json
    $at = [DateTime]::ParseExact([string]$record.at, "yyyy-MM-dd'T'HH:mm:ss'Z'", $invariant, $styles)
    $drill = @{ at = [string]$record.at; file = [string]$record.file; ok = [bool]$record.ok; tables = [int64]$record.tables
        rows = [int64]$record.rows; mismatches = @($record.mismatches); message = [string]$record.message
        age_days = [Math]::Round(($now - $at).TotalDays, 1) }
}
$Ansible.Result = @{ directory = $BackupDir; newest = $newest; drill = $drill }
