# After the service moved to its own account (tasks/account.yml, the service stopped): the files and folders inside
# the data and log directories lose their own rules and inherit the directory's (which config.yml then makes the new
# account's, SYSTEM's and Administrators' only), and Administrators own them. EDB's initcluster.vbs granted the
# installing user and the service account rules on every file (icacls /T), and the files PostgreSQL wrote as
# NetworkService are owned by it (an owner may read and change a file's ACL): without this, NetworkService, which WinRM
# and others share, keeps its way into the data. Only paths go on icacls' command line.
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string[]]$Directories
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
$icacls = Join-Path $env:SystemRoot 'System32\icacls.exe'
$done = New-Object System.Collections.Generic.List[string]
foreach ($directory in $Directories) {
    if (-not (Test-Path -LiteralPath $directory -PathType Container)) { continue }
    if (-not $PSCmdlet.ShouldProcess($directory, 'reset the rules of everything inside and give it to Administrators')) {
        $Ansible.Changed = $true
        continue
    }
    foreach ($arguments in @(@("$directory\*", '/reset', '/T', '/C', '/Q'), @($directory, '/setowner', '*S-1-5-32-544', '/T', '/C', '/Q'))) {
        $ErrorActionPreference = 'Continue'
        $output = & $icacls @arguments 2>&1 | ForEach-Object { "$_" }
        $exitCode = $LASTEXITCODE
        $ErrorActionPreference = 'Stop'
        if ($exitCode -ne 0) {
            throw "icacls $($arguments -join ' ') failed ($exitCode): $($output -join ' ')"
        }
    }
    $done.Add($directory)
    $Ansible.Changed = $true
}
$Ansible.Result = @{ reset = @($done) }
