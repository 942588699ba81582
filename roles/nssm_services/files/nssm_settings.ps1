# Registers the Prefect NSSM services of a host and keeps their NSSM settings, in one pass for all services.
# Read in NSSM's source (2.24-101, commit 897c7ad): `nssm set` to a setting's non-zero default DELETES the registry
# value (settings.cpp setting_set_number / setting_set_string), and NSSM uses the default for an absent value. The
# current values are read from the service's Parameters key here (one read instead of one nssm.exe per setting),
# an absent value counts as NSSM's default (the Defaults table the role passes), and `nssm set` runs only for real
# differences.
# The environment holds secrets: it never goes on a command line or through a cmdlet pipeline (module logging
# records pipeline input); it is written as the REG_MULTI_SZ AppEnvironmentExtra, as NSSM keeps and reads it.
# The Parameters key gets exactly: SYSTEM and Administrators full control, the service account read, nothing
# inherited; it is set before the environment is written.
# Which running service must restart is decided from host state, so an interrupted run is finished by the next:
# a setting written after its application started (NSSM reads the settings at each application start,
# service.cpp start_service), an application running from another venv than `current`, or a process running as
# another account than the service's.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$Nssm,
    # The `current` junction: an Application under it is stored with the venv it points to, so that a venv switch
    # is a setting change that restarts the service.
    [Parameter(Mandatory)][string]$VenvLink,
    # Check mode only: the venv prefect_venv would point the junction at in this run (its switch is not made in check
    # mode), so that the restarts the switch will cause are reported.
    [string]$PendingVenv = '',
    # NSSM parameter -> the value NSSM uses when it is absent (settings.cpp).
    [Parameter(Mandatory)][hashtable]$Defaults,
    [string]$ExitDefault = 'Restart',
    # Each: name, application, account, exit_action, environment (dict), params (NSSM parameter -> value).
    [Parameter(Mandatory)][object[]]$Services,
    # Workers to remove (state: absent): checked like the services above, never touched here.
    [string[]]$AbsentServices = @(),
    # Environment variable names whose values never appear in the result or the diff: these, and every name matching
    # SecretPattern (roles/common/vars/main/secrets.yml); a URL's password (SecretUrlPattern group 2) in any value.
    [string[]]$SecretNames = @(),
    [string]$SecretPattern = 'PASSWORD|SECRET|TOKEN',
    [string]$SecretUrlPattern = '([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)([^@\s]*)@'
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
$changedValue = 'EnclavePrefectChanged'
$noExpand = [Microsoft.Win32.RegistryValueOptions]::DoNotExpandEnvironmentNames

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
    # Runs nssm.exe with non-secret arguments only. Started without a console (CreateNoWindow), this NSSM build
    # writes its messages in the ANSI code page, not UTF-16.
    param([string[]]$Arguments)
    $quoted = New-Object System.Collections.Generic.List[string]
    foreach ($argument in $Arguments) { $quoted.Add((ConvertTo-NativeArgument $argument)) }
    $psi = New-Object System.Diagnostics.ProcessStartInfo
    $psi.FileName = $Nssm
    $psi.Arguments = [string]::Join(' ', $quoted)
    $psi.UseShellExecute = $false
    $psi.CreateNoWindow = $true
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    $psi.StandardOutputEncoding = [System.Text.Encoding]::Default
    $psi.StandardErrorEncoding = [System.Text.Encoding]::Default
    $process = [System.Diagnostics.Process]::Start($psi)
    $stdout = $process.StandardOutput.ReadToEndAsync()
    $stderr = $process.StandardError.ReadToEnd()
    $process.WaitForExit()
    if ($process.ExitCode -ne 0) {
        throw "nssm $($psi.Arguments) failed with exit code $($process.ExitCode): $(($stderr + $stdout.Result).Trim())"
    }
}

function Test-SecretName {
    param([string]$Name)
    ($SecretNames -contains $Name) -or ($Name -match "(?i)$SecretPattern")
}

function Get-SortedLines {
    param([string[]]$Lines)
    $list = New-Object System.Collections.Generic.List[string]
    foreach ($line in $Lines) { if ($line) { $list.Add($line) } }
    $list.Sort([System.StringComparer]::Ordinal)
    , $list.ToArray()
}

function Get-MaskedValue {
    # A secret variable's value entirely; in any other value, the password of a URL (http://user:password@proxy).
    param([string]$Name, [string]$Value)
    if (Test-SecretName $Name) { return '********' }
    [regex]::Replace($Value, $SecretUrlPattern, '${1}********@')
}

