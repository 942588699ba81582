# modules: community.windows.win_scheduled_task
# Stand-ins for the backup role (roles/backup): community.windows 3.1.0 plugins/modules/win_scheduled_task.ps1 as read in
# its source, and the role's scripts (files/backup_setup.ps1, pg_backup_role.ps1, backup_run.ps1, backup_restore.ps1,
# database_upgrade.ps1). host["tasks"] holds registered tasks by "<folder>\<name>" (lower case), each with its
# definition as Task Scheduler keeps it: actions and triggers as lists of COM properties, the principal's SID, logon type
# and run level, the settings, and the stored password's digest. host["pg"] is the PostgreSQL server of a database host
# (roles and their passwords' digests, the superuser's), host["events"] what the restore steps saw, in order.

BK_LOGON = {"none": 0, "password": 1, "s4u": 2, "interactive_token": 3, "group": 4, "service_account": 5,
            "interactive_token_or_password": 6}
# Compare-Setting's map: the module option -> the Settings COM property it compares with -cne when given.
BK_SETTINGS = ["allow_demand_start", "allow_hard_terminate", "compatibility", "delete_expired_task_after",
               "disallow_start_if_on_batteries", "execution_time_limit", "enabled", "hidden", "multiple_instances",
               "priority", "restart_count", "restart_interval", "run_only_if_idle", "run_only_if_network_available",
               "start_when_available", "stop_if_going_on_batteries", "wake_to_run"]
# Compare-Trigger's map (mandatory + optional keys per type) for the types the role uses.
BK_TRIGGER_KEYS = {"daily": ["start_boundary", "days_interval", "enabled", "end_boundary", "execution_time_limit",
                             "random_delay", "repetition"],
                   "time": ["start_boundary", "enabled", "end_boundary", "execution_time_limit", "random_delay", "repetition"]}
BK_ACTION_KEYS = ["path", "arguments", "working_directory"]
# ERROR_LOGON_TYPE_NOT_GRANTED as Task Scheduler reports it in LastTaskResult (0x80070569).
BK_LOGON_NOT_GRANTED = 2147943785


def bk_sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def bk_norm_folder(folder):
    """win_scheduled_task.ps1: add a leading backslash, strip a trailing one unless the path is the root."""
    if not folder.startswith("\\"):
        folder = "\\" + folder
    if folder.endswith("\\") and len(folder) != 1:
        folder = folder[:-1]
    return folder


def bk_compare_list(new, existing, keys_of):
    """Compare-PropertyList: entry by entry, a key given (not null) differs when its text differs case-sensitively
    (-cne); missing or extra entries are changes."""
    changes = []
    for i, entry in enumerate(new):
        old = existing[i] if i < len(existing) else None
        if old is None or old.get("type") != entry.get("type"):
            changes.append("+%d" % i)
            continue
        for key in keys_of(entry):
            if entry.get(key) is not None and str(entry[key]) != str(old.get(key)):
                changes.append("%d.%s" % (i, key))
    if len(existing) > len(new):
        changes.append("-%d" % len(new))
    return changes


