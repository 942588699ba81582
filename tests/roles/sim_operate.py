# modules: enclave.prefect.work_pool_info enclave.prefect.flow_runs enclave.prefect.flow_run ansible.windows.win_find
# Stand-ins of the operator playbooks (verify, diagnose, upgrade, uninstall) for the simulated host (simhost.py PARTS).
# The Prefect side lives in host["pools"] ({name: {type, is_paused, status, workers: [...]}}) and host["flow_runs"];
# the database is host["database"] ({"migrated_to": version}). A failure can be injected into one call:
# host["inject_failure"] = {"target": <module name or win_powershell path>, "match": <text in its arguments>}; the call
# fails as the real one would on an error, and the injection is used up.


def _operate_inject_failure():
    """Runs before the body: the matching call fails without touching the host."""
    import json as _json
    import os as _os
    import sys as _sys
    state_path = _os.environ["ENCLAVE_SIM_STATE"]
    state = _json.load(open(state_path))
    rule = state.get("inject_failure")
    if not rule:
        return
    call = _sim_args()
    target = call.get("path") if NAME == "win_powershell" else NAME
    if target != rule["target"] or rule.get("match", "") not in _json.dumps(call):
        return
    state.pop("inject_failure")
    state.setdefault("injected", []).append(rule)
    temporary = "%s.%d.tmp" % (state_path, _os.getpid())
    with open(temporary, "w") as handle:
        _json.dump(state, handle)
    _os.replace(temporary, state_path)
    print(_json.dumps({"failed": True, "changed": False, "msg": "injected failure of %s" % target}))
    _sys.exit(0)


_operate_inject_failure()


def _pools():
    return host.setdefault("pools", {})


def operate_work_pool():
    # work_pool (plugins/module_utils/work_pools.py): only the options the task sets are compared; `paused` maps to
    # is_paused; check mode writes nothing.
    pool = _pools().get(args["name"])
    if args.get("state") == "absent":
        out["changed"] = pool is not None
        if pool is not None and not CHECK:
            del _pools()[args["name"]]
        return
    if pool is None:
        out["changed"] = True
        if not CHECK:
            _pools()[args["name"]] = {"type": args.get("type") or "process", "is_paused": bool(args.get("paused")),
                                      "status": "NOT_READY", "workers": []}
        return
    if args.get("paused") is not None and bool(args["paused"]) != pool["is_paused"]:
        out["changed"] = True
        if not CHECK:
            pool["is_paused"] = bool(args["paused"])
    out["work_pool"] = dict(pool, name=args["name"])


def operate_work_pool_info():
    # work_pool_info: every pool with its queues and workers; a paused pool's status is PAUSED (the server's).
    pools = [dict(p, name=n, status="PAUSED" if p["is_paused"] else p["status"], queues=[]) for n, p in sorted(_pools().items())
             if args.get("name") in (None, n)]
    out["work_pools"] = pools


def operate_flow_runs():
    # flow_runs (plugins/modules/flow_runs.py): cancel first (not in check mode), then wait until none is selected;
    # at the timeout it fails listing the runs that are left. The simulated worker finishes a run after `drains_after`
    # polls when its pool is paused.
    runs = host.setdefault("flow_runs", [])
    selected = [r for r in runs if r["state"] in (args.get("states") or ["PENDING", "RUNNING", "CANCELLING"])]
    if args.get("cancel") and not CHECK:
        for r in selected:
            r["state"] = "CANCELLED"
        out["changed"] = bool(selected)
        selected = []
    out["cancelled"] = [r["name"] for r in selected] if args.get("cancel") and CHECK else []
    if args.get("wait_until_none") and not CHECK:
        left = [r for r in selected if not r.get("finishes")]
        for r in selected:
            if r.get("finishes"):
                r["state"] = "COMPLETED"
        if left:
            out.update(failed=True, remaining=left, msg="%d flow run(s) still active after %ss: %s"
                       % (len(left), args.get("timeout"), ", ".join(r["name"] for r in left)))
            return
        selected = []
    out.update(flow_runs=selected, count=len(selected))


