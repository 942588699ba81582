# modules:
# Stand-ins of playbooks/verify.yml's own calls (simhost.py PARTS); no new module, so the list above is empty.
# - files/tcp_probe.ps1, files/cert_expiry.ps1 and files/redis_check.ps1 (win_powershell), as the scripts read.
# - enclave.prefect.server_health when it calls through the proxy (an https api_url): the network between the hosts.
#   Its other calls (the roles' local health checks) keep sim_module.py's stand-in.
# The network: every simulated host's state (one file per host under <root>/hosts/<host>/ when the test runs several
# hosts, as test_site_distributed.Hosts does; else the one host). host["address"] is a host's IPv4 address as the others
# see it (the inventory's prefect_host_address; the control node's own file has it too). A TCP connection to a host
# opens when something listens there for other hosts (IIS on a started site's binding port, the Prefect server on a
# non-loopback --host, PostgreSQL with listen_addresses beyond loopback) and Windows Firewall admits it (an enabled
# inbound allow rule of that port and remote address, or an inbound default of Allow); otherwise it times out, as a
# dropped SYN does. sim_postgresql.py's pg_basebackup and WAL receiver connect through it too.
# Accounts the proxy's Windows authentication accepts: host["domain_accounts"] ({"CORP\\user": password}) on the proxy
# host; host["kerberos_ticket"] on the control node (default true) stands for the operator's ticket.
# Certificates: host["certificate_details"] ({thumbprint: {subject, not_after (ISO 8601 UTC)}}) for those in
# host["iis"]["certificates"] (Cert:\LocalMachine\My).
import datetime as _v_dt
import json as _v_json
import os as _v_os

_v_ip = _SimLazy("ipaddress")  # noqa: F821 (simhost.py's prelude)


def _v_urlsplit(url):
    from urllib.parse import urlsplit
    return urlsplit(url)


_V_ARGS = _sim_args()


def _v_network():
    """{name: state} of every simulated host, this one as the body holds it (its changes are saved by the body)."""
    here = _v_os.environ["ENCLAVE_SIM_STATE"]
    home = _v_os.path.dirname(_v_os.path.dirname(here))
    if _v_os.path.basename(home) != "hosts":
        return {"": host}
    states = {}
    for name in sorted(_v_os.listdir(home)):
        state_file = _v_os.path.join(home, name, "state.json")
        if _v_os.path.samefile(state_file, here):
            states[name] = host
        elif _v_os.path.isfile(state_file):
            states[name] = _v_json.load(open(state_file))
    return states


def _v_host_by_name(name):
    """DNS: a host by its name (the inventory name, its short name, or a name one of its IIS bindings answers to) or its
    address."""
    name = name.lower()
    for key, state in _v_network().items():
        names = {key.lower(), key.lower().split(".")[0], str(state.get("address", "")), state.get("computer", "").lower()}
        for site in state.get("iis", {}).get("sites", {}).values():
            names.update(b.split(":", 2)[2].lower() for b in site.get("bindings", {}))
        if name in names:
            return state
    return None


def _v_listens(state, port):
    """Something accepts connections from other hosts on this port."""
    for site in state.get("iis", {}).get("sites", {}).values():
        if site.get("state") == "Started" and any(b.split(":")[1] == str(port) for b in site.get("bindings", {})):
            return "IIS"
    for name, svc in state.get("services", {}).items():
        env = svc.get("environment", {})
        params = svc.get("registry", {}).get("AppParameters", "").split()
        bind = params[params.index("--host") + 1] if "--host" in params[:-1] else env.get("PREFECT_SERVER_API_HOST", "127.0.0.1")
        listen_port = params[params.index("--port") + 1] if "--port" in params[:-1] else env.get("PREFECT_SERVER_API_PORT", "4200")
        if "server start" in " ".join(params) and svc.get("running") and str(listen_port) == str(port) \
                and not bind.startswith("127.") and bind != "localhost":
            return name
    # PostgreSQL (sim_postgresql.py): the running postmaster on its port, when listen_addresses has more than loopback.
    postmaster = state.get("pg", {}).get("postmaster", {})
    listen = {a.strip() for a in str(postmaster.get("listen_addresses", "localhost")).split(",")}
    for inst in state.get("pg_installations", {}).values():
        svc = state.get("services", {}).get(inst.get("Service ID"), {})
        if svc.get("running") and str(postmaster.get("port")) == str(port) and listen & {"*", "0.0.0.0", state.get("address")}:
            return inst["Service ID"]
    return None


