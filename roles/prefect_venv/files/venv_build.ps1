# Builds one Prefect venv from the committed Windows lock and the offline wheelhouse.
# The lock is copied into the venv as the last step, as Marker (a name that carries the base interpreter): its presence
# (with the lock's digest) marks a complete build from this lock and this base.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$Python,
    [Parameter(Mandatory)][string]$VenvDir,
    [Parameter(Mandatory)][string]$Lock,
    # The trusted digest of the lock (bundle SHA256SUMS); the lock inside the archive must match it.
    [Parameter(Mandatory)][string]$LockSha256,
    # A file name, e.g. enclave-prefect-1a2b3c4d.lock.
    [Parameter(Mandatory)][ValidatePattern('^[A-Za-z0-9._-]+$')][string]$Marker,
    [Parameter(Mandatory)][string]$Wheelhouse,
    [Parameter(Mandatory)][string]$CurrentLink,
    [Parameter(Mandatory)][string]$PrefectVersion
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

function Invoke-Native {
    param([string]$FilePath, [string[]]$ArgumentList)
    # Native stderr must not turn into terminating errors (Windows PowerShell 5.1 behaviour).
    $previous = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        $output = & $FilePath @ArgumentList 2>&1 | ForEach-Object { "$_" }
        [PSCustomObject]@{ ExitCode = $LASTEXITCODE; Output = ($output -join "`n") }
    }
    finally {
        $ErrorActionPreference = $previous
    }
}

$markerPath = Join-Path $VenvDir $Marker
$lockHash = $LockSha256.ToUpperInvariant()
$Ansible.Result = @{ venv = $VenvDir; lock_sha256 = $LockSha256.ToLowerInvariant() }

if ((Test-Path -LiteralPath $markerPath) -and (Get-FileHash -LiteralPath $markerPath -Algorithm SHA256).Hash -eq $lockHash) {
    return
}

$Ansible.Changed = $true
$Ansible.Diff = @{ before = @{ venv = '' }; after = @{ venv = $VenvDir } }
if (-not $PSCmdlet.ShouldProcess($VenvDir, 'Build Prefect venv')) {
    return
}

if (-not (Test-Path -LiteralPath $Python -PathType Leaf)) {
    throw "Base Python '$Python' is missing: run the python role (tag 'python') first."
}
$actual = (Get-FileHash -LiteralPath $Lock -Algorithm SHA256).Hash
if ($actual -ne $lockHash) {
    throw "Lock '$Lock' does not match the bundle: expected SHA256 $($LockSha256.ToLowerInvariant()), found $($actual.ToLowerInvariant())."
}

if (Test-Path -LiteralPath $VenvDir) {
    # An unfinished build from an earlier run; never delete the venv the services run from.
    $link = Get-Item -LiteralPath $CurrentLink -ErrorAction SilentlyContinue
    if ($link -and $link.Target -and ((@($link.Target)[0]).TrimEnd('\') -eq $VenvDir.TrimEnd('\'))) {
        throw "'$VenvDir' is the current venv but has no complete build marker; rebuild it by hand or point '$CurrentLink' elsewhere."
    }
    Remove-Item -LiteralPath $VenvDir -Recurse -Force
}

$null = New-Item -ItemType Directory -Path (Split-Path -Parent $VenvDir) -Force

$venv = Invoke-Native $Python @('-m', 'venv', $VenvDir)
if ($venv.ExitCode -ne 0) {
    throw "python -m venv failed ($($venv.ExitCode)): $($venv.Output)"
}

$venvPython = Join-Path $VenvDir 'Scripts\python.exe'
$pip = Invoke-Native $venvPython @(
    '-m', 'pip', 'install', '--no-index', '--find-links', $Wheelhouse, '--require-hashes', '--only-binary', ':all:',
    '--disable-pip-version-check', '--no-warn-script-location', '--no-cache-dir', '-r', $Lock
)
$Ansible.Result.pip_output = $pip.Output
if ($pip.ExitCode -ne 0) {
    throw "pip install from '$Wheelhouse' failed ($($pip.ExitCode)); the wheelhouse does not match the lock: $($pip.Output)"
}

# A scratch PREFECT_HOME so the check writes nothing into the real one.
$env:PREFECT_HOME = Join-Path $Ansible.Tmpdir 'prefect-home'
$env:PREFECT_SERVER_ANALYTICS_ENABLED = 'false'
$env:PYTHONUTF8 = '1'
$check = Invoke-Native $venvPython @('-m', 'prefect', 'version')
$Ansible.Result.prefect_version_output = $check.Output
if ($check.ExitCode -ne 0 -or $check.Output -notmatch "(?m)^\s*Version:\s+$([regex]::Escape($PrefectVersion))\s*$") {
    throw "python -m prefect version in '$VenvDir' did not report $PrefectVersion ($($check.ExitCode)): $($check.Output)"
}

Copy-Item -LiteralPath $Lock -Destination $markerPath -Force
