# After a fresh install (installer_options.ps1 gave the installer a one-time password): the superuser gets the
# password from Vault, through psql with the SQL on stdin and both passwords only in psql's environment (PGPASSWORD,
# and ENCLAVE_SUPERUSER_PASSWORD, which the SQL reads with \getenv). Then proves it: the real password logs in and the
# one-time one no longer does. When the real one already works (an update in place: the installer left the cluster
# alone) nothing changes. The option file is removed last, so that a run stopped before can finish it.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$BinDir,
    [Parameter(Mandatory)][int]$Port,
    [Parameter(Mandatory)][string]$Superuser,
    [Parameter(Mandatory)][string]$SuperuserPassword,
    [Parameter(Mandatory)][string]$OptionFile
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

function Invoke-Psql {
    param([string]$Password, [string]$Sql, [hashtable]$Environment = @{})
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = Join-Path $BinDir 'psql.exe'
    $info.Arguments = "-X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $Port -U `"$Superuser`" -d postgres"
    $info.UseShellExecute = $false
    $info.RedirectStandardInput = $true
    $info.RedirectStandardOutput = $true
    $info.RedirectStandardError = $true
    $info.EnvironmentVariables['PGPASSWORD'] = $Password
    $info.EnvironmentVariables['PGCONNECT_TIMEOUT'] = '15'
    foreach ($name in $Environment.Keys) { $info.EnvironmentVariables[$name] = $Environment[$name] }
    $process = [System.Diagnostics.Process]::Start($info)
    $stdout = $process.StandardOutput.ReadToEndAsync()
    $stderr = $process.StandardError.ReadToEndAsync()
    $process.StandardInput.Write($Sql)
    $process.StandardInput.Close()
    $process.WaitForExit()
    [pscustomobject]@{ ExitCode = $process.ExitCode; Output = $stdout.Result.Trim(); Error = $stderr.Result.Trim() }
}

# Check mode: the install before this step was only planned, so there is nothing to log in to.
if (-not $PSCmdlet.ShouldProcess($Superuser, 'set the password from Vault unless it logs in already')) {
    $Ansible.Changed = $true
    return
}
if ((Invoke-Psql -Password $SuperuserPassword -Sql 'SELECT 1;').ExitCode -eq 0) {
    Remove-Item -LiteralPath $OptionFile -Force -ErrorAction SilentlyContinue
    $Ansible.Result = @{ set = $false; one_time_refused = $null }
    return
}
$line = @(Get-Content -LiteralPath $OptionFile -ErrorAction SilentlyContinue | Where-Object { $_ -like 'superpassword=*' }) |
    Select-Object -First 1
if (-not $line) {
    throw "psql.exe as $Superuser refuses postgresql_superuser_password, and there is no installer option file ($OptionFile) with the one-time password of this install: set postgresql_superuser_password to the superuser's password."
}
$oneTime = $line.Substring('superpassword='.Length)
$sql = @'
\getenv password ENCLAVE_SUPERUSER_PASSWORD
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SET log_min_duration_statement = -1;
SELECT format('ALTER ROLE %I PASSWORD %L', current_user, :'password') \gexec
'@
$set = Invoke-Psql -Password $oneTime -Sql $sql -Environment @{ ENCLAVE_SUPERUSER_PASSWORD = $SuperuserPassword }
if ($set.ExitCode -ne 0) {
    throw "psql.exe as $Superuser with the install's one-time password failed ($($set.ExitCode)): $($set.Error)"
}
$Ansible.Changed = $true
$real = Invoke-Psql -Password $SuperuserPassword -Sql 'SELECT 1;'
$old = Invoke-Psql -Password $oneTime -Sql 'SELECT 1;'
if ($real.ExitCode -ne 0 -or $old.ExitCode -eq 0) {
    throw "after setting the superuser's password: the password from Vault logs in: $($real.ExitCode -eq 0); the one-time password still logs in: $($old.ExitCode -eq 0)"
}
# Only now: a run that stopped before this point finds the file and finishes the job.
Remove-Item -LiteralPath $OptionFile -Force
$Ansible.Result = @{ set = $true; one_time_refused = $true }
