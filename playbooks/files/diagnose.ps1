# Reads, never changes: everything playbooks/diagnose.yml collects on one host, as one structured result. Each
# section runs in its own try/catch, so a broken part of the host (IIS missing, API down, event log denied) fills
# `errors` and the other sections are still collected. Secret values of the services' environment are masked here,
# on the host, before anything leaves it.
[CmdletBinding()]
param (
    [string]$ToolsDir = 'C:\Prefect\tools',
    [string]$LogsDir = 'C:\Prefect\logs',
    [string]$PrefectHome = 'C:\Prefect\data',
    [int]$LogLines = 50,
    [int]$EventHours = 24,
    [string]$ApiUrl = '',
    [string]$AuthString = '',
    [string]$DatabaseHost = '',
    [int]$DatabasePort = 5432,
    [string]$FirewallGroup = 'enclave.prefect.firewall',
    [string[]]$Thumbprints = @(),
    [int]$StuckHours = 6,
    # Environment variables whose values are masked (roles/common/vars/main/secrets.yml), and a URL's password in any other.
    [Parameter(Mandatory)][string]$SecretPattern,
    [Parameter(Mandatory)][string]$SecretUrlPattern
)

$ErrorActionPreference = 'Stop'
$Ansible.Changed = $false

$result = [ordered]@{ collected_at = [DateTime]::UtcNow.ToString('o'); host = $env:COMPUTERNAME; errors = [ordered]@{} }


# A section returning a list writes it with the unary comma (,@(...)): the pipeline would unroll a one-item list.
function Invoke-Section {
    param ([string]$Name, [scriptblock]$Body)
    try {
        $result[$Name] = & $Body
    }
    catch {
        $result.errors[$Name] = "$($_.Exception.Message)"
    }
}

function ConvertTo-Utc {
    param ($Value)
    if ($Value) { ([DateTime]$Value).ToUniversalTime().ToString('o') } else { '' }
}

