# modules: community.windows.win_firewall_rule ansible.windows.win_firewall
# Stand-ins for Windows Firewall (roles/firewall), as read in community.windows 3.1.0 plugins/modules/win_firewall_rule.ps1,
# ansible.windows 3.3.0 plugins/modules/win_firewall.ps1 and the role's files/firewall_rules.ps1.
# host["firewall"]["rules"] holds rules as the COM object HNetCfg.FwPolicy2 shows them: Name is the DISPLAY name
# (what win_firewall_rule's `name` matches), Grouping the group, Direction 1 in / 2 out, Action 0 block / 1 allow,
# Protocol 6 TCP / 256 any, Profiles a bit mask (0x7fffffff all); "id" is the NetSecurity rule name
# (Get-NetFirewallRule -Name), a GUID for rules made with -DisplayName only, as runbook 000's are.
# host["firewall"]["profiles"] holds Get-NetFirewallProfile's Enabled / DefaultInboundAction per profile.
_fw_ip = _SimLazy("ipaddress")  # noqa: F821 (simhost.py's prelude)
_fw_uuid = _SimLazy("uuid")  # noqa: F821

# A new HNetCfg.FWRule before the module sets anything (the module comments: Enabled defaults to false on the object).
FW_NEW_RULE = {"Name": None, "Description": None, "Grouping": None, "Direction": 1, "Action": 1, "ApplicationName": None,
               "ServiceName": None, "Enabled": False, "Profiles": 0x7FFFFFFF, "LocalAddresses": "*", "RemoteAddresses": "*",
               "LocalPorts": "*", "RemotePorts": "*", "Protocol": 256, "InterfaceTypes": "All", "EdgeTraversalOptions": 0,
               "SecureFlags": 0, "IcmpTypesAndCodes": None}
# $fwPropertiesToCompare and $userPassedArguments of the module, in the same order.
FW_COMPARE = [("Description", "description"), ("Direction", "direction"), ("Action", "action"),
              ("ApplicationName", "program"), ("Grouping", "group"), ("ServiceName", "service"), ("Enabled", "enabled"),
              ("Profiles", "profiles"), ("LocalAddresses", "localip"), ("RemoteAddresses", "remoteip"),
              ("LocalPorts", "localport"), ("RemotePorts", "remoteport"), ("Protocol", "protocol"),
              ("InterfaceTypes", "interfacetypes"), ("EdgeTraversalOptions", "edge"), ("SecureFlags", "security"),
              ("IcmpTypesAndCodes", "icmp_type_code")]
FW_KEYWORDS = {k.lower(): k for k in ("LocalSubnet", "DNS", "DHCP", "WINS", "DefaultGateway", "Internet", "Intranet",
                                      "IntranetRemoteAccess", "PlayToDevice")}


class FwComError(Exception):
    """What the COM setter throws for a value it does not accept (E_INVALIDARG, 'The parameter is incorrect.')."""


def fw_addresses(text):
    """What INetFwRule.RemoteAddresses returns after it was set to `text`: the firewall stores every entry in one
    spelling, a subnet with its dotted mask (10.0.0.0/24 and 10.0.0.0/255.255.255.0 read back the same), a single
    address with /255.255.255.255, keywords in their own case, '*' for any. This is why the module's comparison of
    the existing rule with a new COM rule sees 10.0.0.0/24 and 10.0.0.0/255.255.255.0 as equal (its integration
    tests assert it), while a plain text comparison would not."""
    entries = []
    for entry in str(text).split(","):
        entry = entry.strip()
        if entry == "*" or entry.lower() == "any":
            return "*"
        if entry.lower() in FW_KEYWORDS:
            entries.append(FW_KEYWORDS[entry.lower()])
            continue
        try:
            if "-" in entry:
                low, high = (_fw_ip.ip_address(p.strip()) for p in entry.split("-", 1))
                entries.append("%s-%s" % (low, high))
                continue
            if ":" in entry:
                # IPv6 (assumed spelling: compressed, a prefix by its length; the module compares through a COM rule
                # the firewall normalised, so only consistency matters here).
                net = _fw_ip.IPv6Network(entry, strict=False)
                entries.append(str(net.network_address) if net.prefixlen == 128 else str(net))
                continue
            address, _sep, mask = entry.partition("/")
            net = _fw_ip.IPv4Network("%s/%s" % (address, mask or "32"), strict=False)
            entries.append("%s/%s" % (_fw_ip.IPv4Address(address), net.netmask))
        except ValueError as exc:
            raise FwComError("The parameter is incorrect. (%s)" % entry) from exc
    return ",".join(entries)


