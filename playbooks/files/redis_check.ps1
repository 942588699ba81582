# Reads, never changes: the Redis of a high-availability deployment as Prefect's Redis backends (prefect-redis) need it,
# asked from this host (verify.yml runs it on a server host): whether it answers and accepts the password, its version,
# whether it runs as a cluster and whether it knows XAUTOCLAIM (Redis 6.2). Speaks the Redis protocol (RESP) itself:
# the password arrives in the module's parameters, never on a command line, and goes only to the socket.
[CmdletBinding()]
param (
    [Parameter(Mandatory)][string]$Address,
    [Parameter(Mandatory)][int]$Port,
    [string]$Password = '',
    [int]$TimeoutMs = 5000
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

# One command as a RESP array of bulk strings (lengths in bytes).
function Write-RespCommand {
    param ([System.IO.Stream]$Stream, [string[]]$Words)
    $text = New-Object -TypeName System.Text.StringBuilder
    [void]$text.Append('*' + $Words.Count + "`r`n")
    foreach ($word in $Words) {
        [void]$text.Append('$' + [System.Text.Encoding]::UTF8.GetByteCount($word) + "`r`n" + $word + "`r`n")
    }
    $bytes = [System.Text.Encoding]::UTF8.GetBytes($text.ToString())
    $Stream.Write($bytes, 0, $bytes.Length)
    $Stream.Flush()
}

function Read-RespLine {
    param ([System.IO.Stream]$Stream)
    $line = New-Object -TypeName System.IO.MemoryStream
    while ($true) {
        $byte = $Stream.ReadByte()
        if ($byte -lt 0) {
            throw 'Redis closed the connection'
        }
        if ($byte -eq 13) {
            [void]$Stream.ReadByte()
            break
        }
        $line.WriteByte([byte]$byte)
    }
    return [System.Text.Encoding]::UTF8.GetString($line.ToArray())
}

# One reply: a simple string, an error (thrown), an integer, a bulk string ($null for nil) or an array.
function Read-RespReply {
    param ([System.IO.Stream]$Stream)
    $line = Read-RespLine -Stream $Stream
    $rest = $line.Substring(1)
    switch ($line.Substring(0, 1)) {
        '+' {
            return $rest
        }
        '-' {
            throw "Redis answered: $rest"
        }
        ':' {
            return [long]$rest
        }
        '$' {
            $length = [int]$rest
            if ($length -lt 0) {
                return $null
            }
            $data = New-Object -TypeName byte[] -ArgumentList ($length + 2)
            $read = 0
            while ($read -lt $data.Length) {
                $count = $Stream.Read($data, $read, $data.Length - $read)
                if ($count -le 0) {
                    throw 'Redis closed the connection'
                }
                $read += $count
            }
            return [System.Text.Encoding]::UTF8.GetString($data, 0, $length)
        }
        '*' {
            $count = [int]$rest
            if ($count -lt 0) {
                return $null
            }
            $items = New-Object -TypeName System.Collections.ArrayList
            for ($i = 0; $i -lt $count; $i++) {
                [void]$items.Add((Read-RespReply -Stream $Stream))
            }
            return , $items.ToArray()
        }
        default {
            throw "not a Redis reply: $line"
        }
    }
}

# A problem is a result (error), not a failure of the task: the task that asks hides its parameters (the password),
# the one that judges shows the error.
$client = $null
$server = ''
$cluster = ''
$command = $null
$problem = ''
try {
    # A client of the address's family: TcpClient() is IPv4 only on .NET Framework, and the Redis host may be IPv6.
    $ip = [System.Net.Dns]::GetHostAddresses($Address)[0]
    $client = New-Object -TypeName System.Net.Sockets.TcpClient -ArgumentList $ip.AddressFamily
    if (-not ($client.ConnectAsync($ip, $Port).Wait($TimeoutMs) -and $client.Connected)) {
        throw "no connection to ${Address}:$Port within $TimeoutMs ms"
    }
    $stream = $client.GetStream()
    $stream.ReadTimeout = $TimeoutMs
    $stream.WriteTimeout = $TimeoutMs
    if ($Password) {
        Write-RespCommand -Stream $stream -Words @('AUTH', $Password)
        [void](Read-RespReply -Stream $stream)
    }
    Write-RespCommand -Stream $stream -Words @('INFO', 'server')
    $server = Read-RespReply -Stream $stream
    Write-RespCommand -Stream $stream -Words @('INFO', 'cluster')
    $cluster = Read-RespReply -Stream $stream
    # An array with one entry per command asked for: nil when Redis does not know it.
    Write-RespCommand -Stream $stream -Words @('COMMAND', 'INFO', 'XAUTOCLAIM')
    $command = Read-RespReply -Stream $stream
}
catch {
    # The innermost exception: a refused or unreachable connection comes wrapped in an AggregateException whose own
    # message on .NET Framework is only "One or more errors occurred."
    $problem = "$($_.Exception.GetBaseException().Message)"
}
finally {
    if ($client) {
        $client.Dispose()
    }
}

$version = ''
if ($server -match '(?m)^redis_version:(\S+)') {
    $version = $Matches[1]
}
$Ansible.Result = @{
    address = $Address
    port = $Port
    version = $version
    cluster_enabled = [bool]($cluster -match '(?m)^cluster_enabled:1')
    xautoclaim = [bool]($null -ne $command -and $command.Count -gt 0 -and $null -ne $command[0])
    error = $problem
}
