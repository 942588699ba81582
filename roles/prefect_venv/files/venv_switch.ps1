# Points the `current` junction at a venv, but only after `python -m prefect version` succeeds in it.
# The new junction is made under a temporary name and renamed into place, so `current` is missing only between two
# renames; links left by a run interrupted between the steps are put right by the next run.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$Link,
    [Parameter(Mandatory)][string]$Target,
    [Parameter(Mandatory)][string]$PrefectVersion
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$newLink = "$Link.new"
$oldLink = "$Link.old"

function Get-Junction {
    param ([string]$Path)
    $item = Get-Item -LiteralPath $Path -Force -ErrorAction SilentlyContinue
    if ($item -and $item.LinkType -ne 'Junction') {
        throw "'$Path' exists and is not a junction; move it away so it can point at the current venv."
    }
    $item
}

function Remove-Junction {
    param ([string]$Path)
    # Deleting a junction removes the link only, never the venv it points to.
    (Get-Item -LiteralPath $Path -Force).Delete()
}

$item = Get-Junction -Path $Link
$old = Get-Junction -Path $oldLink
$new = Get-Junction -Path $newLink
$recovered = [System.Collections.Generic.List[string]]@()

# Stopped after the old link stepped aside: it comes back, so `current` is again the last venv that passed the check.
if (-not $item -and $old) {
    $recovered.Add("restored $Link from $oldLink")
    if ($PSCmdlet.ShouldProcess($Link, "Restore junction from $oldLink")) {
        [System.IO.Directory]::Move($oldLink, $Link)
        $item = Get-Junction -Path $Link
    }
    else {
        $item = $old
    }
    $old = $null
}
foreach ($leftover in @($new, $old)) {
    if ($leftover) {
        $recovered.Add("removed leftover link $($leftover.FullName)")
        if ($PSCmdlet.ShouldProcess($leftover.FullName, 'Remove leftover junction')) {
            Remove-Junction -Path $leftover.FullName
        }
    }
}
if ($recovered.Count -gt 0) {
    $Ansible.Changed = $true
}

$before = ''
if ($item) {
    $before = (@($item.Target)[0]).TrimEnd('\')
}
$Ansible.Result = @{ before = $before; after = $Target; recovered = @($recovered) }
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

$null = New-Item -ItemType Junction -Path $newLink -Target $Target
if ($item) {
    # Windows cannot rename a directory over an existing one (MoveFileEx REPLACE_EXISTING is for files only).
    [System.IO.Directory]::Move($Link, $oldLink)
}
[System.IO.Directory]::Move($newLink, $Link)
if ($item) {
    Remove-Junction -Path $oldLink
}
