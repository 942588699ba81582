# Removes venvs beyond the newest $Keep besides the current one. A venv with a running process is kept.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$Root,
    [Parameter(Mandatory)][string]$Link,
    [Parameter(Mandatory)][int]$Keep
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$current = ''
$item = Get-Item -LiteralPath $Link -Force -ErrorAction SilentlyContinue
if ($item -and $item.LinkType -eq 'Junction') {
    $current = (@($item.Target)[0]).TrimEnd('\')
}

$older = @(Get-ChildItem -LiteralPath $Root -Directory -Filter 'prefect-*' |
        Where-Object { -not ($_.Attributes -band [IO.FileAttributes]::ReparsePoint) -and $_.FullName.TrimEnd('\') -ne $current } |
        Sort-Object -Property CreationTimeUtc -Descending)

$running = @(Get-CimInstance -ClassName Win32_Process -Property ExecutablePath |
        Where-Object { $_.ExecutablePath } | ForEach-Object { $_.ExecutablePath })

$removed = [System.Collections.Generic.List[string]]@()
$inUse = [System.Collections.Generic.List[string]]@()
foreach ($venv in ($older | Select-Object -Skip $Keep)) {
    $prefix = $venv.FullName.TrimEnd('\') + '\'
    if ($running | Where-Object { $_.StartsWith($prefix, [StringComparison]::OrdinalIgnoreCase) }) {
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
