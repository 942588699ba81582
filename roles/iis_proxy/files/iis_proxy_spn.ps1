# Reads, never changes: which directory accounts hold the Kerberos service principal name HTTP/<host> (and
# HOST/<host>, which covers HTTP for a computer account), found as `setspn -Q` finds them: a global catalog search
# of servicePrincipalName across the forest. Returns what a browser's Kerberos ticket request would meet, and one
# warning per problem; NTLM still works when Kerberos cannot, so nothing here fails the run.
# SupportsShouldProcess: win_powershell runs it in check mode too (it skips and reports a change otherwise).
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$HostName,
    [string]$PoolAccount = ''
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$system = Get-CimInstance -ClassName Win32_ComputerSystem
$computerFqdn = ('{0}.{1}' -f $env:COMPUTERNAME, $system.Domain).ToLowerInvariant()
$name = $HostName.ToLowerInvariant()
$warnings = [System.Collections.Generic.List[string]]::new()
$holders = [System.Collections.Generic.List[object]]::new()

# useAppPoolCredentials: a domain pool account decrypts the tickets; otherwise the computer account does.
$expected = if ($PoolAccount) { ($PoolAccount -split '\\')[-1] } else { "$env:COMPUTERNAME$" }

if (-not $system.PartOfDomain) {
    $warnings.Add("$env:COMPUTERNAME is not in a domain: browsers fall back to NTLM, no Kerberos for $HostName.")
}
else {
    try {
        $forest = [System.DirectoryServices.ActiveDirectory.Forest]::GetCurrentForest()
        $root = New-Object -TypeName System.DirectoryServices.DirectoryEntry -ArgumentList "GC://$($forest.Name)"
        $searcher = New-Object -TypeName System.DirectoryServices.DirectorySearcher -ArgumentList $root
        $searcher.Filter = "(|(servicePrincipalName=HTTP/$name)(servicePrincipalName=HOST/$name))"
        $null = $searcher.PropertiesToLoad.Add('samaccountname')
        $null = $searcher.PropertiesToLoad.Add('serviceprincipalname')
        foreach ($entry in $searcher.FindAll()) {
            $spns = @($entry.Properties['serviceprincipalname'] | Where-Object { $_ -in @("HTTP/$name", "HOST/$name") })
            $holders.Add(@{ account = [string]$entry.Properties['samaccountname'][0]; spns = $spns })
        }
    }
    catch {
        $warnings.Add("The SPN HTTP/$HostName could not be looked up in the directory: $($_.Exception.Message)")
    }
}

$http = @($holders | Where-Object { $_.spns -contains "HTTP/$name" })
$hostSpn = @($holders | Where-Object { $_.spns -contains "HOST/$name" })
if ($system.PartOfDomain -and $warnings.Count -eq 0) {
    if ($http.Count -gt 1) {
        $warnings.Add("HTTP/$HostName is registered on several accounts ($(($http | ForEach-Object { $_.account }) -join ', ')): the KDC refuses duplicated SPNs and browsers fall back to NTLM. Keep it on $expected only (setspn -D on the others).")
    }
    elseif ($http.Count -eq 1 -and $http[0].account -ne $expected) {
        $warnings.Add("HTTP/$HostName is registered on $($http[0].account), but $expected decrypts the tickets: setspn -D HTTP/$HostName $($http[0].account), then setspn -S HTTP/$HostName $expected.")
    }
    elseif ($http.Count -eq 0) {
        # HOST/<name> on the computer account covers HTTP when the pool runs as ApplicationPoolIdentity.
        $covered = (-not $PoolAccount) -and ($hostSpn | Where-Object { $_.account -eq $expected })
        if (-not $covered) {
            $warnings.Add("No account holds HTTP/$HostName: browsers fall back to NTLM. Register it on $expected (setspn -S HTTP/$HostName $expected).")
        }
    }
}

$Ansible.Result = @{
    spn = "HTTP/$HostName"
    computer = $computerFqdn
    expected_account = $expected
    holders = @($holders)
    warnings = @($warnings)
}
