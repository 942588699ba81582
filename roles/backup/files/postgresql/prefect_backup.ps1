# The scheduled PostgreSQL backup (roles/backup): pg_dump -Fc of the Prefect database into the backup directory, then
# retention, then a drill when one is due. Runs as the backup account; every setting comes from the JSON file the role
# writes (no secret in it), the password from the PGPASSFILE it names.
# Backup: a psql session (backup_snapshot.sql) exports a snapshot and counts every table's rows in it; pg_dump dumps
# that snapshot, so <dump>.json holds exactly the rows of the dump. The dump is written as <name>.partial, read back
# with pg_restore --list and only then renamed to prefect-pg-<UTC time>.dump. Retention, after a good dump only: the
# newest keep_count dumps are kept, and of those the ones older than keep_days are deleted, except the newest (as
# files/prefect_sqlite_backup.py), each with its counts.
# Drill, on the configured weekdays (local time) or when the request file exists (playbooks/backup.yml -e
# backup_drill=true): the new dump restored by pg_restore into a scratch database the backup login creates
# (backup_drill.sql), every table's rows compared with the counts, the scratch database dropped; the result is written
# to the drill record (JSON) and the log. Each step appends one line to the log; the exit code (0, or 1 when the backup
# or the drill failed) is the scheduled task's last result.
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

function Start-Snapshot {
    # backup_snapshot.sql in a psql session that stays open on stdin until pg_dump has imported its snapshot. Names on
    # the command line, the password in the PGPASSFILE; the output goes to the file OutFile.
    param([string]$OutFile)
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = $config.psql
    $info.Arguments = '-X -q -t -A -w -h "{0}" -p {1} -U "{2}" -d "{3}" -v "out={4}" -f "{5}" -f -' -f $config.host,
        $config.port, $config.user, $config.database, $OutFile, $config.snapshot_sql
    $info.UseShellExecute = $false
    $info.RedirectStandardInput = $true
    $info.RedirectStandardOutput = $true
    $info.RedirectStandardError = $true
    $process = [System.Diagnostics.Process]::Start($info)
    [pscustomobject]@{ Process = $process; Stdout = $process.StandardOutput.ReadToEndAsync()
        Stderr = $process.StandardError.ReadToEndAsync() }
}

function Invoke-DrillSql {
    # backup_drill.sql as the backup login: the step and the scratch database's name as psql variables.
    param([string]$Action, [string]$Database)
    Invoke-Native -FilePath $config.psql -Arguments @('-X', '-q', '-t', '-A', '-w', '--host', [string]$config.host,
        '--port', [string]$config.port, '--username', [string]$config.user, '--dbname', $Database,
        '--set', "action=$Action", '--set', "scratch=$($config.drill_database)", '--file', [string]$config.drill_sql)
}

