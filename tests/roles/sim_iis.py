# modules: microsoft.iis.website microsoft.iis.website_info microsoft.iis.web_app_pool ansible.windows.win_feature ansible.windows.win_certificate_info ansible.windows.win_certificate_store
# Stand-ins of the iis_proxy role (simhost.py PARTS), behaving as the upstream sources do: microsoft.iis 1.1.0
# (plugins/modules/website.ps1, web_app_pool.ps1), ansible.windows 3.3.0 (win_feature.ps1, win_package.ps1,
# win_certificate_info.ps1, win_certificate_store.ps1, win_powershell.ps1). IIS state lives in host["iis"].
# Stand-ins sim_module.py already has for the other roles (win_reg_stat, win_package, win_copy, win_file) are
# replaced only for this role's calls, chosen from the module arguments read here.
import json as _iis_json

_IIS_ARGS = _sim_args()

# The schema defaults IIS reports for a section nothing has set (IIS_schema.xml, rewrite_schema.xml, arr_schema.xml),
# and the role service or extension whose schema file registers the section: without it GetSection throws
# ("Cannot read configuration file / section not found"), as Microsoft.Web.Administration does.
IIS_SECTIONS = {
    "system.webServer/proxy": ({"enabled": "false", "preserveHostHeader": "false", "reverseRewriteHostInResponseHeaders": "true",
                                "timeout": "00:00:30", "includePortInXForwardedFor": "true", "arrResponseHeader": "true",
                                "xForwardedForHeaderName": "X-Forwarded-For"},
                               {}, "ext:Application Request Routing"),
    "system.webServer/rewrite/allowedServerVariables": ({}, {"": []}, "ext:URL Rewrite"),
    "system.webServer/security/authentication/anonymousAuthentication": ({"enabled": "true"}, {}, "Web-Server"),
    "system.webServer/security/authentication/windowsAuthentication": (
        # extendedProtection's tokenChecking and flags are enums, read as numbers (0 None).
        {"enabled": "false", "useAppPoolCredentials": "false", "extendedProtection.tokenChecking": 0,
         "extendedProtection.flags": 0}, {"providers": ["value=Negotiate", "value=NTLM"]}, "Web-Windows-Auth"),
    "system.webServer/security/authentication/basicAuthentication": ({"enabled": "false", "defaultLogonDomain": "", "logonMethod": 3}, {}, "Web-Basic-Auth"),
    "system.webServer/security/access": ({"sslFlags": "0"}, {}, "Web-Server"),
    "system.webServer/security/ipSecurity": ({"allowUnlisted": "true"}, {"": []}, "Web-IP-Security"),
    "system.webServer/webSocket": ({"enabled": "true"}, {}, "Web-WebSockets"),
    # IIS_schema.xml declares it whatever is installed; applicationHost.config's default rule allows everyone. Only
    # UrlAuthorizationModule (Web-Url-Auth) enforces it: see iis_config_script.
    "system.webServer/security/authorization": ({}, {"": ["accessType=Allow;users=*;roles=;verbs="]}, "Web-Server"),
}


def _iis():
    iis = host.setdefault("iis", {})
    for key, empty in (("features", []), ("extensions", []), ("certificates", []), ("pools", {}), ("sites", {}),
                       ("apphost", {}), ("files", {}), ("dirs", [])):
        iis.setdefault(key, empty)
    return iis


def _iis_missing(what="module"):
    """True (and the call failed) when IIS (Web-Server) is not installed. website.ps1:133-135, website_info.ps1:23-27 and
    web_app_pool.ps1:171-175 (microsoft.iis 1.1.0) run `Import-Module WebAdministration` unguarded under the module
    wrapper's ErrorActionPreference Stop; iis_proxy_config.ps1:16-17 runs `Add-Type` on Microsoft.Web.Administration.dll.
    Without Web-Server neither exists, so the call fails before it reads anything, in check mode and for state absent too."""
    if "Web-Server" in _iis()["features"]:
        return False
    if what == "dll":
        out.update(failed=True, msg="Cannot find path 'C:\\Windows\\System32\\inetsrv\\Microsoft.Web.Administration.dll' "
                                    "because it does not exist.")
    else:
        out.update(failed=True, msg="The specified module 'WebAdministration' was not loaded because no valid module file "
                                    "was found in any module directory.")
    return True


