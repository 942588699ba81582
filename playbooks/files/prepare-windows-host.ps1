#Requires -Version 5.1
#Requires -RunAsAdministrator
<#
.SYNOPSIS
    Prepares a Windows Server 2019/2022 host for enclave.prefect: WinRM over HTTPS (5986) with a certificate of
    the enclave CA, one firewall rule admitting only the control node, Basic authentication and unencrypted
    traffic off.

.DESCRIPTION
    Run once on every Windows host, in an elevated Windows PowerShell, before the first playbook. It:

    1. starts the WinRM service and sets it to start automatically;
    2. picks the listener certificate from Cert:\LocalMachine\My: the one named by -CertificateThumbprint, or
       else the usable one valid longest whose Subject Alternative Name holds -HostName. It refuses a
       certificate that is expired or not yet valid, has no private key, lacks the Server Authentication EKU
       (1.3.6.1.5.5.7.3.1), is self-signed, has no DNS name in its Subject Alternative Name matching
       -HostName (the control node's TLS library ignores the subject CN), or whose subject CN is not -HostName
       (WinRM compares the listener's Hostname with the CN);
    3. creates or corrects the WinRM HTTPS listener (Address *, the port, Hostname, certificate);
    4. turns Basic authentication and unencrypted traffic off for the WinRM service;
    5. creates or corrects one inbound firewall rule admitting TCP 5986 only from -ControlNodeAddress.

    It prints every item with what it found and what it did; a second run changes nothing and says so.
    -WhatIf shows what would change and changes nothing. Other listeners (such as the default HTTP listener on
    5985) and other firewall rules are left alone; enabled rules that admit the same port from elsewhere are
    listed as warnings, because any matching allow rule admits traffic.

.PARAMETER ControlNodeAddress
    IP addresses or subnets of the Ansible control node(s): 10.20.0.15, 10.20.0.0/28, fd00::15. The firewall
    rule admits the port from these only. 'Any', '*' and keywords such as LocalSubnet are refused.

.PARAMETER CertificateThumbprint
    Thumbprint of the listener certificate in Cert:\LocalMachine\My (spaces and other separators are ignored).
    Without it the script chooses, among the usable certificates naming -HostName, the one valid longest.

.PARAMETER Issuer
    When choosing a certificate: only those whose issuer contains this text, e.g. 'CN=Enclave Issuing CA'.

.PARAMETER HostName
    The name the control node uses for this host (its inventory name). Default: this host's FQDN.

.PARAMETER Port
    The HTTPS listener's port. Default: 5986.

.PARAMETER FirewallRuleName
    Name of the firewall rule this script owns. Default: enclave.prefect-WinRM-HTTPS-In.

.EXAMPLE
    .\prepare-windows-host.ps1 -ControlNodeAddress 10.20.0.15 -WhatIf

    Shows what would change on this host and changes nothing.

.EXAMPLE
    .\prepare-windows-host.ps1 -ControlNodeAddress 10.20.0.15, 10.20.0.16 -CertificateThumbprint 3B1E0C...

    Uses the named certificate and admits two control nodes.
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [Parameter(Mandatory = $true)]
    [string[]]$ControlNodeAddress,

    [string]$CertificateThumbprint = '',

    [string]$Issuer = '',

    [string]$HostName = '',

    [ValidateRange(1, 65535)]
    [int]$Port = 5986,

    [ValidateNotNullOrEmpty()]
    [string]$FirewallRuleName = 'enclave.prefect-WinRM-HTTPS-In'
)

Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'

$ServerAuthenticationOid = '1.3.6.1.5.5.7.3.1'
$script:Results = New-Object -TypeName System.Collections.Generic.List[object]

function Add-Result {
    param([string]$Status, [string]$Item, [string]$Detail)
    $script:Results.Add([pscustomobject]@{ Status = $Status; Item = $Item; Detail = $Detail })
}

function Invoke-Change {
    # One change, made unless -WhatIf (or a declined -Confirm) says otherwise; recorded either way.
    param([string]$Item, [string]$Detail, [scriptblock]$Action)
    if ($PSCmdlet.ShouldProcess($Item, $Detail)) {
        & $Action
        Add-Result -Status 'changed' -Item $Item -Detail $Detail
    }
    elseif ($WhatIfPreference) {
        Add-Result -Status 'would change' -Item $Item -Detail $Detail
    }
    else {
        Add-Result -Status 'declined' -Item $Item -Detail $Detail
    }
}

function Get-PropertyText {
    # A property as text, '' when the object does not have it (StrictMode forbids reading a missing one).
    param($InputObject, [string]$Name)
    $property = $InputObject.PSObject.Properties[$Name]
    if ($null -eq $property -or $null -eq $property.Value) {
        return ''
    }
    return [string]$property.Value
}

# --- addresses ---------------------------------------------------------------------------------------------

function ConvertTo-CanonicalIp {
    param([string]$Text)
    $ip = $null
    if (-not [System.Net.IPAddress]::TryParse($Text.Trim(), [ref]$ip)) {
        throw "'$Text' is not an IP address."
    }
    return $ip
}

function ConvertTo-CanonicalAddress {
    # One spelling per address: Windows Firewall stores 10.0.0.0/24 as 10.0.0.0/255.255.255.0 and 10.0.0.7/32
    # as 10.0.0.7, so the rule is compared in this form whichever way it was written.
    param([string]$Address)
    $text = $Address.Trim()
    if ($text -match '^(?<first>[^-/]+)-(?<last>[^-/]+)$') {
        return '{0}-{1}' -f (ConvertTo-CanonicalIp $Matches['first']), (ConvertTo-CanonicalIp $Matches['last'])
    }
    $parts = $text.Split('/')
    if ($parts.Count -gt 2) {
        throw "'$Address' is not an address or subnet."
    }
    $ip = ConvertTo-CanonicalIp $parts[0]
    $bytes = $ip.GetAddressBytes()
    $bits = 8 * $bytes.Length
    $prefix = $bits
    if ($parts.Count -eq 2) {
        $maskText = $parts[1].Trim()
        if ($maskText -match '^\d+$') {
            $prefix = [int]$maskText
        }
        else {
            $maskBytes = (ConvertTo-CanonicalIp $maskText).GetAddressBytes()
            $prefix = 0
            foreach ($maskByte in $maskBytes) {
                $prefix += ([Convert]::ToString($maskByte, 2) -replace '0', '').Length
            }
        }
        if ($prefix -lt 1 -or $prefix -gt $bits) {
            # /0 (0.0.0.0/0, ::/0) admits every address: refused like 'Any'.
            throw "'$Address' has a prefix length outside 1..$bits."
        }
    }
    if ($prefix -eq $bits) {
        return $ip.ToString()
    }
    for ($i = 0; $i -lt $bytes.Length; $i++) {
        $keep = [Math]::Max(0, [Math]::Min(8, $prefix - 8 * $i))
        $bytes[$i] = $bytes[$i] -band ((0xFF -shl (8 - $keep)) -band 0xFF)
    }
    return '{0}/{1}' -f (New-Object -TypeName System.Net.IPAddress -ArgumentList (, $bytes)), $prefix
}

function Get-CanonicalAddressList {
    # Sorted, unique, canonical; text Windows returns that is not an address (a keyword) is kept as it is.
    param([string[]]$Addresses, [switch]$Strict)
    $list = foreach ($address in $Addresses) {
        if ([string]::IsNullOrWhiteSpace($address)) {
            continue
        }
        try {
            ConvertTo-CanonicalAddress $address
        }
        catch {
            if ($Strict) {
                throw
            }
            $address.Trim().ToLowerInvariant()
        }
    }
    return @($list | Sort-Object -Unique)
}

# --- certificates ------------------------------------------------------------------------------------------

function Read-DerHeader {
    # Tag and length of the DER element at Position; Position moves to its content.
    param([byte[]]$Data, [ref]$Position)
    $tag = $Data[$Position.Value]
    $size = [int]$Data[$Position.Value + 1]
    $Position.Value += 2
    if ($size -ge 0x80) {
        $count = $size -band 0x7F
        $size = 0
        for ($i = 0; $i -lt $count; $i++) {
            $size = ($size -shl 8) -bor $Data[$Position.Value]
            $Position.Value += 1
        }
    }
    return [pscustomobject]@{ Tag = $tag; Size = $size }
}

function Get-SanDnsName {
    # DNS names of the Subject Alternative Name, decoded from DER: Format() and DnsNameList depend on the
    # display language of Windows.
    param([System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate)
    $names = New-Object -TypeName System.Collections.Generic.List[string]
    foreach ($extension in $Certificate.Extensions) {
        if ($extension.Oid.Value -ne '2.5.29.17') {
            continue
        }
        $data = $extension.RawData
        $position = 0
        $sequence = Read-DerHeader -Data $data -Position ([ref]$position)
        $end = $position + $sequence.Size
        while ($position -lt $end) {
            $element = Read-DerHeader -Data $data -Position ([ref]$position)
            if ($element.Tag -eq 0x82) {
                $names.Add([System.Text.Encoding]::ASCII.GetString($data, $position, $element.Size))
            }
            $position += $element.Size
        }
    }
    return $names.ToArray()
}

function Test-NameMatch {
    # RFC 6125: a wildcard stands for exactly the left-most label.
    param([string]$Pattern, [string]$Name)
    if ($Pattern.StartsWith('*.')) {
        $dot = $Name.IndexOf('.')
        return ($dot -gt 0) -and ($Name.Substring($dot) -eq $Pattern.Substring(1))
    }
    return $Pattern -eq $Name
}

function Get-SubjectName {
    # The subject's CN (or, without one, its first name of another kind).
    param([System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate)
    return $Certificate.GetNameInfo([System.Security.Cryptography.X509Certificates.X509NameType]::SimpleName, $false)
}

function Test-ServerAuthentication {
    param([System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate)
    foreach ($extension in $Certificate.Extensions) {
        if ($extension.Oid.Value -ne '2.5.29.37') {
            continue
        }
        $usage = New-Object -TypeName System.Security.Cryptography.X509Certificates.X509EnhancedKeyUsageExtension `
            -ArgumentList $extension, $extension.Critical
        foreach ($oid in $usage.EnhancedKeyUsages) {
            if ($oid.Value -eq $ServerAuthenticationOid) {
                return $true
            }
        }
    }
    return $false
}

function Get-CertificateProblem {
    # Why this certificate cannot serve the listener for Name; '' when it can.
    param([System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate, [string]$Name)
    $now = Get-Date
    $problems = @()
    if ($Certificate.NotAfter -lt $now) {
        $problems += 'expired on ' + $Certificate.NotAfter.ToString('yyyy-MM-dd')
    }
    if ($Certificate.NotBefore -gt $now) {
        $problems += 'not valid before ' + $Certificate.NotBefore.ToString('yyyy-MM-dd')
    }
    if (-not $Certificate.HasPrivateKey) {
        $problems += 'no private key on this host'
    }
    if (-not (Test-ServerAuthentication $Certificate)) {
        $problems += "no Server Authentication EKU ($ServerAuthenticationOid)"
    }
    if ($Certificate.Subject -eq $Certificate.Issuer) {
        $problems += 'self-signed (the control node trusts the enclave CA only)'
    }
    $sanNames = @(Get-SanDnsName $Certificate)
    if (-not ($sanNames | Where-Object { Test-NameMatch $_ $Name })) {
        $problems += "its Subject Alternative Name has no DNS name matching $Name (has: $(if ($sanNames) { $sanNames -join ', ' } else { 'none' }))"
    }
    # WinRM refuses a listener whose Hostname differs from the certificate's CN ("The certificate CN and the hostname
    # that were provided do not match"), so the CN must name the host too.
    if (-not (Test-NameMatch (Get-SubjectName $Certificate) $Name)) {
        $problems += "its subject CN '$(Get-SubjectName $Certificate)' is not $Name (WinRM compares the listener's Hostname with the CN)"
    }
    return ($problems -join '; ')
}

function Select-ListenerCertificate {
    param([string]$Name)
    if ($CertificateThumbprint) {
        $thumbprint = ($CertificateThumbprint -replace '[^0-9A-Fa-f]', '').ToUpperInvariant()
        if ($thumbprint.Length -ne 40) {
            throw "-CertificateThumbprint '$CertificateThumbprint' is not a SHA-1 thumbprint (40 hexadecimal digits)."
        }
        $certificate = Get-Item -Path "Cert:\LocalMachine\My\$thumbprint" -ErrorAction SilentlyContinue
        if (-not $certificate) {
            throw "No certificate with thumbprint $thumbprint in Cert:\LocalMachine\My (certlm.msc > Personal)."
        }
        $problem = Get-CertificateProblem $certificate $Name
        if ($problem) {
            throw "Certificate $thumbprint ($($certificate.Subject), issued by $($certificate.Issuer)) cannot serve the WinRM listener for ${Name}: $problem."
        }
        return $certificate
    }
    $candidates = @(Get-ChildItem -Path Cert:\LocalMachine\My | Where-Object { -not $Issuer -or $_.Issuer -like "*$Issuer*" })
    # Among the usable ones: a subject CN naming the host first (WinRM compares the listener's Hostname with it), then
    # the one valid longest.
    $usable = @($candidates | Where-Object { -not (Get-CertificateProblem $_ $Name) } |
        Sort-Object -Property @{ Expression = { Test-NameMatch (Get-SubjectName $_) $Name }; Descending = $true },
        @{ Expression = 'NotAfter'; Descending = $true })
    if ($usable.Count -eq 0) {
        $seen = @($candidates | ForEach-Object { "  $($_.Thumbprint) $($_.Subject) (issuer $($_.Issuer)): $(Get-CertificateProblem $_ $Name)" })
        if ($seen.Count -eq 0) {
            $seen = @('  none' + $(if ($Issuer) { " issued by '$Issuer'" } else { '' }))
        }
        throw ("No usable certificate for $Name in Cert:\LocalMachine\My. Enrol one from the enclave CA (Server " +
            "Authentication, $Name in its Subject Alternative Name, private key on this host) or name it with " +
            "-CertificateThumbprint. Certificates seen:`n" + ($seen -join "`n"))
    }
    return $usable[0]
}

# --- what the host should end up like ----------------------------------------------------------------------

if (-not $HostName) {
    $ipProperties = [System.Net.NetworkInformation.IPGlobalProperties]::GetIPGlobalProperties()
    $HostName = $ipProperties.HostName
    if ($ipProperties.DomainName) {
        $HostName = '{0}.{1}' -f $ipProperties.HostName, $ipProperties.DomainName
    }
}
$HostName = $HostName.ToLowerInvariant()

# powershell.exe -File passes "a,b" as one string: split it as the console would.
$ControlNodeAddress = @($ControlNodeAddress | ForEach-Object { $_ -split ',' } | Where-Object { $_.Trim() })
foreach ($address in $ControlNodeAddress) {
    if ($address.Trim() -match '^(\*|any|localsubnet\d?|dns\d?|dhcp\d?|wins\d?|defaultgateway\d?|internet\d?|intranet\d?|intranetremoteaccess\d?|playtodevice\d?|captiveportal\d?)$') {
        throw "-ControlNodeAddress '$address' would admit more than the control node: give its IP addresses or subnets."
    }
}
$wantedAddresses = @(Get-CanonicalAddressList -Addresses $ControlNodeAddress -Strict)
if ($wantedAddresses.Count -eq 0) {
    throw '-ControlNodeAddress names no address.'
}

# Every step records what it found and did; an error stops the steps, never the report of what was done before it.
$failure = $null
try {
    # 1. WinRM service
    $service = Get-Service -Name WinRM
    if ([string]$service.StartType -ne 'Automatic') {
        Invoke-Change -Item 'WinRM service start type' -Detail "$($service.StartType) -> Automatic" -Action {
            Set-Service -Name WinRM -StartupType Automatic -Confirm:$false
        }
    }
    else {
        Add-Result -Status 'ok' -Item 'WinRM service start type' -Detail 'Automatic'
    }
    if ([string]$service.Status -ne 'Running') {
        Invoke-Change -Item 'WinRM service' -Detail "$($service.Status) -> Running" -Action {
            Start-Service -Name WinRM -Confirm:$false
        }
    }
    else {
        Add-Result -Status 'ok' -Item 'WinRM service' -Detail 'Running'
    }
    $winrmRunning = [string](Get-Service -Name WinRM).Status -eq 'Running'

    # 2. certificate
    $certificate = Select-ListenerCertificate -Name $HostName
    $thumbprint = $certificate.Thumbprint.ToUpperInvariant()
    Add-Result -Status 'ok' -Item 'listener certificate' -Detail ("$thumbprint $($certificate.Subject), issued by $($certificate.Issuer), " +
        'valid until ' + $certificate.NotAfter.ToString('yyyy-MM-dd'))
    $chain = New-Object -TypeName System.Security.Cryptography.X509Certificates.X509Chain
    # Revocation lists are usually out of reach in an enclave; the control node does not check them either.
    $chain.ChainPolicy.RevocationMode = [System.Security.Cryptography.X509Certificates.X509RevocationMode]::NoCheck
    if (-not $chain.Build($certificate)) {
        $status = @($chain.ChainStatus | ForEach-Object { $_.StatusInformation.Trim() }) -join ' '
        Add-Result -Status 'warning' -Item 'certificate chain' -Detail ("does not build on this host ($status): the listener sends only the " +
            'chain Windows can build, so the control node needs every CA certificate up to the root in its CA file')
    }

    # 3. HTTPS listener
    $listenerItem = "WinRM HTTPS listener (*:$Port)"
    $listenerValues = @{ Hostname = $HostName; CertificateThumbprint = $thumbprint; Port = [string]$Port }
    if (-not $winrmRunning) {
        Add-Result -Status 'would change' -Item $listenerItem -Detail "checked once WinRM runs: Hostname $HostName, certificate $thumbprint"
    }
    else {
        $listener = @(Get-WSManInstance -ResourceURI 'winrm/config/Listener' -Enumerate |
            Where-Object { (Get-PropertyText $_ 'Transport') -eq 'HTTPS' -and (Get-PropertyText $_ 'Address') -eq '*' -and
                (Get-PropertyText $_ 'Source') -ne 'Compatibility' })
        if ($listener.Count -eq 0) {
            Invoke-Change -Item $listenerItem -Detail "created: Hostname $HostName, certificate $thumbprint" -Action {
                New-WSManInstance -ResourceURI 'winrm/config/Listener' -SelectorSet @{ Address = '*'; Transport = 'HTTPS' } `
                    -ValueSet $listenerValues | Out-Null
            }
        }
        else {
            $current = $listener[0]
            $differences = @()
            if ((Get-PropertyText $current 'Port') -ne [string]$Port) {
                $differences += "port $(Get-PropertyText $current 'Port') -> $Port"
            }
            if ((Get-PropertyText $current 'Hostname') -ne $HostName) {
                $differences += "Hostname '$(Get-PropertyText $current 'Hostname')' -> $HostName"
            }
            $currentThumbprint = (Get-PropertyText $current 'CertificateThumbprint') -replace '[^0-9A-Fa-f]', ''
            if ($currentThumbprint.ToUpperInvariant() -ne $thumbprint) {
                $differences += "certificate '$currentThumbprint' -> $thumbprint"
            }
            if ((Get-PropertyText $current 'Enabled') -ne 'true') {
                $differences += 'disabled -> enabled'
            }
            if ($differences.Count -eq 0) {
                Add-Result -Status 'ok' -Item $listenerItem -Detail "Hostname $HostName, certificate $thumbprint"
            }
            elseif ((Get-PropertyText $current 'Source') -eq 'GPO') {
                Add-Result -Status 'blocked' -Item $listenerItem -Detail ("set by Group Policy, which must change instead: " + ($differences -join '; '))
            }
            else {
                $listenerValues['Enabled'] = 'true'
                Invoke-Change -Item $listenerItem -Detail ($differences -join '; ') -Action {
                    Set-WSManInstance -ResourceURI 'winrm/config/Listener' -SelectorSet @{ Address = '*'; Transport = 'HTTPS' } `
                        -ValueSet $listenerValues | Out-Null
                }
            }
        }
    }

    # 4. service authentication: no Basic, no unencrypted messages; Kerberos or Negotiate must stay usable
    if ($winrmRunning) {
        $settings = @(
            @{ Path = 'WSMan:\localhost\Service\Auth\Basic'; Item = 'WinRM service Basic authentication' },
            @{ Path = 'WSMan:\localhost\Service\AllowUnencrypted'; Item = 'WinRM service unencrypted traffic' }
        )
        foreach ($setting in $settings) {
            $current = Get-Item -Path $setting.Path
            if ([string]$current.Value -ne 'true') {
                Add-Result -Status 'ok' -Item $setting.Item -Detail 'off'
            }
            elseif (Get-PropertyText $current 'SourceOfValue') {
                Add-Result -Status 'blocked' -Item $setting.Item -Detail ('on by Group Policy (Administrative Templates > Windows Components > ' +
                    'Windows Remote Management > WinRM Service): turn it off there')
            }
            else {
                Invoke-Change -Item $setting.Item -Detail 'on -> off' -Action {
                    Set-Item -Path $setting.Path -Value $false -Force -Confirm:$false
                }
            }
        }
        $kerberos = [string](Get-Item -Path 'WSMan:\localhost\Service\Auth\Kerberos').Value
        $negotiate = [string](Get-Item -Path 'WSMan:\localhost\Service\Auth\Negotiate').Value
        if ($kerberos -ne 'true' -and $negotiate -ne 'true') {
            Add-Result -Status 'warning' -Item 'WinRM service Kerberos and Negotiate' -Detail 'both off: the control node cannot log on'
        }
    }
    else {
        Add-Result -Status 'would change' -Item 'WinRM service Basic and unencrypted' -Detail 'checked once WinRM runs'
    }

    # 5. firewall: one allow rule for the control node; the default inbound policy blocks everything else
    $ruleItem = "firewall rule $FirewallRuleName (TCP $Port in)"
    $ruleSettings = @{
        Direction     = 'Inbound'
        Action        = 'Allow'
        Enabled       = 'True'
        Profile       = 'Any'
        Protocol      = 'TCP'
        LocalPort     = [string]$Port
        RemoteAddress = $wantedAddresses
    }
    $rule = Get-NetFirewallRule -Name $FirewallRuleName -ErrorAction SilentlyContinue
    if (-not $rule) {
        Invoke-Change -Item $ruleItem -Detail ('created: from ' + ($wantedAddresses -join ', ')) -Action {
            New-NetFirewallRule -Name $FirewallRuleName -DisplayName "enclave.prefect: WinRM over HTTPS ($Port) from the control node" `
                -Description 'Created by prepare-windows-host.ps1 of the enclave.prefect collection.' -Group 'enclave.prefect' `
                @ruleSettings -Confirm:$false | Out-Null
        }
    }
    else {
        $portFilter = $rule | Get-NetFirewallPortFilter
        $haveAddresses = @(Get-CanonicalAddressList -Addresses @(($rule | Get-NetFirewallAddressFilter).RemoteAddress))
        $differences = @()
        foreach ($name in 'Direction', 'Action', 'Enabled', 'Profile') {
            if ([string]$rule.$name -ne $ruleSettings[$name]) {
                $differences += "$name $($rule.$name) -> $($ruleSettings[$name])"
            }
        }
        if ([string]$portFilter.Protocol -ne 'TCP' -or (@($portFilter.LocalPort) -join ',') -ne [string]$Port) {
            $differences += "TCP $(@($portFilter.LocalPort) -join ',') -> $Port"
        }
        if (($haveAddresses -join ',') -ne ($wantedAddresses -join ',')) {
            $differences += "from $($haveAddresses -join ', ') -> $($wantedAddresses -join ', ')"
        }
        if ($differences.Count -eq 0) {
            Add-Result -Status 'ok' -Item $ruleItem -Detail ('from ' + ($wantedAddresses -join ', '))
        }
        else {
            Invoke-Change -Item $ruleItem -Detail ($differences -join '; ') -Action {
                Set-NetFirewallRule -Name $FirewallRuleName @ruleSettings -Confirm:$false
            }
        }
    }

    # Any enabled allow rule that lists the port admits it too (rules for every port are not listed).
    $portFilters = @(Get-NetFirewallPortFilter -All -PolicyStore ActiveStore | Where-Object {
            $listed = $false
            foreach ($range in @($_.LocalPort)) {
                if ([string]$range -match '^(\d+)(-(\d+))?$') {
                    $low = [int]$Matches[1]
                    $high = if ($Matches[3]) { [int]$Matches[3] } else { $low }
                    if ($Port -ge $low -and $Port -le $high) {
                        $listed = $true
                    }
                }
            }
            $listed -and @('TCP', 'Any') -contains [string]$_.Protocol
        })
    foreach ($filter in $portFilters) {
        $other = $filter | Get-NetFirewallRule
        if ($other.Name -eq $FirewallRuleName -or [string]$other.Enabled -ne 'True' -or [string]$other.Direction -ne 'Inbound' -or
            [string]$other.Action -ne 'Allow') {
            continue
        }
        $from = @(($other | Get-NetFirewallAddressFilter).RemoteAddress) -join ', '
        Add-Result -Status 'warning' -Item "firewall rule $($other.Name)" -Detail ("'$($other.DisplayName)' also admits TCP $Port from ${from}: " +
            "Disable-NetFirewallRule -Name '$($other.Name)' unless something else needs it")
    }
    foreach ($firewallProfile in Get-NetFirewallProfile -PolicyStore ActiveStore) {
        if ([string]$firewallProfile.Enabled -eq 'False') {
            Add-Result -Status 'warning' -Item "firewall profile $($firewallProfile.Name)" -Detail 'Windows Firewall is off: the rule restricts nothing there'
        }
        elseif ([string]$firewallProfile.DefaultInboundAction -eq 'Allow') {
            Add-Result -Status 'warning' -Item "firewall profile $($firewallProfile.Name)" -Detail 'inbound traffic is allowed by default: the rule restricts nothing there'
        }
    }
}
catch {
    $failure = $_
}

# --- report ------------------------------------------------------------------------------------------------

$script:Results | Format-Table -Property 'Status', 'Item', 'Detail' -AutoSize -Wrap | Out-String -Width 220 | Write-Host
if ($failure) {
    Write-Host "Stopped by an error; the items above were found or done before it: $($failure.Exception.Message)"
    exit 1
}
$changed = @($script:Results | Where-Object { $_.Status -eq 'changed' }).Count
$pending = @($script:Results | Where-Object { $_.Status -eq 'would change' -or $_.Status -eq 'declined' }).Count
$blocked = @($script:Results | Where-Object { $_.Status -eq 'blocked' }).Count
if ($WhatIfPreference) {
    Write-Host "-WhatIf: $pending change(s) would be made on $HostName; nothing was changed."
}
elseif ($changed -eq 0 -and $pending -eq 0) {
    Write-Host "Nothing changed: $HostName was already prepared."
}
else {
    Write-Host "$changed change(s) made on $HostName$(if ($pending) { ", $pending declined" })."
}
if ($blocked -gt 0) {
    Write-Host "$blocked item(s) are set by Group Policy and could not be changed here (status 'blocked' above)."
    exit 1
}
Write-Host "Check from the control node: ansible -i ~/prefect-inventory/hosts.yml $HostName -m ansible.windows.win_ping"
