# Keeps the Prefect service accounts out of Administrators and reports what would undo the role's logon rights.
# - Administrators is found by its SID (S-1-5-32-544): its name is translated on German, French, ... Windows.
#   A direct member is removed (the ADSI calls of ansible.windows.win_group_membership, which finds a group by
#   display name only).
# - Membership through nested groups (a domain group inside Administrators) is read from the account's
#   tokenGroups in the directory; when the directory cannot be asked (a Kerberos session without delegation has no
#   credentials for the domain controller), from an S4U token made by the host's LSA, which needs no delegation but
#   fails once the account is denied network logon. Such a membership cannot be removed from here: the script fails
#   naming the account. If neither works, it warns.
# - A broad group in Administrators (Everyone, Authenticated Users, Users, INTERACTIVE, SERVICE) makes every account
#   an administrator: refused.
# - A Group Policy that defines one of the user rights the role sets replaces the local setting at its next
#   refresh; such a policy is reported (Resultant Set of Policy) as a warning.
[CmdletBinding(SupportsShouldProcess)]
param (
    # Each: name (name, DOMAIN\name or DOMAIN\gmsa$), kind (local, domain or gmsa).
    [Parameter(Mandatory)][object[]]$Accounts,
    # User rights the role grants or denies to the accounts, e.g. SeServiceLogonRight.
    [string[]]$Rights = @()
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$adminsSid = New-Object System.Security.Principal.SecurityIdentifier 'S-1-5-32-544'
$adminsName = $adminsSid.Translate([System.Security.Principal.NTAccount]).Value.Split('\')[-1]
$group = [ADSI]"WinNT://$env:COMPUTERNAME/$adminsName,group"
$direct = @{}
foreach ($raw in $group.psbase.Invoke('Members')) {
    $member = [ADSI]$raw
    $sidBytes = $member.InvokeGet('objectSID')
    $sid = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList $sidBytes, 0
    $direct[$sid.Value] = $true
}
$computerDomain = (Get-CimInstance -ClassName Win32_ComputerSystem).Domain
foreach ($broadSid in @('S-1-1-0', 'S-1-5-11', 'S-1-5-32-545', 'S-1-5-4', 'S-1-5-6')) {
    if ($direct.ContainsKey($broadSid)) {
        $broadName = (New-Object System.Security.Principal.SecurityIdentifier $broadSid).Translate([System.Security.Principal.NTAccount]).Value
        throw "$adminsName on $env:COMPUTERNAME contains $broadName ($broadSid): every account, the Prefect service accounts included, is an administrator; remove it from the group"
    }
}

function Get-NestedAdministrator {
    # $true / $false, or a string saying why it could not be found out.
    param([System.Security.Principal.SecurityIdentifier]$Sid, [string]$Name)
    $reasons = New-Object System.Collections.Generic.List[string]
    try {
        $entry = [ADSI]"LDAP://<SID=$($Sid.Value)>"
        $entry.RefreshCache([string[]]@('tokenGroups'))
        $nested = $false
        foreach ($bytes in $entry.Properties['tokenGroups']) {
            $groupSid = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList $bytes, 0
            if ($direct.ContainsKey($groupSid.Value)) { $nested = $true }
        }
        return $nested
    }
    catch {
        $reasons.Add("directory: $($_.Exception.Message)")
    }
    $upn = '{0}@{1}' -f $Name.Split('\')[-1], $computerDomain
    try {
        $identity = New-Object System.Security.Principal.WindowsIdentity $upn
        try { return $identity.Groups.Contains($adminsSid) } finally { $identity.Dispose() }
    }
    catch {
        $reasons.Add("S4U logon as ${upn}: $($_.Exception.Message)")
    }
    [string]::Join('; ', $reasons.ToArray())
}

function ConvertTo-Sid {
    param([string]$Name)
    $Name = $Name.TrimStart('*') -replace '^\.\\', "$env:COMPUTERNAME\"
    if ($Name -match '^S-1-') { return New-Object System.Security.Principal.SecurityIdentifier $Name }
    try { return ([System.Security.Principal.NTAccount]$Name).Translate([System.Security.Principal.SecurityIdentifier]) }
    catch { return $null }
}

$warnings = New-Object System.Collections.Generic.List[string]
$report = @{}
$resolved = @{}
foreach ($account in $Accounts) {
    $name = [string]$account.name
    $entry = @{ sid = $null; removed_from_administrators = $false; effective_administrator = $null }
    $report[$name] = $entry
    $sid = ConvertTo-Sid $name
    if (-not $sid) {
        # In check mode a local user the run would create does not exist yet.
        if ($WhatIfPreference) { continue }
        throw "Service account '$name' does not exist or cannot be resolved on $env:COMPUTERNAME"
    }
    $entry.sid = $sid.Value
    $resolved[$sid.Value] = $name
    if ($direct.ContainsKey($sid.Value)) {
        $entry.removed_from_administrators = $true
        $Ansible.Changed = $true
        if (-not $PSCmdlet.ShouldProcess($name, "Remove from $adminsName")) { continue }
        $group.Remove("WinNT://$($sid.Value)")
    }
    if ([string]$account.kind -eq 'local') {
        # Local groups cannot contain local groups: direct membership is the only way for a local user.
        $entry.effective_administrator = $false
        continue
    }
    $nested = Get-NestedAdministrator -Sid $sid -Name $name
    if ($nested -is [string]) {
        $warnings.Add("Could not check nested $adminsName membership of $name ($nested); check it by hand or run with Kerberos delegation")
        continue
    }
    $entry.effective_administrator = $nested
    if ($entry.effective_administrator) {
        throw "Service account '$name' is a member of $adminsName on $env:COMPUTERNAME through a nested group; remove it from that group (services must never run as administrators)"
    }
}

try {
    $policies = @(Get-CimInstance -Namespace 'root\rsop\computer' -ClassName RSOP_UserPrivilegeRight -Filter 'precedence=1' -ErrorAction Stop)
}
catch {
    $policies = @()
}
foreach ($policy in $policies) {
    if ($Rights -notcontains [string]$policy.UserRight) { continue }
    $listed = @{}
    foreach ($holder in @($policy.AccountList)) {
        if (-not $holder) { continue }
        $holderSid = ConvertTo-Sid ([string]$holder)
        if ($holderSid) { $listed[$holderSid.Value] = $true }
    }
    foreach ($sidValue in $resolved.Keys) {
        if (-not $listed.ContainsKey($sidValue)) {
            $warnings.Add("Group Policy $($policy.GPOID) defines $($policy.UserRight) on $env:COMPUTERNAME and does not name $($resolved[$sidValue]) (a group it names may hold it): its next refresh replaces what this role set; add the account to that policy")
        }
    }
}

$Ansible.Result = @{ accounts = $report; warnings = @($warnings) }