def win_scheduled_task():
    name, folder = args["name"], bk_norm_folder(args.get("path") or "\\")
    if any(c in name for c in '\\/:*?"<>|'):
        out.update(failed=True, msg="Invalid task name '%s'" % name)
        return
    username, password = args.get("username"), args.get("password")
    sid = None
    if username:
        sid = sid_of(username)
        if sid is None:  # Convert-ToSID throws for an unknown account
            out.update(failed=True, msg="account_name %s is not a valid account, cannot get SID" % username)
            return
    logon = args.get("logon_type")
    if logon == "s4u" and password is None:
        out.update(failed=True, msg="password must be set when logon_type=s4u")
        return
    if logon == "service_account" and sid not in ("S-1-5-18", "S-1-5-19", "S-1-5-20"):
        out.update(failed=True, msg="username must be SYSTEM, LOCAL SERVICE or NETWORK SERVICE when logon_type=service_account")
        return
    tasks = host.setdefault("tasks", {})
    key = (folder.rstrip("\\") + "\\" + name).lower()
    task = tasks.get(key)
    if args.get("state", "present") == "absent":
        if task is not None:
            out["changed"] = True
            if not CHECK:
                del tasks[key]
        return
    actions = [dict(a, type="exec") for a in args.get("actions") or []]
    triggers = args.get("triggers")
    if task is None:
        if not actions:
            out.update(failed=True, msg="cannot create a task with no actions, set at least one action with a path to an executable")
            return
        out["changed"] = True
        if CHECK:  # TASK_VALIDATE_ONLY: nothing is registered, so nothing more is compared
            return
        # The bare task: its actions; every other property at Task Scheduler's defaults until the update below.
        task = tasks[key] = {"actions": actions, "triggers": [], "principal": {"sid": None, "logon_type": 3, "run_level": 0},
                             "settings": {"enabled": True, "allow_demand_start": True, "multiple_instances": 2,
                                          "execution_time_limit": "PT72H", "start_when_available": False},
                             "description": None, "password_sha": None, "registered": 0, "last_result": 267011,
                             "last_run": 0, "running": False}
    diff = []
    if args.get("actions") is not None:
        diff += bk_compare_list(actions, task["actions"], lambda e: BK_ACTION_KEYS)
    if triggers is not None:
        diff += bk_compare_list(triggers, task["triggers"], lambda e: BK_TRIGGER_KEYS.get(e["type"], []))
    principal = task["principal"]
    if logon is not None and principal["logon_type"] != BK_LOGON[logon]:
        diff.append("LogonType")
    run_level = {"limited": 0, "highest": 1}.get(args.get("run_level"))
    if run_level is not None and principal["run_level"] != run_level:
        diff.append("RunLevel")
    if sid is not None and principal["sid"] != sid:
        diff.append("UserId")
    for option in BK_SETTINGS:
        if args.get(option) is not None and task["settings"].get(option) != args[option]:
            diff.append(option)
    if args.get("description") is not None and task["description"] != args["description"]:
        diff.append("Description")
    # update_password (default true) re-registers with the password on every run, whatever else changed.
    send_password = password is not None and (args.get("update_password", True) or diff)
    if diff or send_password:
        out["changed"] = True
        if not CHECK:
            task["actions"] = actions if args.get("actions") is not None else task["actions"]
            task["triggers"] = triggers if triggers is not None else task["triggers"]
            principal.update({k: v for k, v in {"sid": sid, "logon_type": BK_LOGON.get(logon), "run_level": run_level}.items()
                              if v is not None})
            task["settings"].update({o: args[o] for o in BK_SETTINGS if args.get(o) is not None})
            task["description"] = args.get("description", task["description"])
            if send_password:
                task["password_sha"] = bk_sha(password)
            task["registered"] += 1
    out["diff_keys"] = diff


def bk_backup_setup():
    params = args["parameters"]
    changes = []
    wanted = {params["ConfigPath"]: json.dumps(json.loads(params["Config"]), sort_keys=True)}
    lines = params.get("PassLine") or []
    lines = [lines] if isinstance(lines, str) else lines
    if params.get("PassFile"):
        wanted[params["PassFile"]] = "\n".join(lines)
        # libpq picks a PGPASSFILE line by host:port:database:user (a field may be *): the databases it names.
        if not CHECK:
            host.setdefault("pgpass_databases", {})[params["PassFile"].lower()] = [line.split(":")[2] for line in lines]
    for path_, text in wanted.items():
        if files.get(path_.lower()) != bk_sha(text):
            changes.append(path_)
            if not CHECK:
                files[path_.lower()] = bk_sha(text)
                if path_ == params["ConfigPath"]:
                    host.setdefault("backup_configs", {})[path_.lower()] = json.loads(params["Config"])
    out.update(changed=bool(changes), result={"changes": changes})


