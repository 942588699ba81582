# Restores a named backup (playbooks/restore.yml, the upgrade's rollback), with the Prefect server and workers stopped.
# Action restore, PostgreSQL: into an empty database. As the superuser (files/restore_swap.sql through psql: SQL on
# stdin, the password in psql's environment) the current database is renamed aside and an empty one created in its
# place with the same owner, encoding, locale, privileges and settings; as the owner (its password in a PGPASSFILE in
# a private temporary directory) the dump's extensions are created and pg_restore fills the database in one
# transaction, without --clean: nothing of a newer schema can survive or block it. A failed pg_restore puts the old
# database back at once. The caller ends the restore with Action keep (the aside database dropped, once the server was
# healthy) or undo (the restored database dropped and the old one renamed back).
# Action restore, SQLite: files/prefect_sqlite_backup.py restore with the venv's python (integrity check, the replaced
# file and its -wal/-shm kept beside it, the copy renamed into place); undo puts the replaced file back (keep: nothing).
# Check mode reads the backup and reports the plan.
[CmdletBinding(SupportsShouldProcess)]
param (
    [ValidateSet('restore', 'keep', 'undo')][string]$Action = 'restore',
    [Parameter(Mandatory)][ValidateSet('postgresql', 'sqlite')][string]$Kind,
    [Parameter(Mandatory)][string]$BackupPath,
    [Parameter(Mandatory)][string]$LogPath,
    [string]$PgRestore = '',
    [string]$Psql = '',
    [string]$DbHost = '127.0.0.1',
    [int]$Port = 5432,
    [string]$Database = '',
    [string]$Owner = '',
    [string]$OwnerPassword = '',
    [string]$Superuser = '',
    [string]$SuperuserPassword = '',
    [string]$SwapSql = '',
    [string]$Aside = '',
    [string[]]$RestoreArgs = @(),
    [string]$SkipPattern = '',
    [string]$Python = '',
    [string]$Script = '',
    [string]$SqliteDatabase = '',
    [string]$Replaced = ''
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
$encoding = New-Object System.Text.UTF8Encoding $false

function Invoke-Native {
    param([string]$FilePath, [string[]]$Arguments)
    # Native programs write notices to stderr; with Stop that would throw in Windows PowerShell 5.1.
    $ErrorActionPreference = 'Continue'
    $output = & $FilePath @Arguments 2>&1 | ForEach-Object { "$_" }
    [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = ($output -join "`n") }
}

function Write-BackupLog {
    param([string]$Text)
    $line = '{0} {1}' -f [DateTime]::UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", [System.Globalization.CultureInfo]::InvariantCulture), $Text
    Add-Content -LiteralPath $LogPath -Value $line -Encoding UTF8
}

function Invoke-SwapSql {
    # files/restore_swap.sql as the superuser: names on psql's command line, the SQL on stdin, the password only in
    # psql's environment. Returns psql's exit code, its "OK ..."/"REFUSED ..." line and its errors.
    param([string]$Step)
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = $Psql
    $info.Arguments = "-X -q -t -A -h $DbHost -p $Port -U `"$Superuser`" -d postgres -v database=`"$Database`" -v role=`"$Owner`" -v aside=`"$Aside`" -v action=$Step"
    $info.UseShellExecute = $false
    $info.RedirectStandardInput = $true
    $info.RedirectStandardOutput = $true
    $info.RedirectStandardError = $true
    $info.EnvironmentVariables['PGPASSWORD'] = $SuperuserPassword
    $info.EnvironmentVariables['PGCONNECT_TIMEOUT'] = '15'
    $process = [System.Diagnostics.Process]::Start($info)
    $stdout = $process.StandardOutput.ReadToEndAsync()
    $stderr = $process.StandardError.ReadToEndAsync()
    $process.StandardInput.Write($SwapSql)
    $process.StandardInput.Close()
    $process.WaitForExit()
    $said = @($stdout.Result -split "`r?`n" | Where-Object { $_ -match '^(OK|REFUSED) ' }) | Select-Object -Last 1
    [pscustomobject]@{ ExitCode = $process.ExitCode; Said = "$said"; Error = $stderr.Result.Trim() }
}

function Undo-Swap {
    # After a failure past the swap: the half-restored database dropped, the one from before renamed back.
    $undo = Invoke-SwapSql -Step 'undo'
    if ($undo.ExitCode -eq 0) {
        return "$Database is the database from before the restore again"
    }
    return "putting the database from before the restore back FAILED ($($undo.Said) $($undo.Error)): if $Aside exists it is that database (rename it to $Database and ALTER DATABASE $Database ALLOW_CONNECTIONS true), else $Database is"
}

if ($Kind -eq 'sqlite') {
    if ($Action -eq 'keep') {
        $Ansible.Result = @{ action = 'keep'; kept = $Replaced }
        return
    }
    if ($Action -eq 'undo') {
        if (-not $Replaced) {
            $Ansible.Result = @{ action = 'undo'; said = 'nothing was replaced' }
            return
        }
        if (-not $PSCmdlet.ShouldProcess($SqliteDatabase, "put $Replaced back")) {
            $Ansible.Result = @{ action = 'undo'; plan = "put $Replaced back as $SqliteDatabase" }
            return
        }
        $run = Invoke-Native -FilePath $Python -Arguments @('-I', $Script, 'undo', '--replaced', $Replaced, '--database',
            $SqliteDatabase, '--log', $LogPath)
        if ($run.ExitCode -ne 0) {
            $Ansible.Failed = $true
            $Ansible.Result = @{ action = 'undo'; error = "putting $Replaced back failed (exit $($run.ExitCode)): $($run.Output)" }
            return
        }
        $Ansible.Changed = $true
        $Ansible.Result = @{ action = 'undo'; said = "$SqliteDatabase is the database from before the restore again" }
        return
    }
}
elseif ($Action -ne 'restore') {
    $step = if ($Action -eq 'keep') { 'drop' } else { 'undo' }
    $what = if ($Action -eq 'keep') { "drop $Aside, the database from before the restore" } else { "drop the restored $Database and rename $Aside back" }
    if (-not $PSCmdlet.ShouldProcess($Database, $what)) {
        $Ansible.Result = @{ action = $Action; plan = $what }
        return
    }
    $run = Invoke-SwapSql -Step $step
    if ($run.ExitCode -ne 0) {
        Write-BackupLog "prefect-restore FAILED postgresql $Action $($run.Said)"
        $Ansible.Failed = $true
        $Ansible.Result = @{ action = $Action; error = "$what failed (exit $($run.ExitCode)): $($run.Said) $($run.Error)" }
        return
    }
    Write-BackupLog "prefect-restore $Action postgresql $($run.Said)"
    $Ansible.Changed = $run.Said -notmatch 'was not there'
    $Ansible.Result = @{ action = $Action; said = $run.Said }
    return
}

if (-not (Test-Path -LiteralPath $BackupPath -PathType Leaf)) {
    $Ansible.Failed = $true
    $Ansible.Result = @{ error = "$BackupPath does not exist: name a file of the backup directory in backup_restore_file" }
    return
}

if ($Kind -eq 'sqlite') {
    if (-not $PSCmdlet.ShouldProcess($SqliteDatabase, "replace with $BackupPath")) {
        $Ansible.Result = @{ plan = "replace $SqliteDatabase with $BackupPath, keeping the replaced file"; restored = $false }
        return
    }
    $run = Invoke-Native -FilePath $Python -Arguments @('-I', $Script, 'restore', '--backup', $BackupPath, '--database',
        $SqliteDatabase, '--log', $LogPath)
    $report = $null
    $lastLine = @($run.Output -split "`n" | Where-Object { $_.Trim().StartsWith('{') }) | Select-Object -Last 1
    if ($lastLine) { $report = $lastLine | ConvertFrom-Json }
    if ($run.ExitCode -ne 0 -or -not $report) {
        $Ansible.Failed = $true
        $Ansible.Result = @{ error = "restore of $BackupPath failed (exit $($run.ExitCode)): $($run.Output)"; restored = $false }
        return
    }
    $Ansible.Changed = $true
    $Ansible.Result = @{ restored = $true; database = $report.database; replaced = $report.replaced; from = $BackupPath }
    return
}

$work = Join-Path ([System.IO.Path]::GetTempPath()) ('prefect-restore-' + [guid]::NewGuid().ToString('N'))
New-Item -ItemType Directory -Path $work | Out-Null
try {
    $toc = Invoke-Native -FilePath $PgRestore -Arguments @('--list', $BackupPath)
    if ($toc.ExitCode -ne 0) {
        $Ansible.Failed = $true
        $Ansible.Result = @{ error = "pg_restore cannot read $BackupPath (exit $($toc.ExitCode)): $($toc.Output)"; restored = $false }
        return
    }
    $lines = @($toc.Output -split "`n")
    $kept = @($lines | Where-Object { $_ -notmatch $SkipPattern })
    $extensions = @($lines | ForEach-Object { if ($_ -match '^\d+; \d+ \d+ EXTENSION - (\S+)') { $Matches[1] } })
    $entries = @($kept | Where-Object { $_ -match '^\d+;' }).Count
    $plan = "restore $entries entries of $BackupPath into an empty $Database on $DbHost`:$Port as $Owner (one transaction); the current database waits as $Aside until the server is healthy"
    if (-not $PSCmdlet.ShouldProcess($Database, $plan)) {
        $Ansible.Result = @{ plan = $plan; restored = $false; extensions = $extensions }
        return
    }
    $listFile = Join-Path $work 'restore.list'
    [System.IO.File]::WriteAllText($listFile, ($kept -join "`n") + "`n", $encoding)
    $passFile = Join-Path $work 'pgpass.conf'
    $escaped = $OwnerPassword.Replace('\', '\\').Replace(':', '\:')
    [System.IO.File]::WriteAllText($passFile, "$DbHost`:$Port`:$Database`:$Owner`:$escaped`n", $encoding)
    $env:PGPASSFILE = $passFile
    $connect = @('--host', $DbHost, '--port', "$Port", '--username', $Owner, '--dbname', $Database)
    $swap = Invoke-SwapSql -Step 'swap'
    if ($swap.ExitCode -ne 0) {
        # psql's exit 2: no connection (nothing ran); a refusal changes nothing either. Otherwise the swap stopped part
        # way: put the database from before back.
        $after = if ($swap.ExitCode -eq 2 -or $swap.Said -like 'REFUSED *') { 'nothing was changed' } else { Undo-Swap }
        Write-BackupLog "prefect-restore FAILED postgresql from=$(Split-Path -Leaf $BackupPath) swap: $($swap.Said)"
        $Ansible.Failed = $true
        $Ansible.Result = @{ error = "the empty database could not be made (exit $($swap.ExitCode)): $($swap.Said) $($swap.Error); $after"; restored = $false }
        return
    }
    $Ansible.Changed = $true
    if ($extensions.Count -gt 0) {
        $sqlFile = Join-Path $work 'extensions.sql'
        $sql = ($extensions | ForEach-Object { 'CREATE EXTENSION IF NOT EXISTS "{0}";' -f $_.Replace('"', '""') }) -join "`n"
        [System.IO.File]::WriteAllText($sqlFile, $sql + "`n", $encoding)
        $ext = Invoke-Native -FilePath $Psql -Arguments (@('-X', '-w', '-q', '-v', 'ON_ERROR_STOP=1') + $connect + @('-f', $sqlFile))
        if ($ext.ExitCode -ne 0) {
            $after = Undo-Swap
            $Ansible.Failed = $true
            $Ansible.Result = @{ error = "extensions $($extensions -join ', ') cannot be created as $Owner (exit $($ext.ExitCode)): $($ext.Output); $after"; restored = $false }
            return
        }
    }
    $restore = Invoke-Native -FilePath $PgRestore -Arguments ($RestoreArgs + $connect + @('--use-list', $listFile, $BackupPath))
    if ($restore.ExitCode -ne 0) {
        $after = Undo-Swap
        Write-BackupLog "prefect-restore FAILED postgresql from=$(Split-Path -Leaf $BackupPath) exit=$($restore.ExitCode); $after"
        $Ansible.Failed = $true
        $Ansible.Result = @{ error = "pg_restore failed (exit $($restore.ExitCode)): $($restore.Output); $after"; restored = $false }
        return
    }
    Write-BackupLog "prefect-restore OK postgresql from=$(Split-Path -Leaf $BackupPath) entries=$entries aside=$Aside"
    $Ansible.Result = @{ restored = $true; database = $Database; entries = $entries; from = $BackupPath; extensions = $extensions; aside = $Aside }
}
finally {
    Remove-Item Env:\PGPASSFILE -ErrorAction SilentlyContinue
    Remove-Item -LiteralPath $work -Recurse -Force -ErrorAction SilentlyContinue
}
