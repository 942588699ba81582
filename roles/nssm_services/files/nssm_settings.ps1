# Registers NSSM services and keeps the NSSM settings that community.windows.win_nssm cannot manage
# (or would force: it sets AppStdoutCreationDisposition=2 and its own rotation values on every run).
# One pass for all services of the host: current values are read from each service's Parameters registry key
# (where `nssm get` reads them), and `nssm set` runs only for values that differ.
# Start mode, dependencies, account and recovery actions are left to ansible.windows.win_service.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$Nssm,
    # Each: name, application, account, params (NSSM parameter -> value), exit_action, environment (dict).
    [Parameter(Mandatory)][object[]]$Services,
    # Environment variable names whose values never appear in the result or the diff.
    [string[]]$SecretNames = @()
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

function ConvertTo-NativeArgument {
    # Quote one argument for CommandLineToArgvW, which is how nssm.exe reads its command line.
    param([string]$Value)
    if ($Value.Length -gt 0 -and $Value -notmatch '[\s"]') { return $Value }
    $sb = New-Object System.Text.StringBuilder
    $null = $sb.Append('"')
    $slashes = 0
    foreach ($c in $Value.ToCharArray()) {
        if ($c -eq '\') { $slashes++; continue }
        if ($c -eq '"') { $null = $sb.Append('\', 2 * $slashes + 1) }
        elseif ($slashes -gt 0) { $null = $sb.Append('\', $slashes) }
        $slashes = 0
        $null = $sb.Append($c)
    }
    $null = $sb.Append('\', 2 * $slashes).Append('"')
    $sb.ToString()
}

function Invoke-Nssm {
    param([string[]]$Arguments, [string]$What)
    $psi = New-Object System.Diagnostics.ProcessStartInfo
    $psi.FileName = $Nssm
    $psi.Arguments = ($Arguments | ForEach-Object { ConvertTo-NativeArgument $_ }) -join ' '
    $psi.UseShellExecute = $false
    $psi.CreateNoWindow = $true
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    $process = [System.Diagnostics.Process]::Start($psi)
    $stdout = $process.StandardOutput.ReadToEndAsync()
    $stderr = $process.StandardError.ReadToEnd()
    $process.WaitForExit()
    if ($process.ExitCode -ne 0) {
        # Never echo the value: it may be a secret. NSSM writes UTF-16 to pipes, hence the NUL removal.
        $message = (($stderr + $stdout.Result) -replace "`0", '').Trim()
        throw "nssm $What failed with exit code $($process.ExitCode): $message"
    }
}

function Get-MaskedEnvironment {
    param([string[]]$Entries)
    @($Entries | Where-Object { $_ } | ForEach-Object {
            $key = ($_ -split '=', 2)[0]
            if ($SecretNames -contains $key) { "$key=********" } else { $_ }
        })
}

function Test-SameAccount {
    param([string]$Current, [string]$Wanted)
    if (-not $Current) { return $false }
    try {
        $wantedName = if ($Wanted -notmatch '\\') { ".\$Wanted" } else { $Wanted }
        $wantedName = $wantedName -replace '^\.\\', "$env:COMPUTERNAME\"
        $currentName = $Current -replace '^\.\\', "$env:COMPUTERNAME\"
        if ($currentName -eq 'LocalSystem') { $currentName = 'NT AUTHORITY\SYSTEM' }
        $a = ([System.Security.Principal.NTAccount]$currentName).Translate([System.Security.Principal.SecurityIdentifier])
        $b = ([System.Security.Principal.NTAccount]$wantedName).Translate([System.Security.Principal.SecurityIdentifier])
        return $a -eq $b
    }
    catch {
        # The wanted account does not resolve (yet): treat it as different; win_service reports the real error.
        return $false
    }
}

$report = @{}
$before = @{}
$after = @{}
foreach ($svc in $Services) {
    $name = [string]$svc.name
    $wantEnv = @($svc.environment.Keys | Sort-Object | ForEach-Object { "$_=$($svc.environment[$_])" })
    $service = Get-Service -Name $name -ErrorAction SilentlyContinue
    $entry = @{
        installed = $false
        was_running = [bool]($service -and $service.Status -eq 'Running')
        changes = [System.Collections.Generic.List[string]]@()
        account_differs = $false
    }
    $report[$name] = $entry
    $wanted = [ordered]@{}
    foreach ($key in ($svc.params.Keys | Sort-Object)) { $wanted[$key] = [string]$svc.params[$key] }
    $wanted['AppExit'] = [string]$svc.exit_action
    $wanted['AppEnvironmentExtra'] = (Get-MaskedEnvironment $wantEnv) -join "`n"
    $after[$name] = $wanted

    if (-not $service) {
        $entry.installed = $true
        $entry.changes.Add('install')
        $entry.account_differs = $true
        $before[$name] = @{}
        if (-not $PSCmdlet.ShouldProcess($name, 'Install NSSM service')) {
            continue
        }
        Invoke-Nssm -Arguments @('install', $name, [string]$svc.application) -What "install $name"
    }

    $serviceKey = "HKLM:\SYSTEM\CurrentControlSet\Services\$name"
    $params = Get-ItemProperty -LiteralPath "$serviceKey\Parameters" -ErrorAction SilentlyContinue
    $current = [ordered]@{}
    foreach ($key in $svc.params.Keys) {
        $property = if ($params) { $params.PSObject.Properties[$key] } else { $null }
        $current[$key] = if ($property) { [string]$property.Value } else { '' }
    }
    $exitKey = Get-Item -LiteralPath "$serviceKey\Parameters\AppExit" -ErrorAction SilentlyContinue
    $current['AppExit'] = if ($exitKey) { [string]$exitKey.GetValue('') } else { '' }
    $haveEnv = @()
    if ($params -and $params.PSObject.Properties['AppEnvironmentExtra']) { $haveEnv = @($params.AppEnvironmentExtra) }
    $current['AppEnvironmentExtra'] = (Get-MaskedEnvironment $haveEnv) -join "`n"
    if (-not $entry.installed) { $before[$name] = $current }

    foreach ($key in $svc.params.Keys) {
        if ($current[$key] -cne $wanted[$key]) {
            $entry.changes.Add($key)
            if ($PSCmdlet.ShouldProcess($name, "Set $key")) {
                Invoke-Nssm -Arguments @('set', $name, $key, $wanted[$key]) -What "set $name $key"
            }
        }
    }
    if ($current['AppExit'] -cne $wanted['AppExit']) {
        $entry.changes.Add('AppExit')
        if ($PSCmdlet.ShouldProcess($name, 'Set AppExit')) {
            Invoke-Nssm -Arguments @('set', $name, 'AppExit', 'Default', $wanted['AppExit']) -What "set $name AppExit"
        }
    }
    if ((@($haveEnv | Sort-Object) -join "`n") -cne ($wantEnv -join "`n")) {
        $entry.changes.Add('AppEnvironmentExtra')
        # A changed secret shows as changed without showing its value.
        $haveValues = @{}
        foreach ($line in $haveEnv) { $pair = $line -split '=', 2; $haveValues[$pair[0]] = $pair[1] }
        $after[$name]['AppEnvironmentExtra'] = @($svc.environment.Keys | Sort-Object | ForEach-Object {
                $value = [string]$svc.environment[$_]
                if ($SecretNames -notcontains $_) { "$_=$value" }
                elseif ($haveValues.ContainsKey($_) -and $haveValues[$_] -ceq $value) { "$_=********" }
                else { "$_=******** (changed)" }
            }) -join "`n"
        if ($PSCmdlet.ShouldProcess($name, 'Set AppEnvironmentExtra')) {
            if ($wantEnv.Count -gt 0) {
                Invoke-Nssm -Arguments (@('set', $name, 'AppEnvironmentExtra') + $wantEnv) -What "set $name AppEnvironmentExtra"
            }
            else {
                Invoke-Nssm -Arguments @('reset', $name, 'AppEnvironmentExtra') -What "reset $name AppEnvironmentExtra"
            }
        }
    }

    $objectName = (Get-ItemProperty -LiteralPath $serviceKey -Name ObjectName -ErrorAction SilentlyContinue).ObjectName
    $entry.account_differs = -not (Test-SameAccount -Current $objectName -Wanted ([string]$svc.account))
    $entry.current_account = $objectName
}

foreach ($entry in $report.Values) {
    if ($entry.changes.Count -gt 0) { $Ansible.Changed = $true }
    $entry.changes = @($entry.changes)
}
$Ansible.Result = @{ services = $report }
$Ansible.Diff = @{ before = $before; after = $after }
