# Reads, never changes: whether a TCP connection from this host to Address:Port opens within the timeout. verify.yml
# runs it on a worker host against the server's Prefect port, which only the server's loopback may reach.
[CmdletBinding()]
param (
    [Parameter(Mandatory)][string]$Address,
    [Parameter(Mandatory)][int]$Port,
    [int]$TimeoutMs = 5000
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$client = New-Object -TypeName System.Net.Sockets.TcpClient
$detail = ''
try {
    $open = $client.ConnectAsync($Address, $Port).Wait($TimeoutMs) -and $client.Connected
    if (-not $open) { $detail = "no connection within $TimeoutMs ms" }
}
catch {
    $open = $false
    # The innermost exception: ConnectAsync's AggregateException says only "One or more errors occurred." on .NET Framework.
    $detail = "$($_.Exception.GetBaseException().Message)"
}
finally {
    $client.Dispose()
}
$Ansible.Result = @{ address = $Address; port = $Port; open = [bool]$open; detail = $detail }
