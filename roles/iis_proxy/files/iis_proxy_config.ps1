# IIS settings no module manages (microsoft.iis 1.x): server-level ARR, allowedServerVariables, and per-site
# authentication, SSL and IP restrictions in applicationHost.config <location> paths. Reads every value first,
# writes only those that differ, in one commit; check mode (-WhatIf) reports the same changes and writes nothing.
# Microsoft.Web.Administration reads the effective value (an inherited default counts as the value), so a setting
# already right by inheritance is not written. Collections: `exact` makes the location's list equal to the items
# (inherited entries count), `include` only adds missing items and leaves others' entries alone; an enum attribute is
# compared by its name (Microsoft.Web.Administration reads its number). Before anything is written: every name in
# Principals (URL Authorization's groups and accounts) must resolve to a SID on this host, and a setting of
# system.webServer/security/authorization needs IIS's UrlAuthorizationModule (role service Web-Url-Auth): without it IIS
# ignores those rules and lets every authenticated account through. An attribute value of exactly %COMPUTERNAME% is
# written as this host's computer name; an attribute name child.attribute names an attribute of a child element.
[CmdletBinding(SupportsShouldProcess)]
param (
    [object[]]$Settings = @(),
    [string[]]$RemoveLocations = @(),
    [string[]]$Principals = @()
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$assembly = Join-Path -Path $env:SystemRoot -ChildPath 'System32\inetsrv\Microsoft.Web.Administration.dll'
Add-Type -LiteralPath $assembly
$manager = New-Object -TypeName Microsoft.Web.Administration.ServerManager
$config = $manager.GetApplicationHostConfiguration()

$before = [ordered]@{}
$after = [ordered]@{}

function Format-Value {
    param ($Value)
    if ($null -eq $Value) {
        return ''
    }
    if ($Value -is [bool]) {
        return $Value.ToString().ToLowerInvariant()
    }
    return [string]$Value
}

function ConvertTo-Typed {
    # The new value in the type the schema gave the current one (bool, TimeSpan, numbers; enums read as numbers).
    param ($Current, [string]$Text)
    if ($Current -is [bool]) {
        return [bool]::Parse($Text)
    }
    if ($Current -is [TimeSpan]) {
        return [TimeSpan]::Parse($Text)
    }
    if ($Current -is [int]) {
        return [int]$Text
    }
    if ($Current -is [long]) {
        return [long]$Text
    }
    if ($Current -is [uint32]) {
        return [uint32]$Text
    }
    return $Text
}

function Format-Item {
    param ($Element, [string[]]$Keys)
    $parts = foreach ($key in $Keys) {
        if ($Element -is [System.Collections.IDictionary]) {
            $value = $Element[$key]
        }
        else {
            $value = $Element.GetAttributeValue($key)
            $schema = $Element.Schema.AttributeSchemas[$key]
            if ($schema -and $schema.Type -eq 'enum') {
                $named = @($schema.GetEnumValues() | Where-Object { [int64]$_.Value -eq [int64]$value }) | Select-Object -First 1
                if ($named) { $value = $named.Name }
            }
        }
        '{0}={1}' -f $key, (Format-Value -Value $value)
    }
    return ($parts -join ';')
}

$unresolved = @(foreach ($name in $Principals) {
        try { $null = ([System.Security.Principal.NTAccount]$name).Translate([System.Security.Principal.SecurityIdentifier]) }
        catch { $name }
    })
if ($unresolved.Count -gt 0) {
    $Ansible.Failed = $true
    $Ansible.Result = @{ unresolved = $unresolved
        error = "these names do not resolve to a Windows account or group on this host, nothing was written: $($unresolved -join ', ')" }
    return
}
$authorizing = @($Settings | Where-Object { $_.section -eq 'system.webServer/security/authorization' })
if ($authorizing.Count -gt 0) {
    # Installed (globalModules) and in the effective module list of every site that gets rules.
    $installed = @(foreach ($module in $config.GetSection('system.webServer/globalModules').GetCollection()) { [string]$module['name'] })
    $missing = $installed -notcontains 'UrlAuthorizationModule'
    foreach ($setting in $authorizing) {
        $location = [string]$setting.location
        $section = if ($location) { $config.GetSection('system.webServer/modules', $location) } else { $config.GetSection('system.webServer/modules') }
        $names = @(foreach ($module in $section.GetCollection()) { [string]$module['name'] })
        if ($names -notcontains 'UrlAuthorizationModule') { $missing = $true }
    }
    if ($missing) {
        $Ansible.Failed = $true
        $Ansible.Result = @{ error = 'IIS URL Authorization (role service Web-Url-Auth, UrlAuthorizationModule) is not installed, or is removed from a site''s system.webServer/modules: without it IIS ignores the authorization rules; install it (iis_proxy_features), keep it in the sites'' modules and run again, nothing was written' }
        return
    }
}

foreach ($setting in $Settings) {
    $location = [string]$setting.location
    $label = if ($location) { '{0}:{1}' -f $location, $setting.section } else { $setting.section }
    $section = if ($location) { $config.GetSection($setting.section, $location) } else { $config.GetSection($setting.section) }

    $attributes = $setting.attributes
    if ($attributes) {
        foreach ($name in @($attributes.Keys | Sort-Object)) {
            # child.attribute: an attribute of a child element (windowsAuthentication's extendedProtection).
            $element = $section
            $parts = $name.Split('.')
            foreach ($child in @($parts | Select-Object -SkipLast 1)) {
                $element = $element.GetChildElement($child)
            }
            $attribute = $parts[-1]
            $current = $element.GetAttributeValue($attribute)
            $shown = Format-Value -Value $current
            $wanted = [string]$attributes[$name]
            if ($wanted -ceq '%COMPUTERNAME%') {
                # This host's own account database (basicAuthentication's defaultLogonDomain for local accounts).
                $wanted = $env:COMPUTERNAME
            }
            if ($shown -ne $wanted) {
                $before["$label@$name"] = $shown
                $after["$label@$name"] = $wanted
                $typed = ConvertTo-Typed -Current $current -Text $wanted
                $element.SetAttributeValue($attribute, $typed)
            }
        }
    }

    $wantedCollection = $setting.collection
    if ($wantedCollection) {
        $keys = [string[]]@($wantedCollection.keys)
        $collection = if ($wantedCollection.name) { $section.GetCollection($wantedCollection.name) } else { $section.GetCollection() }
        $have = @(foreach ($element in $collection) { Format-Item -Element $element -Keys $keys })
        $want = @(foreach ($item in @($wantedCollection.items)) { Format-Item -Element $item -Keys $keys })
        $collectionLabel = if ($wantedCollection.name) { "$label/$($wantedCollection.name)" } else { $label }
        if ($wantedCollection.mode -eq 'exact') {
            if (($have -join '|') -cne ($want -join '|')) {
                $before[$collectionLabel] = $have
                $after[$collectionLabel] = $want
                $collection.Clear()
                foreach ($item in @($wantedCollection.items)) {
                    $element = $collection.CreateElement('add')
                    foreach ($key in $keys) {
                        $element.SetAttributeValue($key, [string]$item[$key])
                    }
                    $null = $collection.Add($element)
                }
            }
        }
        else {
            $missing = @($want | Where-Object { $have -notcontains $_ })
            if ($missing.Count -gt 0) {
                $before[$collectionLabel] = $have
                $after[$collectionLabel] = @($have + $missing)
                foreach ($item in @($wantedCollection.items)) {
                    if ($missing -notcontains (Format-Item -Element $item -Keys $keys)) {
                        continue
                    }
                    $element = $collection.CreateElement('add')
                    foreach ($key in $keys) {
                        $element.SetAttributeValue($key, [string]$item[$key])
                    }
                    $null = $collection.Add($element)
                }
            }
        }
    }
}

# Sections the role wrote for a site live in <location path="site"> of applicationHost.config; removing the site
# does not remove them.
$present = @($config.GetLocationPaths())
foreach ($location in $RemoveLocations) {
    if ($present -contains $location) {
        $before["location:$location"] = 'present'
        $after["location:$location"] = 'absent'
        $config.RemoveLocationPath($location)
    }
}

if ($after.Count -gt 0) {
    $Ansible.Changed = $true
    if ($PSCmdlet.ShouldProcess('applicationHost.config', 'Write IIS settings')) {
        $manager.CommitChanges()
    }
}
$Ansible.Diff = @{ before = $before; after = $after }
$Ansible.Result = @{ changed_settings = @($after.Keys) }