def iis_win_feature():
    """win_feature.ps1: Install-WindowsFeature -WhatIf:$check_mode; changed when any FeatureResult (a feature that was
    not installed); a missing `source` path fails first (Test-Path); reboot_required from RestartNeeded."""
    iis = _iis()
    source = args.get("source")
    if source and source not in host.get("feature_sources", []):
        out.update(failed=True, msg="Failed to find source path %s for feature install" % source)
        return
    # Server Core's feature store has no graphical console: Install-WindowsFeature refuses the whole call.
    absent = [f for f in args["name"] if host.get("installation_type", "Server") == "Server Core"
              and f in ("Web-Mgmt-Console", "Web-Lgcy-Mgmt-Console")]
    if absent:
        out.update(failed=True, msg="Failed to install Windows Feature: ArgumentNotValid: The role, role service, or feature "
                                    "name is not valid: '%s'. The name was not found." % absent[0])
        return
    missing = [f for f in args["name"] if f not in iis["features"]]
    need_media = [f for f in missing if f in host.get("features_need_source", []) and not source]
    if need_media:
        out.update(failed=True, msg="Failed to install Windows Feature: The source files could not be found (0x800F081F)")
        return
    out.update(changed=bool(missing), feature_result=[{"id": f, "reboot_required": f in host.get("reboot_features", [])}
                                                      for f in missing],
               reboot_required=any(f in host.get("reboot_features", []) for f in missing), success=True, exitcode="Success")
    if not CHECK:
        iis["features"].extend(missing)
        if "Web-Server" in missing and host.get("iis_setup_default_site"):
            # IIS setup's Default Web Site (id 1, DefaultAppPool, *:80:) and its start page in %SystemDrive%\inetpub\wwwroot.
            # A host state option: the older tests' hosts count the role's own sites only.
            iis["sites"]["Default Web Site"] = {"physical_path": "%SystemDrive%\\inetpub\\wwwroot", "pool": "DefaultAppPool",
                                                "bindings": {"*:80:": {"protocol": "http", "sslFlags": 0, "certificate": ""}},
                                                "state": "Started"}
            iis["dirs"].extend(d for d in ("c:\\inetpub", "c:\\inetpub\\wwwroot") if d not in iis["dirs"])
            iis["files"].update({"c:\\inetpub\\wwwroot\\iisstart.htm": "IIS start page",
                                 "c:\\inetpub\\wwwroot\\iisstart.png": "IIS start image"})


def iis_reg_stat():
    """win_reg_stat.ps1 on a key alone: exists when the key does; the extensions' setup writes
    HKLM\\SOFTWARE\\Microsoft\\IIS Extensions\\<name>, Web-Server's setup HKLM\\SOFTWARE\\Microsoft\\InetStp."""
    name = args["path"].rsplit("\\", 1)[-1]
    if name.lower() == "inetstp":
        out["exists"] = "Web-Server" in _iis()["features"]
        return
    out["exists"] = name in _iis()["extensions"]


def iis_win_package():
    """win_package.ps1 with an MSI: a local path that does not exist fails outside check mode; with a path the msi
    provider reads the ProductCode from the file (product_id is then not used); state present needs path.
    msiexec /i runs only when that product is not installed. ARR's MSI refuses to install without URL Rewrite."""
    iis = _iis()
    path_arg = args.get("path")
    # win_package.ps1:1303-1306 (ansible.windows 3.3.0): required_if state present -> path; Ansible.Basic refuses the
    # call before the module body runs, with or without product_id, in check mode too.
    if args.get("state", "present") == "present" and not path_arg:
        out.update(failed=True, msg="state is present but all of the following are missing: path")
        return
    if path_arg:
        digest = lookup(path_arg)
        if digest is None:
            if not CHECK:
                out.update(failed=True, msg="the file at the path '%s' cannot be reached" % path_arg)
                return
            out.update(failed=True, msg="check mode: %s is not an MSI the provider can read" % path_arg)
            return
        product = host.get("msi_products", {}).get(digest)
    installed = product["code"] in host.get("installed_msi", [])
    out.update(changed=not installed, rc=0, reboot_required=False)
    if installed or CHECK:
        return
    if product["name"] == "Application Request Routing" and "URL Rewrite" not in iis["extensions"]:
        out.update(failed=True, rc=1603, msg="unexpected rc from msiexec: 1603 (ARR requires URL Rewrite)")
        return
    host.setdefault("installed_msi", []).append(product["code"])
    iis["extensions"].append(product["name"])
    host.setdefault("installer_runs", []).append(["msiexec", "/i", path_arg])