def bk_pg_backup_role():
    """pg_backup_role.ps1: logs in as the backup login with the PGPASSFILE; only when that fails is the superuser used."""
    params = args["parameters"]
    if lookup(params["Psql"]) is None:
        if CHECK:  # -WhatIf: PostgreSQL is not installed yet in check mode, the real run creates the login
            out.update(changed=True, result={"error": "", "applied": False})
            return
        out["result"] = {"error": "%s does not exist: is PostgreSQL installed" % params["Psql"]}
        return
    pg = host.setdefault("pg", {"roles": {}, "superuser_password_sha": None})
    role = pg["roles"].get(params["Role"])
    line_ok = files.get(params["PassFile"].lower()) is not None
    # backup_role_check.sql: reads all data, may create databases (drills), nothing more.
    if (role and line_ok and role["password_sha"] == bk_sha(params["RolePassword"]) and role["read_all"] and role.get("createdb")
            and not role.get("superuser")):
        out["result"] = {"error": "", "applied": False}
        return
    out["changed"] = True
    if CHECK:
        out["result"] = {"error": "", "applied": False}
        return
    if not params.get("SuperPassword") or bk_sha(params["SuperPassword"]) != pg["superuser_password_sha"]:
        out["changed"] = False
        out["result"] = {"error": "psql as %s could not create the backup login %s: password authentication failed"
                                  % (params["SuperUser"], params["Role"])}
        return
    pg["roles"][params["Role"]] = {"password_sha": bk_sha(params["RolePassword"]), "read_all": True, "createdb": True,
                                   "superuser": False}
    pg.setdefault("applied", 0)
    pg["applied"] += 1
    out["result"] = {"error": "", "applied": True}


def bk_rights_of(sid, path_):
    """The rule the account has on a directory (the sim keeps one right per SID)."""
    entry = dirs.get(path_.lower(), {})
    return entry.get("acl", {}).get(sid)


