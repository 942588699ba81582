# Creates the Prefect root and directories under it and keeps their access rules (roles/common/tasks/dirs.yml).
# Root: no inheritance from the drive (C:\ lets Users create files and folders, so the venvs, NSSM and the tools
# would be writable by every user), full control for SYSTEM and Administrators by SID (independent of the display
# language), no rule for a broad group, plus RootRules. Directories: created if missing (they inherit the root's
# rules), each listed rule present. Rules are added, never removed, except the broad ones on the root and on an
# exclusive directory, which inherits nothing and keeps exactly SYSTEM, Administrators and its listed rules (the
# server's data and logs: the worker accounts, which run flow code, must not read them).
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$Root,
    # Each: account (name, DOMAIN\name or SID string), rights (a FileSystemRights name such as ReadAndExecute).
    [object[]]$RootRules = @(),
    # Each: path, rules (as RootRules), exclusive (bool, optional).
    [object[]]$Directories = @()
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

# Everyone, Users, Authenticated Users, INTERACTIVE, CREATOR OWNER.
$broad = @('S-1-1-0', 'S-1-5-32-545', 'S-1-5-11', 'S-1-5-4', 'S-1-3-0')
$inherit = [System.Security.AccessControl.InheritanceFlags]'ContainerInherit, ObjectInherit'
$propagation = [System.Security.AccessControl.PropagationFlags]::None
$allow = [System.Security.AccessControl.AccessControlType]::Allow
$changes = New-Object System.Collections.Generic.List[string]

function ConvertTo-Sid {
    param([string]$Account)
    if ($Account -match '^S-1-') { return New-Object System.Security.Principal.SecurityIdentifier $Account }
    $name = $Account -replace '^\.\\', "$env:COMPUTERNAME\"
    try {
        return ([System.Security.Principal.NTAccount]$name).Translate([System.Security.Principal.SecurityIdentifier])
    }
    catch {
        # In check mode an account the run would create does not exist yet; otherwise this is an error.
        if ($WhatIfPreference) { return $null }
        throw "Account '$Account' does not exist or cannot be resolved on $env:COMPUTERNAME"
    }
}

function Test-Rule {
    # An explicit allow rule for the SID that inherits to everything below and grants at least $Rights.
    param($Acl, $Sid, [System.Security.AccessControl.FileSystemRights]$Rights)
    foreach ($rule in $Acl.GetAccessRules($true, $false, [System.Security.Principal.SecurityIdentifier])) {
        if ($rule.IdentityReference -eq $Sid -and $rule.AccessControlType -eq $allow -and
            $rule.InheritanceFlags -eq $inherit -and $rule.PropagationFlags -eq $propagation -and
            ($rule.FileSystemRights -band $Rights) -eq $Rights) {
            return $true
        }
    }
    return $false
}

function Set-Directory {
    param([string]$Path, [object[]]$Rules, [bool]$IsRoot, [bool]$Exclusive)
    if (-not (Test-Path -LiteralPath $Path -PathType Container)) {
        $changes.Add("create $Path")
        if (-not $PSCmdlet.ShouldProcess($Path, 'Create directory')) { return }
        $null = [System.IO.Directory]::CreateDirectory($Path)
    }
    $item = Get-Item -LiteralPath $Path -Force
    $acl = $item.GetAccessControl([System.Security.AccessControl.AccessControlSections]::Access)
    $before = $changes.Count
    if ($IsRoot -or $Exclusive) {
        if (-not $acl.AreAccessRulesProtected) {
            # Inherited rules are dropped, not copied: they are the drive's (or the root's, readable by every account).
            $acl.SetAccessRuleProtection($true, $false)
            $changes.Add("$Path inherits nothing from its parent")
        }
    }
    if ($Exclusive) {
        $keep = @{ 'S-1-5-18' = $true; 'S-1-5-32-544' = $true }
        foreach ($wanted in $Rules) {
            if (-not $wanted) { continue }
            $keepSid = ConvertTo-Sid ([string]$wanted.account)
            if ($keepSid) { $keep[$keepSid.Value] = $true }
        }
        foreach ($rule in $acl.GetAccessRules($true, $false, [System.Security.Principal.SecurityIdentifier])) {
            if (-not $keep.ContainsKey($rule.IdentityReference.Value)) {
                $changes.Add("$Path no rule for $($rule.IdentityReference.Value)")
                $null = $acl.PurgeAccessRules($rule.IdentityReference)
            }
        }
        $Rules = @(@{ account = 'S-1-5-18'; rights = 'FullControl' }, @{ account = 'S-1-5-32-544'; rights = 'FullControl' }) + @($Rules)
    }
    if ($IsRoot) {
        foreach ($sid in $broad) {
            $identity = New-Object System.Security.Principal.SecurityIdentifier $sid
            foreach ($rule in $acl.GetAccessRules($true, $false, [System.Security.Principal.SecurityIdentifier])) {
                if ($rule.IdentityReference -eq $identity) {
                    $changes.Add("$Path no rule for $sid")
                    $null = $acl.PurgeAccessRules($identity)
                    break
                }
            }
        }
        $Rules = @(@{ account = 'S-1-5-18'; rights = 'FullControl' }, @{ account = 'S-1-5-32-544'; rights = 'FullControl' }) + @($Rules)
    }
    foreach ($wanted in $Rules) {
        if (-not $wanted) { continue }
        $sid = ConvertTo-Sid ([string]$wanted.account)
        if (-not $sid) { continue }
        $rights = [System.Security.AccessControl.FileSystemRights]([string]$wanted.rights)
        if (-not (Test-Rule -Acl $acl -Sid $sid -Rights $rights)) {
            $acl.AddAccessRule((New-Object System.Security.AccessControl.FileSystemAccessRule($sid, $rights, $inherit, $propagation, $allow)))
            $changes.Add("$Path allow $($wanted.account) $($wanted.rights)")
        }
    }
    if ($changes.Count -gt $before -and $PSCmdlet.ShouldProcess($Path, 'Set access rules')) {
        # Only the DACL is written (no owner or audit change), and inheritable rules propagate to what is below.
        $item.SetAccessControl($acl)
    }
}

# The root first, so that everything created below it inherits its rules.
Set-Directory -Path $Root -Rules $RootRules -IsRoot $true -Exclusive $false
foreach ($directory in $Directories) {
    Set-Directory -Path ([string]$directory.path) -Rules @($directory.rules) -IsRoot $false -Exclusive ([bool]$directory.exclusive)
}

$Ansible.Changed = $changes.Count -gt 0
$Ansible.Result = @{ changes = @($changes) }
if ($changes.Count -gt 0) {
    $Ansible.Diff = @{ before = ''; after = (@($changes) -join "`n") + "`n" }
}
