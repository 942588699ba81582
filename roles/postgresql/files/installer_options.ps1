# The EDB installer's option file (InstallBuilder --optionfile: NAME=VALUE lines), written on the host with a
# superuser password made here for this one run. The installer hands `superpassword` to `cscript initcluster.vbs` as
# an argument (edb-installers server/pgserver.xml.in, the initdb step), where process-creation auditing (event 4688)
# would record it: so the installer never sees the real one. superuser_password.ps1 sets the real password through
# psql right after, and proves this one no longer works. Nothing secret leaves this script.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$Path
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
# A file left by an earlier run is kept: that run's install may have made the cluster with its password (the
# installer can fail after initdb, and the next install then skips initdb), which superuser_password.ps1 still needs.
if (Test-Path -LiteralPath $Path -PathType Leaf) {
    $Ansible.Result = @{ kept = $true }
    return
}
if (-not $PSCmdlet.ShouldProcess($Path, 'write the installer option file with a one-time superuser password')) {
    return
}
# 32 characters from 62 letters and digits (no character the option file or a command line would treat specially),
# by rejection sampling so that every character is equally likely.
$alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
$random = [System.Security.Cryptography.RandomNumberGenerator]::Create()
$chars = New-Object System.Text.StringBuilder
$byte = New-Object byte[] 1
while ($chars.Length -lt 32) {
    $random.GetBytes($byte)
    if ($byte[0] -lt 248) { [void]$chars.Append($alphabet[$byte[0] % 62]) }
}
$random.Dispose()
[System.IO.File]::WriteAllText($Path, "superpassword=$($chars.ToString())`r`n", (New-Object System.Text.UTF8Encoding $false))
$Ansible.Changed = $true