def bk_backup_run():
    """backup_run.ps1 starts the task and waits; the task's run is simulated from what the real run needs: the account
    may log on as a batch job, reads backup_home (script, settings, PGPASSFILE), modifies the backup directory, and the
    database login works. A run writes the backup file and one log line, and sets the last result."""
    params = args["parameters"]
    key = (bk_norm_folder(params["TaskFolder"]).rstrip("\\") + "\\" + params["TaskName"]).lower()
    task = host.get("tasks", {}).get(key)
    if task is None:
        out.update(failed=not CHECK, result={"started": False, "exists": False, "last_result": -1, "file": "", "bytes": 0, "log": ""})
        return
    logs = host.setdefault("logs", {})
    backups = sorted(p for p in files if p.startswith(params["BackupDir"].lower() + "\\") and re.match(params["Pattern"], p.rsplit("\\", 1)[-1]))
    if CHECK:
        out["result"] = {"started": False, "exists": True, "last_result": task["last_result"], "file": backups[-1] if backups else "",
                         "bytes": 0, "log": (logs.get(params["LogPath"].lower()) or [""])[-1]}
        return
    # A run already going (the nightly one) is waited for: it ends, then this one starts.
    waited = bool(task.get("running"))
    task["running"] = False
    # -e backup_drill=true: the request file is written before the task starts (it stays when the backup fails).
    if params.get("DrillRequest"):
        files[params["DrillRequest"].lower()] = bk_sha("requested")
    sid = task["principal"]["sid"]
    action = task["actions"][0]
    config = host.get("backup_configs", {}).get(re.search(r'--?[Cc]onfig(?:Path)? "([^"]+)"', action["arguments"]).group(1).lower(), {})
    home = action["working_directory"]
    problems = []
    result = 0
    backed_up = False
    if sid not in host.get("rights", {}).get("SeBatchLogonRight", []):
        result = BK_LOGON_NOT_GRANTED  # the task never starts: no log line
    else:
        if bk_rights_of(sid, home) not in ("ReadAndExecute", "Modify", "FullControl"):
            problems.append("cannot read " + home)
        if bk_rights_of(sid, config.get("dest_dir", "")) not in ("Modify", "FullControl"):
            problems.append("cannot write " + config.get("dest_dir", "?"))
        if lookup(action["path"]) is None and not action["path"].lower().endswith("powershell.exe"):
            problems.append(action["path"] + " does not exist")
        if config.get("kind") == "postgresql":
            role = host.get("pg", {}).get("roles", {}).get(config.get("user"))
            if not role or files.get(config["passfile"].lower()) is None:
                problems.append("pg_dump: password authentication failed for user " + str(config.get("user")))
        if config.get("kind") == "sqlite" and lookup(config["database"]) is None:
            problems.append("database %s does not exist" % config["database"])
        result = 1 if problems else 0
        backed_up = not problems
        kind = config.get("kind", "?")
        stamp = "20261130T%06dZ" % NOW
        if problems:
            line = "prefect-backup FAILED %s %s" % (kind, "; ".join(problems))
        else:
            name = ("prefect-pg-%s.dump" if kind == "postgresql" else "prefect-sqlite-%s.db") % stamp
            # The SQLite copy holds what the database held (the online backup API reads it with its WAL).
            files[(config["dest_dir"] + "\\" + name).lower()] = (files.get(config["database"].lower(), bk_sha(name))
                                                                  if kind == "sqlite" else bk_sha(name))
            backups.append(config["dest_dir"] + "\\" + name)  # Get-ChildItem reports the name as written
            line = "prefect-backup OK %s file=%s bytes=4096 removed=0" % (kind, name)
        logs.setdefault(config.get("log", params["LogPath"]).lower(), []).append(line)
        # A drill after a good backup: on a configured weekday (host["weekday"], the host's local day) or on request.
        request = config.get("drill_request", "").lower()
        if backed_up and (request in files or host.get("weekday", "Monday") in config.get("drill_weekdays", [])):
            drilled = bk_drill(config, name)
            files.pop(request, None)
            logs[config.get("log", params["LogPath"]).lower()].append(
                "prefect-drill %s %s file=%s %s" % ("OK" if drilled["ok"] else "FAILED", kind, name, drilled["message"]))
            result = 0 if drilled["ok"] else 1
    if params.get("DrillRequest"):
        files.pop(params["DrillRequest"].lower(), None)  # a request the run did not use up is removed
    task.update(last_result=result, last_run=NOW)
    out.update(changed=True, failed=result != 0,
               result={"started": True, "exists": True, "finished": True, "waited": waited, "last_result": result,
                       "file": backups[-1] if backups and backed_up else "", "bytes": 4096 if backed_up else 0,
                       "log": (logs.get(params["LogPath"].lower()) or [""])[-1],
                       "drill": host.get("drill_records", {}).get(params.get("DrillRecord", "").lower())
                       if host.get("drill_run") == NOW else None})


def bk_drill(config, name):
    """The scheduled script's drill: PostgreSQL needs the backup login to create databases (backup_role.sql) and the
    SQL files beside the script; host["drill_mismatch"] is a table whose rows differ from the counts (a damaged
    backup). The record is kept in host["drill_records"] by its path."""
    record = {"at": "2026-11-30T02:31:00Z", "kind": config["kind"], "file": name, "ok": False, "tables": 0, "rows": 0,
              "mismatches": [], "message": "", "clock": NOW}
    if config["kind"] == "postgresql":
        role = host.get("pg", {}).get("roles", {}).get(config.get("user"), {})
        missing = [p for p in (config["snapshot_sql"], config["drill_sql"]) if files.get(p.lower()) is None]
        reachable = host.get("pgpass_databases", {}).get(config["passfile"].lower(), [])
        if missing:
            record["message"] = "psql: %s: No such file or directory" % missing[0]
        elif config["drill_database"] not in reachable and "*" not in reachable:
            record["message"] = ("pg_restore into the scratch database failed (exit 1): connection to server failed: "
                                 "fe_sendauth: no password supplied")
        elif not role.get("createdb"):
            record["message"] = "the scratch database could not be made (exit 3): ERROR: permission denied to create database"
    if not record["message"]:
        mismatch = host.get("drill_mismatch")
        record.update(tables=60, rows=1234, mismatches=["%s expected=5 restored=4" % mismatch] if mismatch else [],
                      ok=not mismatch,
                      message="rows differ from the backup" if mismatch else "every table has the rows of the backup")
    host.setdefault("drill_records", {})[config["drill_record"].lower()] = record
    host["drill_run"] = NOW
    return record