function Get-MaskedEnvironment {
    # NAME=value lines with secret values replaced; $Compare (the other side) marks a changed value that masking hides.
    param([string[]]$Lines, [hashtable]$Compare)
    $masked = New-Object System.Collections.Generic.List[string]
    foreach ($line in $Lines) {
        $pair = $line.Split([char[]]'=', 2)
        $value = if ($pair.Count -eq 2) { $pair[1] } else { '' }
        $shown = Get-MaskedValue $pair[0] $value
        $suffix = ''
        if ($Compare -and -not [string]::Equals($shown, $value, [System.StringComparison]::Ordinal) -and
            -not ($Compare.ContainsKey($pair[0]) -and [string]::Equals($Compare[$pair[0]], $value, [System.StringComparison]::Ordinal))) {
            $suffix = ' (changed)'
        }
        $masked.Add("$($pair[0])=$shown$suffix")
    }
    [string]::Join("`n", $masked.ToArray())
}

function ConvertTo-Sid {
    param([string]$Account)
    if (-not $Account) { return $null }
    if ($Account -eq 'LocalSystem') { return New-Object System.Security.Principal.SecurityIdentifier 'S-1-5-18' }
    $name = $Account -replace '^\.\\', "$env:COMPUTERNAME\"
    try { return ([System.Security.Principal.NTAccount]$name).Translate([System.Security.Principal.SecurityIdentifier]) }
    catch { return $null }
}

function Get-RegistryNumber {
    param($Key, [string]$Name)
    # REG_DWORD arrives as a signed Int32.
    [uint32][System.BitConverter]::ToUInt32([System.BitConverter]::GetBytes([int32]$Key.GetValue($Name)), 0)
}

function Read-Setting {
    # The value NSSM will use: the registry value, or NSSM's default when it is absent. $null: a value of a kind NSSM
    # would not read as intended.
    param($Key, [string]$Name)
    $numeric = $Defaults[$Name] -is [int] -or $Defaults[$Name] -is [long]
    if ($Key.GetValueNames() -notcontains $Name) { return [string]$Defaults[$Name] }
    $kind = $Key.GetValueKind($Name)
    if ($numeric) {
        if ($kind -ne [Microsoft.Win32.RegistryValueKind]::DWord) { return $null }
        return [string](Get-RegistryNumber -Key $Key -Name $Name)
    }
    if ($kind -ne [Microsoft.Win32.RegistryValueKind]::String -and $kind -ne [Microsoft.Win32.RegistryValueKind]::ExpandString) { return $null }
    [string]$Key.GetValue($Name, $null, $noExpand)
}

function Set-ParametersAcl {
    # Exactly: SYSTEM and Administrators full control, the account read, all inheriting to subkeys (AppExit), no
    # inherited rule. Returns $true when the key had something else.
    param([string]$Path, $AccountSid)
    $rights = [System.Security.AccessControl.RegistryRights]
    $inherit = [System.Security.AccessControl.InheritanceFlags]::ContainerInherit
    $none = [System.Security.AccessControl.PropagationFlags]::None
    $allow = [System.Security.AccessControl.AccessControlType]::Allow
    $wanted = @(
        @((New-Object System.Security.Principal.SecurityIdentifier 'S-1-5-18'), $rights::FullControl),
        @((New-Object System.Security.Principal.SecurityIdentifier 'S-1-5-32-544'), $rights::FullControl)
    )
    if ($AccountSid) { $wanted += , @($AccountSid, $rights::ReadKey) }
    $key = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey($Path, [Microsoft.Win32.RegistryKeyPermissionCheck]::ReadWriteSubTree,
        ($rights::ReadKey -bor $rights::ChangePermissions -bor $rights::ReadPermissions))
    try {
        $acl = $key.GetAccessControl([System.Security.AccessControl.AccessControlSections]::Access)
        $have = New-Object System.Collections.Generic.List[string]
        foreach ($rule in $acl.GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier])) {
            $have.Add(('{0}|{1}|{2}|{3}|{4}|{5}' -f $rule.IdentityReference.Value, [int]$rule.RegistryRights,
                    $rule.InheritanceFlags, $rule.PropagationFlags, $rule.AccessControlType, $rule.IsInherited))
        }
        $want = New-Object System.Collections.Generic.List[string]
        foreach ($pair in $wanted) {
            $want.Add(('{0}|{1}|{2}|{3}|{4}|{5}' -f $pair[0].Value, [int]$pair[1], $inherit, $none, $allow, $false))
        }
        $have.Sort(); $want.Sort()
        if ($acl.AreAccessRulesProtected -and [string]::Join(';', $have.ToArray()) -eq [string]::Join(';', $want.ToArray())) {
            return $false
        }
        if ($PSCmdlet.ShouldProcess("HKLM\$Path", 'Restrict access to SYSTEM, Administrators and the service account')) {
            $new = New-Object System.Security.AccessControl.RegistrySecurity
            $new.SetAccessRuleProtection($true, $false)
            foreach ($pair in $wanted) {
                $new.AddAccessRule((New-Object System.Security.AccessControl.RegistryAccessRule($pair[0], $pair[1], $inherit, $none, $allow)))
            }
            $key.SetAccessControl($new)
        }
        return $true
    }
    finally {
        $key.Dispose()
    }
}

