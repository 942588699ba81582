# Points the `current` junction at a venv, but only after `python -m prefect version` succeeds in it.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$Link,
    [Parameter(Mandatory)][string]$Target,
    [Parameter(Mandatory)][string]$PrefectVersion
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$before = ''
$item = Get-Item -LiteralPath $Link -Force -ErrorAction SilentlyContinue
if ($item) {
    if ($item.LinkType -ne 'Junction') {
        throw "'$Link' exists and is not a junction; move it away so it can point at the current venv."
    }
    $before = (@($item.Target)[0]).TrimEnd('\')
}
$Ansible.Result = @{ before = $before; after = $Target }
if ($before -eq $Target.TrimEnd('\')) {
    return
}

$Ansible.Changed = $true
$Ansible.Diff = @{ before = @{ current = $before }; after = @{ current = $Target } }
if (-not $PSCmdlet.ShouldProcess($Link, "Point junction at $Target")) {
    return
}

$venvPython = Join-Path $Target 'Scripts\python.exe'
$env:PREFECT_HOME = Join-Path $Ansible.Tmpdir 'prefect-home'
$env:PREFECT_SERVER_ANALYTICS_ENABLED = 'false'
$env:PYTHONUTF8 = '1'
$previous = $ErrorActionPreference
$ErrorActionPreference = 'Continue'
$output = (& $venvPython -m prefect version 2>&1 | ForEach-Object { "$_" }) -join "`n"
$exitCode = $LASTEXITCODE
$ErrorActionPreference = $previous
$Ansible.Result.prefect_version_output = $output
if ($exitCode -ne 0 -or $output -notmatch "(?m)^\s*Version:\s+$([regex]::Escape($PrefectVersion))\s*$") {
    throw "Not switching '$Link': python -m prefect version in '$Target' did not report $PrefectVersion ($exitCode): $output"
}

if ($item) {
    # Deleting a junction removes the link only, never the venv it points to.
    $item.Delete()
}
$null = New-Item -ItemType Junction -Path $Link -Target $Target