$nssmPattern = '^"?' + [regex]::Escape($ToolsDir.TrimEnd('\')) + '\\nssm-[^"]*\\nssm\.exe"?'
$prefectServices = @()
Invoke-Section -Name 'services' -Body {
    $script:prefectServices = @(Get-CimInstance -ClassName Win32_Service | Where-Object { $_.PathName -match $nssmPattern })
    ,@(foreach ($svc in $script:prefectServices) {
            $app = $null
            if ([int]$svc.ProcessId -gt 0) {
                $app = @(Get-CimInstance -ClassName Win32_Process -Filter "ParentProcessId=$([int]$svc.ProcessId)" |
                        Where-Object { $_.Name -ne 'conhost.exe' }) | Select-Object -First 1
            }
            [ordered]@{
                name = $svc.Name; state = [string]$svc.State; start_mode = [string]$svc.StartMode; account = [string]$svc.StartName
                app_pid = if ($app) { [int]$app.ProcessId } else { 0 }
                app_started = if ($app) { ConvertTo-Utc $app.CreationDate } else { '' }
            }
        })
}

Invoke-Section -Name 'nssm' -Body {
    $all = [ordered]@{}
    foreach ($svc in $prefectServices) {
        $key = "HKLM:\SYSTEM\CurrentControlSet\Services\$($svc.Name)\Parameters"
        $values = [ordered]@{}
        $item = Get-Item -LiteralPath $key -ErrorAction SilentlyContinue
        if ($item) {
            foreach ($name in $item.GetValueNames()) {
                $value = $item.GetValue($name, $null, 'DoNotExpandEnvironmentNames')
                if ($name -eq 'AppEnvironmentExtra') {
                    $value = @(foreach ($line in @($value)) {
                            $pair = "$line" -split '=', 2
                            if ($pair.Count -ne 2) { "$line" }
                            elseif ($pair[0] -match "(?i)$SecretPattern") { "$($pair[0])=********" }
                            else { "$($pair[0])=" + [regex]::Replace($pair[1], $SecretUrlPattern, '${1}********@') }
                        })
                }
                $values[$name] = $value
            }
        }
        $all[$svc.Name] = $values
    }
    $all
}

Invoke-Section -Name 'logs' -Body {
    $tails = [ordered]@{}
    foreach ($dir in @($LogsDir, (Join-Path $LogsDir 'workers'))) {
        if (-not (Test-Path -LiteralPath $dir -PathType Container)) { continue }
        foreach ($file in @(Get-ChildItem -LiteralPath $dir -File -Filter '*.log' | Where-Object { $_.Name -match '\.(out|err)\.log$' })) {
            $tails[$file.Name] = [ordered]@{
                path = $file.FullName; bytes = $file.Length; modified = ConvertTo-Utc $file.LastWriteTime
                tail = @(Get-Content -LiteralPath $file.FullName -Tail $LogLines -Encoding UTF8 | ForEach-Object { "$_" })
            }
        }
    }
    $size = (Get-ChildItem -LiteralPath $LogsDir -File -Recurse -ErrorAction SilentlyContinue | Measure-Object -Property Length -Sum).Sum
    [ordered]@{ files = $tails; dir_bytes = [long]$size }
}

Invoke-Section -Name 'events' -Body {
    $since = (Get-Date).AddHours(-$EventHours)
    $names = @($prefectServices | ForEach-Object { $_.Name })
    $entries = @()
    if ($names.Count -gt 0) {
        $pattern = ($names | ForEach-Object { [regex]::Escape($_) }) -join '|'
        foreach ($log in @('Application', 'System')) {
            $entries += @(Get-WinEvent -FilterHashtable @{ LogName = $log; StartTime = $since } -MaxEvents 5000 -ErrorAction SilentlyContinue |
                    Where-Object { $_.ProviderName -in @('nssm', 'Service Control Manager') -and $_.Message -match $pattern } |
                    ForEach-Object {
                        [ordered]@{ log = $log; time = ConvertTo-Utc $_.TimeCreated; id = [int]$_.Id; provider = $_.ProviderName
                            level = [string]$_.LevelDisplayName; message = ("$($_.Message)" -replace '\s+', ' ') }
                    })
        }
    }
    ,$entries
}

# Every listening address of every port (0.0.0.0 and 127.0.0.1 apart), with the process holding it (System: http.sys).
Invoke-Section -Name 'ports' -Body {
    ,@(Get-NetTCPConnection -State Listen | Sort-Object -Property @('LocalPort', 'LocalAddress') -Unique | ForEach-Object {
            $process = Get-Process -Id $_.OwningProcess -ErrorAction SilentlyContinue
            [ordered]@{ address = $_.LocalAddress; port = [int]$_.LocalPort; pid = [int]$_.OwningProcess
                process = if ($process) { $process.ProcessName } else { '' } }
        })
}

# The effective policy (ActiveStore: local and Group Policy rules as merged), for the firewall role's group and for the
# enabled inbound block rules, which beat any allow rule (plugins/filter/diagnose_checks.py compares them).
Invoke-Section -Name 'firewall' -Body {
    $describe = {
        $ports = $_ | Get-NetFirewallPortFilter
        $addresses = $_ | Get-NetFirewallAddressFilter
        [ordered]@{ name = $_.Name; display_name = $_.DisplayName; group = $_.Group; enabled = [string]$_.Enabled
            direction = [string]$_.Direction; action = [string]$_.Action; profile = [string]$_.Profile
            source = [string]$_.PolicyStoreSourceType; protocol = [string]$ports.Protocol
            local_port = @($ports.LocalPort | ForEach-Object { "$_" }); remote_address = @($addresses.RemoteAddress | ForEach-Object { "$_" }) }
    }
    $local = @(Get-NetFirewallRule -ErrorAction SilentlyContinue | Where-Object { $_.Group -like "$FirewallGroup*" -or $_.Name -like "$FirewallGroup*" })
    [ordered]@{
        rules = @($local | ForEach-Object $describe)
        block_rules = @(Get-NetFirewallRule -PolicyStore ActiveStore -Direction Inbound -Action Block -Enabled True -ErrorAction SilentlyContinue |
                ForEach-Object $describe)
        profiles = @(Get-NetFirewallProfile -PolicyStore ActiveStore | ForEach-Object {
                [ordered]@{ name = [string]$_.Name; enabled = [string]$_.Enabled; default_inbound_action = [string]$_.DefaultInboundAction
                    allow_local_rules = [string]$_.AllowLocalFirewallRules }
            })
        network_categories = @(Get-NetConnectionProfile -ErrorAction SilentlyContinue | ForEach-Object { [string]$_.NetworkCategory })
    }
}

Invoke-Section -Name 'iis' -Body {
    if (-not (Get-Module -ListAvailable -Name WebAdministration)) { return [ordered]@{ installed = $false } }
    Import-Module -Name WebAdministration
    $apphost = 'MACHINE/WEBROOT/APPHOST'
    $globalModules = @(Get-WebConfiguration -PSPath $apphost -Filter 'system.webServer/globalModules/add' | ForEach-Object { [string]$_.name })
    $sites = @(Get-Website | ForEach-Object {
            $site = $_.Name
            $path = "IIS:\Sites\$site"
            $modules = @(Get-WebConfiguration -PSPath $apphost -Location $site -Filter 'system.webServer/modules/add' | ForEach-Object { [string]$_.name })
            [ordered]@{
                name = $site; state = [string]$_.State; app_pool = $_.applicationPool; physical_path = $_.physicalPath
                bindings = @($_.bindings.Collection | ForEach-Object {
                        $hash = "$($_.certificateHash)"
                        $store = if ($_.certificateStoreName) { "$($_.certificateStoreName)" } else { 'My' }
                        $cert = if ($hash) { Get-Item -LiteralPath "Cert:\LocalMachine\$store\$hash" -ErrorAction SilentlyContinue }
                        [ordered]@{ protocol = $_.protocol; binding = $_.bindingInformation; thumbprint = $hash; store = $store
                            certificate = if ($cert) {
                                [ordered]@{ found = $true; subject = $cert.Subject; not_before = ConvertTo-Utc $cert.NotBefore
                                    not_after = ConvertTo-Utc $cert.NotAfter; has_private_key = [bool]$cert.HasPrivateKey }
                            } else { [ordered]@{ found = $false } } }
                    })
                windows_auth = [string](Get-WebConfigurationProperty -PSPath $apphost -Location $site -Filter 'system.webServer/security/authentication/windowsAuthentication' -Name enabled).Value
                basic_auth = [string](Get-WebConfigurationProperty -PSPath $apphost -Location $site -Filter 'system.webServer/security/authentication/basicAuthentication' -Name enabled).Value
                anonymous_auth = [string](Get-WebConfigurationProperty -PSPath $apphost -Location $site -Filter 'system.webServer/security/authentication/anonymousAuthentication' -Name enabled).Value
                rewrite_rules = @(Get-WebConfigurationProperty -PSPath $path -Filter 'system.webServer/rewrite/rules/rule' -Name '.' -ErrorAction SilentlyContinue |
                        ForEach-Object { [ordered]@{ name = $_.name; enabled = [string]$_.enabled; url = "$($_.match.url)"; action = "$($_.action.url)" } })
                authorization = @(Get-WebConfiguration -PSPath $apphost -Location $site -Filter 'system.webServer/security/authorization/add' |
                        ForEach-Object { [ordered]@{ access = [string]$_.accessType; users = "$($_.users)"; roles = "$($_.roles)" } })
                url_auth_module = $modules -contains 'UrlAuthorizationModule'
                rewrite_module = $modules -contains 'RewriteModule'
            }
        })
    $proxy = Get-WebConfiguration -PSPath $apphost -Filter 'system.webServer/proxy' -ErrorAction SilentlyContinue
    [ordered]@{
        installed = $true; sites = $sites; global_modules = $globalModules
        app_pools = @(Get-ChildItem -Path 'IIS:\AppPools' | ForEach-Object { [ordered]@{ name = $_.Name; state = [string]$_.State } })
        arr = if ($proxy) { [ordered]@{ enabled = [string]$proxy.enabled; timeout = "$($proxy.timeout)"; preserve_host = [string]$proxy.preserveHostHeader } } else { $null }
    }
}

Invoke-Section -Name 'certificates' -Body {
    $now = Get-Date
    ,@(Get-ChildItem -Path 'Cert:\LocalMachine\My' | Where-Object { $Thumbprints.Count -eq 0 -or $_.Thumbprint -in $Thumbprints } |
            ForEach-Object {
                [ordered]@{ thumbprint = $_.Thumbprint; subject = $_.Subject; issuer = $_.Issuer; not_after = ConvertTo-Utc $_.NotAfter
                    days_left = [int][Math]::Floor(($_.NotAfter - $now).TotalDays); has_private_key = [bool]$_.HasPrivateKey }
            })
}

if ($ApiUrl) {
    $headers = @{}
    if ($AuthString) {
        $headers.Authorization = 'Basic ' + [Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes($AuthString))
    }
    $api = $ApiUrl.TrimEnd('/')
    function Invoke-Api {
        param ([string]$Path, $Body = $null)
        $request = @{ Uri = "$api$Path"; Headers = $headers; UseBasicParsing = $true; TimeoutSec = 15 }
        if ($null -ne $Body) {
            $request.Method = 'Post'; $request.ContentType = 'application/json'; $request.Body = ($Body | ConvertTo-Json -Depth 8 -Compress)
        }
        Invoke-RestMethod @request
    }
    Invoke-Section -Name 'prefect' -Body {
        $health = try { Invoke-Api -Path '/health' } catch { "error: $($_.Exception.Message)" }
        $ready = try { (Invoke-Api -Path '/ready').message } catch { "error: $($_.Exception.Message)" }
        $version = try { Invoke-Api -Path '/admin/version' } catch { "error: $($_.Exception.Message)" }
        [ordered]@{ health = "$health"; ready = "$ready"; version = "$version" }
    }
    Invoke-Section -Name 'pools' -Body {
        ,@(Invoke-Api -Path '/work_pools/filter' -Body @{ limit = 200 } | ForEach-Object {
                $pool = $_
                [ordered]@{
                    name = $pool.name; type = $pool.type; status = "$($pool.status)"; is_paused = [bool]$pool.is_paused
                    queues = @(Invoke-Api -Path "/work_pools/$([uri]::EscapeDataString($pool.name))/queues/filter" -Body @{ limit = 200 } |
                            ForEach-Object { [ordered]@{ name = $_.name; is_paused = [bool]$_.is_paused; priority = $_.priority } })
                    workers = @(Invoke-Api -Path "/work_pools/$([uri]::EscapeDataString($pool.name))/workers/filter" -Body @{ limit = 200 } |
                            ForEach-Object { [ordered]@{ name = $_.name; status = "$($_.status)"; last_heartbeat_time = "$($_.last_heartbeat_time)" } })
                }
            })
    }
    Invoke-Section -Name 'flow_runs' -Body {
        $select = { [ordered]@{ id = "$($_.id)"; name = $_.name; state_type = "$($_.state_type)"; state_name = "$($_.state_name)"
                start_time = "$($_.start_time)"; expected_start_time = "$($_.expected_start_time)"; work_pool_name = "$($_.work_pool_name)" } }
        [ordered]@{
            late = @(Invoke-Api -Path '/flow_runs/filter' -Body @{ flow_runs = @{ state = @{ name = @{ any_ = @('Late') } } }; limit = 200 } | ForEach-Object $select)
            active = @(Invoke-Api -Path '/flow_runs/filter' -Body @{ flow_runs = @{ state = @{ type = @{ any_ = @('RUNNING', 'PENDING', 'CANCELLING') } } }; limit = 200 } | ForEach-Object $select)
            stuck_hours = $StuckHours
        }
    }
}

Invoke-Section -Name 'database' -Body {
    $sqlite = Join-Path $PrefectHome 'prefect.db'
    $db = [ordered]@{ sqlite_path = ''; sqlite_bytes = 0; host = $DatabaseHost; port = $DatabasePort; reachable = $null; detail = '' }
    if (Test-Path -LiteralPath $sqlite -PathType Leaf) {
        $db.sqlite_path = $sqlite
        $db.sqlite_bytes = (Get-Item -LiteralPath $sqlite).Length + (@(Get-ChildItem -LiteralPath $PrefectHome -Filter 'prefect.db-*' -File) | Measure-Object -Property Length -Sum).Sum
    }
    if ($DatabaseHost) {
        $client = New-Object -TypeName System.Net.Sockets.TcpClient
        try {
            $db.reachable = $client.ConnectAsync($DatabaseHost, $DatabasePort).Wait(5000) -and $client.Connected
            if (-not $db.reachable) { $db.detail = "no TCP connection to ${DatabaseHost}:$DatabasePort within 5 s" }
        }
        catch {
            $db.reachable = $false
            $db.detail = "$($_.Exception.InnerException.Message)"
        }
        finally {
            $client.Dispose()
        }
    }
    $db
}

Invoke-Section -Name 'disks' -Body {
    ,@(Get-CimInstance -ClassName Win32_LogicalDisk -Filter 'DriveType=3' | ForEach-Object {
            [ordered]@{ drive = $_.DeviceID; size = [long]$_.Size; free = [long]$_.FreeSpace
                used_percent = if ($_.Size) { [Math]::Round(100 - 100 * $_.FreeSpace / $_.Size, 1) } else { 0 } }
        })
}

$Ansible.Result = $result
