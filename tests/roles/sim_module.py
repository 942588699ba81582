# Body of every stand-in module of the simulated host (simhost.py writes the module file: its NAME and arguments).
# Each branch behaves as the real module or program does, as read in its source; the comments say where.
# The host is one JSON document: files, junctions, registry values of the NSSM services, ACLs, accounts.
# A "clock" counts module calls, so times compare without sleeping.
# Stand-ins of other roles live in tests/roles/sim_<area>.py: simhost.py puts their text before this body; each
# registers functions in STANDINS (by module name) or SCRIPTS (by win_powershell script file name), which run with
# this body's globals (args, host, out, CHECK, NOW, lookup, sid_of).
import hashlib
import json
import os

NAME = globals().get("NAME", "")


def save_state(state, where):
    """Atomic: another host's module may read this file at any moment (sim_verify.py's network), and a file truncated
    by open(..., "w") and not written yet reads as invalid JSON."""
    temporary = "%s.%d.tmp" % (where, os.getpid())
    with open(temporary, "w") as handle:
        json.dump(state, handle)
    os.replace(temporary, where)


args = _sim_args()
path = os.environ["ENCLAVE_SIM_STATE"]
host = json.load(open(path))
host["clock"] = host.get("clock", 0) + 1
NOW = host["clock"]
files, services = host.setdefault("files", {}), host.setdefault("services", {})
dirs, accounts = host.setdefault("dirs", {}), host.setdefault("accounts", {})
out = {"changed": False}
CHECK = bool(args.get("_ansible_check_mode"))

# NSSM itself (NSSM_DEFAULTS, nssm_set, nssm_get, nssm_install...) is sim_nssm.py, a part placed before this body.
# SCM states (win_service_info's names) of a service that is neither stopped nor plainly running: services[n]["scm_state"].
SCM_ACTIVE = {"paused", "pause_pending", "start_pending", "continue_pending", "stop_pending"}
BROAD = {"S-1-1-0", "S-1-5-32-545", "S-1-5-11", "S-1-5-4", "S-1-3-0"}


def lookup(p):
    p = p.lower()
    for link, target in host.setdefault("junctions", {}).items():
        if p.startswith(link + "\\"):
            p = target + p[len(link):]
    if p in files:
        return files[p]
    if any(p.startswith(d + "\\") for d in host.setdefault("unpacked", [])):
        return ""
    return None


def dependents_of(name):
    """The services that depend on `name`, every level down (EnumDependentServices, ServiceController.DependentServices)."""
    dependents, todo = [], [name]
    while todo:
        current = todo.pop()
        for other, svc in services.items():
            if current in svc.get("dependencies", []) and other not in dependents:
                dependents.append(other)
                todo.append(other)
    return dependents


def sid_of(name):
    """The account database as LookupAccountName searches it (Microsoft's documentation of LookupAccountNameW and
    LsaLookupNames): well-known names, then the local accounts (host["accounts"], made by win_user or declared), then
    the primary domain (host["directory"]: {"CORP\\name": {"sid": ...}}). A bare name not found locally goes on to
    the domain; '.\\name' and 'COMPUTER\\name' (the scripts turn '.\\' into the computer name) never leave the
    local database; 'DOMAIN\\name' is looked up in the domain (an undeclared domain resolves to a local account of
    that name, as the tests have always declared domain accounts)."""
    prefix, _, short = name.rpartition("\\")
    short = short.lower()
    if name.upper().startswith("S-1-"):
        return name.upper()
    # A service's virtual account (NT SERVICE\<service>): its SID is derived from the service name, and
    # LookupAccountName knows it only while that service exists.
    if prefix.lower() == "nt service":
        found = next((n for n in services if n.lower() == short), None)
        if found is None:
            return None
        import hashlib as _hashlib
        digest = _hashlib.sha1(found.upper().encode("utf-16-le")).digest()
        return "S-1-5-80-" + "-".join(str(int.from_bytes(digest[i:i + 4], "little")) for i in range(0, 20, 4))
    # Well-known accounts resolve on every host (LookupAccountName of NT AUTHORITY\NetworkService and the like).
    if short in ("system", "localsystem", "localservice", "local service", "networkservice", "network service"):
        return "S-1-5-" + {"system": "18", "localsystem": "18", "localservice": "19", "local service": "19"}.get(short, "20")
    local = next((info["sid"] for acct, info in accounts.items() if acct.lower() == short), None)
    # The domain's accounts and its groups (host["groups"]: {"CORP\\Prefect Users": {"sid": ...}}).
    directory = {acct.lower(): info["sid"] for acct, info in {**host.get("groups", {}), **host.get("directory", {})}.items()}
    if prefix in (".", "") or prefix.lower() == host.get("computer", "").lower():
        if local or prefix:
            return local
        return next((sid for acct, sid in directory.items() if acct.split("\\")[-1] == short), None)
    return directory.get(name.lower(), local)


