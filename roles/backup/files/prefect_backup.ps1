# The scheduled PostgreSQL backup (roles/backup): pg_dump -Fc of the Prefect database into the backup directory, then
# retention. Runs as the backup account; every setting comes from the JSON file the role writes (no secret in it), the
# password from the PGPASSFILE it names. The dump is written as <name>.partial, read back with pg_restore --list and
# only then renamed to prefect-pg-<UTC time>.dump. Retention, after a good dump only: the newest keep_count dumps are
# kept, and of those the ones older than keep_days are deleted, except the newest (as files/prefect_sqlite_backup.py).
# Each run appends one line to the log; the exit code (0 or 1) is the scheduled task's last result.
[CmdletBinding()]
param (
    [Parameter(Mandatory)][string]$ConfigPath
)

$ErrorActionPreference = 'Stop'
$stampFormat = "yyyyMMdd'T'HHmmss'Z'"
$invariant = [System.Globalization.CultureInfo]::InvariantCulture

function Invoke-Native {
    param([string]$FilePath, [string[]]$Arguments)
    # Native programs write notices to stderr; with Stop that would throw in Windows PowerShell 5.1.
    $ErrorActionPreference = 'Continue'
    $output = & $FilePath @Arguments 2>&1 | ForEach-Object { "$_" }
    [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = ($output -join "`n") }
}

function Write-BackupLog {
    param([string]$Path, [string]$Text)
    $line = '{0} {1}' -f [DateTime]::UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", $invariant), $Text
    Add-Content -LiteralPath $Path -Value $line -Encoding UTF8
}

function Get-DoomedBackup {
    param([string]$Directory, [int]$KeepCount, [int]$KeepDays, [DateTime]$Now)
    $styles = [System.Globalization.DateTimeStyles]'AssumeUniversal, AdjustToUniversal'
    $found = @(Get-ChildItem -LiteralPath $Directory -File | ForEach-Object {
            if ($_.Name -match '^prefect-pg-(\d{8}T\d{6}Z)\.dump$') {
                [pscustomobject]@{ When = [DateTime]::ParseExact($Matches[1], $stampFormat, $invariant, $styles); Item = $_ }
            }
        } | Sort-Object -Property When -Descending)
    $doomed = New-Object System.Collections.Generic.List[object]
    for ($i = $KeepCount; $i -lt $found.Count; $i++) { $doomed.Add($found[$i].Item) }
    if ($KeepDays -gt 0) {
        $limit = $Now.AddDays(-$KeepDays)
        $last = [Math]::Min($KeepCount, $found.Count)
        for ($i = 1; $i -lt $last; $i++) {
            if ($found[$i].When -lt $limit) { $doomed.Add($found[$i].Item) }
        }
    }
    , $doomed
}

$config = Get-Content -LiteralPath $ConfigPath -Raw | ConvertFrom-Json
$partial = $null
try {
    $now = [DateTime]::UtcNow
    $name = 'prefect-pg-{0}.dump' -f $now.ToString($stampFormat, $invariant)
    $final = Join-Path $config.dest_dir $name
    $partial = "$final.partial"
    # A run killed half-way (the task's time limit, a reboot) leaves its .partial: only one run goes at a time (the
    # task does not start a second instance), so every one found now is stale.
    Get-ChildItem -LiteralPath $config.dest_dir -Filter 'prefect-pg-*.dump.partial' -File |
        Remove-Item -Force -ErrorAction SilentlyContinue
    $env:PGPASSFILE = $config.passfile
    $env:PGCONNECT_TIMEOUT = '30'
    $dumpArgs = @($config.dump_args) + @('--host', [string]$config.host, '--port', [string]$config.port,
        '--username', [string]$config.user, '--dbname', [string]$config.database, '--file', $partial)
    $dump = Invoke-Native -FilePath $config.pg_dump -Arguments $dumpArgs
    if ($dump.ExitCode -ne 0) { throw "pg_dump exited with $($dump.ExitCode): $($dump.Output)" }
    $list = Invoke-Native -FilePath $config.pg_restore -Arguments @('--list', $partial)
    if ($list.ExitCode -ne 0) { throw "pg_restore --list cannot read the new dump (exit $($list.ExitCode)): $($list.Output)" }
    Move-Item -LiteralPath $partial -Destination $final
    $partial = $null
    $doomed = Get-DoomedBackup -Directory $config.dest_dir -KeepCount ([int]$config.keep_count) -KeepDays ([int]$config.keep_days) -Now $now
    foreach ($file in $doomed) { Remove-Item -LiteralPath $file.FullName -Force }
    $bytes = (Get-Item -LiteralPath $final).Length
    Write-BackupLog -Path $config.log -Text "prefect-backup OK postgresql file=$name bytes=$bytes removed=$($doomed.Count)"
    exit 0
}
catch {
    if ($partial -and (Test-Path -LiteralPath $partial)) { Remove-Item -LiteralPath $partial -Force -ErrorAction SilentlyContinue }
    $message = ($_.Exception.Message -replace '\s+', ' ')
    try { Write-BackupLog -Path $config.log -Text "prefect-backup FAILED postgresql $message" } catch { Write-Error $message }
    exit 1
}