def iis_win_copy_content():
    """win_copy with content (the action plugin writes it to a temporary file, then copies it only when the
    destination's checksum differs). The destination's directory must exist."""
    iis = _iis()
    dest = args["dest"].lower()
    parent = dest.rsplit("\\", 1)[0]
    if parent not in iis["dirs"]:
        out.update(failed=True, msg="Destination directory '%s' does not exist" % parent)
        return
    out["changed"] = iis["files"].get(dest) != args["content"]
    if not CHECK:
        iis["files"][dest] = args["content"]


def iis_win_file():
    """win_file: state directory creates it (and its parents); state absent removes a file or a directory tree."""
    iis = _iis()
    target = args["path"].lower()
    if args.get("state") == "absent":
        gone = [d for d in iis["dirs"] if d == target or d.startswith(target + "\\")]
        gone_files = [f for f in list(iis["files"]) + list(files) if f == target or f.startswith(target + "\\")]
        out["changed"] = bool(gone or gone_files)
        if not CHECK:
            iis["dirs"] = [d for d in iis["dirs"] if d not in gone]
            for f in gone_files:
                iis["files"].pop(f, None)
                files.pop(f, None)
    else:
        out["changed"] = target not in iis["dirs"]
        if not CHECK and out["changed"]:
            iis["dirs"].append(target)


def iis_certificate_info():
    """win_certificate_info.ps1: exists and the certificates found by thumbprint in the store."""
    found = args.get("thumbprint", "").upper() in _iis()["certificates"]
    out.update(exists=found, certificates=[{"thumbprint": args["thumbprint"].upper()}] if found else [])


def iis_certificate_store():
    """win_certificate_store.ps1 state present: every certificate of the PFX goes into the store; thumbprints lists
    them (a wrong password fails)."""
    digest = lookup(args["path"])
    pfx = host.get("pfx", {}).get(digest)
    if pfx is None or pfx["password"] != args.get("password"):
        out.update(failed=True, msg="Failed to load cert from file: The specified network password is not correct.")
        return
    certs = _iis()["certificates"]
    out.update(thumbprints=pfx["thumbprints"], changed=any(t not in certs for t in pfx["thumbprints"]))
    if not CHECK:
        certs.extend(t for t in pfx["thumbprints"] if t not in certs)


# Attributes Get-ItemProperty IIS:\AppPools\<pool> can read, with IIS's defaults; web_app_pool.ps1 Compare-Value
# treats a value it cannot read ($null) as different, so an unknown attribute reports a change on every run.
POOL_DEFAULTS = {"managedRuntimeVersion": "v4.0", "managedPipelineMode": "Integrated", "startMode": "OnDemand",
                 "processModel.idleTimeout": "00:20:00", "processModel.identityType": "ApplicationPoolIdentity",
                 "processModel.userName": "", "processModel.password": "", "recycling.periodicRestart.time": "1.05:00:00"}


def iis_web_app_pool():
    iis = _iis()
    if _iis_missing():
        return
    name = args["name"]
    pool = iis["pools"].get(name)
    if args.get("state") == "absent":
        out["changed"] = pool is not None
        if pool is not None and not CHECK:
            del iis["pools"][name]
        return
    if pool is None:
        out["changed"] = True
        if CHECK:
            return  # "Cannot run the below in check mode if the pool did not always exist"
        pool = iis["pools"][name] = {"attributes": dict(POOL_DEFAULTS), "state": "Started"}
    for key, value in (args.get("attributes") or {}).items():
        current = pool["attributes"].get(key)
        if current is None or str(current) != str(value):
            out["changed"] = True
            if not CHECK:
                pool["attributes"][key] = str(value)
    if args.get("state") == "started" and pool["state"] == "Stopped":
        out["changed"] = True