def operate_flow_run():
    # flow_run: check mode creates no run; a run completes when a worker of its pool is ONLINE and the pool not paused.
    if CHECK:
        out.update(changed=True, flow_run={})
        return
    pool = _pools().get(host.get("smoke_pool_of", {}).get(args["deployment"], ""))
    ok = bool(pool) and not pool["is_paused"] and any(w["status"] == "ONLINE" for w in pool["workers"])
    raises = host.get("smoke_flow_raises")
    if ok and raises:
        # The worker ran it and the flow raised (flow_runs.py run: a terminal state not in expected_states fails, the
        # result keeps flow_run and the last log lines).
        out.update(changed=True, failed=True,
                   flow_run={"name": "sim-run", "state_type": "FAILED", "state_name": "Failed", "duration_s": 1.5},
                   logs=["INFO enclave.prefect smoke flow", "ERROR Encountered exception during execution: %s" % raises,
                         "ERROR Finished in state Failed('Flow run encountered an exception: %s')" % raises],
                   msg="Flow run sim-run (0000) of %s ended FAILED (Failed): Flow run encountered an exception: %s; "
                       "expected COMPLETED. Last log lines are in `logs`." % (args["deployment"], raises))
        return
    state = "COMPLETED" if ok else "SCHEDULED"
    out.update(changed=True, flow_run={"name": "sim-run", "state_type": state, "duration_s": 2.5},
               logs=["INFO enclave.prefect smoke flow", "INFO Finished in state Completed()"] if ok else [])
    if not ok:
        out.update(failed=True, msg="Flow run sim-run is still SCHEDULED: no worker picked it up")


def operate_win_find():
    # win_find.ps1: a missing path is a warning and no match; directories only with file_type=directory.
    import fnmatch
    base = args["paths"][0].lower() if isinstance(args["paths"], list) else args["paths"].lower()
    names = {p for p in list(dirs) + list(files) if p.startswith(base + "\\") and "\\" not in p[len(base) + 1:]}
    pattern = [p.lower() for p in args.get("patterns") or ["*"]]
    out["files"] = [{"path": p, "filename": p.rsplit("\\", 1)[-1]} for p in sorted(names)
                    if any(fnmatch.fnmatch(p.rsplit("\\", 1)[-1], x) for x in pattern)
                    and (args.get("file_type") != "directory" or p in dirs)]
    out["matched"] = len(out["files"])


def operate_win_file():
    # win_file.ps1: state=absent removes the file or the directory with everything below it (junctions as links);
    # directory creates it. Check mode reports without acting.
    target = args["path"].lower()
    if args.get("state") == "absent":
        below = [p for p in list(dirs) + list(files) if p == target or p.startswith(target + "\\")]
        links = [j for j in host.setdefault("junctions", {}) if j == target or j.startswith(target + "\\")]
        out["changed"] = bool(below or links)
        if not CHECK:
            for p in below:
                dirs.pop(p, None)
                files.pop(p, None)
            for j in links:
                host["junctions"].pop(j)
        return
    out["changed"] = target not in dirs
    if not CHECK:
        dirs.setdefault(target, {"acl": {}, "protected": False})


def operate_win_copy():
    # win_copy.ps1 with remote_src and a local path of the host: the file is copied on the host (its digest moves).
    if args.get("remote_src") and ":" in args["src"][:3]:
        digest = files.get(args["src"].lower())
        if digest is None:
            out.update(failed=True, msg="Cannot copy src file: '%s' as it does not exist" % args["src"])
            return
        out.update(changed=files.get(args["dest"].lower()) != digest, dest=args["dest"])
        if not CHECK:
            files[args["dest"].lower()] = digest
        return
    source = args["src"]
    if args.get("remote_src"):
        # A UNC path of the enclave file share: the test maps the share to a local directory.
        for share, local in host.get("unc", {}).items():
            if source.lower().startswith(share.lower()):
                source = local + source[len(share):]
        source = source.replace("\\", "/")
    # A directory whose name ends in "/": its contents go into dest (win_copy's action queries them all in one module
    # run and sends only what differs); else the file is dest.
    if source.endswith("/") and os.path.isdir(source):
        wanted = {}
        for folder, _dirs, names in os.walk(source):
            for name in names:
                relative = os.path.relpath(os.path.join(folder, name), source).replace("/", "\\")
                wanted[(args["dest"].rstrip("\\") + "\\" + relative).lower()] = hashlib.sha256(
                    open(os.path.join(folder, name), "rb").read()).hexdigest()
    else:
        wanted = {args["dest"].lower(): hashlib.sha256(open(source, "rb").read()).hexdigest()}
    out.update(changed=any(files.get(dest) != digest for dest, digest in wanted.items()), dest=args["dest"])
    if not CHECK:
        files.update(wanted)


