# Read-only (roles/postgresql/tasks/facts.yml): EDB's registrations of PostgreSQL, the service, the host's memory, and
# whether the data directory is a standby's (standby.signal).
# EDB's installer (edb-installers server/installer.xml.in) writes HKLM:\SOFTWARE\PostgreSQL\Installations\
# postgresql-x64-<major> with 'Base Directory', 'Data Directory', 'Version' and 'Service ID'.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$ServiceName,
    # The installer's option file: still there after an install whose superuser password was not set yet.
    [string]$OptionFile = '',
    [string]$DataDir = ''
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$installations = New-Object System.Collections.Generic.List[object]
$root = 'HKLM:\SOFTWARE\PostgreSQL\Installations'
if (Test-Path -LiteralPath $root) {
    foreach ($key in Get-ChildItem -LiteralPath $root) {
        $values = Get-ItemProperty -LiteralPath $key.PSPath
        $major = ''
        if ($key.PSChildName -match '-(\d+)$') {
            $major = $Matches[1]
        }
        $installations.Add(@{
                id = $key.PSChildName
                major = $major
                version = [string]$values.'Version'
                base_dir = [string]$values.'Base Directory'
                data_dir = [string]$values.'Data Directory'
                service = [string]$values.'Service ID'
            })
    }
}

$service = @{ exists = $false; state = ''; account = ''; start_mode = ''; dependents_running = @() }
$cim = Get-CimInstance -ClassName Win32_Service -Filter "Name='$($ServiceName -replace "'", "''")'"
if ($cim) {
    # The services that depend on PostgreSQL, directly or not (the Prefect server on an all-in-one host, its workers),
    # that run now: a stop of PostgreSQL stops them too (-Force), and the role starts them again afterwards.
    $dependents = @((Get-Service -Name $ServiceName).DependentServices | Where-Object { $_.Status -eq 'Running' } |
        ForEach-Object { $_.Name })
    $service = @{ exists = $true; state = [string]$cim.State; account = [string]$cim.StartName; start_mode = [string]$cim.StartMode
        dependents_running = $dependents }
}

$memory = (Get-CimInstance -ClassName Win32_ComputerSystem).TotalPhysicalMemory
$Ansible.Result = @{
    option_file_left = [bool]($OptionFile -and (Test-Path -LiteralPath $OptionFile -PathType Leaf))
    installations = @($installations)
    service = $service
    standby_signal = [bool]($DataDir -and (Test-Path -LiteralPath (Join-Path $DataDir 'standby.signal') -PathType Leaf))
    ram_mb = [int64][math]::Floor($memory / 1048576)
}