def _iis_ssl_flags(binding):
    """website.ps1:80-130 Get-SSLFlagFromBinding: sslFlags from use_sni (1) and use_ccs (2) alone, after its checks; None
    (and the call failed) when one refuses, as FailJson does."""
    https = binding.get("protocol") == "https"
    flags = 0
    for option, bit in (("use_sni", 1), ("use_ccs", 2)):
        if not binding.get(option):
            continue
        if not https:
            out.update(failed=True, msg="%s can only be set for https protocol" % option)
            return None
        if not binding.get("hostname"):
            out.update(failed=True, msg="must specify hostname value when %s is set." % option)
            return None
        if option == "use_ccs" and binding.get("certificate_hash"):
            out.update(failed=True, msg="You set use_ccs to %s. This indicates you wish to use the Central Certificate Store "
                                        "feature. This cannot be used in combination with certficiate_hash and "
                                        "certificate_store_name." % binding["use_ccs"])
            return None
        flags += bit
    if https and not binding.get("use_ccs") and not binding.get("certificate_hash"):
        out.update(failed=True, msg="must either specify a certificate_hash or use_ccs.")
        return None
    if binding.get("certificate_hash"):
        if not https:
            out.update(failed=True, msg="You can only provide a certificate thumbprint when protocol is set to https")
            return None
        if binding["certificate_hash"].upper() not in _iis()["certificates"]:
            out.update(failed=True, msg="Unable to locate certificate at cert:\\LocalMachine\\%s\\%s" % (
                binding.get("certificate_store_name") or "my", binding["certificate_hash"]))
            return None
    return flags


def iis_website():
    """website.ps1: a new site needs an existing physical_path; bindings are keyed by the literal
    "$ip:$port:$hostname" (an ip left out never matches IIS's '*' and is added again); an https binding needs its
    certificate in Cert:\\LocalMachine\\My (Test-Path) both when added and when kept; for a kept binding the
    certificate is re-applied with AddSslCertificate without reporting a change, in check mode too (website.ps1:261-264)."""
    iis = _iis()
    if _iis_missing():
        return
    name = args["name"]
    site = iis["sites"].get(name)
    state = args.get("state", "started")
    if state == "absent":
        out["changed"] = site is not None
        if site is not None and not CHECK:
            del iis["sites"][name]
        return
    physical = args.get("physical_path")
    if site is None:
        if not physical:
            out.update(failed=True, msg="missing required arguments: physical_path")
            return
        if physical.lower() not in iis["dirs"]:
            out.update(failed=True, msg="specified folder must already exist: physical_path")
            return
        out["changed"] = True
        if CHECK:
            return
        site = iis["sites"][name] = {"physical_path": physical, "pool": "DefaultAppPool", "bindings": {}, "state": "Started"}
    if physical and physical.lower() != site["physical_path"].lower():
        out["changed"] = True
        if not CHECK:
            site["physical_path"] = physical
    if args.get("application_pool") and args["application_pool"] != site["pool"]:
        out["changed"] = True
        if not CHECK:
            site["pool"] = args["application_pool"]
    wanted = (args.get("bindings") or {}).get("set")
    if wanted is not None:
        # website.ps1:209-271: bindings keyed by the literal "$ip:$port:$hostname"; the new ones are added first (toAdd),
        # then the kept ones edited (toEdit), then the site's others removed; each step writes at once (a failure
        # later leaves the earlier ones written).
        keys = {}
        for binding in wanted:
            keys["%s:%s:%s" % (binding.get("ip") or "", binding.get("port"), binding.get("hostname") or "")] = binding
        for key, binding in [(k, b) for k, b in keys.items() if k.lower() not in site["bindings"]]:
            stored_key = (key if not key.startswith(":") else "*" + key).lower()  # New-WebBinding -IPAddress $null binds '*'
            flags = _iis_ssl_flags(binding)
            if flags is None:
                return
            if stored_key in site["bindings"]:
                out.update(failed=True, msg="Cannot add duplicate collection entry of type 'binding'")
                return
            out["changed"] = True
            if not CHECK:
                site["bindings"][stored_key] = {"protocol": binding.get("protocol") or "http", "sslFlags": flags,
                                                "certificate": (binding.get("certificate_hash") or "").upper()}
        for key, binding in [(k, b) for k, b in keys.items() if k.lower() in site["bindings"]]:
            current = site["bindings"][key.lower()]
            edit = dict(binding)
            # website.ps1:243-249: use_sni and use_ccs left out are taken from the kept binding's sslFlags, use_ccs as
            # [math]::Floor(sslFlags / 2): any flag from 4 up (DisableHTTP2 ... DisableLegacyTLS) makes it truthy.
            if edit.get("use_sni") is None:
                edit["use_sni"] = current["sslFlags"] % 2
            if edit.get("use_ccs") is None:
                edit["use_ccs"] = current["sslFlags"] // 2
            flags = _iis_ssl_flags(edit)
            if flags is None:
                return
            protocol = binding.get("protocol") or "http"
            # website.ps1:251-260: protocol and sslFlags are written when they differ: every other flag is dropped.
            if current["protocol"] != protocol or current["sslFlags"] != flags:
                out["changed"] = True
                if not CHECK:
                    current.update(protocol=protocol, sslFlags=flags)
            if binding.get("certificate_hash"):
                current["certificate"] = binding["certificate_hash"].upper()  # AddSslCertificate, unreported, in check mode too
        kept = {k.lower() for k in keys} | {"*" + k.lower() for k in keys if k.startswith(":")}
        for key in [k for k in site["bindings"] if k not in kept]:
            out["changed"] = True
            if not CHECK:
                del site["bindings"][key]
    if state == "started" and site["state"] == "Stopped":
        out["changed"] = True
        if not CHECK:
            site["state"] = "Started"


