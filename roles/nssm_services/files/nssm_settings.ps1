# Registers NSSM services and keeps the NSSM settings that community.windows.win_nssm cannot manage
# (or would force: it sets AppStdoutCreationDisposition=2 and its own rotation values on every run).
# One pass for all services of the host: current values are read with `nssm get` (which reports NSSM's default
# for a value never set), and `nssm set` runs only for values that differ.
# The environment holds secrets, so it never goes on nssm.exe's command line (process creation auditing records
# command lines): it is read and written as the REG_MULTI_SZ value AppEnvironmentExtra of the service's
# Parameters key, which is where and how NSSM keeps it and reads it when it starts the application.
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
    # Runs nssm.exe and returns its standard output as lines. NSSM writes UTF-16 when its output is redirected
    # (older builds the console code page), so the bytes are decoded by what they look like.
    param([string[]]$Arguments, [string]$What)
    $psi = New-Object System.Diagnostics.ProcessStartInfo
    $psi.FileName = $Nssm
    $psi.Arguments = ($Arguments | ForEach-Object { ConvertTo-NativeArgument $_ }) -join ' '
    $psi.UseShellExecute = $false
    $psi.CreateNoWindow = $true
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    $process = [System.Diagnostics.Process]::Start($psi)
    $buffer = New-Object System.IO.MemoryStream
    $copy = $process.StandardOutput.BaseStream.CopyToAsync($buffer)
    $stderr = $process.StandardError.ReadToEnd()
    $process.WaitForExit()
    $copy.Wait()
    $bytes = $buffer.ToArray()
    # UTF-16LE: a BOM, or a zero high byte after the first (ASCII) character.
    $utf16 = $bytes.Length -ge 2 -and ($bytes[1] -eq 0 -or ($bytes[0] -eq 0xFF -and $bytes[1] -eq 0xFE))
    $encoding = if ($utf16) { [System.Text.Encoding]::Unicode } else { [Console]::OutputEncoding }
    $stdout = ($encoding.GetString($bytes) -replace "`0", '').TrimStart([char]0xFEFF)
    if ($process.ExitCode -ne 0) {
        # Never echo the value: it may be a secret.
        throw "nssm $What failed with exit code $($process.ExitCode): $((($stderr -replace "`0", '') + $stdout).Trim())"
    }
    @($stdout -split "\r?\n" | Where-Object { $_ -ne '' })
}

function Get-NssmValue {
    param([string]$Service, [string[]]$Parameter)
    (Invoke-Nssm -Arguments (@('get', $Service) + $Parameter) -What "get $Service $($Parameter -join ' ')") -join "`n"
}

function Test-SecretName {
    # The named secrets, and extra environment whose name says it holds one (e.g. PREFECT_SERVER_DATABASE_PASSWORD).
    param([string]$Name)
    ($SecretNames -contains $Name) -or ($Name -match 'PASSWORD|SECRET|TOKEN|CREDENTIAL|AUTH_STRING|_KEY$|CONNECTION_URL$')
}

function Get-MaskedEnvironment {
    param([string[]]$Entries)
    @($Entries | Where-Object { $_ } | ForEach-Object {
            $key = ($_ -split '=', 2)[0]
            if (Test-SecretName $key) { "$key=********" } else { $_ }
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
    $wantEnv = @($svc.environment.Keys | Sort-Object | ForEach-Object {
            # An environment block entry is NAME=value; never echo the value, it may be a secret.
            if ($_ -notmatch '^[^=\x00]+$' -or ([string]$svc.environment[$_]).Contains([char]0)) {
                throw "Environment variable '$_' of $name cannot be stored: a name must not be empty or contain '=', a value must not contain NUL"
            }
            "$_=$($svc.environment[$_])"
        })
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
        $null = Invoke-Nssm -Arguments @('install', $name, [string]$svc.application) -What "install $name"
    }

    $current = [ordered]@{}
    foreach ($key in $svc.params.Keys) {
        $current[$key] = Get-NssmValue -Service $name -Parameter $key
    }
    $current['AppExit'] = Get-NssmValue -Service $name -Parameter 'AppExit', 'Default'
    # NSSM ignores the value unless it is REG_MULTI_SZ: a value of another kind is rewritten (or removed).
    $parametersPath = "SYSTEM\CurrentControlSet\Services\$name\Parameters"
    $parameters = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey($parametersPath)
    if (-not $parameters) { throw "$name is not an NSSM service: HKLM\$parametersPath does not exist" }
    try {
        $envPresent = $parameters.GetValueNames() -contains 'AppEnvironmentExtra'
        $envKindOk = -not $envPresent -or
            $parameters.GetValueKind('AppEnvironmentExtra') -eq [Microsoft.Win32.RegistryValueKind]::MultiString
        $haveEnv = @()
        if ($envPresent -and $envKindOk) {
            $haveEnv = @($parameters.GetValue('AppEnvironmentExtra') | Where-Object { $_ -ne '' })
        }
    }
    finally {
        $parameters.Dispose()
    }
    $current['AppEnvironmentExtra'] = (Get-MaskedEnvironment $haveEnv) -join "`n"
    if (-not $entry.installed) { $before[$name] = $current }

    foreach ($key in $svc.params.Keys) {
        if ($current[$key] -cne $wanted[$key]) {
            $entry.changes.Add($key)
            if ($PSCmdlet.ShouldProcess($name, "Set $key")) {
                $null = Invoke-Nssm -Arguments @('set', $name, $key, $wanted[$key]) -What "set $name $key"
            }
        }
    }
    if ($current['AppExit'] -cne $wanted['AppExit']) {
        $entry.changes.Add('AppExit')
        if ($PSCmdlet.ShouldProcess($name, 'Set AppExit')) {
            $null = Invoke-Nssm -Arguments @('set', $name, 'AppExit', 'Default', $wanted['AppExit']) -What "set $name AppExit"
        }
    }
    # Both sides sorted as whole lines: sorting by name gives another order when one name prefixes another.
    if (-not $envKindOk -or (@($haveEnv | Sort-Object) -join "`n") -cne (@($wantEnv | Sort-Object) -join "`n")) {
        $entry.changes.Add('AppEnvironmentExtra')
        # A changed secret shows as changed without showing its value.
        $haveValues = @{}
        foreach ($line in $haveEnv) { $pair = $line -split '=', 2; $haveValues[$pair[0]] = $pair[1] }
        $after[$name]['AppEnvironmentExtra'] = @($svc.environment.Keys | Sort-Object | ForEach-Object {
                $value = [string]$svc.environment[$_]
                if (-not (Test-SecretName $_)) { "$_=$value" }
                elseif ($haveValues.ContainsKey($_) -and $haveValues[$_] -ceq $value) { "$_=********" }
                else { "$_=******** (changed)" }
            }) -join "`n"
        if ($PSCmdlet.ShouldProcess($name, 'Set AppEnvironmentExtra')) {
            $writable = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey($parametersPath, $true)
            try {
                if ($wantEnv.Count -gt 0) {
                    $writable.SetValue('AppEnvironmentExtra', [string[]]$wantEnv, [Microsoft.Win32.RegistryValueKind]::MultiString)
                }
                else {
                    $writable.DeleteValue('AppEnvironmentExtra', $false)
                }
            }
            finally {
                $writable.Dispose()
            }
        }
    }

    $serviceKey = "HKLM:\SYSTEM\CurrentControlSet\Services\$name"
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