def fw_profiles(names):
    total = sum({"domain": 1, "private": 2, "public": 4}[n] for n in dict.fromkeys(n.lower() for n in names))
    return 0x7FFFFFFF if total == 7 else total


def fw_ne(old, new):
    """PowerShell -ne: strings compare case-insensitively."""
    if isinstance(old, str) and isinstance(new, str):
        return old.lower() != new.lower()
    return old != new


def fw_new_rule():
    """$new_rule as the module builds it from the task's options."""
    rule = dict(FW_NEW_RULE)
    a = args
    if a.get("name"):
        rule["Name"] = a["name"]
    rule["Enabled"] = True if a.get("enabled") is None else bool(a["enabled"])
    if a.get("description") is not None:
        rule["Description"] = a["description"]
    if a.get("group") is not None:
        rule["Grouping"] = a["group"]
    for option, prop in (("program", "ApplicationName"), ("service", "ServiceName"), ("localport", "LocalPorts"),
                         ("remoteport", "RemotePorts")):
        if a.get(option) is not None and a[option] != "any":
            rule[prop] = str(a[option])
    if a.get("protocol") is not None and a["protocol"] != "any":
        rule["Protocol"] = {"tcp": 6, "udp": 17}.get(str(a["protocol"]).lower(), None) or int(a["protocol"])
    if a.get("localip") is not None and a["localip"] != "any":
        rule["LocalAddresses"] = fw_addresses(a["localip"])
    if a.get("remoteip") is not None and a["remoteip"] != "any":
        rule["RemoteAddresses"] = fw_addresses(a["remoteip"])
    if a.get("direction") is not None:
        rule["Direction"] = {"in": 1, "out": 2}[a["direction"]]
    if a.get("action") is not None:
        rule["Action"] = {"block": 0, "allow": 1}[a["action"]]
    if a.get("profiles") is not None:
        profiles = a["profiles"] if isinstance(a["profiles"], list) else str(a["profiles"]).split(",")
        rule["Profiles"] = fw_profiles(profiles)
    return rule


def fw_state():
    state = host.setdefault("firewall", {})
    state.setdefault("rules", [])
    state.setdefault("profiles", {p: {"enabled": True, "inbound": "NotConfigured"} for p in ("Domain", "Private", "Public")})
    return state


def win_firewall_rule():
    rules = fw_state()["rules"]
    name, group = args.get("name"), args.get("group")
    diff = bool(args.get("_ansible_diff"))
    prepared = ""
    if not name and not group:
        out.update(failed=True, msg="Either name or group must be specified")
        return
    try:
        new = fw_new_rule()
    except FwComError as exc:
        out.update(failed=True, msg=str(exc))
        return
    # `$_.Name -eq $name` / `$_.Grouping -eq $group`: case-insensitive; name wins over group.
    existing = [r for r in rules if (str(r.get("Name") or "").lower() == name.lower() if name
                                     else str(r.get("Grouping") or "").lower() == group.lower())]
    if args.get("state", "present") == "absent":
        if not existing:
            out["msg"] = "Firewall rule '%s' does not exist." % name if name else "No firewall rules in group '%s' exist." % group
        else:
            for rule in existing:
                prepared += "-[%s]\n" % rule["Name"] + "".join("-%s='%s'\n" % (p, rule.get(p)) for p, _o in FW_COMPARE)
                if not CHECK:
                    rules.remove(rule)
            out.update(changed=True, msg="Firewall rule(s) '%s' removed." % "', '".join(r["Name"] for r in existing))
    elif not existing and name:
        prepared += "+[%s]\n" % name + "".join("+%s='%s'\n" % (p, new.get(p)) for p, _o in FW_COMPARE)
        if not CHECK:
            rules.append(dict(new, id="{%s}" % _fw_uuid.uuid4()))
        out.update(changed=True, msg="Firewall rule '%s' created." % name)
    elif existing:
        changed_rules, unchanged_rules = [], []
        for rule in existing:
            prepared += "[%s]\n" % rule["Name"]
            changed = False
            for prop, option in FW_COMPARE:
                # Only values the task passes are compared (the module's $userPassedArguments).
                if args.get(option) is None or not fw_ne(rule.get(prop), new.get(prop)):
                    continue
                if prop.endswith("Addresses"):
                    # Compare-Object of the comma-split lists: order and case do not matter.
                    if sorted(str(rule.get(prop)).lower().split(",")) == sorted(str(new.get(prop)).lower().split(",")):
                        continue
                prepared += "-%s='%s'\n+%s='%s'\n" % (prop, rule.get(prop), prop, new.get(prop))
                if not CHECK:
                    rule[prop] = new[prop]
                changed = True
            (changed_rules if changed else unchanged_rules).append(rule["Name"])
            out["changed"] = out["changed"] or changed
        out["msg"] = "Firewall rule(s) changed '%s' - unchanged '%s'" % ("', '".join(changed_rules), "', '".join(unchanged_rules))
    if diff:
        out["diff"] = {"prepared": prepared}


