# Removes venvs beyond the newest $Keep besides the current one. A venv with a running process is kept, and so
# is $Previous, the venv the junction pointed at before this run: the services still run from it until they
# restart, and their processes show the junction path, not the venv's, so the process check cannot see them.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$Root,
    [Parameter(Mandatory)][string]$Link,
    [Parameter(Mandatory)][int]$Keep,
    [string]$Previous = ''
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$current = ''
if (-not (Test-Path -LiteralPath $Root -PathType Container)) {
    # Only in check mode on a new host: the build that would create it did not run.
    $Ansible.Result = @{ current = $current; removed = @(); kept_in_use = @() }
    return
}
$item = Get-Item -LiteralPath $Link -Force -ErrorAction SilentlyContinue
if ($item -and $item.LinkType -eq 'Junction') {
    $current = (@($item.Target)[0]).TrimEnd('\')
}

$older = @(Get-ChildItem -LiteralPath $Root -Directory -Filter 'prefect-*' |
        Where-Object { -not ($_.Attributes -band [IO.FileAttributes]::ReparsePoint) -and $_.FullName.TrimEnd('\') -ne $current } |
        Sort-Object -Property CreationTimeUtc -Descending)

$running = @(Get-CimInstance -ClassName Win32_Process -Property ExecutablePath |
        Where-Object { $_.ExecutablePath } | ForEach-Object { $_.ExecutablePath })

$previousVenv = $Previous.TrimEnd('\')
$removed = [System.Collections.Generic.List[string]]@()
$inUse = [System.Collections.Generic.List[string]]@()
foreach ($venv in ($older | Select-Object -Skip $Keep)) {
    $prefix = $venv.FullName.TrimEnd('\') + '\'
    $isPrevious = $previousVenv -and [string]::Equals($venv.FullName.TrimEnd('\'), $previousVenv, [StringComparison]::OrdinalIgnoreCase)
    if ($isPrevious -or ($running | Where-Object { $_.StartsWith($prefix, [StringComparison]::OrdinalIgnoreCase) })) {
        $inUse.Add($venv.FullName)
        continue
    }
    if ($PSCmdlet.ShouldProcess($venv.FullName, 'Remove old venv')) {
        Remove-Item -LiteralPath $venv.FullName -Recurse -Force
    }
    $removed.Add($venv.FullName)
    $Ansible.Changed = $true
}

$Ansible.Result = @{ current = $current; removed = @($removed); kept_in_use = @($inUse) }
