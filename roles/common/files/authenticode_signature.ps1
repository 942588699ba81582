# Reads the Authenticode signature of a file on the host (roles/common/tasks/signature.yml), before an installer runs.
# Read-only: nothing on the host changes, in check mode or not. Get-AuthenticodeSignature asks Windows (WinVerifyTrust,
# no revocation check): Status is Valid only when the signature matches the content and its chain ends at a root the
# host trusts. Signer is the common name of the signing certificate (as Windows shows the publisher).
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$Path
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

# In check mode an installer that this run would deliver is not on the host yet: nothing to read.
if (-not (Test-Path -LiteralPath $Path -PathType Leaf)) {
    $Ansible.Result = @{ exists = $false; status = ''; status_message = "$Path does not exist"; signer = ''; subject = ''; thumbprint = '' }
    return
}

$signature = Get-AuthenticodeSignature -LiteralPath $Path
$certificate = $signature.SignerCertificate
$signer = ''
$subject = ''
$thumbprint = ''
if ($null -ne $certificate) {
    $signer = $certificate.GetNameInfo([System.Security.Cryptography.X509Certificates.X509NameType]::SimpleName, $false)
    $subject = $certificate.Subject
    $thumbprint = $certificate.Thumbprint
}
$Ansible.Result = @{
    exists = $true
    status = [string]$signature.Status
    status_message = [string]$signature.StatusMessage
    signer = [string]$signer
    subject = [string]$subject
    thumbprint = [string]$thumbprint
}
