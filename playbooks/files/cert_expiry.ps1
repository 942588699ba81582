# Reads, never changes: subject and days to expiry of certificates of Cert:\LocalMachine\My by thumbprint (verify.yml).
[CmdletBinding()]
param (
    [Parameter(Mandatory)][string[]]$Thumbprints
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$now = Get-Date
$Ansible.Result = @{
    certificates = @(foreach ($thumbprint in $Thumbprints) {
            $cert = Get-Item -LiteralPath "Cert:\LocalMachine\My\$($thumbprint.ToUpperInvariant())" -ErrorAction SilentlyContinue
            if ($cert) {
                @{ thumbprint = $cert.Thumbprint; found = $true; subject = $cert.Subject
                    not_after = $cert.NotAfter.ToUniversalTime().ToString('o'); days_left = [int][Math]::Floor(($cert.NotAfter - $now).TotalDays) }
            }
            else {
                @{ thumbprint = $thumbprint; found = $false; subject = ''; not_after = ''; days_left = -1 }
            }
        })
}