def _v_address_in(address, remote):
    """RemoteAddresses as HNetCfg.FWRule shows them: '*', or a comma-separated list of addresses, address/mask and
    ranges (keywords such as LocalSubnet are not modelled: they match nothing here)."""
    if remote in ("*", None):
        return True
    for item in str(remote).split(","):
        try:
            if "-" in item:
                low, high = item.split("-")
                if _v_ip.ip_address(low) <= _v_ip.ip_address(address) <= _v_ip.ip_address(high):
                    return True
            elif _v_ip.ip_address(address) in _v_ip.ip_network(item, strict=False):
                return True
        except (ValueError, TypeError):  # another family compares as no match
            continue
    return False


def _v_admitted(state, port, from_address):
    firewall = state.get("firewall", {})
    profiles = firewall.get("profiles", {})
    # An enabled profile blocks unsolicited inbound traffic unless its default is Allow (NotConfigured means Block).
    if profiles and all(not p.get("enabled") or p.get("inbound") == "Allow" for p in profiles.values()):
        return True
    for rule in firewall.get("rules", []):
        ports = str(rule.get("LocalPorts", "*")).split(",")
        if rule.get("Enabled") and rule.get("Direction") == 1 and rule.get("Action") == 1 and rule.get("Protocol") in (6, 256) \
                and ("*" in ports or str(port) in ports) and _v_address_in(from_address, rule.get("RemoteAddresses")):
            return True
    return False


def _v_caller():
    """Address the request comes from: the control node's for a server_health call with api_from: controller (with one
    simulated host the control node shares its state file: host["control_node_address"]), else this host's."""
    if NAME == "server_health" and args.get("api_from") == "controller":
        return host.get("control_node_address", host.get("address", ""))
    return host.get("address", "")


def _v_connect(target, port):
    """(state of the target or None, problem or None) of a TCP connection from the caller."""
    state = _v_host_by_name(target)
    if state is None:
        return None, "No such host is known (%s)" % target
    caller = _v_caller()
    if state is host and caller == host.get("address") and _v_listens(state, port):
        return state, None  # the host itself: the firewall does not filter its own traffic
    if not _v_listens(state, port) or not _v_admitted(state, port, caller):
        return None, "timed out"
    return state, None


def verify_tcp_probe():
    # files/tcp_probe.ps1: TcpClient.ConnectAsync(...).Wait(TimeoutMs); a dropped SYN is "no connection within N ms".
    params = args["parameters"]
    timeout = int(params.get("TimeoutMs", 5000))
    state, problem = _v_connect(params["Address"], int(params["Port"]))
    detail = "" if state is not None else ("no connection within %d ms" % timeout if problem == "timed out" else problem)
    out["result"] = {"address": params["Address"], "port": int(params["Port"]), "open": state is not None, "detail": detail}