function Invoke-Drill {
    # The dump restored into the scratch database and compared with the counts taken in its snapshot; the record written
    # (atomically) and logged. Returns whether the drill passed.
    param([string]$Dump)
    $leaf = Split-Path -Leaf $Dump
    $record = [ordered]@{ at = [DateTime]::UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", $invariant); kind = 'postgresql'
        file = $leaf; ok = $false; tables = 0; rows = 0; mismatches = @(); message = '' }
    $created = $false
    try {
        if (-not (Test-Path -LiteralPath "$Dump.json")) { throw "$leaf has no row counts ($leaf.json)" }
        $create = Invoke-DrillSql -Action 'create' -Database ([string]$config.database)
        if ($create.ExitCode -ne 0) { throw "the scratch database could not be made (exit $($create.ExitCode)): $($create.Output)" }
        $created = $true
        $restore = Invoke-Native -FilePath $config.pg_restore -Arguments (@($config.drill_restore_args) + @('--host',
            [string]$config.host, '--port', [string]$config.port, '--username', [string]$config.user, '--dbname',
            [string]$config.drill_database, $Dump))
        if ($restore.ExitCode -ne 0) { throw "pg_restore into the scratch database failed (exit $($restore.ExitCode)): $($restore.Output)" }
        $env:DRILL_EXPECTED = Get-Content -LiteralPath "$Dump.json" -Raw
        try { $check = Invoke-DrillSql -Action 'check' -Database ([string]$config.drill_database) }
        finally { Remove-Item -LiteralPath Env:DRILL_EXPECTED -ErrorAction SilentlyContinue }
        if ($check.ExitCode -ne 0) { throw "the scratch database could not be counted (exit $($check.ExitCode)): $($check.Output)" }
        $lines = @($check.Output -split "`r?`n")
        $record.mismatches = @($lines | Where-Object { $_ -match '^MISMATCH ' } | ForEach-Object { $_.Substring(9) })
        $total = @($lines | Where-Object { $_ -match '^TABLES (\d+) ROWS (\d+)$' }) | Select-Object -Last 1
        if (-not $total) { throw "the count of the scratch database said nothing: $($check.Output)" }
        $null = $total -match '^TABLES (\d+) ROWS (\d+)$'
        $record.tables = [int64]$Matches[1]
        $record.rows = [int64]$Matches[2]
        $record.ok = $record.mismatches.Count -eq 0
        $record.message = if ($record.ok) { 'every table has the rows of the dump' } else { 'rows differ from the dump' }
    }
    catch {
        $record.message = ($_.Exception.Message -replace '\s+', ' ')
    }
    finally {
        if ($created) {
            $drop = Invoke-DrillSql -Action 'drop' -Database ([string]$config.database)
            if ($drop.ExitCode -ne 0) {
                $record.ok = $false
                $record.message = "$($record.message); the scratch database $($config.drill_database) was not dropped: $($drop.Output -replace '\s+', ' ')"
            }
        }
    }
    $text = $record | ConvertTo-Json -Depth 3
    [System.IO.File]::WriteAllText("$($config.drill_record).partial", $text, (New-Object System.Text.UTF8Encoding $false))
    # Replaced in one step (File.Replace), so that a reader never finds the record missing.
    if (Test-Path -LiteralPath $config.drill_record) {
        [System.IO.File]::Replace("$($config.drill_record).partial", [string]$config.drill_record, $null)
    }
    else {
        [System.IO.File]::Move("$($config.drill_record).partial", [string]$config.drill_record)
    }
    $verdict = if ($record.ok) { 'OK' } else { 'FAILED' }
    Write-BackupLog -Path $config.log -Text ("prefect-drill $verdict postgresql file=$leaf tables=$($record.tables) rows=$($record.rows) " +
        "mismatches=$($record.mismatches.Count) $($record.message)")
    $record.ok
}

