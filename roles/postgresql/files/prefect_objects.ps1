# roles/postgresql/tasks/objects.yml: runs prefect_objects.sql (passed as Sql) with psql.exe as the superuser.
# The names go on psql's command line; the passwords only into its process environment (PGPASSWORD, and
# PREFECT_DB_PASSWORD and PREFECT_REPLICATION_PASSWORD, which the SQL reads with \getenv). Check mode runs the SQL with apply=false: it compares and
# reports only. Every "CHANGED <what>" line the SQL prints is a change.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$BinDir,
    [Parameter(Mandatory)][int]$Port,
    [Parameter(Mandatory)][string]$Superuser,
    [Parameter(Mandatory)][string]$SuperuserPassword,
    [Parameter(Mandatory)][string]$Role,
    [Parameter(Mandatory)][string]$Database,
    [Parameter(Mandatory)][string]$Password,
    [Parameter(Mandatory)][string]$Sql,
    # On the primary of a primary/standby pair: the replication role, its password and the standby's slot.
    [string]$ReplicationRole = '',
    [string]$ReplicationPassword = '',
    [string]$Slot = ''
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$apply = 'false'
if ($PSCmdlet.ShouldProcess("$Role and $Database", 'Create or change')) {
    $apply = 'true'
}
$info = New-Object System.Diagnostics.ProcessStartInfo
$info.FileName = Join-Path $BinDir 'psql.exe'
$info.Arguments = "-X -A -t -h 127.0.0.1 -p $Port -U `"$Superuser`" -d postgres -v role=`"$Role`" -v database=`"$Database`" -v apply=$apply"
if ($ReplicationRole) {
    $info.Arguments += " -v replication_role=`"$ReplicationRole`" -v slot=`"$Slot`""
    $info.EnvironmentVariables['PREFECT_REPLICATION_PASSWORD'] = $ReplicationPassword
}
$info.UseShellExecute = $false
$info.RedirectStandardInput = $true
$info.RedirectStandardOutput = $true
$info.RedirectStandardError = $true
$info.EnvironmentVariables['PGPASSWORD'] = $SuperuserPassword
$info.EnvironmentVariables['PREFECT_DB_PASSWORD'] = $Password
$info.EnvironmentVariables['PGCONNECT_TIMEOUT'] = '15'
$process = [System.Diagnostics.Process]::Start($info)
$stdout = $process.StandardOutput.ReadToEndAsync()
$stderr = $process.StandardError.ReadToEndAsync()
$process.StandardInput.Write($Sql)
$process.StandardInput.Close()
$process.WaitForExit()
$lines = @($stdout.Result -split "`r?`n" | Where-Object { $_ -ne '' })
if ($process.ExitCode -ne 0) {
    throw "psql.exe as $Superuser on port $Port failed ($($process.ExitCode)): $($stderr.Result.Trim()) $($lines -join '; ')"
}
$changes = @($lines | Where-Object { $_ -like 'CHANGED *' } | ForEach-Object { $_.Substring(8) })
$Ansible.Changed = $changes.Count -gt 0
$Ansible.Result = @{ changes = $changes }
if ($changes.Count -gt 0) {
    $Ansible.Diff = @{ before = ''; after = ($changes -join "`n") + "`n" }
}
