# `prefect server database upgrade -y` with exactly the server service's program, directory and environment: the one
# implementation for the restore (roles/backup/tasks/restore_upgrade.yml) and the upgrade's migration
# (playbooks/tasks/upgrade_migrate.yml). The python NSSM starts and the variables NSSM gives it (the database URL among
# them) are read from the service's Parameters key, expanded (%VAR%) as NSSM expands them, and set in this process only,
# never on a command line. The output is returned with every value of those variables masked. Prefect has no lock
# around its migrations: run on one host, with every server stopped (a running one is refused). Prefect's output does
# not say whether a migration ran, so a run reports changed. The expansion uses this session's environment, NSSM's
# the service account's: a value naming a per-user variable (%USERPROFILE%, %APPDATA%, %TEMP%) would differ; the role's
# values are absolute paths, and the services layer refuses secrets that hold a defined %NAME%.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$ServiceName,
    # The password of a URL's userinfo (roles/common/vars/main/secrets.yml common_secret_url_pattern, group 2).
    [Parameter(Mandatory)][string]$SecretUrlPattern
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
$key = "HKLM:\SYSTEM\CurrentControlSet\Services\$ServiceName\Parameters"
if (-not (Test-Path -LiteralPath $key)) {
    $Ansible.Failed = $true
    $Ansible.Result = @{ error = "$ServiceName is not an NSSM service on this host (no $key)"; output = '' }
    return
}
$params = Get-ItemProperty -LiteralPath $key
$python = [string]$params.Application
$directory = [string]$params.AppDirectory
# The lines as stored (NSSM expands them when it starts the service, so this does too, below).
$environment = @((Get-Item -LiteralPath $key).GetValue('AppEnvironmentExtra', @(), 'DoNotExpandEnvironmentNames'))
if (-not $PSCmdlet.ShouldProcess($python, 'prefect server database upgrade -y')) {
    # Check mode: the servers the run would have stopped may still run, so only the plan is reported.
    $Ansible.Changed = $true
    $Ansible.Result = @{ plan = "$python -m prefect server database upgrade -y with the environment of $ServiceName"; output = '' }
    return
}
$service = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
if ($service -and $service.Status -ne 'Stopped') {
    $Ansible.Failed = $true
    $Ansible.Result = @{ error = "$ServiceName is $($service.Status): migrations run only with the server stopped"; output = '' }
    return
}
$saved = @{}
$secrets = New-Object System.Collections.Generic.List[string]
foreach ($entry in $environment) {
    $name, $written = ([string]$entry).Split('=', 2)
    if (-not $name) { continue }
    $value = [Environment]::ExpandEnvironmentVariables("$written")
    $saved[$name] = [Environment]::GetEnvironmentVariable($name, 'Process')
    [Environment]::SetEnvironmentVariable($name, $value, 'Process')
    foreach ($candidate in @($written, $value)) {
        if ($candidate -and $candidate.Length -ge 4) { $secrets.Add($candidate) }
        # A URL's password also on its own, as written and decoded (an error message may quote either).
        $url = [regex]::Match("$candidate", $SecretUrlPattern)
        if ($url.Success -and $url.Groups[2].Value.Length -ge 4) {
            $secrets.Add($url.Groups[2].Value)
            $secrets.Add([Uri]::UnescapeDataString($url.Groups[2].Value))
        }
    }
}
# No usage report leaves the host from a one-off command.
if (-not $saved.ContainsKey('PREFECT_SERVER_ANALYTICS_ENABLED')) {
    $saved['PREFECT_SERVER_ANALYTICS_ENABLED'] = $env:PREFECT_SERVER_ANALYTICS_ENABLED
}
$env:PREFECT_SERVER_ANALYTICS_ENABLED = 'false'
$here = Get-Location
try {
    if ($directory) { Set-Location -LiteralPath $directory }
    $ErrorActionPreference = 'Continue'
    $output = (& $python -m prefect server database upgrade -y 2>&1 | ForEach-Object { "$_" }) -join "`n"
    $exitCode = $LASTEXITCODE
    $ErrorActionPreference = 'Stop'
}
finally {
    Set-Location -LiteralPath $here
    foreach ($name in $saved.Keys) { [Environment]::SetEnvironmentVariable($name, $saved[$name], 'Process') }
}
# Longest first, so that a value containing another is masked whole.
foreach ($secret in @($secrets | Sort-Object -Property Length -Descending)) { $output = $output.Replace($secret, '***') }
$Ansible.Changed = $exitCode -eq 0
$Ansible.Failed = $exitCode -ne 0
$Ansible.Result = @{ exit_code = $exitCode; output = $output; python = $python }
if ($exitCode -ne 0) {
    $Ansible.Result.error = "prefect server database upgrade -y failed ($exitCode): $output"
}