def expanded_names(value):
    """The names ExpandEnvironmentStrings may look up in value (nssm_settings.ps1 Get-ExpandedNames): the closing '%'
    of an undefined name opens the next candidate."""
    names, i = [], 0
    while True:
        start = value.find("%", i)
        end = value.find("%", start + 1) if start >= 0 else -1
        if end < 0:
            return names
        if end > start + 1:
            names.append(value[start + 1:end])
        i = end


def nssm_settings():
    """nssm_settings.ps1: reads each service's Parameters key, absent = the default from the table the role
    passes (Defaults), sets only differences with `nssm set`, writes the environment and the key's DACL, and
    decides from host state which running services must restart."""
    params = args["parameters"]
    table = params["Defaults"]
    link = params["VenvLink"].lower()
    target = host.setdefault("junctions", {}).get(link, link)
    if CHECK and params.get("PendingVenv"):
        target = params["PendingVenv"].lower().rstrip("\\")
    report = {}
    # A secret in which a name defined on the host (its environment, the service's own) stands between two '%' is
    # refused before anything is written, naming service and variable, never the value.
    import re as _ns_re
    defined = {n.lower() for n in host.get("environment_names", [])}
    expanding = []
    for svc in params["Services"]:
        names = defined | {n.lower() for n in svc["environment"]}
        for key, value in svc["environment"].items():
            secret = key in params["SecretNames"] or _ns_re.search(params["SecretPattern"], key, _ns_re.I)
            if secret and any(c.lower() in names for c in expanded_names(value)):
                expanding.append("%s: %s" % (svc["name"], key))
    # A name taken by a service whose program is not nssm.exe (Win32_Service PathName) is never touched.
    names = [svc["name"] for svc in params["Services"]] + list(params.get("AbsentServices", []))
    foreign = ["%s runs %s" % (name, services[name].get("image_path", "")) for name in names
               if name in services and not _ns_re.search(r"(^|\\)nssm\.exe$",
                                                         services[name].get("image_path", "").strip('" '), _ns_re.I)]
    if expanding or foreign:
        out["result"] = {"services": {}, "refused": expanding, "foreign": foreign}
        return
    for svc in params["Services"]:
        name = svc["name"]
        old = services.get(name)
        application = svc["application"].lower().replace(link, target, 1)
        entry = {"installed": old is None, "was_running": bool(old and old.get("running")), "changes": [],
                 "acl_changed": False, "account_differs": False, "restart": False}
        report[name] = entry
        if old is None:
            entry["changes"].append("install")
            if CHECK:
                entry["restart"] = False
                continue
            # The key inherits Users: read.
            # nssm install writes Application, AppParameters and AppDirectory (sim_nssm.nssm_install, as the binary
            # does); the script then sets the start type to manual until win_service sets the account.
            old = services[name] = {"registry": nssm_install(application), "app_exit": "Restart", "environment": {},
                                    "start_mode": "manual",
                                    "acl": {"S-1-5-32-545": "ReadKey", "S-1-5-18": "FullControl", "S-1-5-32-544": "FullControl"},
                                    "protected": False, "running": False, "object_name": "LocalSystem",
                                    "image_path": params["Nssm"]}
        elif old.get("image_path", "").lower() != params["Nssm"].lower():
            entry["changes"].append("ImagePath")
            if not CHECK:
                old["image_path"] = params["Nssm"]
        registry = old["registry"]
        wanted = dict(svc["params"], Application=application)
        for key, value in sorted(wanted.items()):
            if host.get("read_absent_as_empty"):
                # The defect this stand-in exists to catch: a registry read that ignores NSSM's deleted defaults.
                current = registry.get(key, "")
            elif host.get("read_via_nssm_get"):
                current = nssm_get(registry, key)
            else:
                current = registry.get(key, table.get(key, ""))
            if str(current) != str(value):
                entry["changes"].append(key)
                if not CHECK:
                    nssm_set(registry, key, value)
        if old.get("app_exit") != svc["exit_action"]:
            entry["changes"].append("AppExit")
            if not CHECK:
                old["app_exit"] = svc["exit_action"]
        if old.get("environment") != svc["environment"]:
            entry["changes"].append("AppEnvironmentExtra")
            if not CHECK:
                old["environment"] = svc["environment"]
        account_sid = sid_of(svc["account"])
        want_acl = {"S-1-5-18": "FullControl", "S-1-5-32-544": "FullControl"}
        if account_sid:
            want_acl[account_sid] = "ReadKey"
        if old.get("acl") != want_acl or not old.get("protected"):
            entry["acl_changed"] = True
            if not CHECK:
                old["acl"], old["protected"] = want_acl, True
        if entry["changes"] and not CHECK:
            old["configured_at"] = NOW
        entry["account_differs"] = sid_of(old.get("object_name", "")) != account_sid
        owner_differs = old.get("running") and sid_of(old.get("process_owner", "")) != sid_of(old.get("object_name", ""))
        stale = old.get("running") and old.get("app_started", 0) < old.get("configured_at", 0)
        entry["restart"] = bool(old.get("running") and (entry["changes"] or entry["account_differs"] or owner_differs or stale))
    host["last_nssm_report"] = report  # the task is no_log: tests read the report here
    out.update(result={"services": report, "refused": []},
               changed=any(r["changes"] or r["acl_changed"] for r in report.values()))


