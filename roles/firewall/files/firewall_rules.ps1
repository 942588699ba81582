# Read-only: what the firewall role must know before it changes anything (roles/firewall/tasks/rules.yml).
# Rules are read through the same COM object community.windows.win_firewall_rule uses (HNetCfg.FwPolicy2), so a
# rule's Name here is the display name that module matches on, and Grouping is its group.
#  - the rules of the role's group (those the host no longer needs are removed by name). win_firewall_rule matches
#    `name` against every rule's display name, in any group (win_firewall_rule.ps1:178-185), so a group rule whose
#    display name another rule outside the group shares is returned apart (shared_rules), never for removal;
#  - runbook 000's rules, by display name;
#  - built-in rules to disable, by rule name (Get-NetFirewallRule -Name), returned with their translated display name;
#  - the profiles as win_firewall reads them, and the enabled inbound allow rules for WinRM over HTTPS with their
#    profiles and remote addresses, so that turning a profile on (or its inbound default to Block) cannot lock the control
#    node out (plugins/filter/firewall.py firewall_winrm_unreachable decides);
#  - per profile, whether the effective policy applies local rules (Get-NetFirewallProfile -PolicyStore ActiveStore,
#    AllowLocalFirewallRules: False when Group Policy says "Apply local firewall rules: No", and then the role's rules
#    are stored but never applied).
[CmdletBinding()]
param (
    [Parameter(Mandatory)][string]$Group,
    [string[]]$LegacyNames = @(),
    [string[]]$DisableRuleNames = @(),
    [string[]]$Profiles = @(),
    [int]$WinRMPort = 5986
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

function ConvertTo-RuleInfo {
    param($Rule)
    @{
        name = [string]$Rule.Name
        group = [string]$Rule.Grouping
        enabled = [bool]$Rule.Enabled
        action = if ($Rule.Action -eq 0) { 'block' } else { 'allow' }
        direction = if ($Rule.Direction -eq 2) { 'out' } else { 'in' }
        protocol = [int]$Rule.Protocol
        localport = [string]$Rule.LocalPorts
        remoteip = [string]$Rule.RemoteAddresses
    }
}

function Test-PortListed {
    # LocalPorts is '*', or a comma-separated list of ports and ranges ('80,443', '5000-5010').
    param([string]$Ports, [int]$Port)
    foreach ($part in ($Ports -split ',')) {
        $part = $part.Trim()
        if ($part -eq '*') {
            return $true
        }
        if ($part -match '^(\d+)(-(\d+))?$') {
            $low = [int]$Matches[1]
            $high = if ($Matches[3]) { [int]$Matches[3] } else { $low }
            if ($Port -ge $low -and $Port -le $high) {
                return $true
            }
        }
    }
    return $false
}

$fw = New-Object -ComObject HNetCfg.FwPolicy2
$groupRules = @()
$legacy = @()
$winrmRules = @()
# Display names of rules outside the group (-eq and -contains compare case-insensitively, as the module's filter does).
$outside = @($fw.Rules | Where-Object { $_.Grouping -ne $Group } | ForEach-Object { [string]$_.Name })
$shared = @()
foreach ($rule in $fw.Rules) {
    if ($rule.Grouping -eq $Group) {
        if ($outside -contains [string]$rule.Name) {
            $shared += ConvertTo-RuleInfo -Rule $rule
        }
        else {
            $groupRules += ConvertTo-RuleInfo -Rule $rule
        }
    }
    if ($LegacyNames -contains $rule.Name) {
        $legacy += ConvertTo-RuleInfo -Rule $rule
    }
    # 6 = TCP, 256 = any protocol
    if ($rule.Enabled -and $rule.Direction -eq 1 -and $rule.Action -eq 1 -and @(6, 256) -contains $rule.Protocol -and
        (Test-PortListed -Ports $rule.LocalPorts -Port $WinRMPort)) {
        $winrmRules += @{ name = [string]$rule.Name; profiles = [int]$rule.Profiles; remoteip = [string]$rule.RemoteAddresses }
    }
}

$disable = @()
foreach ($ruleName in $DisableRuleNames) {
    $found = Get-NetFirewallRule -Name $ruleName -ErrorAction SilentlyContinue
    foreach ($rule in @($found)) {
        $disable += @{
            rule_name = $ruleName
            name = [string]$rule.DisplayName
            enabled = ([string]$rule.Enabled -eq 'True')
        }
    }
}

$profileState = @{}
foreach ($firewallProfile in $Profiles) {
    $current = Get-NetFirewallProfile -Name $firewallProfile
    $active = Get-NetFirewallProfile -Name $firewallProfile -PolicyStore ActiveStore
    $profileState[$firewallProfile] = @{
        enabled = ([string]$current.Enabled -eq 'True')
        inbound = [string]$current.DefaultInboundAction
        local_rules = [string]$active.AllowLocalFirewallRules
    }
}

$Ansible.Result = @{
    group_rules = @($groupRules)
    shared_rules = @($shared)
    legacy_rules = @($legacy)
    disable_rules = @($disable)
    profiles = $profileState
    winrm_rules = @($winrmRules)
}