def bk_backup_status():
    """backup_status.ps1: the newest backup by name and the drill record; ages from host["backup_age_hours"] and
    host["drill_age_days"] (the sim's clock does not run in hours)."""
    params = args["parameters"]
    found = sorted(p for p in files if p.startswith(params["BackupDir"].lower() + "\\")
                   and re.match(params["Pattern"], p.rsplit("\\", 1)[-1], re.I))  # -match ignores case
    newest = ({"file": found[-1].rsplit("\\", 1)[-1], "bytes": 4096, "made_at": "2026-11-30T02:30:00Z",
               "age_hours": host.get("backup_age_hours", 3.5)} if found else None)
    record = host.get("drill_records", {}).get(params["DrillRecord"].lower())
    drill = dict(record, age_days=host.get("drill_age_days", 0.2)) if record else None
    out["result"] = {"directory": params["BackupDir"], "newest": newest, "drill": drill}


def bk_running():
    return sorted(n for n, s in services.items() if s.get("running"))


def bk_backup_restore():
    """backup_restore.ps1. Action restore: the named file must exist; SQLite: the python script refuses a database in
    use (the server running), puts the backup's content in place and keeps the replaced content beside it; PostgreSQL:
    the superuser renames the database aside (refused when the aside name is taken) and pg_restore fills an empty one.
    Action keep: the aside database dropped (SQLite: nothing). Action undo: the database from before comes back."""
    params = args["parameters"]
    action = params.get("Action", "restore")
    sqlite = params["Kind"] == "sqlite"
    pg = host.setdefault("pg", {"roles": {}, "superuser_password_sha": None})
    if action in ("keep", "undo"):
        if sqlite and action == "keep":
            out["result"] = {"action": "keep", "kept": params.get("Replaced", "")}
            return
        if CHECK:
            out["result"] = {"action": action, "plan": action}
            return
        if sqlite:
            replaced = params.get("Replaced", "").lower()
            if replaced not in files:
                out["result"] = {"action": "undo", "error": "replaced database %s does not exist" % params.get("Replaced")}
                return
            files[params["SqliteDatabase"].lower()] = files.pop(replaced)
        else:
            aside = pg.get("aside")
            if aside is None:
                out["result"] = {"action": action, "error": "REFUSED database %s does not exist" % params["Aside"]}
                return
            if action == "undo":
                pg["database"] = pg.pop("aside")
            else:
                pg.pop("aside")
        host.setdefault("events", []).append([action, NOW, bk_running()])
        out.update(changed=True, result={"action": action, "said": "OK " + action})
        return
    if lookup(params["BackupPath"]) is None:
        out["result"] = {"error": "%s does not exist: name a file of the backup directory" % params["BackupPath"]}
        return
    if CHECK:
        out["result"] = {"plan": "restore %s" % params["BackupPath"], "restored": False}
        return
    if sqlite and any(s.get("running") for n, s in services.items() if not n.lower().startswith("prefectworker")):
        out["result"] = {"error": "database is locked: stop the Prefect server first, nothing was changed", "restored": False}
        return
    if not sqlite:
        if "aside" in pg:
            out["result"] = {"error": "REFUSED database %s exists, left by an interrupted restore; nothing was changed"
                                      % params["Aside"], "restored": False}
            return
        if pg.get("superuser_password_sha") and bk_sha(params.get("SuperuserPassword", "")) != pg["superuser_password_sha"]:
            out["result"] = {"error": "psql as %s: password authentication failed; nothing was changed" % params["Superuser"],
                             "restored": False}
            return
    host.setdefault("events", []).append(["restore", NOW, bk_running(), params["BackupPath"], params.get("RestoreArgs")])
    replaced = ""
    if sqlite:
        database = params["SqliteDatabase"].lower()
        if database in files:
            replaced = params["SqliteDatabase"] + ".replaced-20261130T%06dZ" % NOW
            files[replaced.lower()] = files[database]
        files[database] = files[params["BackupPath"].lower()]
    else:
        pg["aside"] = pg.get("database", "before")
        pg["database"] = "restored from " + params["BackupPath"]
    out.update(changed=True, result={"restored": True, "from": params["BackupPath"], "replaced": replaced,
                                     "aside": "" if sqlite else params["Aside"]})