def service_accounts():
    """service_accounts.ps1: every account resolves; none is a direct member of Administrators (S-1-5-32-544,
    removed) nor, for a domain account, a member through a domain group that is one (refused, naming the group).
    The directory (host["directory"] accounts, host["directory_groups"]: {group SID: {"name", "members": [SIDs]}},
    a member's "primary_group" SID) answers as the script asks it on every run: the chain of each domain group in
    Administrators (LDAP_MATCHING_RULE_IN_CHAIN), and the account's primary group. host["directory_unreachable"]: the
    domain controller cannot be asked (the run fails saying why, unless SkipNestedCheck, which warns)."""
    params = args["parameters"]
    report, warnings = {}, []
    admins = host.setdefault("administrators", [])
    groups = host.get("directory_groups", {})
    primary = {info["sid"]: info.get("primary_group") for info in host.get("directory", {}).values()}

    def in_chain(sid, group, seen=()):
        members = groups.get(group, {}).get("members", [])
        return sid in members or any(m in groups and m not in seen and in_chain(sid, m, seen + (group,)) for m in members)

    resolved, roles_of = {}, {}
    for acct in params["Accounts"]:
        sid = sid_of(acct["name"])
        entry = {"sid": sid, "removed_from_administrators": False, "effective_administrator": None}
        report[acct["name"]] = entry
        if sid is None:
            if CHECK:
                continue
            out.update(failed=True, msg="Account %s does not exist" % acct["name"])
            return
        if sid in resolved:
            roles_of[sid] = roles_of[sid] | set(acct.get("roles", []))
            if {"server", "worker"} <= roles_of[sid] and not params.get("AllowSameAccount"):
                out.update(failed=True, msg="Service accounts '%s' and '%s' are one account on %s (%s), which would run "
                           "both the Prefect server and a worker" % (resolved[sid], acct["name"], host.get("computer", ""), sid))
                return
        else:
            roles_of[sid] = set(acct.get("roles", []))
        resolved[sid] = acct["name"]
        if sid in admins:
            entry["removed_from_administrators"] = True
            out["changed"] = True
            if not CHECK:
                admins.remove(sid)
        if acct["kind"] == "local":
            entry["effective_administrator"] = False
            continue
        if params.get("SkipNestedCheck"):
            warnings.append("Nested Administrators membership of %s is not checked (nssm_services_nested_admin_check: "
                            "false): check it by hand" % acct["name"])
            continue
        if host.get("directory_unreachable"):
            out.update(failed=True, msg="Could not check whether service account '%s' is in Administrators through a "
                       "domain group: the directory could not be asked as %s$: The server is not operational. Make the "
                       "domain controller reachable, or set nssm_services_nested_admin_check: false and check it by hand"
                       % (acct["name"], host.get("computer", "")))
            return
        through = next((groups.get(g, {}).get("name", g) for g in admins
                        if g == primary.get(sid) or (g in groups and in_chain(sid, g))), "")
        entry["effective_administrator"] = bool(through)
        if through:
            out.update(failed=True, msg="Service account '%s' is a member of Administrators through the domain group %s; "
                       "remove it from that group (services must never run as administrators)" % (acct["name"], through))
            return
    out["result"] = {"accounts": report, "warnings": warnings}


