# Removes the service log files NSSM rotated away more than $Days days ago. NSSM renames a rotated file to
# <name>-<yyyyMMddTHHmmss.fff><ext> (io.cpp rotate_file), e.g. PrefectServer.out-20260112T081440.123.log; the live
# <service>.out.log and .err.log, and any file not named like that, are never touched.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string[]]$Directories,
    [Parameter(Mandatory)][string[]]$Services,
    [Parameter(Mandatory)][int]$Days
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$names = ($Services | ForEach-Object { [regex]::Escape($_) }) -join '|'
$pattern = "^($names)\.(out|err)-\d{8}T\d{6}(\.\d{3})?\.log$"
$cutoff = [DateTime]::UtcNow.AddDays(-$Days)
$removed = [System.Collections.Generic.List[string]]@()
$bytes = [long]0
foreach ($dir in $Directories) {
    if (-not (Test-Path -LiteralPath $dir -PathType Container)) { continue }
    foreach ($file in @(Get-ChildItem -LiteralPath $dir -File -Filter '*.log')) {
        if ($file.Name -notmatch $pattern -or $file.LastWriteTimeUtc -ge $cutoff) { continue }
        $removed.Add($file.FullName)
        $bytes += $file.Length
        if ($PSCmdlet.ShouldProcess($file.FullName, 'Remove rotated log')) {
            Remove-Item -LiteralPath $file.FullName -Force
        }
    }
}
$Ansible.Changed = $removed.Count -gt 0
$Ansible.Result = @{ removed = @($removed); bytes = $bytes }