def operate_venv_remove():
    # venv_remove.ps1: refuses while a service runs from a venv; removes the links, the venvs and unpacked wheelhouses.
    params = args["parameters"]
    root, link = params["Root"].lower(), params["Link"].lower()
    running = [n for n, s in services.items() if s.get("running") and s["registry"].get("Application", "").startswith(root + "\\")]
    if running and not CHECK:
        out.update(failed=True, msg="Not removing the Prefect venvs under '%s': these processes run from them: %s"
                   % (params["Root"], ", ".join(running)))
        return
    removed = [j for j in (link, link + ".new", link + ".old") if j in host.setdefault("junctions", {})]
    removed += [p for p in files if p.startswith(root + "\\prefect-")]
    removed += [d for d in host.get("unpacked", []) if d.startswith(params["Staging"].lower() + "\\wheels-")]
    out["changed"] = bool(removed)
    if not CHECK:
        for j in (link, link + ".new", link + ".old"):
            host["junctions"].pop(j, None)
        for p in [p for p in files if p.startswith(root + "\\prefect-")]:
            del files[p]
        host["unpacked"] = [d for d in host.get("unpacked", []) if d not in removed]
    out["result"] = {"removed": removed}


def operate_log_prune():
    # nssm_log_prune.ps1: rotated files older than Days (host["rotated_logs"]: {path: age_days}); live logs stay.
    old = [p for p, age in host.get("rotated_logs", {}).items() if age > int(args["parameters"]["Days"])]
    out["changed"] = bool(old)
    if not CHECK:
        for p in old:
            host["rotated_logs"].pop(p)
    out["result"] = {"removed": old, "bytes": 0}


def operate_upgrade_preflight():
    link = args["parameters"]["Link"].lower()
    out["result"] = {"drive": "C:", "free_bytes": host.get("free_bytes", 50 * 1024 ** 3),
                     "current_venv": host.setdefault("junctions", {}).get(link, ""),
                     "backup_file": "", "backup_age_hours": -1}


def operate_smoke_deploy():
    if CHECK:
        out["changed"] = True
        return
    host.setdefault("smoke_pool_of", {})["enclave-smoke/" + args["parameters"]["Name"]] = args["parameters"]["Pool"]
    out.update(changed=True, result={"id": "sim"})


def _diag_listeners():
    """diagnose.ps1 'ports' (Get-NetTCPConnection -State Listen): http.sys (System, pid 4) on every port of a started
    site's bindings, WinRM on 5986; the Prefect server on its --host/--port (python, the NSSM app's pid) while running;
    PostgreSQL on the listen_addresses and port its postmaster read at start while running; host["listeners"] more."""
    listeners = [{"address": "0.0.0.0", "port": 5986, "pid": 4, "process": "System"}]
    for site in host.get("iis", {}).get("sites", {}).values():
        if site.get("state") == "Started":
            listeners += [{"address": "0.0.0.0", "port": int(key.split(":")[1]), "pid": 4, "process": "System"}
                          for key in site.get("bindings", {})]
    for name, svc in sorted(services.items()):
        params = str(svc.get("registry", {}).get("AppParameters", "")).split()
        if svc.get("running") and "server" in params and "start" in params:
            env = svc.get("environment", {})
            bind = params[params.index("--host") + 1] if "--host" in params[:-1] else env.get("PREFECT_SERVER_API_HOST", "127.0.0.1")
            port = params[params.index("--port") + 1] if "--port" in params[:-1] else env.get("PREFECT_SERVER_API_PORT", "4200")
            listeners.append({"address": bind, "port": int(port), "pid": 4242, "process": "python"})
    pg = host.get("pg", {}).get("postmaster")
    pg_running = [svc for name, svc in services.items() if name.lower().startswith("postgresql") and svc.get("running")]
    if pg and pg_running:
        for entry in str(pg.get("listen_addresses", "localhost")).split(","):
            entry = entry.strip()
            addresses = {"*": ["0.0.0.0", "::"], "localhost": ["127.0.0.1", "::1"]}.get(entry, [entry])
            listeners += [{"address": a, "port": int(pg.get("port", 5432)), "pid": 5432, "process": "postgres"} for a in addresses]
    listeners += host.get("listeners", [])
    unique = {(str(x["port"]), x["address"]): x for x in listeners}  # Sort-Object LocalPort, LocalAddress -Unique
    return [unique[k] for k in sorted(unique)]