$config = Get-Content -LiteralPath $ConfigPath -Raw | ConvertFrom-Json
$partial = $null
$snapshot = $null
$snapshotOut = $null
try {
    $now = [DateTime]::UtcNow
    $name = 'prefect-pg-{0}.dump' -f $now.ToString($stampFormat, $invariant)
    $final = Join-Path $config.dest_dir $name
    $partial = "$final.partial"
    $snapshotOut = "$final.snapshot"
    # A run killed half-way (the task's time limit, a reboot) leaves its .partial and .snapshot files: only one run goes
    # at a time (the task does not start a second instance), so every one found now is stale.
    Get-ChildItem -LiteralPath $config.dest_dir -File | Where-Object { $_.Name -match '^prefect-pg-.*\.(partial|snapshot)$' } |
        Remove-Item -Force -ErrorAction SilentlyContinue
    $env:PGPASSFILE = $config.passfile
    $env:PGCONNECT_TIMEOUT = '30'
    $snapshot = Start-Snapshot -OutFile $snapshotOut
    $deadline = [DateTime]::UtcNow.AddSeconds(600)
    while (-not ((Test-Path -LiteralPath $snapshotOut) -and ((Get-Content -LiteralPath $snapshotOut) -contains 'ready'))) {
        if ($snapshot.Process.HasExited) {
            throw "psql could not take the snapshot (exit $($snapshot.Process.ExitCode)): $($snapshot.Stderr.Result)"
        }
        if ([DateTime]::UtcNow -gt $deadline) { throw 'psql took no snapshot within 600 s' }
        Start-Sleep -Milliseconds 200
    }
    $taken = @(Get-Content -LiteralPath $snapshotOut)
    $dumpArgs = @($config.dump_args) + @("--snapshot=$($taken[0])", '--host', [string]$config.host, '--port',
        [string]$config.port, '--username', [string]$config.user, '--dbname', [string]$config.database, '--file', $partial)
    $dump = Invoke-Native -FilePath $config.pg_dump -Arguments $dumpArgs
    $snapshot.Process.StandardInput.WriteLine('COMMIT;')
    $snapshot.Process.StandardInput.Close()
    if (-not $snapshot.Process.WaitForExit(60000)) { $snapshot.Process.Kill() }
    if ($dump.ExitCode -ne 0) { throw "pg_dump exited with $($dump.ExitCode): $($dump.Output)" }
    $list = Invoke-Native -FilePath $config.pg_restore -Arguments @('--list', $partial)
    if ($list.ExitCode -ne 0) { throw "pg_restore --list cannot read the new dump (exit $($list.ExitCode)): $($list.Output)" }
    # The counts first: a dump never exists without them.
    $manifest = '{{"file": "{0}", "database": {1}, "snapshot": "{2}", "tables": {3}}}' -f $name,
        (ConvertTo-Json ([string]$config.database)), $taken[0], $taken[1]
    [System.IO.File]::WriteAllText("$final.json", $manifest, (New-Object System.Text.UTF8Encoding $false))
    Move-Item -LiteralPath $partial -Destination $final
    $partial = $null
    $doomed = Get-DoomedBackup -Directory $config.dest_dir -KeepCount ([int]$config.keep_count) -KeepDays ([int]$config.keep_days) -Now $now
    foreach ($file in $doomed) {
        Remove-Item -LiteralPath $file.FullName -Force
        Remove-Item -LiteralPath "$($file.FullName).json" -Force -ErrorAction SilentlyContinue
    }
    $bytes = (Get-Item -LiteralPath $final).Length
    Write-BackupLog -Path $config.log -Text "prefect-backup OK postgresql file=$name bytes=$bytes removed=$($doomed.Count)"
}
catch {
    if ($partial -and (Test-Path -LiteralPath $partial)) { Remove-Item -LiteralPath $partial -Force -ErrorAction SilentlyContinue }
    if ($partial -and (Test-Path -LiteralPath "$final.json")) { Remove-Item -LiteralPath "$final.json" -Force -ErrorAction SilentlyContinue }
    $message = ($_.Exception.Message -replace '\s+', ' ')
    try { Write-BackupLog -Path $config.log -Text "prefect-backup FAILED postgresql $message" } catch { Write-Error $message }
    exit 1
}
finally {
    if ($snapshot -and -not $snapshot.Process.HasExited) { $snapshot.Process.Kill() }
    if ($snapshotOut) { Remove-Item -LiteralPath $snapshotOut -Force -ErrorAction SilentlyContinue }
}
$today = [string](Get-Date).DayOfWeek
$requested = Test-Path -LiteralPath $config.drill_request
if ($requested -or @($config.drill_weekdays) -contains $today) {
    $passed = $false
    try { $passed = Invoke-Drill -Dump $final }
    catch { try { Write-BackupLog -Path $config.log -Text "prefect-drill FAILED postgresql $($_.Exception.Message -replace '\s+', ' ')" } catch { Write-Error $_ } }
    if ($requested) { Remove-Item -LiteralPath $config.drill_request -Force -ErrorAction SilentlyContinue }
    if (-not $passed) { exit 1 }
}
exit 0
