# The settings file the scheduled backup reads and, for PostgreSQL, the PGPASSFILE of the backup login (roles/backup).
# Both live in backup_home, which inherits nothing and lets the task's account only read. A file is written only when
# its text differs; the password never appears in the result (only the names of the files that changed).
[CmdletBinding(SupportsShouldProcess)]
param (
    [Parameter(Mandatory)][string]$ConfigPath,
    [Parameter(Mandatory)][string]$Config,
    [string]$PassFile = '',
    # The PGPASSFILE's lines: one per database the login reaches (the Prefect database, a drill's scratch database).
    [string[]]$PassLine = @()
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false
# UTF-8 without a byte order mark: libpq reads the PGPASSFILE byte by byte.
$encoding = New-Object System.Text.UTF8Encoding $false
$changes = New-Object System.Collections.Generic.List[string]

function Set-FileText {
    param([string]$Path, [string]$Text)
    $current = $null
    if (Test-Path -LiteralPath $Path -PathType Leaf) {
        $current = [System.IO.File]::ReadAllText($Path, $encoding)
    }
    if ($current -cne $Text) {
        $changes.Add($Path)
        if ($PSCmdlet.ShouldProcess($Path, 'write')) {
            [System.IO.File]::WriteAllText($Path, $Text, $encoding)
        }
    }
}

# Pretty JSON from the controller's compact JSON, so that an operator can read it on the host.
$text = ($Config | ConvertFrom-Json | ConvertTo-Json -Depth 5) + "`r`n"
Set-FileText -Path $ConfigPath -Text $text
if ($PassFile) {
    Set-FileText -Path $PassFile -Text ((@($PassLine) -join "`n") + "`n")
}
$Ansible.Changed = $changes.Count -gt 0
$Ansible.Result = @{ changes = @($changes) }