def iis_website_info():
    """website_info.ps1 (microsoft.iis 1.1.0): exists and site (a list): with `name`, that site or an empty list
    (Get-Item IIS:\\Sites\\<name> throws, Get-WebsiteInfo returns nothing); without, every site. Each binding as
    Get-WebBinding shows it, split from bindingInformation "ip:port:hostname" (lines 43-56): certificate_hash is the
    binding's certificateHash, empty for http."""
    iis = _iis()
    if _iis_missing():
        return
    names = [args["name"]] if args.get("name") is not None else list(iis["sites"])
    sites = []
    for name in names:
        site = iis["sites"].get(name)
        if site is None:
            continue
        bindings = []
        for key, value in site["bindings"].items():
            ip, port, hostname = key.split(":", 2)
            bindings.append({"ip": ip, "port": int(port), "hostname": hostname, "protocol": value["protocol"],
                             "use_ccs": bool(value["sslFlags"] // 2), "use_sni": bool(value["sslFlags"] % 2),
                             "certificate_hash": value.get("certificate", ""),
                             "certificate_store_name": "My" if value["protocol"] == "https" else ""})
        sites.append({"name": name, "state": site["state"], "physical_path": site["physical_path"],
                      "application_pool": site["pool"], "bindings": bindings})
    out.update(exists=bool(sites), site=sites)


# BUILTIN groups every Windows Server has (LookupAccountName resolves these, not any BUILTIN\\name).
_IIS_BUILTIN_GROUPS = {"builtin\\" + g for g in (
    "administrators", "users", "guests", "power users", "backup operators", "remote desktop users", "iis_iusrs",
    "network configuration operators", "performance log users", "performance monitor users", "event log readers",
    "distributed com users", "remote management users", "hyper-v administrators", "access control assistance operators",
    "certificate service dcom access", "cryptographic operators", "print operators", "replicator",
    "storage replica administrators", "rds remote access servers", "rds endpoint servers", "rds management servers")}


def iis_config_script():
    """files/iis_proxy_config.ps1 on applicationHost.config: effective values (location, else server, else schema
    default), written only where they differ, one commit; -WhatIf (check mode) writes nothing. The script declares
    SupportsShouldProcess, so win_powershell runs it in check mode (win_powershell.ps1 skips other scripts)."""
    iis = _iis()
    if _iis_missing("dll"):
        return
    apphost = iis["apphost"]
    params = args["parameters"]
    # NTAccount.Translate: local and domain accounts (sid_of), BUILTIN groups, domain groups (host["groups"]).
    unresolved = [n for n in params.get("Principals") or []
                  if not (sid_of(n) or n.lower() in _IIS_BUILTIN_GROUPS
                          or n.lower() in {g.lower() for g in host.get("groups", {})})]
    if unresolved:
        out.update(failed=True, result={"unresolved": unresolved, "error": "these names do not resolve to a Windows account "
                                        "or group on this host, nothing was written: " + ", ".join(unresolved)})
        return
    # globalModules holds UrlAuthorizationModule once Web-Url-Auth is installed; a site's system.webServer/modules can
    # still remove it (iis["url_auth_removed_from"]: the sites whose effective module list lacks it).
    authorizing = [s.get("location") or "" for s in params.get("Settings") or []
                   if s["section"] == "system.webServer/security/authorization"]
    if authorizing and ("Web-Url-Auth" not in iis["features"]
                        or set(authorizing) & set(iis.get("url_auth_removed_from", []))):
        out.update(failed=True, result={"error": "IIS URL Authorization (role service Web-Url-Auth, UrlAuthorizationModule) "
                                                 "is not installed, or is removed from a site's system.webServer/modules: without it IIS "
                                                 "ignores the authorization rules; install it (iis_proxy_features), keep it in the "
                                                 "sites' modules and run again, nothing was written"})
        return
    before, after = {}, {}
    staged = _iis_json.loads(_iis_json.dumps(apphost))
    for setting in params.get("Settings") or []:
        location = setting.get("location") or ""
        section = setting["section"]
        defaults, collections, needs = IIS_SECTIONS[section]
        if needs.startswith("ext:") and needs[4:] not in iis["extensions"] or \
                not needs.startswith("ext:") and needs not in iis["features"]:
            out.update(failed=True, msg="Filename: applicationHost.config Error: Unrecognized configuration path '%s'" % section)
            return
        label = "%s:%s" % (location, section) if location else section
        server = staged.get("|" + section, {})
        mine = dict(staged.get(location + "|" + section, {}))
        for name, wanted in sorted((setting.get("attributes") or {}).items()):
            # iis_proxy_config.ps1 writes $env:COMPUTERNAME for this marker.
            wanted = host.get("computer", "PREFECT-AIO") if wanted == "%COMPUTERNAME%" else wanted
            current = mine.get(name, server.get(name, defaults.get(name)))
            if current is None:
                out.update(failed=True, msg="Unrecognized attribute '%s'" % name)
                return
            if str(current).lower() != str(wanted).lower():
                before[label + "@" + name], after[label + "@" + name] = current, wanted
                mine[name] = wanted
        collection = setting.get("collection")
        if collection:
            cname = collection.get("name") or ""
            have = mine.get("collection:" + cname, server.get("collection:" + cname, collections.get(cname, [])))
            want = ["%s" % ";".join("%s=%s" % (k, str(item.get(k, ""))) for k in collection["keys"]) for item in collection["items"]]
            clabel = label + ("/" + cname if cname else "")
            if collection["mode"] == "exact":
                if have != want:
                    before[clabel], after[clabel] = have, want
                    mine["collection:" + cname] = want
            else:
                missing = [w for w in want if w not in have]
                if missing:
                    before[clabel], after[clabel] = have, have + missing
                    mine["collection:" + cname] = have + missing
        if mine != staged.get(location + "|" + section, {}):
            staged[location + "|" + section] = mine
    for location in params.get("RemoveLocations") or []:
        present = [k for k in staged if k.split("|", 1)[0].lower() == location.lower() and location]
        if present:
            before["location:" + location], after["location:" + location] = "present", "absent"
            for key in present:
                del staged[key]
    out["changed"] = bool(after)
    out["diff"] = {"before": before, "after": after}
    out["result"] = {"changed_settings": sorted(after)}
    if after and not CHECK:
        iis["apphost"] = staged


# Windows build of the simulated host: Server 2019 (17763) unless the state says otherwise (Server 2022: 20348). IIS knows
# the binding flag DisableLegacyTLS (64) from 20348 on (MicrosoftDocs/security#129: not on Server 2019).
IIS_LEGACY_TLS_BUILD = 20348


def iis_bindings_script():
    """files/iis_proxy_bindings.ps1 (Microsoft.Web.Administration): the named sites' bindings with their sslFlags; the
    DisableLegacyTLS bit (64) of the given HTTPS bindings set (or cleared), where the build knows it, with the bits of
    others from Previous (the read before microsoft.iis.website rewrote them) put back; ReadOnly and check mode write
    nothing, pending says whether a write would change anything."""
    iis = _iis()
    if _iis_missing("dll"):
        return
    params = args["parameters"]
    build = host.get("os_build", 17763)
    supported = build >= IIS_LEGACY_TLS_BUILD
    disable = params.get("DisableLegacyTls", True)
    read_only = bool(params.get("ReadOnly"))
    found, flags = [], []
    for name in params.get("Sites") or []:
        site = iis["sites"].get(name)
        if site is None:
            continue
        bindings = []
        for key, value in site["bindings"].items():
            ip, port, hostname = key.split(":", 2)
            flags.append({"site": name, "information": key, "ssl_flags": value["sslFlags"]})
            bindings.append({"ip": ip, "port": int(port), "hostname": hostname, "protocol": value["protocol"],
                             "use_sni": bool(value["sslFlags"] & 1), "use_ccs": bool(value["sslFlags"] & 2),
                             "certificate_hash": value.get("certificate", "") if value["protocol"] == "https" else "",
                             "ssl_flags": value["sslFlags"]})
        found.append({"name": name, "bindings": bindings})
    before, after, missing, staged = {}, {}, [], []
    for item in params.get("Bindings") or []:
        label = "%s %s" % (item["name"], item["information"])
        key = item["information"].lower()
        binding = iis["sites"].get(item["name"], {}).get("bindings", {}).get(key)
        if binding is None or binding["protocol"] != "https":
            if supported and disable:
                missing.append(label)
            continue
        current = wanted = binding["sslFlags"]
        earlier = next((p for p in params.get("Previous") or []
                        if p["site"] == item["name"] and p["information"].lower() == key), None)
        if earlier:
            wanted |= earlier["ssl_flags"] & ~3
        if supported:
            wanted = wanted | 64 if disable else wanted & ~64
        if wanted != current:
            before[label], after[label] = current, wanted
            staged.append((binding, wanted))
    if not read_only and missing and not CHECK:
        out.update(failed=True, result={"error": "these HTTPS bindings are missing after microsoft.iis.website ran, no flag "
                                                 "was written: " + ", ".join(missing)})
        return
    pending = bool(after or missing)
    if not read_only:
        out["changed"] = pending
        if not CHECK:
            for binding, wanted in staged:
                binding["sslFlags"] = wanted
        after.update({label: "DisableLegacyTLS once created" for label in missing})
        out["diff"] = {"before": before, "after": after}
    out["result"] = {"build": build, "legacy_tls_supported": supported, "pending": pending, "site": found, "flags": flags,
                     "changed_bindings": list(after)}


def iis_default_site_script():
    """files/iis_proxy_default_site.ps1: every started (or auto-starting) site but the role's with an http binding on
    Port and no host name is stopped and kept stopped (serverAutoStart false) when it is IIS setup's Default Web Site,
    with that one binding, its root application only, and nothing but iisstart.htm and iisstart.png in its directory;
    any other is listed in kept with the reasons. Check mode (-WhatIf) changes nothing."""
    iis = _iis()
    if _iis_missing("dll"):
        return
    params = args["parameters"]
    port, exclude = str(params.get("Port", 80)), params.get("Exclude") or []
    stopped, kept = [], []
    for name, site in iis["sites"].items():
        if name in exclude:
            continue
        catch_all = [k for k, b in site["bindings"].items()
                     if b["protocol"] == "http" and k.split(":")[1] == port and k.split(":", 2)[2] == ""]
        if not catch_all or (site["state"] != "Started" and not site.get("auto_start", True)):
            continue
        reasons = []
        if name != "Default Web Site":
            reasons.append("it is not IIS's Default Web Site")
        if len(site["bindings"]) != 1:
            reasons.append("it has other bindings")
        if site.get("applications", ["/"]) != ["/"]:
            reasons.append("it has applications or virtual directories of its own")
        else:
            # [Environment]::ExpandEnvironmentVariables, then Get-ChildItem -Recurse -Force: files and directories.
            path = site["physical_path"].lower().replace("%systemdrive%", "c:").rstrip("\\")
            content = [p[len(path) + 1:] for p in list(iis["files"]) + iis["dirs"] if p.startswith(path + "\\")]
            own = sorted(c for c in content if c not in ("iisstart.htm", "iisstart.png"))
            if own:
                reasons.append("%s holds more than IIS's start page (%s)" % (path, ", ".join(own[:5])))
        if reasons:
            kept.append({"name": name, "bindings": catch_all, "reasons": reasons})
            continue
        stopped.append(name)
        if not CHECK:
            site.update(auto_start=False, state="Stopped")
    out["changed"] = bool(stopped)
    out["diff"] = {"before": {"started": stopped}, "after": {"stopped": stopped}}
    out["result"] = {"stopped": stopped, "kept": kept}


def iis_spn_script():
    """files/iis_proxy_spn.ps1: read-only (SupportsShouldProcess, so it runs in check mode); holders of HTTP/<name>
    and HOST/<name> from host["spns"] (SPN -> accounts), one warning per problem."""
    params = args["parameters"]
    name = params["HostName"].lower()
    computer = host.get("computer", "PREFECT-AIO")
    expected = params.get("PoolAccount", "").split("\\")[-1] if params.get("PoolAccount") else computer + "$"
    spns = {k.lower(): v for k, v in host.get("spns", {}).items()}
    http, host_spn = spns.get("http/" + name, []), spns.get("host/" + name, [])
    warnings = []
    if len(http) > 1:
        warnings.append("HTTP/%s is registered on several accounts (%s)" % (params["HostName"], ", ".join(http)))
    elif len(http) == 1 and http[0].lower() != expected.lower():
        warnings.append("HTTP/%s is registered on %s, but %s decrypts the tickets" % (params["HostName"], http[0], expected))
    elif not http and not (not params.get("PoolAccount") and expected in host_spn):
        warnings.append("No account holds HTTP/%s: browsers fall back to NTLM." % params["HostName"])
    out["result"] = {"spn": "HTTP/" + params["HostName"], "expected_account": expected, "warnings": warnings,
                     "holders": [{"account": a, "spns": ["HTTP/" + name]} for a in http]}


STANDINS["website"] = iis_website
STANDINS["website_info"] = iis_website_info
STANDINS["web_app_pool"] = iis_web_app_pool
STANDINS["win_feature"] = iis_win_feature
STANDINS["win_certificate_info"] = iis_certificate_info
STANDINS["win_certificate_store"] = iis_certificate_store
SCRIPTS["iis_proxy_config.ps1"] = iis_config_script
SCRIPTS["iis_proxy_spn.ps1"] = iis_spn_script
SCRIPTS["iis_proxy_bindings.ps1"] = iis_bindings_script
SCRIPTS["iis_proxy_default_site.ps1"] = iis_default_site_script
# Modules other roles use too: this role's calls only (an IIS Extensions key, an MSI, web.config content, and the
# role's directories), so the other roles keep the stand-ins of sim_module.py and of the other parts.
_IIS_MINE = {}


def iis_installation_type():
    """win_reg_stat of HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion InstallationType: "Server" (Desktop
    Experience) or "Server Core" (host["installation_type"])."""
    value = host.get("installation_type", "Server")
    out.update(exists=True, type="REG_SZ", value=value, raw_value=value)


if NAME == "win_reg_stat" and _IIS_ARGS.get("path", "").lower().endswith("\\windows nt\\currentversion"):
    _IIS_MINE["win_reg_stat"] = iis_installation_type
if NAME == "win_reg_stat" and ("\\IIS Extensions\\" in _IIS_ARGS.get("path", "")
                              or _IIS_ARGS.get("path", "").lower().endswith("\\microsoft\\inetstp")):
    _IIS_MINE["win_reg_stat"] = iis_reg_stat
if NAME == "win_package" and (_IIS_ARGS.get("product_id") or str(_IIS_ARGS.get("path", "")).lower().endswith(".msi")):
    _IIS_MINE["win_package"] = iis_win_package
if NAME == "win_copy" and "content" in _IIS_ARGS:
    _IIS_MINE["win_copy"] = iis_win_copy_content
if NAME == "win_file" and ("\\inetpub\\" in _IIS_ARGS.get("path", "").lower() or _IIS_ARGS.get("path", "").lower().endswith(".pfx")):
    _IIS_MINE["win_file"] = iis_win_file


class _IisCallsFirst(dict):
    """Parts loaded after this one (sim_operate.py) register their own win_copy/win_file for every call; for this
    role's calls, chosen above, the stand-in of this file stays in place."""

    def __setitem__(self, key, value):
        if key not in _IIS_MINE:
            super().__setitem__(key, value)

    def update(self, *more, **kwargs):
        for key, value in dict(*more, **kwargs).items():
            self[key] = value


if _IIS_MINE:
    STANDINS = _IisCallsFirst(STANDINS)
    dict.update(STANDINS, _IIS_MINE)