def verify_cert_expiry():
    # files/cert_expiry.ps1: by thumbprint in Cert:\LocalMachine\My; days_left = Floor((NotAfter - now).TotalDays);
    # a missing certificate is found=false with days_left -1.
    now = _v_dt.datetime.now(_v_dt.timezone.utc)
    store = [t.upper() for t in host.get("iis", {}).get("certificates", [])]
    details = host.get("certificate_details", {})
    certificates = []
    for thumbprint in args["parameters"]["Thumbprints"]:
        if thumbprint.upper() in store:
            cert = details[thumbprint.upper()]
            not_after = _v_dt.datetime.fromisoformat(cert["not_after"])
            days = (not_after - now).total_seconds() / 86400.0
            certificates.append({"thumbprint": thumbprint.upper(), "found": True, "subject": cert["subject"],
                                 "not_after": not_after.isoformat(), "days_left": int(days // 1)})
        else:
            certificates.append({"thumbprint": thumbprint, "found": False, "subject": "", "not_after": "", "days_left": -1})
    out["result"] = {"certificates": certificates}


def _v_effective(state, site, section, attribute):
    """applicationHost.config as IIS reads it: the site's <location>, else the server level, else the schema default."""
    apphost = state.get("iis", {}).get("apphost", {})
    for key in (site + "|" + section, "|" + section):
        if attribute in apphost.get(key, {}):
            return str(apphost[key][attribute]).lower()
    return str(IIS_SECTIONS[section][0][attribute]).lower()


# LogonUser's logon type for basicAuthentication's logonMethod (0 Interactive, 1 Batch, 2 Network, 3 ClearText, which is
# LOGON32_LOGON_NETWORK_CLEARTEXT) and the rights it needs: the right, or by default Everyone's "Access this computer
# from the network"; interactive and batch logon are held by Administrators and Backup Operators only on a server.
_V_LOGON_RIGHTS = {0: ("SeInteractiveLogonRight", "SeDenyInteractiveLogonRight", False),
                   1: ("SeBatchLogonRight", "SeDenyBatchLogonRight", False),
                   2: ("SeNetworkLogonRight", "SeDenyNetworkLogonRight", True),
                   3: ("SeNetworkLogonRight", "SeDenyNetworkLogonRight", True)}


def _v_basic_logon(state, site, user, password, domain_accounts):
    """IIS Basic authentication: LogonUser(name, domain, password, logonMethod). A name without DOMAIN\\ is looked up in
    defaultLogonDomain; the proxy host's own name means its local accounts (state["accounts"], made by win_user with
    their password) and their logon rights (state["rights"]); any other domain means host["domain_accounts"]."""
    domain, _, short = user.rpartition("\\")
    domain = domain or _v_effective(state, site, "system.webServer/security/authentication/basicAuthentication",
                                    "defaultLogonDomain")
    method = int(_v_effective(state, site, "system.webServer/security/authentication/basicAuthentication", "logonMethod"))
    right, deny, everyone = _V_LOGON_RIGHTS[method]
    rights = state.get("rights", {})
    if domain.lower() not in (state.get("computer", "").lower(), "."):
        name = domain.upper() + "\\" + short
        if domain_accounts.get(name, domain_accounts.get(user)) != password:
            return False
        # The domain account's SID and those of its groups (host["directory"], host["groups"], host["group_members"]).
        sids = {info["sid"] for n, info in state.get("directory", {}).items() if n.lower() == name.lower()}
        sids |= {state.get("groups", {}).get(g, {}).get("sid") for g, members in state.get("group_members", {}).items()
                 if name.lower() in (m.lower() for m in members)}
        return not sids & set(rights.get(deny, [])) and (everyone or bool(sids & set(rights.get(right, []))))
    account = next((a for n, a in state.get("accounts", {}).items() if n.lower() == short.lower()), None)
    if account is None or account.get("password") != password:
        return False
    return account["sid"] not in rights.get(deny, []) and (everyone or account["sid"] in rights.get(right, []))


def _v_ip_entry_admits(entry, caller):
    """One ipSecurity <add>: an IPv4 address under its subnetMask; an IPv6 address with the default mask (what IIS
    Manager writes for one address) admits that address only."""
    if ":" in entry["ipAddress"]:
        try:
            return _v_ip.ip_address(caller) == _v_ip.ip_address(entry["ipAddress"])
        except ValueError:
            return False
    return _v_address_in(caller, "%s/%s" % (entry["ipAddress"], entry.get("subnetMask", "255.255.255.255")))


def _v_proxy_answer(state, site, credentials):
    """(status, body) of IIS for one request to a site: IP restrictions, then authentication, then ARR to the server."""
    auth = "system.webServer/security/authentication/"
    ip = state.get("iis", {}).get("apphost", {}).get(site + "|system.webServer/security/ipSecurity", {})
    if ip.get("allowUnlisted", "true").lower() == "false":
        listed = [dict(p.split("=", 1) for p in item.split(";")) for item in ip.get("collection:", [])]
        if not any(e.get("allowed", "").lower() == "true" and _v_ip_entry_admits(e, _v_caller())
                   for e in listed if "ipAddress" in e):
            return 403, "403 - Forbidden: Access is denied. (IIS 403.503: the IP address of the client has been rejected)"
    if _v_effective(state, site, auth + "anonymousAuthentication", "enabled") != "true":
        accounts = state.get("domain_accounts", {})
        kind = credentials[0] if credentials else None
        user = None
        if kind == "negotiate" and _v_effective(state, site, auth + "windowsAuthentication", "enabled") == "true":
            user, password = credentials[1], credentials[2]
            ok = host.get("kerberos_ticket", True) if user is None else accounts.get(user) == password
            # The operator's Kerberos ticket names its account.
            user = user or host.get("kerberos_user", "CORP\\operator")
        elif kind == "basic" and _v_effective(state, site, auth + "basicAuthentication", "enabled") == "true":
            user = credentials[1]
            ok = _v_basic_logon(state, site, user, credentials[2], accounts)
        else:
            ok = False
        if not ok:
            return 401, "401 - Unauthorized: Access is denied due to invalid credentials."
        # URL Authorization (UrlAuthorizationModule, with Web-Url-Auth): the location's rules, else the server's
        # "allow *"; the first rule naming the account, one of its groups (host["group_members"]) or * decides.
        rules = state.get("iis", {}).get("apphost", {}).get(site + "|system.webServer/security/authorization", {}).get(
            "collection:", ["accessType=Allow;users=*;roles=;verbs="])
        members = {g.lower(): [m.lower() for m in ms] for g, ms in host.get("group_members", {}).items()}
        verdict = None
        for text in rules:
            rule = dict(p.split("=", 1) for p in text.split(";"))
            users = [u.strip().lower() for u in rule.get("users", "").split(",") if u.strip()]
            roles = [r.strip().lower() for r in rule.get("roles", "").split(",") if r.strip()]
            if "*" in users or user.lower() in users or any(user.lower() in members.get(r, []) for r in roles):
                verdict = rule.get("accessType") == "Allow"
                break
        if "Web-Url-Auth" in state.get("iis", {}).get("features", []) and not verdict:
            return 401, "401 - Unauthorized: Access is denied due to server configuration."
    server = state.get("services", {}).get("PrefectServer", {})
    if not server.get("running"):
        return 502, "502 - Web server received an invalid response while acting as a gateway or proxy server."
    return 200, None


def verify_server_health():
    # server_health (plugins/module_utils/health_checks.py) through the proxy: health and ready with the task's
    # credentials until `timeout` (no sleeping here), version, then one request without credentials when
    # expect_unauthenticated_status is set. Messages as Checker.fail words them; secrets never in them.
    url = _v_urlsplit(args["api_url"])
    port = url.port or 443
    base = args["api_url"].rstrip("/")
    timeout = int(args.get("timeout") or 120)
    checks = []

    def fail(name, detail):
        checks.append({"name": name, "ok": False, "detail": detail})
        out.update(failed=True, checks=checks, healthy=False, ready=False,
                   msg="server_health: check '%s' failed after %.1f s: %s" % (name, float(timeout), detail))

    state, problem = _v_connect(url.hostname, port)
    if state is None:
        hint = "is the host reachable from %s and the port open in its firewall?" % (
            "the control node" if args.get("api_from") == "controller" else "the Windows host")
        fail("health", "GET %s/health: connection error: %s (check: %s) (waited %d s)" % (base, problem, hint, timeout))
        return
    site = next((n for n, s in state["iis"]["sites"].items() if s.get("state") == "Started"
                 and any(b.split(":")[1] == str(port) for b in s.get("bindings", {}))), None)
    auth = args.get("auth") or "none"
    if auth == "basic":
        user, _, password = (args.get("auth_string") or "").partition(":")
        credentials = ("basic", user, password)
    elif auth in ("negotiate", "ntlm", "kerberos"):
        credentials = ("negotiate", args.get("username"), args.get("password"))
    else:
        credentials = None
    status, body = _v_proxy_answer(state, site, credentials)
    if status != 200:
        # 401/403 with credentials: refused at once (not retried), as Checker.wait_for does.
        fail("health", "GET %s/health: HTTP %d %s (%s)" % (base, status, body, "the credentials were refused: not retried"
                                                           if status in (401, 403) and credentials else "waited %d s" % timeout))
        return
    version = host.get("prefect_version", "unknown")
    checks += [{"name": "health", "ok": True, "detail": "GET %s/health: HTTP 200 true" % base},
               {"name": "ready", "ok": True, "detail": "GET %s/ready: HTTP 200" % base},
               {"name": "version", "ok": True, "detail": "Prefect %s, API 0.8.4" % version}]
    expected = args.get("expect_unauthenticated_status")
    if expected is not None:
        status, body = _v_proxy_answer(state, site, None)
        seen = "GET %s/admin/version without credentials: HTTP %d %s" % (base, status, body or '"%s"' % version)
        if status != int(expected):
            fail("unauthenticated", "%s, expected HTTP %d%s" % (seen, int(expected),
                                                               ": authentication is not enforced" if status < 300 else ""))
            return
        checks.append({"name": "unauthenticated", "ok": True, "detail": seen})
    if args.get("denied_username"):
        user = args["denied_username"]
        status, body = _v_proxy_answer(state, site, (credentials[0], user, args.get("denied_password")))
        seen = "GET %s/admin/version as %s: HTTP %d %s" % (base, user, status, body or '"%s"' % version)
        wanted = int(args.get("expect_denied_status") or 401)
        if status != wanted:
            fail("not allowed", "%s, expected HTTP %d%s" % (seen, wanted, ": authorization is not enforced, every account that "
                                                                         "signs in is let through" if status < 300 else ""))
            return
        checks.append({"name": "not allowed", "ok": True, "detail": seen})
    out.update(healthy=True, ready=True, prefect_version=version, api_version="0.8.4", checks=checks, api_from=args.get("api_from"))


# Held to Debian's redis-server 7.0 by tests/integration/test_redis_check.py (the whole reply, one literal).
_REDIS_NO_PASSWORD = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"


def verify_redis_check():
    # files/redis_check.ps1: TcpClient to Address:Port, AUTH when a password is given, INFO server, INFO cluster,
    # COMMAND INFO XAUTOCLAIM; any problem is the result's error (the script catches it). The Redis this host reaches:
    # host["redis_endpoints"] {"<address>:<port>": {"version", "cluster_enabled", "password"}} (absent: no connection).
    # Redis's own replies (7.0 server.c/acl.c): a wrong password is WRONGPASS, a command without AUTH where a password is
    # set NOAUTH, AUTH where none is set an ERR; COMMAND INFO of a command Redis lacks (XAUTOCLAIM before 6.2) is nil.
    params = args["parameters"]
    address, port, password = params["Address"], int(params["Port"]), params.get("Password") or ""
    endpoint = (host.get("redis_endpoints") or {}).get("%s:%d" % (address, port))
    result = {"address": address, "port": port, "version": "", "cluster_enabled": False, "xautoclaim": False, "error": ""}
    if endpoint is None:
        result["error"] = "no connection to %s:%d within %d ms" % (address, port, int(params.get("TimeoutMs", 5000)))
    elif password and not endpoint.get("password"):
        result["error"] = "Redis answered: " + _REDIS_NO_PASSWORD
    elif password and password != endpoint["password"]:
        result["error"] = "Redis answered: WRONGPASS invalid username-password pair or user is disabled."
    elif endpoint.get("password") and not password:
        result["error"] = "Redis answered: NOAUTH Authentication required."
    else:
        version = endpoint["version"]
        result.update(version=version, cluster_enabled=bool(endpoint.get("cluster_enabled")),
                      xautoclaim=tuple(int(p) for p in version.split(".")[:2]) >= (6, 2))
    out["result"] = result


SCRIPTS.update({"files/tcp_probe.ps1": verify_tcp_probe, "files/cert_expiry.ps1": verify_cert_expiry,
                "files/redis_check.ps1": verify_redis_check})
if NAME == "server_health" and str(_V_ARGS.get("api_url", "")).startswith("https://"):
    STANDINS["server_health"] = verify_server_health
