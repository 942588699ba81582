# Port 80 for the people's redirect: http.sys hands a request to the binding that names its host (*:80:<public host>),
# and every other host name or bare address to a binding without one (*:80:), which IIS setup gives its Default Web
# Site. A site of that kind that still holds only what IIS setup put there (the start page) is stopped and kept from
# starting again (serverAutoStart false); any other is left alone and reported, since it may be someone's own site.
# Check mode (-WhatIf) changes nothing and reports the same.
[CmdletBinding(SupportsShouldProcess)]
param (
    [int]$Port = 80,
    # The role's own sites.
    [string[]]$Exclude = @()
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
# What IIS setup writes into %SystemDrive%\inetpub\wwwroot (Windows Server 2016 and later).
$setupName = 'Default Web Site'
$setupFiles = @('iisstart.htm', 'iisstart.png')

$assembly = Join-Path -Path $env:SystemRoot -ChildPath 'System32\inetsrv\Microsoft.Web.Administration.dll'
Add-Type -LiteralPath $assembly
$manager = New-Object -TypeName Microsoft.Web.Administration.ServerManager

$stopped = @()
$kept = @()
foreach ($site in @($manager.Sites)) {
    if ($Exclude -contains $site.Name) {
        continue
    }
    $catchAll = @($site.Bindings | Where-Object { $_.Protocol -eq 'http' -and $_.BindingInformation -match "^(\[[0-9A-Fa-f:.]*\]|[^:\[]*):$($Port):$" })
    if ($catchAll.Count -eq 0) {
        continue
    }
    $state = try { [string]$site.State } catch { 'Unknown' }
    if ($state -ne 'Started' -and -not $site.ServerAutoStart) {
        continue
    }
    $reasons = @()
    if ($site.Name -ne $setupName) {
        $reasons += "it is not IIS's $setupName"
    }
    if (@($site.Bindings).Count -ne 1) {
        $reasons += 'it has other bindings'
    }
    $applications = @($site.Applications)
    if ($applications.Count -ne 1 -or @($applications[0].VirtualDirectories).Count -ne 1) {
        $reasons += 'it has applications or virtual directories of its own'
    }
    else {
        $path = [Environment]::ExpandEnvironmentVariables($applications[0].VirtualDirectories[0].PhysicalPath).TrimEnd('\')
        $content = if (Test-Path -LiteralPath $path) {
            @(Get-ChildItem -LiteralPath $path -Recurse -Force | ForEach-Object { $_.FullName.Substring($path.Length + 1) })
        }
        else { @() }
        $own = @($content | Where-Object { $setupFiles -notcontains $_ })
        if ($own.Count -gt 0) {
            $reasons += "$path holds more than IIS's start page ($(@($own | Select-Object -First 5) -join ', '))"
        }
    }
    if ($reasons.Count -gt 0) {
        $kept += @{ name = $site.Name; bindings = @($catchAll | ForEach-Object { [string]$_.BindingInformation }); reasons = $reasons }
        continue
    }
    $stopped += $site.Name
    if ($PSCmdlet.ShouldProcess($site.Name, 'Stop the site and keep it from starting')) {
        $site.ServerAutoStart = $false
        $manager.CommitChanges()
        if ($state -eq 'Started') {
            $null = $site.Stop()
        }
    }
}

$Ansible.Changed = $stopped.Count -gt 0
$Ansible.Diff = @{ before = @{ started = $stopped }; after = @{ stopped = $stopped } }
$Ansible.Result = @{ stopped = $stopped; kept = $kept }