def bk_database_upgrade():
    """database_upgrade.ps1, the one script of the restore and the upgrade's migration: not an NSSM service -> error;
    check mode -> the plan; a running server refused; else the database migrated (host["database"]["migrations"]
    counts runs; a SQLite file changes in place) and Prefect's output (host["migration_output"], e.g. an error
    quoting the database URL) returned with every value of the service environment (NSSM AppEnvironmentExtra) masked,
    a URL's password on its own too (as written and decoded), longest first, as the script does;
    host["migration_exit_code"] makes Prefect fail."""
    params = args["parameters"]
    name = params["ServiceName"]
    if name not in services:
        out.update(failed=True, result={"error": "%s is not an NSSM service on this host" % name, "output": ""})
        return
    if CHECK:
        out.update(changed=True, result={"plan": "prefect server database upgrade -y", "output": ""})
        return
    if services[name].get("running"):
        out.update(failed=True, result={"error": "%s is Running: migrations run only with the server stopped" % name,
                                        "output": ""})
        return
    host.setdefault("events", []).append(["upgrade", NOW, bk_running()])
    db = host.setdefault("database", {})
    db["migrations"] = db.get("migrations", 0) + 1
    sqlite = "c:\\prefect\\data\\prefect.db"
    if sqlite in files:
        files[sqlite] = "migrated-%d" % db["migrations"]
    output = host.get("migration_output", "Migrations succeeded!")
    secrets = []
    for value in services[name].get("environment", {}).values():
        secrets.append(value)
        url = re.search(params["SecretUrlPattern"], value)
        if url:
            secrets += [url.group(2), unquote(url.group(2))]
    for value in sorted(secrets, key=len, reverse=True):
        if len(value) >= 4:
            output = output.replace(value, "***")
    code = host.get("migration_exit_code", 0)
    out.update(changed=not code, failed=bool(code), result={"exit_code": code, "output": output, "python": "python.exe"})
    if code:
        out["result"]["error"] = "prefect server database upgrade -y failed (%d): %s" % (code, output)


import re  # noqa: E402  (the body imports only what it uses itself)


def unquote(text):
    from urllib.parse import unquote as _unquote
    return _unquote(text)

STANDINS["win_scheduled_task"] = win_scheduled_task
SCRIPTS["backup_setup.ps1"] = bk_backup_setup
SCRIPTS["pg_backup_role.ps1"] = bk_pg_backup_role
SCRIPTS["backup_run.ps1"] = bk_backup_run
SCRIPTS["backup_status.ps1"] = bk_backup_status
SCRIPTS["backup_restore.ps1"] = bk_backup_restore
# The restore calls it from the role, the upgrade from the playbook directory.
SCRIPTS["database_upgrade.ps1"] = SCRIPTS["../roles/backup/files/database_upgrade.ps1"] = bk_database_upgrade
# nssm_services (tasks/service.yml, the first start of HA replicas) finds it from its own files directory.
SCRIPTS["../../backup/files/database_upgrade.ps1"] = bk_database_upgrade