function Get-ExpandedNames {
    # The names ExpandEnvironmentStrings may look up in a value, as Windows scans it: %NAME% is replaced when NAME is
    # defined, there is no escape, and the closing '%' of an undefined name opens the next candidate (dotnet/runtime's
    # tests of Environment.ExpandEnvironmentVariables). Every candidate is listed, defined or not.
    param([string]$Value)
    $names = New-Object System.Collections.Generic.List[string]
    $i = 0
    while ($true) {
        $start = $Value.IndexOf('%', $i)
        if ($start -lt 0) { break }
        $end = $Value.IndexOf('%', $start + 1)
        if ($end -lt 0) { break }
        if ($end -gt $start + 1) { $names.Add($Value.Substring($start + 1, $end - $start - 1)) }
        $i = $end
    }
    , $names.ToArray()
}

function Get-AppProcess {
    # The application NSSM started (a child of nssm.exe that is not the console host NSSM allocated for it).
    param([int]$NssmPid)
    if ($NssmPid -le 0) { return $null }
    foreach ($child in @(Get-CimInstance -ClassName Win32_Process -Filter "ParentProcessId=$NssmPid")) {
        if ($child.Name -ne 'conhost.exe') { return $child }
    }
    $null
}

# The venv the junction points to now.
$venvTarget = $null
$link = Get-Item -LiteralPath $VenvLink -Force -ErrorAction SilentlyContinue
if ($link -and $link.LinkType -eq 'Junction') { $venvTarget = (@($link.Target)[0]).TrimEnd('\') }
if ($PendingVenv -and $WhatIfPreference) { $venvTarget = $PendingVenv.TrimEnd('\') }

# NSSM passes every AppEnvironmentExtra value through ExpandEnvironmentStrings in its own process (env.cpp
# set_environment_block): the environment the service control manager gave it, then the service's own variables.
# A secret in which a defined name stands between two '%' would reach Prefect changed, so it is refused here, before
# anything is written; the names defined are those of this process (a superset of the system's), of the machine and
# of the service. The names of service and variable are returned (refused), never the value.
$definedNames = [System.Collections.Generic.HashSet[string]]::new([System.StringComparer]::OrdinalIgnoreCase)
foreach ($scope in 'Process', 'Machine') {
    foreach ($defined in [Environment]::GetEnvironmentVariables($scope).Keys) { $null = $definedNames.Add([string]$defined) }
}
$expanding = New-Object System.Collections.Generic.List[string]
foreach ($svc in $Services) {
    $names = [System.Collections.Generic.HashSet[string]]::new($definedNames, [System.StringComparer]::OrdinalIgnoreCase)
    foreach ($envName in $svc.environment.Keys) { $null = $names.Add([string]$envName) }
    foreach ($envName in $svc.environment.Keys) {
        if (-not (Test-SecretName ([string]$envName))) { continue }
        foreach ($candidate in (Get-ExpandedNames ([string]$svc.environment[$envName]))) {
            if ($names.Contains($candidate)) { $expanding.Add("$($svc.name): $envName"); break }
        }
    }
}
# A name already taken by a service that nssm.exe does not run (WinRM, an agent): `nssm set ImagePath` would replace
# that service's program, and a worker to remove would remove that service, so it is never touched.
$foreign = New-Object System.Collections.Generic.List[string]
foreach ($serviceName in @(@($Services | ForEach-Object { [string]$_.name }) + $AbsentServices)) {
    $existing = Get-CimInstance -ClassName Win32_Service -Filter "Name='$serviceName'"
    if ($existing -and ([string]$existing.PathName).Trim('"', ' ') -notmatch '(^|\\)nssm\.exe$') {
        $foreign.Add("$serviceName runs $($existing.PathName)")
    }
}
if ($expanding.Count -gt 0 -or $foreign.Count -gt 0) {
    # Reported, not thrown: the task is no_log (its input holds the secrets), the next tasks show the names.
    $Ansible.Result = @{ services = @{}; refused = $expanding.ToArray(); foreign = $foreign.ToArray() }
    return
}

$report = @{}
$before = @{}
$after = @{}
foreach ($svc in $Services) {
    $name = [string]$svc.name
    $application = [string]$svc.application
    if ($venvTarget -and $application.StartsWith($VenvLink.TrimEnd('\') + '\', [System.StringComparison]::OrdinalIgnoreCase)) {
        $application = $venvTarget + $application.Substring($VenvLink.TrimEnd('\').Length)
    }
    $wantEnvList = New-Object System.Collections.Generic.List[string]
    $wantValues = @{}
    foreach ($envName in $svc.environment.Keys) {
        $wantEnvList.Add("$envName=$($svc.environment[$envName])")
        $wantValues[[string]$envName] = [string]$svc.environment[$envName]
    }
    $wantEnv = Get-SortedLines $wantEnvList.ToArray()
    $wanted = [ordered]@{ Application = $application }
    foreach ($key in $svc.params.Keys) { $wanted[[string]$key] = [string]$svc.params[$key] }

    $service = Get-CimInstance -ClassName Win32_Service -Filter "Name='$name'"
    # Running, paused (NSSM throttling restarts) or start pending: nssm.exe has a process.
    $running = [bool]($service -and [int]$service.ProcessId -gt 0)
    $entry = @{
        installed = $false; was_running = $running; changes = New-Object System.Collections.Generic.List[string]
        acl_changed = $false; account_differs = $false; restart = $false; application = $application
    }
    $report[$name] = $entry
    $after[$name] = [ordered]@{}
    foreach ($key in $wanted.Keys) { $after[$name][$key] = $wanted[$key] }
    $after[$name]['AppExit'] = [string]$svc.exit_action
    $after[$name]['AppEnvironmentExtra'] = Get-MaskedEnvironment $wantEnv $null

    # The account first: nothing is installed for an account that does not exist.
    $accountSid = ConvertTo-Sid ([string]$svc.account)
    if (-not $accountSid -and -not $WhatIfPreference) {
        throw "Service account '$($svc.account)' of $name does not exist or cannot be resolved on $env:COMPUTERNAME"
    }
    if (-not $service) {
        $entry.installed = $true
        $entry.changes.Add('install')
        $before[$name] = @{}
        $Ansible.Changed = $true
        if (-not $PSCmdlet.ShouldProcess($name, 'Install NSSM service')) { continue }
        Invoke-Nssm @('install', $name, $application)
        # nssm install registers an automatic service as LocalSystem (service.cpp install_service): until win_service
        # sets the account, a reboot must not start Prefect as SYSTEM.
        Invoke-Nssm @('set', $name, 'Start', 'SERVICE_DEMAND_START')
        $service = Get-CimInstance -ClassName Win32_Service -Filter "Name='$name'"
    }
    elseif (([string]$service.PathName).Trim('"', ' ') -ne $Nssm) {
        # Another NSSM build (a new bundle unpacks it under another digest directory).
        $entry.changes.Add('ImagePath')
        $imagePath = if ($Nssm.Contains(' ')) { '"' + $Nssm + '"' } else { $Nssm }
        if ($PSCmdlet.ShouldProcess($name, 'Set ImagePath')) { Invoke-Nssm @('set', $name, 'ImagePath', $imagePath) }
    }

    $parametersPath = "SYSTEM\CurrentControlSet\Services\$name\Parameters"
    $parameters = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey($parametersPath)
    if (-not $parameters) { throw "$name is not an NSSM service: HKLM\$parametersPath does not exist" }
    $parameters.Dispose()
    $entry.acl_changed = Set-ParametersAcl -Path $parametersPath -AccountSid $accountSid

    $parameters = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey($parametersPath)
    try {
        $current = [ordered]@{}
        foreach ($key in $wanted.Keys) { $current[$key] = Read-Setting -Key $parameters -Name $key }
        $exitKey = $parameters.OpenSubKey('AppExit')
        $current['AppExit'] = $ExitDefault
        if ($exitKey) {
            try { if ($exitKey.GetValue('')) { $current['AppExit'] = [string]$exitKey.GetValue('') } } finally { $exitKey.Dispose() }
        }
        $haveEnv = @()
        $envOk = $true
        if ($parameters.GetValueNames() -contains 'AppEnvironmentExtra') {
            # NSSM reads only REG_MULTI_SZ here; a value of another kind is rewritten.
            $envOk = $parameters.GetValueKind('AppEnvironmentExtra') -eq [Microsoft.Win32.RegistryValueKind]::MultiString
            if ($envOk) { $haveEnv = Get-SortedLines ([string[]]$parameters.GetValue('AppEnvironmentExtra')) }
        }
        $changedAt = 0
        if ($parameters.GetValueNames() -contains $changedValue) { $changedAt = [long]$parameters.GetValue($changedValue) }
    }
    finally {
        $parameters.Dispose()
    }
    $haveValues = @{}
    foreach ($line in $haveEnv) { $pair = $line.Split([char[]]'=', 2); $haveValues[$pair[0]] = $pair[1] }
    $current['AppEnvironmentExtra'] = Get-MaskedEnvironment $haveEnv $null
    if (-not $entry.installed) { $before[$name] = $current }

    foreach ($key in $wanted.Keys) {
        if ($null -eq $current[$key] -or $current[$key] -cne $wanted[$key]) {
            $entry.changes.Add($key)
            if ($PSCmdlet.ShouldProcess($name, "Set $key")) { Invoke-Nssm @('set', $name, $key, $wanted[$key]) }
        }
    }
    if ($current['AppExit'] -ne [string]$svc.exit_action) {
        $entry.changes.Add('AppExit')
        if ($PSCmdlet.ShouldProcess($name, 'Set AppExit')) { Invoke-Nssm @('set', $name, 'AppExit', 'Default', [string]$svc.exit_action) }
    }
    if (-not $envOk -or [string]::Join("`n", $haveEnv) -cne [string]::Join("`n", $wantEnv)) {
        $entry.changes.Add('AppEnvironmentExtra')
        $after[$name]['AppEnvironmentExtra'] = Get-MaskedEnvironment $wantEnv $haveValues
        if ($PSCmdlet.ShouldProcess($name, 'Set AppEnvironmentExtra')) {
            $writable = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey($parametersPath, $true)
            try {
                if ($wantEnv.Count -gt 0) { $writable.SetValue('AppEnvironmentExtra', [string[]]$wantEnv, [Microsoft.Win32.RegistryValueKind]::MultiString) }
                else { $writable.DeleteValue('AppEnvironmentExtra', $false) }
            }
            finally {
                $writable.Dispose()
            }
        }
    }
    if ($entry.changes.Count -gt 0 -and -not $WhatIfPreference) {
        # When the settings last changed: an application started before it still runs the old ones.
        $changedAt = [DateTime]::UtcNow.ToFileTimeUtc()
        $writable = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey($parametersPath, $true)
        try { $writable.SetValue($changedValue, $changedAt, [Microsoft.Win32.RegistryValueKind]::QWord) } finally { $writable.Dispose() }
    }

    $objectSid = if ($service) { ConvertTo-Sid ([string]$service.StartName) } else { $null }
    $entry.account_differs = -not $objectSid -or -not $accountSid -or $objectSid -ne $accountSid
    if ($running) {
        $app = Get-AppProcess -NssmPid ([int]$service.ProcessId)
        $stale = $true
        if ($app) {
            $entry.app_started = $app.CreationDate.ToUniversalTime().ToString('o')
            $stale = $app.CreationDate.ToUniversalTime().ToFileTimeUtc() -lt $changedAt -or
                -not [string]::Equals([string]$app.ExecutablePath, $application, [System.StringComparison]::OrdinalIgnoreCase)
        }
        $nssmProcess = Get-CimInstance -ClassName Win32_Process -Filter "ProcessId=$([int]$service.ProcessId)"
        # -WhatIf:$false: Invoke-CimMethod honours check mode's -WhatIf and would return nothing.
        $owner = if ($nssmProcess) { Invoke-CimMethod -InputObject $nssmProcess -MethodName GetOwnerSid -WhatIf:$false -Confirm:$false } else { $null }
        $ownerDiffers = -not $owner -or -not $objectSid -or $owner.Sid -ne $objectSid.Value
        $entry.restart = $entry.changes.Count -gt 0 -or $entry.account_differs -or $ownerDiffers -or $stale
    }
    $entry.changes = $entry.changes.ToArray()
    if ($entry.changes.Count -gt 0 -or $entry.acl_changed) { $Ansible.Changed = $true }
}

$Ansible.Result = @{ services = $report; refused = @() }
$Ansible.Diff = @{ before = $before; after = $after }
