# Removes every Prefect venv under $Root, the `current` junction (and the .new/.old links an interrupted switch left)
# and the unpacked wheelhouses under $Staging. Data (PREFECT_HOME, logs, flows) is not touched. A venv whose
# interpreter still runs is refused, naming the processes: stop the Prefect services first (nssm_services_state).
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$Root,
    [Parameter(Mandatory)][string]$Link,
    [Parameter(Mandatory)][string]$Staging
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$links = @(foreach ($path in @($Link, "$Link.new", "$Link.old")) {
        $item = Get-Item -LiteralPath $path -Force -ErrorAction SilentlyContinue
        if ($item -and $item.LinkType -eq 'Junction') { $item }
    })
$venvs = @()
if (Test-Path -LiteralPath $Root -PathType Container) {
    $venvs = @(Get-ChildItem -LiteralPath $Root -Directory -Filter 'prefect-*' |
            Where-Object { -not ($_.Attributes -band [IO.FileAttributes]::ReparsePoint) })
}
$wheels = @()
if (Test-Path -LiteralPath $Staging -PathType Container) {
    $wheels = @(Get-ChildItem -LiteralPath $Staging -Directory -Filter 'wheels-*')
}

$running = @(Get-CimInstance -ClassName Win32_Process -Property @('ProcessId', 'ExecutablePath') |
        Where-Object { $_.ExecutablePath })
$busy = [System.Collections.Generic.List[string]]@()
foreach ($venv in $venvs) {
    $prefix = $venv.FullName.TrimEnd('\') + '\'
    foreach ($process in $running) {
        if ($process.ExecutablePath.StartsWith($prefix, [StringComparison]::OrdinalIgnoreCase)) {
            $busy.Add("$($process.ExecutablePath) (PID $($process.ProcessId))")
        }
    }
}
# Check mode (-WhatIf): the services the uninstall stops first still run, so the plan is reported without refusing.
if ($busy.Count -gt 0 -and -not $WhatIfPreference) {
    throw "Not removing the Prefect venvs under '$Root': these processes run from them: $($busy -join ', '). Stop the Prefect services first (nssm_services_state: absent)."
}

$removed = [System.Collections.Generic.List[string]]@()
foreach ($item in $links) {
    $removed.Add($item.FullName)
    if ($PSCmdlet.ShouldProcess($item.FullName, 'Remove junction')) {
        # Deleting a junction removes the link only, never the venv it points to.
        $item.Delete()
    }
}
foreach ($dir in @($venvs) + @($wheels)) {
    $removed.Add($dir.FullName)
    if ($PSCmdlet.ShouldProcess($dir.FullName, 'Remove directory')) {
        Remove-Item -LiteralPath $dir.FullName -Recurse -Force
    }
}
if ((Test-Path -LiteralPath $Root -PathType Container) -and -not (Get-ChildItem -LiteralPath $Root -Force | Select-Object -First 1)) {
    $removed.Add($Root)
    if ($PSCmdlet.ShouldProcess($Root, 'Remove empty directory')) {
        Remove-Item -LiteralPath $Root -Force
    }
}
$Ansible.Changed = $removed.Count -gt 0
$Ansible.Result = @{ removed = @($removed) }