def win_firewall():
    profiles = fw_state()["profiles"]
    wanted = args.get("profiles") or ["Domain", "Private", "Public"]
    state = args["state"]
    out.update(restart_required=False, profiles=wanted, state=state)
    for name in ("Domain", "Private", "Public"):
        current = profiles[name]
        out[name] = {"enabled": current["enabled"], "considered": name in wanted,
                     "currentstate": "True" if current["enabled"] else "False"}
        if name not in wanted:
            continue
        if state == "enabled":
            if not current["enabled"]:
                out["changed"] = True
                out[name]["enabled"] = True
                if not CHECK:
                    current["enabled"] = True
            if args.get("inbound_action") is not None:
                # ToTitleCase + remove '_', compared with the enum's name (-ne, case-insensitive).
                action = args["inbound_action"].title().replace("_", "")
                if action.lower() != current["inbound"].lower():
                    out["changed"] = True
                    if not CHECK:
                        current["inbound"] = action
        elif current["enabled"]:
            out["changed"] = True
            out[name]["enabled"] = False
            if not CHECK:
                current["enabled"] = False


def fw_port_listed(ports, port):
    for part in str(ports).split(","):
        part = part.strip()
        if part == "*":
            return True
        low, _sep, high = part.partition("-")
        if low.isdigit() and int(low) <= port <= int(high or low):
            return True
    return False


def firewall_rules_script():
    """roles/firewall/files/firewall_rules.ps1 (read-only)."""
    params = args["parameters"]
    state = fw_state()

    def info(rule):
        return {"name": rule["Name"], "group": rule.get("Grouping") or "", "enabled": bool(rule["Enabled"]),
                "action": "block" if rule["Action"] == 0 else "allow", "direction": "out" if rule["Direction"] == 2 else "in",
                "protocol": rule["Protocol"], "localport": rule["LocalPorts"], "remoteip": rule["RemoteAddresses"]}
    legacy = [n.lower() for n in params.get("LegacyNames") or []]
    port = int(params.get("WinRMPort", 5986))
    result = {"group_rules": [], "shared_rules": [], "legacy_rules": [], "disable_rules": [], "profiles": {},
              "winrm_rules": []}
    group = params["Group"].lower()
    outside = {r["Name"].lower() for r in state["rules"] if str(r.get("Grouping") or "").lower() != group}
    for rule in state["rules"]:
        if str(rule.get("Grouping") or "").lower() == group:
            result["shared_rules" if rule["Name"].lower() in outside else "group_rules"].append(info(rule))
        if rule["Name"].lower() in legacy:
            result["legacy_rules"].append(info(rule))
        if (rule["Enabled"] and rule["Direction"] == 1 and rule["Action"] == 1 and rule["Protocol"] in (6, 256)
                and fw_port_listed(rule["LocalPorts"], port)):
            result["winrm_rules"].append({"name": rule["Name"], "profiles": rule["Profiles"], "remoteip": rule["RemoteAddresses"]})
    for rule_name in params.get("DisableRuleNames") or []:
        for rule in state["rules"]:
            if str(rule.get("id", "")).lower() == rule_name.lower():
                result["disable_rules"].append({"rule_name": rule_name, "name": rule["Name"], "enabled": bool(rule["Enabled"])})
    for name in params.get("Profiles") or []:
        current = state["profiles"][name]
        # The active store's AllowLocalFirewallRules (False: Group Policy "Apply local firewall rules: No").
        result["profiles"][name] = {"enabled": current["enabled"], "inbound": current["inbound"],
                                    "local_rules": current.get("local_rules", "NotConfigured")}
    out.update(changed=False, result=result)


STANDINS["win_firewall_rule"] = win_firewall_rule
STANDINS["win_firewall"] = win_firewall
SCRIPTS["firewall_rules.ps1"] = firewall_rules_script