def prefect_dirs():
    """prefect_dirs.ps1: the root exists, inherits nothing, SYSTEM and Administrators have full control, no broad
    group has a rule; every listed directory exists with at least the listed rules."""
    params = args["parameters"]
    root = params["Root"].lower()
    changes = []
    wanted = [(root, params.get("RootRules", []), False)] + [(d["path"].lower(), d.get("rules", []), bool(d.get("exclusive")))
                                                             for d in params.get("Directories", [])]
    for directory, rules, exclusive in wanted:
        current = dirs.get(directory)
        if current is None:
            changes.append("create " + directory)
            if CHECK:
                continue
            current = dirs[directory] = {"acl": {"S-1-5-32-545": "CreateFiles"} if directory == root else {},
                                         "protected": False}
        if directory == root:
            if not current["protected"] or any(s in BROAD for s in current["acl"]):
                changes.append("protect " + directory)
                current["acl"] = {s: r for s, r in current["acl"].items() if s not in BROAD}
                current["protected"] = True
            rules = [{"account": "S-1-5-18", "rights": "FullControl"}, {"account": "S-1-5-32-544", "rights": "FullControl"}] + rules
        if exclusive:
            # Inherits nothing and keeps exactly SYSTEM, Administrators and the listed rules.
            rules = [{"account": "S-1-5-18", "rights": "FullControl"}, {"account": "S-1-5-32-544", "rights": "FullControl"}] + rules
            keep = {sid_of(r["account"]) for r in rules}
            if not current["protected"] or set(current["acl"]) - keep:
                changes.append("exclusive " + directory)
                current["acl"] = {s: r for s, r in current["acl"].items() if s in keep}
                current["protected"] = True
        for rule in rules:
            sid = sid_of(rule["account"])
            if sid is None:
                if CHECK:
                    continue
                out.update(failed=True, msg="Account %s does not exist" % rule["account"])
                return
            if current["acl"].get(sid) != rule["rights"]:
                changes.append("%s: %s %s" % (directory, rule["account"], rule["rights"]))
                current["acl"][sid] = rule["rights"]
    if CHECK:
        host["dirs"] = json.load(open(path)).get("dirs", {})
    out.update(changed=bool(changes), result={"changes": changes})


def nssm_status():
    """nssm_status.ps1: state of each service and of its application process after the settle time."""
    report = {}
    for name in args["parameters"]["Services"]:
        svc = services.get(name)
        if svc is None:
            report[name] = {"exists": False}
            continue
        state = svc.get("state_override") or ("Running" if svc.get("running") else "Stopped")
        restarted = bool(svc.get("crash_loop"))
        report[name] = {"exists": True, "state": state, "account": svc.get("object_name"),
                        "app_running": bool(svc.get("running")),
                        "app_started": "2026-01-01T00:00:%02dZ" % (svc.get("app_started", 0) % 60),
                        "restarted_during_settle": restarted}
    out["result"] = {"services": report}


if NAME in STANDINS:
    STANDINS[NAME]()
elif NAME == "win_reg_stat":
    # PEP 514 key of the python.org installer: Version under PythonCore\X.Y, the directory with a trailing
    # backslash as the (Default) value of its InstallPath subkey (name ''). win_reg_stat.ps1 returns exists=false and
    # no value for a missing key or value.
    python = host.get("python")
    if python and args["path"].endswith("\\InstallPath") and args.get("name") == "":
        out.update(exists=True, type="REG_SZ", value=host["python_dir"] + "\\", raw_value=host["python_dir"] + "\\")
    elif python and not args["path"].endswith("\\InstallPath") and args.get("name") == "Version":
        out.update(exists=True, type="REG_SZ", value=python, raw_value=python)
    else:
        out["exists"] = False
elif NAME == "win_stat":
    digest = lookup(args["path"])
    out["stat"] = {"exists": digest is not None, "checksum": digest or "", "path": args["path"]}
elif NAME == "win_file":
    out["changed"] = args["path"].lower() not in dirs
    if not CHECK:
        dirs.setdefault(args["path"].lower(), {"acl": {}, "protected": False})
