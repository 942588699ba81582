# roles/postgresql/tasks/service.yml: the server reloads its configuration files (pg_reload_conf), then reports what
# it rejected (pg_file_settings, pg_hba_file_rules) and which settings wait for a restart (pg_settings.pending_restart).
# Then whether TLS really works: `ssl = on` is only the setting; a certificate or key the service cannot load leaves it
# on while every connection is plain. A new TCP session with sslmode=prefer reports whether it got TLS (pg_stat_ssl).
# The superuser password reaches psql.exe in its process environment only (PGPASSWORD), never on its command line.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$BinDir,
    [Parameter(Mandatory)][int]$Port,
    [Parameter(Mandatory)][string]$Superuser,
    [Parameter(Mandatory)][string]$SuperuserPassword
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

function Invoke-Psql {
    param([string]$Sql)
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = Join-Path $BinDir 'psql.exe'
    $info.Arguments = "-X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $Port -U `"$Superuser`" -d postgres"
    $info.UseShellExecute = $false
    $info.RedirectStandardInput = $true
    $info.RedirectStandardOutput = $true
    $info.RedirectStandardError = $true
    $info.EnvironmentVariables['PGPASSWORD'] = $SuperuserPassword
    $info.EnvironmentVariables['PGCONNECT_TIMEOUT'] = '15'
    $info.EnvironmentVariables['PGSSLMODE'] = 'prefer'
    $process = [System.Diagnostics.Process]::Start($info)
    $stdout = $process.StandardOutput.ReadToEndAsync()
    $stderr = $process.StandardError.ReadToEndAsync()
    $process.StandardInput.Write($Sql)
    $process.StandardInput.Close()
    $process.WaitForExit()
    if ($process.ExitCode -ne 0) {
        throw "psql.exe as $Superuser on port $Port failed ($($process.ExitCode)): $($stderr.Result.Trim())"
    }
    return @($stdout.Result -split "`r?`n" | Where-Object { $_ -ne '' })
}

$before = @(Invoke-Psql -Sql "SELECT pg_conf_load_time();")[0]
if ($PSCmdlet.ShouldProcess('PostgreSQL', 'Reload configuration')) {
    $null = Invoke-Psql -Sql "SELECT pg_reload_conf();"
    $Ansible.Changed = $true
    # The postmaster reloads asynchronously; a new session sees the new load time once it has.
    $deadline = (Get-Date).AddSeconds(10)
    while ((Get-Date) -lt $deadline -and @(Invoke-Psql -Sql "SELECT pg_conf_load_time();")[0] -eq $before) {
        Start-Sleep -Milliseconds 250
    }
}
$errors = @(Invoke-Psql -Sql @"
SELECT coalesce(sourcefile, '') || ':' || coalesce(sourceline::text, '') || ' ' || coalesce(name, '') || ': ' || error
  FROM pg_file_settings WHERE error IS NOT NULL
UNION ALL
SELECT 'pg_hba.conf:' || line_number || ' ' || error FROM pg_hba_file_rules WHERE error IS NOT NULL;
"@)
$pending = @(Invoke-Psql -Sql "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name;")
$tlsSql = "SELECT current_setting('ssl') || ' ' || coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false);"
$ssl, $tls = ([string]@(Invoke-Psql -Sql $tlsSql)[0]).Split(' ')
$Ansible.Result = @{ errors = $errors; pending_restart = $pending; ssl = $ssl; tls_in_use = ($tls -eq 'true' -or $tls -eq 't') }
