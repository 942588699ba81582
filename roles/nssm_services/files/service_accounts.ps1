# Keeps the Prefect service accounts out of Administrators and reports what would undo the role's logon rights.
# - Administrators is found by its SID (S-1-5-32-544): its name is translated on German, French, ... Windows.
#   A direct member is removed (the ADSI calls of ansible.windows.win_group_membership, which finds a group by
#   display name only).
# - Membership through nested groups: for every domain group that is a direct member of Administrators, the
#   directory is asked whether the account is in that group's chain (LDAP_MATCHING_RULE_IN_CHAIN on memberOf, a
#   base search on the account's object), and whether the group is the account's primary group (primaryGroupID,
#   which memberOf leaves out). The task runs as SYSTEM (become), so the directory is asked with the computer
#   account's credentials, which every domain member has on every run: no delegation, no logon of the service
#   account (an S4U logon fails once the role has denied it network logon), no tokenGroups (readable only by the
#   Windows Authorization Access group in domains made since Server 2003). Group membership is readable by every
#   authenticated principal by default. Such a membership cannot be removed from here: the script fails naming the
#   account and the group. When the directory cannot be asked, the script fails saying why, unless
#   -SkipNestedCheck (nssm_services_nested_admin_check: false), which is reported as a warning on every run.
# - A broad group in Administrators (Everyone, Authenticated Users, Users, INTERACTIVE, SERVICE) makes every account
#   an administrator: refused.
# - A Group Policy that defines one of the user rights the role sets replaces the local setting at its next
#   refresh; such a policy is reported (Resultant Set of Policy) as a warning.
[CmdletBinding(SupportsShouldProcess)]
param (
    # Each: name (name, DOMAIN\name or DOMAIN\gmsa$), kind (local, domain or gmsa), roles (server, worker).
    [Parameter(Mandatory)][object[]]$Accounts,
    # User rights the role grants or denies to the accounts, e.g. SeServiceLogonRight.
    [string[]]$Rights = @(),
    # Do not ask the directory about nested membership (reported as a warning).
    [switch]$SkipNestedCheck,
    # The server and a worker may run as one account (nssm_services_shared_account_allowed); otherwise two names that
    # are one account here, one the server's and one a worker's, are refused.
    [switch]$AllowSameAccount
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$adminsSid = New-Object System.Security.Principal.SecurityIdentifier 'S-1-5-32-544'
$adminsName = $adminsSid.Translate([System.Security.Principal.NTAccount]).Value.Split('\')[-1]
$group = [ADSI]"WinNT://$env:COMPUTERNAME/$adminsName,group"
$direct = @{}
$directNames = @{}
foreach ($raw in $group.psbase.Invoke('Members')) {
    $member = [ADSI]$raw
    $sidBytes = $member.InvokeGet('objectSID')
    $sid = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList $sidBytes, 0
    $direct[$sid.Value] = $true
    $directNames[$sid.Value] = try { $sid.Translate([System.Security.Principal.NTAccount]).Value } catch { $sid.Value }
}
# The prefix of the host's own accounts (its SAM domain, e.g. of the built-in Administrator): not domain groups.
$localDomainSid = (Get-CimInstance -ClassName Win32_UserAccount -Filter "LocalAccount=True" | Select-Object -First 1).SID -replace '-\d+$', ''

foreach ($broadSid in @('S-1-1-0', 'S-1-5-11', 'S-1-5-32-545', 'S-1-5-4', 'S-1-5-6')) {
    if ($direct.ContainsKey($broadSid)) {
        $broadName = (New-Object System.Security.Principal.SecurityIdentifier $broadSid).Translate([System.Security.Principal.NTAccount]).Value
        throw "$adminsName on $env:COMPUTERNAME contains $broadName ($broadSid): every account, the Prefect service accounts included, is an administrator; remove it from the group"
    }
}

function ConvertTo-LdapFilterValue {
    # RFC 4515 escaping of a value in a search filter; the backslash first.
    param([string]$Value)
    $Value.Replace('\', '\5c').Replace('*', '\2a').Replace('(', '\28').Replace(')', '\29').Replace([string][char]0, '\00')
}

function Get-NestedAdministrator {
    # The domain group through which the account is in Administrators, '' when none, or $null with the reason in
    # $script:nestedReason when the directory could not be asked.
    param([System.Security.Principal.SecurityIdentifier]$Sid)
    $script:nestedReason = ''
    try {
        $account = [ADSI]"LDAP://<SID=$($Sid.Value)>"
        $account.RefreshCache([string[]]@('primaryGroupID'))
        $primary = '{0}-{1}' -f $Sid.AccountDomainSid.Value, [string]$account.Properties['primaryGroupID'][0]
        foreach ($memberSid in @($direct.Keys)) {
            $member = New-Object System.Security.Principal.SecurityIdentifier $memberSid
            if ($null -eq $member.AccountDomainSid -or $member.AccountDomainSid.Value -eq $localDomainSid) { continue }
            if ($memberSid -eq $primary) { return $directNames[$memberSid] }
            $group = [ADSI]"LDAP://<SID=$memberSid>"
            $group.RefreshCache([string[]]@('distinguishedName', 'objectClass'))
            if (@($group.Properties['objectClass']) -notcontains 'group') { continue }
            $searcher = New-Object System.DirectoryServices.DirectorySearcher $account
            $searcher.SearchScope = [System.DirectoryServices.SearchScope]::Base
            $searcher.Filter = '(memberOf:1.2.840.113556.1.4.1941:={0})' -f (ConvertTo-LdapFilterValue ([string]$group.Properties['distinguishedName'][0]))
            [void]$searcher.PropertiesToLoad.Add('objectSid')
            try {
                if ($null -ne $searcher.FindOne()) { return $directNames[$memberSid] }
            }
            finally {
                $searcher.Dispose()
            }
        }
        return ''
    }
    catch {
        $script:nestedReason = "the directory could not be asked as $env:COMPUTERNAME`$: $($_.Exception.Message)"
        return $null
    }
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
$rolesOf = @{}
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
    # Names the control node could not tell apart (HOST\name, where HOST is this computer's name, and name).
    $roles = @($account.roles)
    if ($resolved.ContainsKey($sid.Value)) {
        $together = @($rolesOf[$sid.Value]) + $roles
        if (-not $AllowSameAccount -and $together -contains 'server' -and $together -contains 'worker') {
            throw "Service accounts '$($resolved[$sid.Value])' and '$name' are one account on $env:COMPUTERNAME ($($sid.Value)), which would run both the Prefect server and a worker: flow code could read the server's database password. Name another worker account, or set nssm_services_shared_account_allowed: true"
        }
        $rolesOf[$sid.Value] = $together
    }
    else {
        $rolesOf[$sid.Value] = $roles
    }
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
    if ($SkipNestedCheck) {
        $warnings.Add("Nested $adminsName membership of $name on $env:COMPUTERNAME is not checked (nssm_services_nested_admin_check: false): check it by hand")
        continue
    }
    $through = Get-NestedAdministrator -Sid $sid
    if ($null -eq $through) {
        throw "Could not check whether service account '$name' is in $adminsName on $env:COMPUTERNAME through a domain group: $script:nestedReason. Make the domain controller reachable, or set nssm_services_nested_admin_check: false and check it by hand"
    }
    $entry.effective_administrator = [bool]$through
    if ($through) {
        throw "Service account '$name' is a member of $adminsName on $env:COMPUTERNAME through the domain group $through; remove it from that group (services must never run as administrators)"
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