elif NAME == "win_get_url":
    source = args["url"].replace(host["url_prefix"], host["bundle_dir"], 1)
    digest = hashlib.sha256(open(source, "rb").read()).hexdigest()
    if args.get("checksum_algorithm") != "sha256" or args.get("checksum") != digest:
        out.update(failed=True, msg="checksum mismatch or missing")
    files[args["dest"].lower()] = digest
    out["changed"] = True
elif NAME == "win_unzip":
    # win_unzip.ps1 extracts nothing in check mode.
    if not CHECK:
        host.setdefault("unpacked", []).append(args["dest"].lower())
    out["changed"] = True
elif NAME == "win_package":
    # win_package.ps1 joins a list of arguments with Process.psm1 ConvertTo-EscapedArgument (an element holding a
    # space or a quote is quoted); a string goes as is. The bootstrapper splits the command line with
    # CommandLineToArgvW (PythonBootstrapperApplication.cpp ProcessCommandLine): NAME=value at the first '='.
    import re
    raw = args.get("arguments") or []
    if isinstance(raw, list):
        def _escape(a):
            if not a:
                return '""'
            if not re.search(r'[\s"]', a):
                return a
            a = re.sub(r'(\\+)\\"', lambda m: m.group(1) * 2 + '\\"', a.replace('"', '\\"'))
            return '"' + re.sub(r'(\\+)$', lambda m: m.group(1) * 2, a) + '"'
        raw = " ".join(_escape(str(a)) for a in raw)
    argv, word, quoted, started, i = [], "", False, False, 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            n = len(raw) - i - len(raw[i:].lstrip("\\"))
            i += n
            if i < len(raw) and raw[i] == '"':
                word += "\\" * (n // 2) + ('"' if n % 2 else "")
                i += n % 2
            else:
                word += "\\" * n
            started = True
            continue
        if c == '"':
            quoted, started = not quoted, True
        elif c in " \t" and not quoted:
            if started:
                argv.append(word)
            word, started = "", False
        else:
            word, started = word + c, True
        i += 1
    if started:
        argv.append(word)
    switches = {a[1:].lower() for a in argv if a[:1] in "/-"}
    options = dict(a.split("=", 1) for a in argv if a[:1] not in "/-" and "=" in a)
    if not CHECK:
        host.setdefault("installer_runs", []).append(argv)
    # Files of the interpreter are held by a running service that runs it, directly or through a venv (a venv's
    # Scripts\python.exe starts the base interpreter it was made from).
    base = host.get("python_dir", "").lower() + "\\"
    # A paused (NSSM throttling a crashing application) or start-pending service launches it again at any moment.
    in_use = [n for n, s in services.items() if (s.get("running") or s.get("scm_state") in SCM_ACTIVE) and host.get("python") and (
        s.get("registry", {}).get("Application", "").lower().startswith(base)
        or s.get("registry", {}).get("Application", "").lower().endswith("\\scripts\\python.exe"))]
    creates = args.get("creates_path")
    if args.get("state") == "absent":
        # Not installed for win_package unless creates_path exists (no product_id); the bundle removes itself.
        runs = bool(host.get("python")) and bool(creates) and \
            creates.lower() == (host.get("python_dir", "") + "\\python.exe").lower()
    else:
        # An exe without product_id or creates_path is never "installed": it runs every time.
        runs = True
    out.update(changed=runs, rc=0, reboot_required=False)
    if runs and not CHECK:
        upgrade = bool(host.get("python"))
        if "norestart" not in switches:
            # PythonBootstrapperApplication OnApplyComplete: without /norestart a quiet run that needs a restart
            # restarts the host (exit 1641); this stand-in refuses every run without it.
            out.update(failed=True, msg="the installer restarted the host (exit 1641): /norestart missing")
        elif args.get("state") == "absent" and "uninstall" not in switches:
            out.update(failed=True, msg="the installer without /uninstall repaired Python instead of removing it")
        elif args.get("state") == "absent":
            host.pop("python", None)
            host.pop("python_dir", None)
        else:
            host["python"] = args["path"].rsplit("\\", 1)[-1].split("-")[1]
            if not upgrade:
                # An upgrade keeps the registered directory (LoadTargetDirFromKey) whatever TargetDir says; without
                # TargetDir a new install goes to DefaultAllUsersTargetDir or DefaultJustForMeTargetDir (bundle.wxs).
                nodot = "".join(host["python"].split(".")[:2])
                target = options.get("TargetDir") or (
                    "C:\\Program Files\\Python" + nodot if options.get("InstallAllUsers") == "1"
                    else "C:\\Users\\Administrator\\AppData\\Local\\Programs\\Python\\Python" + nodot)
                host["python_dir"] = target
                # A new directory outside Program Files inherits its parent's ACL (C:\ lets Users create files).
                inherited = {} if target.lower().startswith("c:\\program files") else {"S-1-5-32-545": "CreateFiles"}
                dirs[target.lower()] = {"acl": inherited, "protected": False}
            host["python_options"] = options
        if not out.get("failed"):
            # Files in use are replaced at the next restart: exit 3010, which Invoke-Executable accepts
            # (expected_return_code 0, 3010) and reports with failed=false and reboot_required.
            out.update(rc=3010 if (upgrade and in_use) else 0, reboot_required=bool(upgrade and in_use), failed=False)
elif NAME == "win_user":
    # win_user.ps1: create (ADSI) or remove; update_password always sets the password when a network logon with it
    # (Test-LocalCredential) fails; groups with groups_action replace leaves exactly those local groups.
    found = next((a for a in accounts if a.lower() == args["name"].lower()), None)
    if args.get("state") == "query":
        out.update(changed=False, name=args["name"], state="present" if found else "absent")
        if found:
            out.update(description=accounts[found].get("description", ""), sid=accounts[found]["sid"],
                       groups=[{"name": g} for g in accounts[found].get("groups", [])])
    elif args.get("state") == "absent":
        out["changed"] = found is not None
        if found is not None and not CHECK:
            del accounts[found]
    else:
        account = accounts.get(found, {}) if found else {"sid": "S-1-5-21-1000-%d" % (1000 + len(accounts))}
        changed = found is None
        if args.get("password") is not None and (found is None or args.get("update_password", "always") == "always"):
            changed = changed or account.get("password") != args["password"]
            account = dict(account, password=args["password"])
        if args.get("description") is not None:
            changed = changed or account.get("description", "") != args["description"]
            account = dict(account, description=args["description"])
        if args.get("groups") is not None and args.get("groups_action", "replace") == "replace":
            wanted = sorted(g.lower() for g in args["groups"])
            changed = changed or sorted(account.get("groups", [])) != wanted
            account = dict(account, groups=wanted)
        out["changed"] = changed
        if not CHECK:
            accounts[found or args["name"]] = account
        if found or not CHECK:
            out["sid"] = sid_of(args["name"])
elif NAME == "win_user_right":
    # win_user_right.ps1 resolves every user to a SID first and fails on one that does not exist.
    rights = host.setdefault("rights", {}).setdefault(args["name"], [])
    sids = [sid_of(u) for u in args["users"]]
    if None in sids:
        out.update(failed=True, msg="account does not exist: %s" % args["users"])
    else:
        added = [s for s in sids if s not in rights]
        out.update(changed=bool(added), added=added, removed=[])
        if not CHECK:
            rights.extend(added)
elif NAME == "win_powershell":
    script = args["path"]
    if script == "venv_build.ps1":
        marker = (args["parameters"]["VenvDir"] + "\\" + args["parameters"]["Marker"]).lower()
        out["changed"] = files.get(marker) != args["parameters"]["LockSha256"]
        if not CHECK:
            files[marker] = args["parameters"]["LockSha256"]
            # `python -m venv` made the venv's own interpreter first (the backup task and the services run it).
            files[(args["parameters"]["VenvDir"] + "\\Scripts\\python.exe").lower()] = "python"
    elif script == "venv_switch.ps1":
        # venv_switch.ps1: a run stopped after `current` stepped aside to current.old gets it back; leftover
        # current.new / current.old links are deleted (the link only); then current.new is made and renamed into place.
        # host["interrupt_switch"] stops the real run after that step ("new", "old_aside", "new_in_place").
        junctions = host.setdefault("junctions", {})
        link, target = args["parameters"]["Link"].lower(), args["parameters"]["Target"].lower()
        new, old = link + ".new", link + ".old"
        recovered = []
        effective = junctions.get(link)
        if effective is None and old in junctions:
            recovered.append("restored %s from %s" % (link, old))
            effective = junctions[old]
            if not CHECK:
                junctions[link] = junctions.pop(old)
        for leftover in (new, old):
            if leftover in junctions and not (leftover == old and link not in junctions and CHECK):
                recovered.append("removed leftover link " + leftover)
                if not CHECK:
                    del junctions[leftover]
        before = effective or ""
        out["changed"] = bool(recovered) or before != target
        out["result"] = {"before": before, "after": target, "recovered": recovered}
        if before != target and not CHECK:
            steps = [("new", lambda: junctions.__setitem__(new, target))]
            if effective is not None:
                steps.append(("old_aside", lambda: junctions.__setitem__(old, junctions.pop(link))))
            steps.append(("new_in_place", lambda: junctions.__setitem__(link, junctions.pop(new))))
            if effective is not None:
                steps.append(("old_removed", lambda: junctions.pop(old)))
            for step, action in steps:
                action()
                if host.get("interrupt_switch") == step:
                    host.pop("interrupt_switch")
                    out.update(failed=True, msg="simulated interruption after step " + step)
                    save_state(host, path)
                    break
    elif script == "venv_prune.ps1":
        pass
    elif script == "nssm_settings.ps1":
        nssm_settings()
    elif script == "service_accounts.ps1":
        service_accounts()
    elif script == "prefect_dirs.ps1":
        prefect_dirs()
    elif script == "nssm_status.ps1":
        nssm_status()
    elif script in SCRIPTS:
        SCRIPTS[script]()
    elif script == "authenticode_signature.ps1":
        # Get-AuthenticodeSignature reads the signature in the file's content: host["signatures"] maps a content
        # digest to what Windows reports for it. A file with no entry is unsigned (Status NotSigned, no
        # SignerCertificate, as for any file without a signature). Read-only, in check mode too.
        digest = lookup(args["parameters"]["Path"])
        if digest is None:
            out["result"] = {"exists": False, "status": "", "status_message": args["parameters"]["Path"] + " does not exist",
                             "signer": "", "subject": "", "thumbprint": ""}
        else:
            unsigned = {"status": "NotSigned", "status_message": "The file is not digitally signed.", "signer": "",
                        "subject": "", "thumbprint": ""}
            out["result"] = dict(host.get("signatures", {}).get(digest, unsigned), exists=True)
    else:
        out.update(failed=True, msg="no stand-in for " + script)
elif NAME == "win_acl":
    # win_acl.ps1 resolves the user (SID strings too) and adds or removes one rule on an existing path.
    current = dirs.get(args["path"].lower())
    if current is None:
        out.update(failed=True, msg="%s does not exist" % args["path"])
    else:
        out["changed"] = current["acl"].get(args["user"]) != args["rights"]
        if not CHECK:
            current["acl"][args["user"]] = args["rights"]
elif NAME == "win_acl_inheritance":
    current = dirs.get(args["path"].lower())
    if current is None:
        out.update(failed=True, msg="%s does not exist" % args["path"])
    else:
        protect = args.get("state") == "absent"
        out["changed"] = current["protected"] != protect
        if not CHECK:
            current["protected"] = protect
elif NAME == "win_service_info":
    # win_service_info.ps1: every service without `name` (Get-Service; a name may hold wildcards), `path` is the
    # binary path as registered (NSSM 2.24-101 registers its own path through PathQuoteSpaces: quoted when it holds a
    # space), `dependency_of` the services that depend on it (EnumDependentServices), state 'started'/'stopped'.
    import fnmatch
    wanted = args.get("name")
    listed = [n for n in services if wanted is None or n.lower() == wanted.lower() or fnmatch.fnmatch(n.lower(), wanted.lower())]
    out["exists"] = bool(listed)
    out["services"] = []
    for n in listed:
        s = services[n]
        image = s.get("image_path", "")
        # EnumDependentServices lists direct and indirect dependents.
        dependents = dependents_of(n)
        out["services"].append({
            "name": n, "display_name": n, "state": s.get("scm_state") or ("started" if s.get("running") else "stopped"),
            "path": '"%s"' % image if " " in image else image,
            "start_mode": s.get("start_mode", "auto"), "username": s.get("object_name", "LocalSystem"),
            "dependencies": s.get("dependencies", []),
            "dependency_of": dependents,
        })
elif NAME == "win_service":
    name = args["name"]
    svc = services.get(name)
    if args.get("state") == "absent":
        # win_service.ps1: Stop-Service -WhatIf:$module.CheckMode, and Delete() only outside check mode.
        out["changed"] = name in services
        if not CHECK:
            services.pop(name, None)
    elif svc is None:
        out.update(failed=True, msg="Service '%s' is not installed" % name)
    else:
        if "username" in args:
            # A new logon account applies to the next start; the running process keeps its token.
            out["changed"] = svc.get("object_name") != args["username"]
            svc["object_name"] = args["username"]
        if "dependencies" in args:
            svc["dependencies"] = args["dependencies"]
        # win_service.ps1 sets the start mode when it differs (nssm install leaves a new service manual here).
        if args.get("start_mode") and svc.get("start_mode", "auto") != args["start_mode"]:
            out["changed"] = True
            if not CHECK:
                svc["start_mode"] = args["start_mode"]
        state = args.get("state")
        # win_service.ps1 starts and stops with -WhatIf:$module.CheckMode: check mode reports the change only.
        # win_service.ps1 compares with the service's state: a paused service is resumed by `started` and stopped by
        # `stopped` like any state that is not Stopped.
        if state == "started" and (not svc.get("running") or svc.get("scm_state")):
            out["changed"] = True
            if not CHECK:
                svc.pop("scm_state", None)
                svc.update(running=True, app_started=NOW, process_owner=svc.get("object_name"))
        elif state == "stopped" and (svc.get("running") or svc.get("scm_state")):
            out["changed"] = True
            if not CHECK:
                svc.pop("scm_state", None)
                svc["running"] = False
        elif state == "restarted" and CHECK:
            # Restart-Service -WhatIf: ShouldProcess comes before the stop that would refuse running dependents.
            out["changed"] = True
        elif state == "restarted":
            running_dependents = [n for n, x in services.items() if name in x.get("dependencies", []) and x.get("running")]
            if running_dependents and not args.get("force_dependent_services"):
                # Restart-Service without -Force refuses a service whose dependents run.
                out.update(failed=True, msg="Cannot stop service '%s' because it has dependent services" % name)
            elif host.get("fail_restart"):
                out.update(failed=True, msg="simulated interruption before the restart")
                host["fail_restart"] = False
            else:
                out["changed"] = True
                restart = [name] + ([n for n, s in services.items() if name in s.get("dependencies", [])]
                                    if args.get("force_dependent_services") else [])
                for n in restart:
                    services[n].update(running=True, app_started=NOW, process_owner=services[n].get("object_name"))
        out.update(exists=True, name=name, state="running" if svc.get("running") else "stopped",
                   username=svc.get("object_name"))
elif NAME == "server_health":
    # The plugin's own logic is tested against real servers; here only what the role hands it is checked.
    missing = [w for w in args.get("workers_online") or [] if not w.get("heartbeat_after")]
    if missing:
        out.update(failed=True, msg="workers_online without the start of the worker's process: %s" % missing)
    else:
        # What /api/admin/version answers (health_checks.py reads it after health and ready).
        out.update(healthy=True, ready=True, prefect_version=host.get("prefect_version", "unknown"), api_version="0.8.4",
                   checks=[])
elif NAME == "work_pool":
    pass
else:
    out.update(failed=True, msg="no stand-in for " + NAME)

if not out.get("failed") or NAME != "win_powershell":
    save_state(host, path)
# AnsibleModule shows an option its spec marks no_log as VALUE_SPECIFIED_IN_NO_LOG_PARAMETER in `invocation`; the Prefect
# plugins mark password and auth_string (plugins/module_utils/prefect_api.py common_argument_spec).
if NAME in ("server_health", "work_pool", "work_pool_info", "flow_runs", "flow_run"):
    args = {k: "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" if k in ("password", "auth_string") and v else v for k, v in args.items()}
if NAME == "win_powershell" and args.get("sensitive_parameters"):
    # Ansible.Basic (ansible-core module_utils/csharp/Ansible.Basic.cs): win_powershell's spec marks sensitive_parameters'
    # value and password no_log (ParseSubSpec -> SetNoLogValues); RemoveNoLogValues then turns every string of the
    # invocation equal to one into VALUE_SPECIFIED_IN_NO_LOG_PARAMETER and replaces it by ******** inside a longer one.
    _no_log = {str(p.get(k)) for p in args["sensitive_parameters"] for k in ("value", "password") if p.get(k)}

    def _remove_no_log(value):
        if isinstance(value, dict):
            return {k: _remove_no_log(v) for k, v in value.items()}
        if isinstance(value, list):
            return [_remove_no_log(v) for v in value]
        if value is None:
            return value
        text = str(value)
        if text in _no_log:
            return "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
        for secret in _no_log:
            if secret in text:
                return "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" if isinstance(value, (bool, int, float)) else text.replace(secret, "********")
        return value

    args = _remove_no_log(args)
out["invocation"] = {"module_args": args}
print(json.dumps(out))