def _diag_netsecurity_addresses(remote):
    """HNetCfg.FWRule RemoteAddresses -> Get-NetFirewallAddressFilter RemoteAddress: 'Any', single addresses without
    their /255.255.255.255, subnets with the dotted mask, keywords as they are."""
    if remote in (None, "", "*"):
        return ["Any"]
    return [entry[:-16] if entry.endswith("/255.255.255.255") else entry for entry in str(remote).split(",")]


def _diag_firewall():
    """diagnose.ps1 'firewall' over host["firewall"] (sim_firewall.py): the group's rules (PersistentStore), the enabled
    inbound block rules of the active policy (a rule's "source" GroupPolicy, else Local), the profiles of the active
    policy and host["network_categories"] (Get-NetConnectionProfile; default one domain network)."""
    state = host.get("firewall", {})
    group = args["parameters"].get("FirewallGroup", "")

    def describe(rule):
        mask = int(rule.get("Profiles", 0x7FFFFFFF))
        profile = "Any" if mask & 7 == 7 else ", ".join(n for n, bit in (("Domain", 1), ("Private", 2), ("Public", 4)) if mask & bit)
        return {"name": rule.get("id", ""), "display_name": rule["Name"], "group": rule.get("Grouping") or "",
                "enabled": "True" if rule.get("Enabled") else "False", "direction": "Outbound" if rule.get("Direction") == 2 else "Inbound",
                "action": "Block" if rule.get("Action") == 0 else "Allow", "profile": profile, "source": rule.get("source", "Local"),
                "protocol": {6: "TCP", 17: "UDP", 256: "Any"}.get(rule.get("Protocol"), str(rule.get("Protocol"))),
                "local_port": ["Any" if p.strip() == "*" else p.strip() for p in str(rule.get("LocalPorts", "*")).split(",")],
                "remote_address": _diag_netsecurity_addresses(rule.get("RemoteAddresses"))}
    rules = state.get("rules", [])
    profiles = state.get("profiles", {"Domain": {"enabled": True}, "Private": {"enabled": True}, "Public": {"enabled": True}})
    return {"rules": [describe(r) for r in rules if str(r.get("Grouping") or "").lower().startswith(group.lower())],
            "block_rules": [describe(r) for r in rules if r.get("Enabled") and r.get("Direction", 1) == 1 and r.get("Action") == 0],
            "profiles": [{"name": n, "enabled": "True" if p.get("enabled") else "False", "default_inbound_action": p.get("inbound", "NotConfigured"),
                          "allow_local_rules": p.get("local_rules", "NotConfigured")}
                         for n, p in sorted(profiles.items())],
            "network_categories": host.get("network_categories", ["DomainAuthenticated"])}


