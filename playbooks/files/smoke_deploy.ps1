# Deploys the collection's smoke flow (smoke_flow.py beside the flow file on the host) to a work pool: the deployment is
# created or updated only when it differs. The API auth string travels as a parameter into this process's environment,
# never on a command line.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$VenvPython,
    [Parameter(Mandatory)][string]$FlowFile,
    [Parameter(Mandatory)][string]$Pool,
    [Parameter(Mandatory)][string]$Name,
    [Parameter(Mandatory)][string]$ApiUrl,
    [string]$AuthString = ''
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
$Ansible.Result = @{ deployment = "enclave-smoke/$Name" }
if (-not $PSCmdlet.ShouldProcess($Pool, "Deploy enclave-smoke/$Name")) {
    return
}
$env:PREFECT_API_URL = $ApiUrl
if ($AuthString) { $env:PREFECT_API_AUTH_STRING = $AuthString }
$env:PREFECT_HOME = Join-Path $Ansible.Tmpdir 'prefect-home'
$env:PREFECT_SERVER_ANALYTICS_ENABLED = 'false'
$env:PYTHONUTF8 = '1'
$previous = $ErrorActionPreference
$ErrorActionPreference = 'Continue'
$output = @(& $VenvPython -P $FlowFile deploy $Pool $Name 2>&1 | ForEach-Object { "$_" })
$exitCode = $LASTEXITCODE
$ErrorActionPreference = $previous
if ($exitCode -ne 0) {
    throw "Deploying the smoke flow to pool '$Pool' failed ($exitCode): $($output -join "`n")"
}
$report = $output[-1] | ConvertFrom-Json
$Ansible.Changed = [bool]$report.changed
$Ansible.Result.id = $report.id
