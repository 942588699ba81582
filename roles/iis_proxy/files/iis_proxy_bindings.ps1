# The proxy sites' bindings as IIS holds them, sslFlags included, and the one binding flag the role owns on its HTTPS
# bindings: DisableLegacyTLS (64; IIS knows it from Windows Server 2022, build 20348, on: Server 2019 has 1-8 only).
# microsoft.iis.website 1.1.0 cannot keep other flags: for a kept binding it derives use_ccs as Floor(sslFlags / 2) and
# writes sslFlags from SNI and CCS alone (website.ps1:243-258), and website_info reports no sslFlags. So the role reads
# the bindings here first (-ReadOnly), calls the module with bindings only when those differ, and runs this script after
# it: the flag is set, and bits of others that a module rewrite dropped come back from Previous (the earlier read).
# Check mode (-WhatIf) and -ReadOnly write nothing; pending says whether a write would change anything.
[CmdletBinding(SupportsShouldProcess)]
param (
    # Sites whose bindings are reported.
    [string[]]$Sites = @(),
    # The HTTPS bindings whose DisableLegacyTLS bit the role owns: @{ name = <site>; information = 'ip:port:host' }.
    [object[]]$Bindings = @(),
    [bool]$DisableLegacyTls = $true,
    # @{ site; information; ssl_flags } of every binding as a -ReadOnly run reported it before the module ran.
    [object[]]$Previous = @(),
    [switch]$ReadOnly
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
$legacyTlsFlag = [int64]64
$legacyTlsBuild = 20348
# The bits microsoft.iis.website writes itself (SNI 1, CentralCertStore 2).
$moduleFlags = [int64]3

$assembly = Join-Path -Path $env:SystemRoot -ChildPath 'System32\inetsrv\Microsoft.Web.Administration.dll'
Add-Type -LiteralPath $assembly
$manager = New-Object -TypeName Microsoft.Web.Administration.ServerManager
$build = [Environment]::OSVersion.Version.Build
$supported = $build -ge $legacyTlsBuild

function Get-Site {
    param ([string]$Name)
    return @($manager.Sites | Where-Object { $_.Name -eq $Name }) | Select-Object -First 1
}

$found = @()
$flags = @()
foreach ($name in $Sites) {
    $site = Get-Site -Name $name
    if (-not $site) {
        continue
    }
    $list = @(foreach ($binding in $site.Bindings) {
            $information = [string]$binding.BindingInformation
            $value = [int64]$binding.GetAttributeValue('sslFlags')
            $hash = if ($binding.Protocol -eq 'https' -and $binding.CertificateHash) {
                -join @($binding.CertificateHash | ForEach-Object { $_.ToString('X2') })
            }
            else { '' }
            $parts = $information -split ':'
            $flags += @{ site = $name; information = $information; ssl_flags = $value }
            @{ ip = ($parts[0..($parts.Count - 3)] -join ':'); port = [int]$parts[-2]; hostname = $parts[-1]
                protocol = [string]$binding.Protocol; use_sni = [bool]($value -band 1); use_ccs = [bool]($value -band 2)
                certificate_hash = $hash; ssl_flags = $value
            }
        })
    $found += @{ name = $name; bindings = $list }
}

$before = [ordered]@{}
$after = [ordered]@{}
$missing = @()
foreach ($item in $Bindings) {
    $label = '{0} {1}' -f $item.name, $item.information
    $site = Get-Site -Name $item.name
    $binding = if ($site) {
        @($site.Bindings | Where-Object { $_.Protocol -eq 'https' -and $_.BindingInformation -eq $item.information }) |
            Select-Object -First 1
    }
    if (-not $binding) {
        # Not created yet (check mode, or the read before microsoft.iis.website ran): it gets the flag after creation.
        if ($supported -and $DisableLegacyTls) {
            $missing += $label
        }
        continue
    }
    $raw = $binding.GetAttributeValue('sslFlags')
    $current = [int64]$raw
    $wanted = $current
    $earlier = @($Previous | Where-Object { $_.site -eq $item.name -and $_.information -eq $item.information }) |
        Select-Object -First 1
    if ($earlier) {
        $wanted = $wanted -bor ([int64]$earlier.ssl_flags -band (-bnot $moduleFlags))
    }
    if ($supported) {
        $wanted = if ($DisableLegacyTls) { $wanted -bor $legacyTlsFlag } else { $wanted -band (-bnot $legacyTlsFlag) }
    }
    if ($wanted -ne $current) {
        $before[$label] = $current
        $after[$label] = $wanted
        if (-not $ReadOnly) {
            # The schema's type of the value read (an enum or a number, by IIS version).
            $typed = if ($raw -is [enum]) { [enum]::ToObject($raw.GetType(), $wanted) } else { [Convert]::ChangeType($wanted, $raw.GetType()) }
            $binding.SetAttributeValue('sslFlags', $typed)
        }
    }
}

if (-not $ReadOnly -and $missing.Count -gt 0 -and -not $WhatIfPreference) {
    $Ansible.Failed = $true
    $Ansible.Result = @{ error = "these HTTPS bindings are missing after microsoft.iis.website ran, no flag was written: $($missing -join ', ')" }
    return
}
$pending = $after.Count -gt 0 -or $missing.Count -gt 0
if (-not $ReadOnly) {
    $Ansible.Changed = $pending
    if ($after.Count -gt 0 -and $PSCmdlet.ShouldProcess('applicationHost.config', 'Write binding sslFlags')) {
        $manager.CommitChanges()
    }
    foreach ($label in $missing) {
        $after[$label] = 'DisableLegacyTLS once created'
    }
    $Ansible.Diff = @{ before = $before; after = $after }
}
$Ansible.Result = @{ build = $build; legacy_tls_supported = $supported; pending = $pending; site = $found; flags = $flags
    changed_bindings = @($after.Keys)
}