def _diag_iis():
    """diagnose.ps1 'iis' over host["iis"] (sim_iis.py): sites with their bindings and the certificate each names
    (host["iis"]["certificates"] is LocalMachine\\My, host["certificate_details"] a certificate's subject, not_before,
    not_after and has_private_key), the rewrite rules of the site's web.config, its effective authorization rules, and
    whether UrlAuthorizationModule (Web-Url-Auth; iis["url_auth_removed_from"]) and RewriteModule (URL Rewrite) apply."""
    import xml.etree.ElementTree as _et
    iis = host.get("iis", {})
    if "Web-Server" not in iis.get("features", []):
        return {"installed": False}
    extensions = iis.get("extensions", [])
    modules = (["UrlAuthorizationModule"] if "Web-Url-Auth" in iis["features"] else []) + \
        (["RewriteModule"] if "URL Rewrite" in extensions else []) + \
        (["ApplicationRequestRouting"] if "Application Request Routing" in extensions else [])
    apphost = iis.get("apphost", {})
    details = host.get("certificate_details", {})
    sites = []
    for name, site in sorted(iis.get("sites", {}).items()):
        bindings = []
        for key, value in site.get("bindings", {}).items():
            thumb = value.get("certificate", "") if value.get("protocol") == "https" else ""
            cert = {"found": False}
            if thumb and thumb.upper() in iis.get("certificates", []):
                more = details.get(thumb.upper(), {})
                cert = {"found": True, "subject": more.get("subject", "CN=sim"), "not_before": more.get("not_before", "2025-01-01T00:00:00+00:00"),
                        "not_after": more.get("not_after", "2036-01-01T00:00:00+00:00"), "has_private_key": more.get("has_private_key", True)}
            bindings.append({"protocol": value.get("protocol"), "binding": key, "thumbprint": thumb, "store": "My", "certificate": cert})
        rules = []
        config = iis.get("files", {}).get(str(site.get("physical_path", "")).lower() + "\\web.config")
        if config and "URL Rewrite" in extensions:
            rules = [{"name": r.get("name"), "enabled": "False" if r.get("enabled", "true").lower() == "false" else "True",
                      "url": (r.find("match").get("url") if r.find("match") is not None else ""),
                      "action": (r.find("action").get("url", "") if r.find("action") is not None else "")}
                     for r in _et.fromstring(config).iter("rule") if r.get("name")]
        section = apphost.get(name + "|system.webServer/security/authorization", apphost.get("|system.webServer/security/authorization", {}))
        entries = section.get("collection:", ["accessType=Allow;users=*;roles=;verbs="])
        authorization = []
        for entry in entries:
            fields = dict(part.split("=", 1) for part in entry.split(";") if "=" in part)
            authorization.append({"access": fields.get("accessType", ""), "users": fields.get("users", ""), "roles": fields.get("roles", "")})
        sites.append({"name": name, "state": site.get("state"), "app_pool": site.get("pool"), "physical_path": site.get("physical_path"),
                      "bindings": bindings, "rewrite_rules": rules, "authorization": authorization,
                      "url_auth_module": "UrlAuthorizationModule" in modules and name not in iis.get("url_auth_removed_from", []),
                      "rewrite_module": "RewriteModule" in modules})
    proxy = None
    if "Application Request Routing" in extensions:
        proxy = {"enabled": apphost.get("|system.webServer/proxy", {}).get("enabled", "false").capitalize()}
    return {"installed": True, "sites": sites, "global_modules": modules, "arr": proxy,
            "app_pools": [{"name": n, "state": p.get("state")} for n, p in sorted(iis.get("pools", {}).items())]}


def operate_diagnose():
    # diagnose.ps1: one section per part of the host. Ports, firewall and IIS are read from the simulated host's state
    # (the other stand-ins'); host["diagnose"] holds what a broken host shows in the other sections (and may replace
    # any), and host["diagnose_errors"] the sections whose try/catch caught an error.
    report = dict({"ports": _diag_listeners(), "firewall": _diag_firewall(), "iis": _diag_iis()}, **host.get("diagnose", {}))
    report.update(collected_at="2026-03-01T12:00:00+00:00", host="SIM")
    report["services"] = [{"name": n, "state": s.get("state_override") or ("Running" if s.get("running") else "Stopped"),
                           "start_mode": "Auto", "app_pid": 4242 if s.get("running") else 0} for n, s in sorted(services.items())]
    report["errors"] = host.get("diagnose_errors", {})
    for section in report["errors"]:
        report.pop(section, None)
    out["result"] = report


STANDINS.update(work_pool=operate_work_pool, work_pool_info=operate_work_pool_info, flow_runs=operate_flow_runs,
                flow_run=operate_flow_run, win_find=operate_win_find, win_file=operate_win_file, win_copy=operate_win_copy)
SCRIPTS.update({"venv_remove.ps1": operate_venv_remove, "nssm_log_prune.ps1": operate_log_prune,
                "files/upgrade_preflight.ps1": operate_upgrade_preflight,
                "files/smoke_deploy.ps1": operate_smoke_deploy, "files/diagnose.ps1": operate_diagnose})
