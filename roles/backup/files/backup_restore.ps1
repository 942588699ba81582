# Restores a named backup (playbooks/restore.yml), with the Prefect server and workers stopped by the play.
# PostgreSQL: pg_restore --clean --if-exists in one transaction as the database owner, its password in a PGPASSFILE in
# a private temporary directory. Extension entries are left out of the restore list (the superuser made them; the
# owner may not drop them) and a missing one is created first as the owner (pg_trgm is a trusted extension).
# SQLite: files/prefect_sqlite_backup.py restore with the venv's python (integrity check, the replaced file kept,
# the copy renamed into place). Check mode reads the backup and reports the plan.
[CmdletBinding(SupportsShouldProcess)]
param (
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
    [string[]]$RestoreArgs = @(),
    [string]$SkipPattern = '',
    [string]$Python = '',
    [string]$Script = '',
    [string]$SqliteDatabase = ''
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
    $plan = "restore $entries entries of $BackupPath into $Database on $DbHost`:$Port as $Owner (--clean --if-exists, one transaction)"
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
    if ($extensions.Count -gt 0) {
        $sqlFile = Join-Path $work 'extensions.sql'
        $sql = ($extensions | ForEach-Object { 'CREATE EXTENSION IF NOT EXISTS "{0}";' -f $_.Replace('"', '""') }) -join "`n"
        [System.IO.File]::WriteAllText($sqlFile, $sql + "`n", $encoding)
        $ext = Invoke-Native -FilePath $Psql -Arguments (@('-X', '-w', '-q', '-v', 'ON_ERROR_STOP=1') + $connect + @('-f', $sqlFile))
        if ($ext.ExitCode -ne 0) {
            $Ansible.Failed = $true
            $Ansible.Result = @{ error = "extensions $($extensions -join ', ') cannot be created as $Owner (exit $($ext.ExitCode)): $($ext.Output)"; restored = $false }
            return
        }
    }
    $restore = Invoke-Native -FilePath $PgRestore -Arguments ($RestoreArgs + $connect + @('--use-list', $listFile, $BackupPath))
    $Ansible.Changed = $true
    if ($restore.ExitCode -ne 0) {
        Write-BackupLog "prefect-restore FAILED postgresql from=$(Split-Path -Leaf $BackupPath) exit=$($restore.ExitCode)"
        $Ansible.Failed = $true
        $Ansible.Changed = $false
        $Ansible.Result = @{ error = "pg_restore failed (exit $($restore.ExitCode)), the transaction was rolled back: $($restore.Output)"; restored = $false }
        return
    }
    Write-BackupLog "prefect-restore OK postgresql from=$(Split-Path -Leaf $BackupPath) entries=$entries"
    $Ansible.Result = @{ restored = $true; database = $Database; entries = $entries; from = $BackupPath; extensions = $extensions }
}
finally {
    Remove-Item Env:\PGPASSFILE -ErrorAction SilentlyContinue
    Remove-Item -LiteralPath $work -Recurse -Force -ErrorAction SilentlyContinue
}
