# `prefect server database upgrade -y` once, against the database the server service uses: its environment
# (PREFECT_HOME, the database URL, ...) is read from the service's NSSM Parameters key, where the services layer keeps
# it, so no secret passes through Ansible or a command line. Prefect has no lock around migrations: run only from one
# host, with every server stopped (playbooks/upgrade.yml).
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$Service,
    [Parameter(Mandatory)][string]$VenvPython,
    # The password of a URL's userinfo (roles/common/vars/main/secrets.yml common_secret_url_pattern, group 2).
    [Parameter(Mandatory)][string]$SecretUrlPattern
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$key = "HKLM:\SYSTEM\CurrentControlSet\Services\$Service\Parameters"
$item = Get-Item -LiteralPath $key -ErrorAction SilentlyContinue
if (-not $item) {
    throw "Service '$Service' has no NSSM Parameters key: the services layer has not configured it on this host."
}
$Ansible.Changed = $true
$Ansible.Result = @{ service = $Service; python = $VenvPython; output = '' }
# Check mode: the servers the upgrade would have stopped still run, so only the plan is reported.
if (-not $PSCmdlet.ShouldProcess($Service, 'prefect server database upgrade -y')) {
    return
}
$running = Get-Service -Name $Service -ErrorAction SilentlyContinue
if ($running -and $running.Status -ne 'Stopped') {
    throw "Service '$Service' is $($running.Status): migrations run only with the server stopped."
}
# Every value of the service environment (the database URL among them) is masked in the output, as
# roles/backup/files/database_upgrade.ps1 does for the same command (win_powershell runs one file, so it is repeated).
$secrets = New-Object System.Collections.Generic.List[string]
foreach ($line in @($item.GetValue('AppEnvironmentExtra', @(), 'DoNotExpandEnvironmentNames'))) {
    $pair = "$line" -split '=', 2
    if ($pair.Count -eq 2) {
        # NSSM expands %VAR% in these values when it starts the service (ExpandEnvironmentStrings): so does this.
        $value = [Environment]::ExpandEnvironmentVariables($pair[1])
        [Environment]::SetEnvironmentVariable($pair[0], $value, 'Process')
        foreach ($candidate in @($pair[1], $value)) {
            if ($candidate -and $candidate.Length -ge 4) { $secrets.Add($candidate) }
            # A URL's password also on its own, as written and decoded (an error message may quote either).
            $url = [regex]::Match("$candidate", $SecretUrlPattern)
            if ($url.Success -and $url.Groups[2].Value.Length -ge 4) {
                $secrets.Add($url.Groups[2].Value)
                $secrets.Add([Uri]::UnescapeDataString($url.Groups[2].Value))
            }
        }
    }
}
$env:PREFECT_SERVER_ANALYTICS_ENABLED = 'false'
$previous = $ErrorActionPreference
$ErrorActionPreference = 'Continue'
$output = (& $VenvPython -m prefect server database upgrade -y 2>&1 | ForEach-Object { "$_" }) -join "`n"
$exitCode = $LASTEXITCODE
$ErrorActionPreference = $previous
# Longest first, so that a value containing another is masked whole.
foreach ($secret in @($secrets | Sort-Object -Property Length -Descending)) { $output = $output.Replace($secret, '***') }
$Ansible.Result.output = $output
if ($exitCode -ne 0) {
    throw "prefect server database upgrade -y failed ($exitCode): $output"
}
