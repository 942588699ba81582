# modules: ansible.windows.win_template community.windows.win_lineinfile ansible.windows.win_regedit
# Stand-ins of the postgresql role (simhost.py PARTS), behaving as the upstream sources do: the EDB installer as read in
# EnterpriseDB/edb-installers (server/installer.xml.in, server/pgserver.xml.in, server/scripts/windows/initcluster.vbs),
# ansible.windows 3.3.0 (win_package.ps1 registry provider, win_copy.ps1 Copy-File, win_service.ps1, plugins/action/
# win_template.py, which renders on the control node and hands the file over: here to the win_template module below),
# community.windows 3.1.0 win_lineinfile.ps1, and the role's own files/postgresql_facts.ps1, postgresql_reload.ps1,
# prefect_objects.ps1 (+ prefect_objects.sql), postgresql_standby.ps1 and playbooks/failover.yml's
# postgresql_standby_state.ps1, postgresql_controldata.ps1 and postgresql_promote.ps1, whose psql, pg_basebackup and
# pg_controldata runs are played against host["pg"] (a standby's pg_basebackup and WAL receiver against its primary's,
# another simulated host reached through sim_verify.py's network); their parameters bind as PowerShell binds them
# (pg_bind: a [SecureString] comes from sensitive_parameters only).
# host["pg"]: the cluster of a database host, shared with sim_backup.py: "roles" (name -> password_sha and attributes),
# "superuser_password_sha", "databases" (name -> owner, extensions, tables with reloptions), "postmaster" (the settings
# the running server read at its start), "loaded" (after the last reload), "hba" (the loaded pg_hba.conf entries),
# "slots" (physical replication slots), "in_recovery" (started with standby.signal: a read-only standby),
# "seeded_from" (the primary a standby's pg_basebackup copied); WAL positions (integers, pg_lsn as %X/%X): "lsn" (the
# end of the cluster's WAL), "checkpoint_lsn" (pg_controldata's latest checkpoint), on a standby "received_lsn",
# "replayed_lsn", "replayed_at" and "receiving" (the primary and its postmaster "run" it streams from); "run" counts
# postmaster starts, "shutdown_run" is the run a clean shutdown ended, "timeline" rises at a promotion.
# host["pg_standby_runs"]: each postgresql_standby.ps1 call (seeded, kept, error), for the tests.
# host["pg_installations"] is HKLM:\SOFTWARE\PostgreSQL\Installations, host["uninstall_keys"] the Uninstall keys,
# host["texts"] the content of text files whose digest is in files.
import datetime as _pg_dt
import json as _pg_json
import re as _pg_re

_PG_ARGS = _sim_args()
# Released EDB installer names (postgresql-<major>.<minor>-<build>-windows-x64.exe) and InstallBuilder's Add/Remove
# Programs key: windowsARPRegistryPrefix is not set in installer.xml.in, so InstallBuilder's default
# "${project.fullName} ${project.version}" applies: fullName PostgreSQL, version PG_MAJOR_VERSION -> "PostgreSQL 17".
_PG_INSTALLER = _pg_re.compile(r"(?i)^postgresql-(\d+)\.(\d+)-(\d+)-windows-x64\.exe$")
_PG_ARP = _pg_re.compile(r"^PostgreSQL (\d+)$")

# Settings the stand-in knows (PostgreSQL 17 guc_tables.c): context and kind. postmaster = applied at start only
# (pg_settings.pending_restart after a reload); anything else is applied by pg_reload_conf().
PG_SETTINGS = {
    "listen_addresses": ("postmaster", "str"), "port": ("postmaster", "int"), "max_connections": ("postmaster", "int"),
    "shared_buffers": ("postmaster", "mem"), "logging_collector": ("postmaster", "bool"),
    "dynamic_shared_memory_type": ("postmaster", "str"), "ssl": ("sighup", "bool"), "ssl_cert_file": ("sighup", "str"),
    "ssl_key_file": ("sighup", "str"), "ssl_min_protocol_version": ("sighup", "str"),
    "password_encryption": ("user", "str"), "log_destination": ("sighup", "str"), "log_directory": ("sighup", "str"),
    "log_filename": ("sighup", "str"), "log_rotation_age": ("sighup", "time"), "log_rotation_size": ("sighup", "mem"),
    "log_truncate_on_rotation": ("sighup", "bool"), "log_line_prefix": ("sighup", "str"),
    "log_connections": ("sighup", "bool"), "log_disconnections": ("sighup", "bool"), "log_timezone": ("sighup", "str"),
    "effective_cache_size": ("user", "mem"), "maintenance_work_mem": ("user", "mem"), "work_mem": ("user", "mem"),
    "autovacuum": ("sighup", "bool"), "autovacuum_vacuum_scale_factor": ("sighup", "real"),
    "max_wal_size": ("sighup", "mem"), "min_wal_size": ("sighup", "mem"), "datestyle": ("user", "str"),
    "timezone": ("user", "str"), "lc_messages": ("user", "str"), "lc_monetary": ("user", "str"),
    "lc_numeric": ("user", "str"), "lc_time": ("user", "str"), "default_text_search_config": ("user", "str"),
    # Streaming replication: wal_level (an enum: minimal, replica, logical; archive and hot_standby are hidden aliases
    # of replica), max_wal_senders, max_replication_slots and hot_standby at start only; max_slot_wal_keep_size (MB,
    # -1 unlimited), primary_conninfo and primary_slot_name (PGC_SIGHUP since 13) at a reload.
    "wal_level": ("postmaster", "wal_level"), "max_wal_senders": ("postmaster", "int"),
    "max_replication_slots": ("postmaster", "int"), "hot_standby": ("postmaster", "bool"),
    "max_slot_wal_keep_size": ("sighup", "mem"), "primary_conninfo": ("sighup", "str"),
    "primary_slot_name": ("sighup", "str"),
}
# Built-in values of the postmaster settings, in effect when no file sets them (guc_tables.c boot values).
PG_POSTMASTER_DEFAULTS = {"listen_addresses": "localhost", "port": "5432", "max_connections": "100",
                          "shared_buffers": "128MB", "logging_collector": "off", "dynamic_shared_memory_type": "windows",
                          "wal_level": "replica", "max_wal_senders": "10", "max_replication_slots": "10",
                          "hot_standby": "on"}
_PG_WAL_LEVELS = {"minimal": "minimal", "replica": "replica", "archive": "replica", "hot_standby": "replica",
                  "logical": "logical"}
# WAL positions (pg_lsn, an integer shown as two hexadecimal halves, %X/%X): where a new cluster's WAL ends after initdb,
# and what the server writes. Simple but consistent: a primary's WAL grows by PG_WRITE per change the role's SQL makes
# (and per password it sets), by a checkpoint record at a clean shutdown; a standby that streams has received all of
# its primary's WAL, up to its shutdown checkpoint when it streamed until that stop; a promotion writes an
# end-of-recovery record and a checkpoint after what the standby replayed.
PG_INITDB_LSN = 0x3000028
PG_WRITE = 0x1000
PG_CHECKPOINT_RECORD = 0x78
PG_END_OF_RECOVERY_RECORD = 0x28


def pg_sha(text):
    """The digest sim_backup.py keeps for a password (and simhost for file contents)."""
    return hashlib.sha256(str(text).encode()).hexdigest()


def pg_state():
    pg = host.setdefault("pg", {"roles": {}, "superuser_password_sha": None})
    for key, empty in (("roles", {}), ("databases", {}), ("postmaster", {}), ("loaded", {}), ("hba", [])):
        pg.setdefault(key, empty)
    return pg


def pg_text(path_):
    """A text file's content, only while the file is there with that content."""
    text = host.setdefault("texts", {}).get(path_.lower())
    return text if text is not None and files.get(path_.lower()) == pg_sha(text) else None


def pg_write(path_, text):
    files[path_.lower()] = pg_sha(text)
    host.setdefault("texts", {})[path_.lower()] = text


# --- configuration files as the postmaster reads them (guc-file.l ParseConfigFp, hba.c parse_hba_line) ---

def pg_value(raw):
    raw = raw.strip()
    if raw.startswith("'"):
        end = raw.find("'", 1)
        while end != -1 and raw[end + 1:end + 2] == "'":
            end = raw.find("'", end + 2)
        return raw[1:end].replace("''", "'").replace("\\\\", "\\"), raw[end + 1:].strip()
    value, _sep, rest = raw.partition("#")
    return value.strip(), "#" + rest if rest else ""


def pg_parse_conf(data_dir):
    """(settings in file order [(file, line, name, value)], errors) of postgresql.conf and its include_dir."""
    entries, errors = [], []

    def read(path_, depth=0):
        text = pg_text(path_)
        if text is None:
            errors.append("%s: could not open configuration file" % path_)
            return
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            match = _pg_re.match(r"^([A-Za-z_][A-Za-z0-9_.]*)\s*=?\s*(.*)$", stripped)
            if not match:
                errors.append("%s:%d syntax error" % (path_, number))
                continue
            value, rest = pg_value(match.group(2))
            if rest and not rest.startswith("#"):
                errors.append("%s:%d syntax error" % (path_, number))
                continue
            name = match.group(1).lower()
            if name == "include_dir":
                directory = value if ":" in value[:3] else data_dir + "\\" + value.replace("/", "\\")
                included = sorted(p for p in files if p.startswith(directory.lower() + "\\") and p.endswith(".conf")
                                  and "\\" not in p[len(directory) + 1:])
                for p in included:
                    read(p, depth + 1)
                continue
            entries.append((path_, number, name, value))

    read(data_dir + "\\postgresql.conf")
    return entries, errors


def pg_check(name, value):
    """GUC parse of one value; an error text or None."""
    known = PG_SETTINGS.get(name)
    if known is None:
        return None if "." in name else 'unrecognized configuration parameter "%s"' % name
    kind = known[1]
    ok = {"bool": lambda v: v.lower() in ("on", "off", "true", "false", "yes", "no", "1", "0"),
          "int": lambda v: _pg_re.match(r"^-?\d+$", v) is not None,
          "mem": lambda v: _pg_re.match(r"^-?\d+\s*(kB|MB|GB|TB)?$", v) is not None,
          "time": lambda v: _pg_re.match(r"^\d+\s*(ms|s|min|h|d)?$", v) is not None,
          "real": lambda v: _pg_re.match(r"^-?\d+(\.\d+)?$", v) is not None,
          "wal_level": lambda v: v.lower() in _PG_WAL_LEVELS,
          "str": lambda v: True}[kind](value)
    return None if ok else 'invalid value for parameter "%s": "%s"' % (name, value)


def pg_norm(name, value):
    kind = PG_SETTINGS.get(name, ("", "str"))[1]
    if kind == "bool":
        return "on" if value.lower() in ("on", "true", "yes", "1") else "off"
    if kind == "wal_level":
        return _PG_WAL_LEVELS.get(value.lower(), value)
    if kind == "mem":
        match = _pg_re.match(r"^(\d+)\s*(kB|MB|GB|TB)?$", value)
        return str(int(match.group(1)) * {"kB": 1, "MB": 1024, "GB": 1024 ** 2, "TB": 1024 ** 3, None: 8}[match.group(2)])
    return value


def pg_effective(data_dir):
    """{name: value} (the last setting of a name wins) and the pg_file_settings errors."""
    entries, errors = pg_parse_conf(data_dir)
    values = {}
    for path_, number, name, value in entries:
        problem = pg_check(name, value)
        if problem:
            errors.append("%s:%d %s: %s" % (path_, number, name, problem))
        else:
            values[name] = value
    return values, errors


def pg_parse_hba(data_dir, ssl_on):
    """pg_hba.conf entries and the pg_hba_file_rules errors (hba.c parse_hba_line)."""
    text = pg_text(data_dir + "\\pg_hba.conf")
    if text is None:
        return [], ["pg_hba.conf: could not open file"]
    entries, errors = [], []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        kind = fields[0]
        need = 4 if kind == "local" else 5
        if kind not in ("local", "host", "hostssl", "hostnossl", "hostgssenc", "hostnogssenc") or len(fields) < need:
            errors.append("pg_hba.conf:%d invalid connection type or missing fields" % number)
            continue
        method = fields[need - 1]
        if method not in ("trust", "reject", "scram-sha-256", "md5", "password", "sspi", "gss", "ldap", "cert", "radius"):
            errors.append('pg_hba.conf:%d invalid authentication method "%s"' % (number, method))
            continue
        if kind == "hostssl" and not ssl_on:
            # hba.c: "hostssl record cannot match because SSL is disabled" (hint: Set ssl = on in postgresql.conf).
            errors.append("pg_hba.conf:%d hostssl record cannot match because SSL is disabled" % number)
            continue
        address = "" if kind == "local" else fields[3]
        if address:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                errors.append('pg_hba.conf:%d invalid IP address "%s"' % (number, address))
                continue
        entries.append({"type": kind, "database": fields[1], "user": fields[2], "address": address, "method": method})
    return entries, errors


def pg_service_name():
    for inst in host.get("pg_installations", {}).values():
        if inst.get("Service ID") in services:
            return inst["Service ID"], inst
    return None, None


def pg_start(name):
    """The postmaster reads its files at start; a bad setting or pg_hba.conf is FATAL and the service stops again."""
    svc = services[name]
    inst = next(i for i in host["pg_installations"].values() if i.get("Service ID") == name)
    data_dir = inst["Data Directory"]
    values, errors = pg_effective(data_dir)
    hba, hba_errors = pg_parse_hba(data_dir, pg_norm("ssl", values.get("ssl", "off")) == "on")
    if pg_norm("ssl", values.get("ssl", "off")) == "on":
        for key, default in (("ssl_cert_file", "server.crt"), ("ssl_key_file", "server.key")):
            if lookup(data_dir + "\\" + values.get(key, default)) is None:
                errors.append('could not load server certificate file "%s"' % values.get(key, default))
    # PostgreSQL on Windows checks no permissions of its own, but the service's process opens the data directory's
    # files with its token: without a right on the directory the postmaster cannot read postgresql.conf.
    owner = sid_of(svc.get("object_name") or "LocalSystem")
    if dirs.get(data_dir.lower(), {}).get("acl", {}).get(owner) not in ("Modify", "FullControl") and owner != "S-1-5-18":
        errors.append('could not open file "%s\\postgresql.conf": Permission denied (%s)' % (data_dir, svc.get("object_name")))
    # xlog.c CheckRequiredParameterValues at start: WAL senders need WAL that a standby can replay.
    if pg_norm("wal_level", values.get("wal_level", "replica")) == "minimal" and int(values.get("max_wal_senders", "10")) > 0:
        errors.append('WAL streaming (max_wal_senders > 0) requires wal_level "replica" or "logical"')
    if errors or hba_errors or not hba:
        svc["running"] = False
        return "FATAL: " + "; ".join(errors + hba_errors + ([] if hba else ["could not load pg_hba.conf"]))
    pg = pg_state()
    pg["postmaster"] = {k: values.get(k, d) for k, d in PG_POSTMASTER_DEFAULTS.items()}
    pg["loaded"], pg["hba"] = values, hba
    # xlogrecovery.c readRecoverySignalFile: standby.signal in the data directory starts the server as a standby, in
    # recovery (pg_is_in_recovery() true, read-only) until it is promoted; the WAL receiver follows primary_conninfo.
    pg["in_recovery"] = lookup(data_dir + "\\standby.signal") is not None or lookup(data_dir + "\\recovery.signal") is not None
    # A new postmaster (its WAL senders and receiver are new ones); a server started without recovery reports no
    # received or replayed WAL (pg_last_wal_receive_lsn() and pg_last_wal_replay_lsn() NULL).
    pg["run"] = pg.get("run", 0) + 1
    pg["receiving"] = None
    pg.setdefault("lsn", PG_INITDB_LSN)
    pg.setdefault("checkpoint_lsn", PG_INITDB_LSN)
    if not pg["in_recovery"]:
        pg.update(received_lsn=None, replayed_lsn=None, replayed_at=None)
    svc.update(running=True, app_started=NOW, process_owner=svc.get("object_name"))
    return None


def pg_stop(name):
    """Stop-Service of a running PostgreSQL (pg_ctl's service: a fast shutdown): a primary writes its shutdown checkpoint
    at the end of its WAL (xlog.c CreateCheckPoint, a 120-byte record; pg_controldata then says 'shut down' and names
    it), its WAL senders send everything up to it to the standbys that stream from it before they exit
    (walsender.c WalSndDone); a standby ends with a restartpoint ('shut down in recovery'). The services that depend on
    it stop first (-Force)."""
    svc = services[name]
    for dependent in dependents_of(name):
        services[dependent]["running"] = False
    if not svc.get("running"):
        return
    pg = pg_state()
    if not pg.get("in_recovery"):
        pg["checkpoint_lsn"] = pg.setdefault("lsn", PG_INITDB_LSN)
        pg["lsn"] += PG_CHECKPOINT_RECORD
    pg["shutdown_run"] = pg.get("run", 0)
    svc["running"] = False


def pg_connect(port, user, password, database="postgres"):
    """psql.exe -h 127.0.0.1 -p <port> -U <user>: the server must run and listen there, and the first pg_hba.conf entry
    that matches decides (hba.c check_hba); psql's sslmode=prefer uses TLS when the server has ssl on."""
    name, _inst = pg_service_name()
    pg = pg_state()
    if name is None or not services[name].get("running"):
        return "could not connect to server: Connection refused (0x0000274D/10061) Is the server running on host " \
               "\"127.0.0.1\" and accepting TCP/IP connections on port %s?" % port
    if pg.get("in_recovery") and pg_norm("hot_standby", pg["postmaster"].get("hot_standby", "on")) == "off":
        # postmaster.c canAcceptConnections: a standby with hot_standby off admits no session.
        return "FATAL:  the database system is not accepting connections DETAIL:  Hot standby mode is disabled."
    listen = [a.strip() for a in pg["postmaster"].get("listen_addresses", "localhost").split(",")]
    if str(port) != str(pg["postmaster"].get("port")) or not {"*", "localhost", "127.0.0.1", "0.0.0.0"} & set(listen):
        return "could not connect to server: Connection refused on 127.0.0.1:%s" % port
    pg_replay()
    ssl = pg_norm("ssl", pg["loaded"].get("ssl", "off")) == "on"
    for entry in pg["hba"]:
        if entry["type"] == "local" or (entry["type"] == "hostssl" and not ssl) or (entry["type"] == "hostnossl" and ssl):
            continue
        if entry["database"] not in ("all", database) or entry["user"] not in ("all", user):
            continue
        if ipaddress.ip_address("127.0.0.1") not in ipaddress.ip_network(entry["address"], strict=False):
            continue
        if entry["method"] == "trust":
            return None
        role_sha = pg["superuser_password_sha"] if user == pg.get("superuser") else pg["roles"].get(user, {}).get("password_sha")
        if entry["method"] == "reject" or password is None or role_sha != pg_sha(password):
            return 'FATAL: password authentication failed for user "%s"' % user
        return None
    return 'FATAL: no pg_hba.conf entry for host "127.0.0.1", user "%s", database "%s"' % (user, database)


# --- the role's scripts ---

def pg_facts_script():
    """postgresql_facts.ps1: the Installations subkeys (major from the key name's -<digits> suffix), Win32_Service of the
    service, TotalPhysicalMemory in MB. Read-only, in check mode too."""
    installations = []
    for key, values in sorted(host.get("pg_installations", {}).items()):
        match = _pg_re.search(r"-(\d+)$", key)
        installations.append({"id": key, "major": match.group(1) if match else "", "version": values.get("Version", ""),
                              "base_dir": values.get("Base Directory", ""), "data_dir": values.get("Data Directory", ""),
                              "service": values.get("Service ID", "")})
    name = args["parameters"]["ServiceName"]
    svc = services.get(name)
    service = {"exists": False, "state": "", "account": "", "start_mode": ""}
    if svc is not None:
        service = {"dependents_running": [d for d in dependents_of(name) if services[d].get("running")],
                   "exists": True, "state": "Running" if svc.get("running") else "Stopped",
                   "account": svc.get("object_name", ""), "start_mode": svc.get("start_mode", "auto").capitalize()}
    data_dir = (args["parameters"].get("DataDir") or "").rstrip("\\")
    out["result"] = {"installations": installations, "service": service, "ram_mb": int(host.get("ram_mb", 16384)),
                     "option_file_left": bool(args["parameters"].get("OptionFile")) and lookup(args["parameters"]["OptionFile"]) is not None,
                     "standby_signal": bool(data_dir) and lookup(data_dir + "\\standby.signal") is not None}


def pg_reload_script():
    """postgresql_reload.ps1: pg_conf_load_time, pg_reload_conf() unless check mode (ShouldProcess), then
    pg_file_settings / pg_hba_file_rules errors (both views read the files on disk when queried) and
    pg_settings.pending_restart (postmaster settings whose loaded file value differs from the running one)."""
    params = args["parameters"]
    problem = pg_connect(params["Port"], params["Superuser"], params["SuperuserPassword"])
    if problem:
        out.update(failed=True, msg="psql.exe as %s on port %s failed (2): %s" % (params["Superuser"], params["Port"], problem))
        return
    pg = pg_state()
    _name, inst = pg_service_name()
    data_dir = inst["Data Directory"]
    values, errors = pg_effective(data_dir)
    if not CHECK:
        # ProcessConfigFile applies the settings it could parse; load_hba keeps the old rules when the file has errors.
        pg["loaded"] = values
        out["changed"] = True
    hba, hba_errors = pg_parse_hba(data_dir, pg_norm("ssl", pg["loaded"].get("ssl", "off")) == "on")
    if not CHECK and not hba_errors:
        pg["hba"] = hba
    pending = sorted(k for k, d in PG_POSTMASTER_DEFAULTS.items()
                     if pg_norm(k, pg["loaded"].get(k, d)) != pg_norm(k, pg["postmaster"].get(k, d)))
    # The TLS probe: a new session with sslmode=prefer gets TLS when ssl is on and the certificate and key loaded
    # (host["pg"]["tls_broken"]: a key the service cannot read).
    ssl = pg_norm("ssl", pg["loaded"].get("ssl", "off"))
    out["result"] = {"errors": errors + hba_errors, "pending_restart": pending, "ssl": ssl,
                     "tls_in_use": ssl == "on" and not pg.get("tls_broken")}


def pg_objects_script():
    """prefect_objects.ps1 running prefect_objects.sql: one CHANGED line per difference; apply=false in check mode. On
    the primary of a pair (ReplicationRole given: the script adds -v replication_role and slot, and
    PREFECT_REPLICATION_PASSWORD) the SQL's replication section too, after the Prefect role. A server in recovery (a
    standby) is read-only: the first statement that writes fails (ON_ERROR_STOP, psql exits 3)."""
    params = args["parameters"]
    sql = params["Sql"]
    # The script hands the password to psql in PREFECT_DB_PASSWORD only; the SQL reads it with \getenv (psql 15+).
    if "\\getenv password PREFECT_DB_PASSWORD" not in sql:
        out.update(failed=True, msg="psql.exe as %s on port %s failed (3): PREFECT_DB_PASSWORD is not set"
                   % (params["Superuser"], params["Port"]))
        return
    problem = pg_connect(params["Port"], params["Superuser"], params["SuperuserPassword"])
    if problem:
        out.update(failed=True, msg="psql.exe as %s on port %s failed (2): %s" % (params["Superuser"], params["Port"], problem))
        return
    pg = pg_state()
    if pg.get("in_recovery") and not CHECK:
        # xact.c PreventCommandIfReadOnly on a standby: "cannot execute %s in a read-only transaction" at the first
        # statement that writes (a physical slot may be made in recovery, slot.c); the CHANGED lines up to it were
        # echoed, and psql stops (ON_ERROR_STOP, exit 3).
        changes = pg_objects_changes(params, pg, False)
        writes = [c for c in changes if not c.startswith("replication slot ")]
        if writes:
            first = writes[0]
            for earlier in changes[:changes.index(first)]:
                pg.setdefault("slots", {})[earlier.split()[2]] = {"slot_type": "physical", "active": False,
                                                                  "restart_lsn": None, "wal_status": None}
            statement = ("CREATE ROLE" if first.startswith("role ") and first.endswith(" created") else
                         "ALTER ROLE" if first.startswith("role ") else
                         "CREATE DATABASE" if first.startswith("database ") and first.endswith(" created") else
                         "ALTER DATABASE" if first.startswith("database ") else
                         "CREATE EXTENSION" if first.startswith("extension ") else "ALTER TABLE")
            echoed = "; ".join("CHANGED " + c for c in changes[:changes.index(first) + 1])
            out.update(failed=True, msg="psql.exe as %s on port %s failed (3): psql:<stdin>: ERROR:  cannot execute %s in a "
                                        "read-only transaction %s" % (params["Superuser"], params["Port"], statement, echoed))
            return
    changes = pg_objects_changes(params, pg, not CHECK)
    if changes and not CHECK:
        pg["lsn"] = pg.get("lsn", PG_INITDB_LSN) + PG_WRITE * len(changes)
    out.update(changed=bool(changes), result={"changes": changes})
    if changes:
        out["diff"] = {"before": "", "after": "\n".join(changes) + "\n"}


def pg_objects_changes(params, pg, apply):
    """The CHANGED lines of prefect_objects.sql in its order; the changes made when apply."""
    sql = params["Sql"]
    role, database = params["Role"], params["Database"]
    wanted = {"login": True, "superuser": False, "createdb": False, "createrole": False, "replication": False,
              "bypassrls": False}
    changes = []
    current = pg["roles"].get(role)
    if current is None:
        changes.append("role %s created" % role)
        if apply:
            pg["roles"][role] = dict(wanted, password_sha=pg_sha(params["Password"]))
    else:
        if any(current.get(k, False) != v for k, v in wanted.items()):
            changes.append("role %s attributes LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS" % role)
            if apply:
                current.update(wanted)
        # pg_temp.scram_matches: the stored verifier recomputed with the Vault password; an md5 hash never matches.
        if current.get("password_sha") != pg_sha(params["Password"]) or current.get("md5"):
            changes.append("role %s password" % role)
            if apply:
                current.update(password_sha=pg_sha(params["Password"]), md5=False)
    # The replication section (\\if :{?replication_role}): only when the script passed -v replication_role, i.e. a
    # non-empty ReplicationRole; the password from PREFECT_REPLICATION_PASSWORD (an empty one is no password: CREATE/
    # ALTER ROLE ... PASSWORD '' stores none, and scram_matches of NULL never matches).
    replication_role = params.get("ReplicationRole") or ""
    if replication_role and "\\if :{?replication_role}" in sql:
        secret = params.get("ReplicationPassword") or ""
        secret_sha = pg_sha(secret) if secret else None
        wanted_replication = dict(wanted, replication=True)
        current = pg["roles"].get(replication_role)
        if current is None:
            changes.append("role %s created" % replication_role)
            if apply:
                pg["roles"][replication_role] = dict(wanted_replication, password_sha=secret_sha)
        else:
            if any(current.get(k, False) != v for k, v in wanted_replication.items()):
                changes.append("role %s attributes LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"
                               % replication_role)
                if apply:
                    current.update(wanted_replication)
            if secret_sha is None or current.get("password_sha") != secret_sha or current.get("md5"):
                changes.append("role %s password" % replication_role)
                if apply:
                    current.update(password_sha=secret_sha, md5=False)
        slot = params.get("Slot") or ""
        slots = pg.setdefault("slots", {})
        # pg_create_physical_replication_slot(name): immediately_reserve false, so no restart_lsn (and no wal_status)
        # until the standby first streams from it.
        if slots.get(slot, {}).get("wal_status") == "lost":
            # WAL past max_slot_wal_keep_size was removed: dropped and made again.
            changes.append("replication slot %s made again (its WAL was lost: seed the standby again)" % slot)
            if apply:
                slots[slot] = {"slot_type": "physical", "active": False, "restart_lsn": None, "wal_status": None}
        elif slot not in slots:
            changes.append("replication slot %s created" % slot)
            if apply:
                slots[slot] = {"slot_type": "physical", "active": False, "restart_lsn": None, "wal_status": None}
    db = pg["databases"].get(database)
    check_extension = True
    if db is None:
        changes.append("database %s created" % database)
        if apply:
            db = pg["databases"][database] = {"owner": role, "extensions": [], "tables": {}}
        else:
            changes.append("extension pg_trgm created")
            check_extension = False
    elif db["owner"] != role:
        changes.append("database %s owner %s" % (database, role))
        if apply:
            db["owner"] = role
    if check_extension:
        if "pg_trgm" not in db["extensions"]:
            changes.append("extension pg_trgm created")
            if apply:
                db["extensions"].append("pg_trgm")
        autovacuum = {"events": ["autovacuum_vacuum_scale_factor=0.05", "autovacuum_vacuum_threshold=1000",
                                 "autovacuum_analyze_scale_factor=0.02"],
                      "flow_run_state": ["autovacuum_vacuum_scale_factor=0.1", "autovacuum_analyze_scale_factor=0.05"],
                      "flow_run": ["autovacuum_vacuum_scale_factor=0.1", "autovacuum_vacuum_threshold=500"]}
        # Only tables Prefect's migrations created; reloptions must contain every option (the @> of the SQL).
        differ = [t for t, o in autovacuum.items() if t in db.get("tables", {}) and not set(o) <= set(db["tables"][t])]
        if differ:
            changes.append("autovacuum settings of " + ", ".join(differ))
            if apply:
                for t in differ:
                    db["tables"][t] = sorted(set(db["tables"][t]) | set(autovacuum[t]))
    return changes


# --- modules, for this role's calls ---

def pg_win_template():
    """win_template: the action plugin rendered the template on the control node (newline_sequence \\r\\n) and the win_copy
    action copies the result: win_copy.ps1 Copy-File compares SHA1 checksums and copies only a different file, creating
    the parent directory; check mode reports without copying."""
    text = open(args["src"], encoding="utf-8").read()
    dest = args["dest"]
    out.update(changed=pg_text(dest) != text, dest=dest, checksum=hashlib.sha1(text.encode()).hexdigest())
    if out["changed"] and not CHECK:
        pg_write(dest, text)
        dirs.setdefault(dest.rsplit("\\", 1)[0].lower(), {"acl": {}, "protected": False})


def pg_win_copy_content():
    """win_copy with content: the action plugin writes it to a local temporary file and copies that (as above)."""
    dest, text = args["dest"], args["content"]
    out.update(changed=pg_text(dest) != text, dest=dest)
    if out["changed"] and not CHECK:
        pg_write(dest, text)


def pg_win_lineinfile():
    """win_lineinfile.ps1 Present: the path must exist (create: no); the LAST line the regex matches (Regex.Match, not
    anchored unless the pattern is) is replaced when it differs (-cne), else the line is appended (insertafter EOF);
    the file is written back with the module's newline (windows: \\r\\n) and keeps a final newline."""
    path_ = args["path"]
    text = pg_text(path_)
    if text is None:
        out.update(failed=True, msg="Path %s does not exist !" % path_)
        return
    lines = _pg_re.split(r"\r\n|\n|\r", text)
    ends_with_newline = text.endswith(("\n", "\r"))
    if ends_with_newline:
        lines = lines[:-1]
    regex, line = args.get("regex") or args.get("regexp"), args["line"]
    index = -1
    for number, current in enumerate(lines):
        if (_pg_re.search(regex, current) if regex else current == line):
            index = number
    if index >= 0:
        if lines[index] != line:
            lines[index] = line
            out.update(changed=True, msg="line replaced")
    else:
        lines.append(line)
        out.update(changed=True, msg="line added")
    if out["changed"] and not CHECK:
        pg_write(path_, "\r\n".join(lines + ([""] if ends_with_newline else [])))


def pg_win_service():
    """win_service.ps1 for the PostgreSQL service (EDB registers pg_ctl.exe runservice): started/stopped/restarted with
    Start-Service/Stop-Service/Restart-Service (a postmaster that exits at start fails the task), start_mode compared;
    check mode reports only."""
    name = args["name"]
    svc = services.get(name)
    if svc is None:
        out.update(failed=True, msg="Service '%s' is not installed" % name)
        return
    if args.get("start_mode") and svc.get("start_mode", "auto") != args["start_mode"]:
        out["changed"] = True
        if not CHECK:
            svc["start_mode"] = args["start_mode"]
    if args.get("username"):
        # win_service.ps1 compares SIDs (ConvertTo-SecurityIdentifier: NTAccount.Translate, which fails for an account
        # that does not exist, and for NT SERVICE\<name> of a service that does not); a new account applies at the
        # next start.
        wanted = sid_of(args["username"])
        if wanted is None:
            out.update(failed=True, msg="Some or all identity references could not be translated: %s" % args["username"])
            return
        if wanted != sid_of(svc.get("object_name") or "LocalSystem"):
            out["changed"] = True
            if not CHECK:
                svc["object_name"] = args["username"]
                svc["password_sha"] = pg_sha(args.get("password") or "")
    state = args.get("state")
    problem = None
    if state in ("stopped", "restarted") and svc.get("running"):
        # Stop-Service / Restart-Service without -Force refuse a service whose dependents run (the local Prefect
        # server); with -Force (force_dependent_services) they stop them first, every level down.
        running = [d for d in dependents_of(name) if services[d].get("running")]
        if running and not args.get("force_dependent_services"):
            out.update(failed=True, msg="Cannot stop service '%s (%s)' because it has dependent services. It can only be "
                                        "stopped if the Force flag is set." % (name, name))
            return
        if running and not CHECK:
            for d in running:
                services[d]["running"] = False
    # win_service.ps1 sets the start mode before the state (Set-ServiceStartMode, then Set-ServiceState): a service
    # made disabled here is then stopped; one that is disabled does not start (Start-Service, and Restart-Service after
    # its stop: ERROR_SERVICE_DISABLED, "Cannot start service ... on computer '.'").
    disabled = "Cannot start service %s on computer '.'." % name if svc.get("start_mode") == "disabled" else None
    if state == "started" and not svc.get("running"):
        out["changed"] = True
        problem = None if CHECK else disabled or pg_start(name)
    elif state == "stopped" and svc.get("running"):
        out["changed"] = True
        if not CHECK:
            pg_stop(name)
    elif state == "restarted":
        out["changed"] = True
        if not CHECK:
            pg_stop(name)
            problem = disabled or pg_start(name)
    if problem:
        out.update(failed=True, msg="Service '%s (%s)' cannot be started due to the following error: %s" % (name, name, problem))
    # The result is win_service.ps1's diff.after: the requested start mode and state (started and restarted shown as
    # running), in check mode too; what the service has where none was requested.
    out.update(exists=True, name=name, username=svc.get("object_name"),
               state=("running" if state in ("started", "restarted") else state) if state
               else "running" if svc.get("running") else "stopped",
               start_mode=args.get("start_mode") or svc.get("start_mode", "auto"))


PG_CONF_SAMPLE = """# PostgreSQL configuration file (initdb from postgresql.conf.sample, then initcluster.vbs)
#listen_addresses = 'localhost'\t\t# what IP address(es) to listen on;
#port = 5432\t\t\t\t# (change requires restart)
max_connections = 100\t\t\t# (change requires restart)
shared_buffers = 128MB\t\t\t# min 128kB
dynamic_shared_memory_type = windows\t# the default is usually the first option
max_wal_size = 1GB
min_wal_size = 80MB
#log_destination = 'stderr'\t\t# Valid values are combinations of
#logging_collector = off\t\t# Enable capturing of stderr, jsonlog,
#log_line_prefix = '%m [%p] '\t\t# special values:
log_timezone = 'UTC'
datestyle = 'iso, mdy'
timezone = 'UTC'
default_text_search_config = 'pg_catalog.english'
#include_dir = '...'\t\t\t# include files ending in '.conf' from
#include_if_exists = '...'\t\t# include file only if it exists
#include = '...'\t\t\t# include file
"""
PG_HBA_INITDB = """# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
"""


def pg_installer_options(argv):
    """InstallBuilder command line: --name value pairs; --optionfile adds name=value lines of a file (command line
    first: a value given on both wins from the command line)."""
    options, i = {}, 0
    while i < len(argv):
        if not argv[i].startswith("--") or i + 1 >= len(argv):
            return None, "Unknown option or missing value: %s" % argv[i]
        options[argv[i][2:]] = argv[i + 1]
        i += 2
    if "optionfile" in options:
        text = pg_text(options["optionfile"])
        if text is None:
            return None, "Error reading option file %s" % options["optionfile"]
        for line in text.splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                options.setdefault(key.strip(), value)
    return options, None


def pg_win_package():
    """win_package.ps1 with the EDB installer. With `path` and no product_id the registry provider has no key to test:
    the exe runs whenever the task runs (the role decides from postgresql_facts). With product_id (state absent) it tests
    HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\<product_id> and runs its UninstallString with the
    arguments appended. Exit codes 0 and 3010 are success (3010: reboot_required); any other fails the task."""
    raw = args.get("arguments") or []
    argv = [str(a) for a in raw] if isinstance(raw, list) else str(raw).split()
    out.update(rc=0, reboot_required=False)
    if args.get("state") == "absent":
        key = host.get("uninstall_keys", {}).get(args.get("product_id", ""))
        out["changed"] = key is not None
        if key is None or CHECK:
            return
        host.setdefault("installer_runs", []).append([key["UninstallString"]] + argv)
        options, problem = pg_installer_options(argv)
        if problem or options.get("mode") != "unattended":
            # Without --mode unattended the uninstaller asks for confirmation in a window nobody sees: win_package waits.
            out.update(failed=True, rc=1, msg="the uninstaller did not finish: it waits for an answer (--mode unattended missing)")
            return
        major = _PG_ARP.match(args["product_id"]).group(1)
        inst_key = "postgresql-x64-" + major
        inst = host.get("pg_installations", {}).pop(inst_key, {})
        host["uninstall_keys"].pop(args["product_id"])
        # pgserver.xml.in preUninstall: the service is stopped and unregistered; the program files go; the data
        # directory stays (info.datadirectory.kept).
        services.pop(inst.get("Service ID", ""), None)
        base = inst.get("Base Directory", "").lower()
        for p in [p for p in files if base and p.startswith(base + "\\")]:
            del files[p]
        dirs.pop(base, None)
        return
    name = args["path"].rsplit("\\", 1)[-1]
    match = _PG_INSTALLER.match(name)
    out["changed"] = True
    if lookup(args["path"]) is None and not CHECK:
        out.update(failed=True, msg="the file at the path '%s' cannot be reached" % args["path"])
        return
    if CHECK:
        return
    options, problem = pg_installer_options(argv)
    host.setdefault("installer_runs", []).append([args["path"]] + argv)
    # What the installer saw of its option file while it ran (the test checks it was there and is gone afterwards).
    host.setdefault("pg_option_files_seen", []).append(options.get("optionfile", "") if options else "")
    if problem:
        out.update(failed=True, rc=1, msg=problem)
        return
    if options.get("mode") != "unattended" or options.get("unattendedmodeui", "minimal") != "none":
        out.update(failed=True, rc=1, msg="the installer showed a window (--mode unattended --unattendedmodeui none missing)")
        return
    if host.get("pg_installer_fails"):
        # initcluster.vbs: "Failed to initialise the database cluster with initdb"; the installer exits 1.
        host.pop("pg_installer_fails")
        out.update(failed=True, rc=1, msg="unexpected rc from '%s': see rc, stdout, and stderr for more details" % args["path"])
        return
    major, minor, build = match.groups()
    inst_key = "postgresql-x64-" + major
    installs = host.setdefault("pg_installations", {})
    existing = installs.get(inst_key)
    version = "%s.%s-%s" % (major, minor, build)
    pg = pg_state()
    if existing:
        # pgserver.xml.in "Existing install ... Ignore command line": datadir, service name and prefix come from the
        # registration; only the programs and Version change; the service is started again at the end.
        # pgserver.xml.in: "Existing install, with serviceaccount. Ignore command line": the recorded account; for one
        # other than NetworkService validateuser.exe checks servicepassword (the superpassword when none is given) and
        # the install aborts on "Incorrect password".
        recorded = existing.get("Service Account", "NT AUTHORITY\\NetworkService")
        if recorded.lower().replace(" ", "") != "ntauthority\\networkservice":
            wanted = options.get("servicepassword") or options.get("superpassword") or ""
            if pg_sha(wanted) != services[existing["Service ID"]].get("password_sha"):
                out.update(failed=True, rc=1, msg="validateuser.exe: Incorrect password for %s: the installation aborted" % recorded)
                return
        existing["Version"] = version
        # pgserver.xml.in: the service is stopped, deleted and registered again (pg_ctl register) with the account the
        # installation recorded ('Service Account'), whatever logon account was set on it since.
        services[existing["Service ID"]]["object_name"] = existing.get("Service Account", "NT AUTHORITY\\NetworkService")
        for program in ("psql.exe", "pg_dump.exe", "pg_restore.exe", "pg_ctl.exe", "initdb.exe", "pg_basebackup.exe",
                        "pg_controldata.exe"):
            files[(existing["Base Directory"] + "\\bin\\" + program).lower()] = pg_sha(program + " " + version)
        host["uninstall_keys"]["PostgreSQL " + major]["DisplayVersion"] = version
        problem = pg_start(existing["Service ID"]) if not services[existing["Service ID"]].get("running") else None
        if problem:
            out.update(failed=True, rc=1, msg=problem)
        return
    password = options.get("superpassword")
    if not password:
        out.update(failed=True, rc=1, msg="A password is required for the database superuser (config.superpassword.no.password)")
        return
    service = options.get("servicename") or "postgresql-x64-" + major
    if service in services:
        out.update(failed=True, rc=1, msg="A service named %s already exists (servicename.already.exists.windows)" % service)
        return
    account = options.get("serviceaccount", "NT AUTHORITY\\NetworkService")
    if sid_of(account) is None:
        out.update(failed=True, rc=1, msg="The service account %s does not exist (createuser.exe)" % account)
        return
    prefix = options.get("prefix", "C:\\Program Files\\PostgreSQL\\" + major)
    data_dir = options.get("datadir", prefix + "\\data")
    port = options.get("serverport", "5432")
    for program in ("psql.exe", "pg_dump.exe", "pg_restore.exe", "pg_ctl.exe", "initdb.exe", "pg_basebackup.exe",
                    "pg_controldata.exe"):
        files[(prefix + "\\bin\\" + program).lower()] = pg_sha(program + " " + version)
    files[(prefix + "\\uninstall-postgresql.exe").lower()] = pg_sha("uninstall " + version)
    dirs.setdefault(prefix.lower(), {"acl": {}, "protected": False})
    # initcluster.vbs AclCheck: icacls /grant for the installing user, the service account, CREATOR OWNER, SYSTEM and
    # Administrators, each (OI)(CI)F, on a directory that still inherits the drive's rules.
    acl = {"S-1-5-21-1000-500": "FullControl", sid_of(account): "FullControl", "S-1-3-0": "FullControl",
           "S-1-5-18": "FullControl", "S-1-5-32-544": "FullControl"}
    inherited = dirs.get(data_dir.lower(), {}).get("acl", {})
    dirs[data_dir.lower()] = {"acl": dict(inherited, **acl), "protected": False}
    # initdb writes the sample and a pg_hba.conf for -A scram-sha-256; initcluster.vbs then edits five lines.
    conf = PG_CONF_SAMPLE.replace("#listen_addresses = 'localhost'", "listen_addresses = '*'")
    conf = conf.replace("#port = 5432", "port = " + port).replace("#log_destination = 'stderr'", "log_destination = 'stderr'")
    conf = conf.replace("#logging_collector = off", "logging_collector = on")
    pg_write(data_dir + "\\postgresql.conf", conf.replace("\n", "\r\n") + "\r\n")
    pg_write(data_dir + "\\pg_hba.conf", PG_HBA_INITDB.replace("\n", "\r\n"))
    pg.update(superuser=options.get("superaccount", "postgres"), superuser_password_sha=pg_sha(password),
              databases={"postgres": {"owner": options.get("superaccount", "postgres"), "extensions": [], "tables": {}}})
    installs[inst_key] = {"Base Directory": prefix, "Data Directory": data_dir, "Version": version, "Service ID": service,
                          "Service Account": account, "Super User": options.get("superaccount", "postgres"),
                          "Branding": "PostgreSQL " + major}
    host.setdefault("uninstall_keys", {})["PostgreSQL " + major] = {
        "UninstallString": '"%s\\uninstall-postgresql.exe"' % prefix, "DisplayVersion": version}
    services[service] = {"running": False, "start_mode": "auto", "object_name": account, "registry": {},
                         "image_path": '"%s\\bin\\pg_ctl.exe" runservice -N "%s" -D "%s" -w' % (prefix, service, data_dir)}
    problem = pg_start(service)
    if problem:
        out.update(failed=True, rc=1, msg=problem)


def pg_installer_options_script():
    """installer_options.ps1: the option file with a one-time superuser password made on the host (never returned); a
    file left by an earlier run is kept."""
    if lookup(args["parameters"]["Path"]) is not None:
        out["result"] = {"kept": True}
        return
    if CHECK:
        return
    one_time = "OneTime%08d" % (int(pg_sha(str(NOW) + args["parameters"]["Path"])[:8], 16) % 10 ** 8)
    pg_write(args["parameters"]["Path"], "superpassword=%s\r\n" % one_time)
    out["changed"] = True


def pg_superuser_password_script():
    """superuser_password.ps1: the Vault password already logs in (nothing to do, a left option file removed), or the
    install's one-time password from the option file sets it through psql; then the real one logs in and the one-time
    one does not, and the option file is removed."""
    params = args["parameters"]
    if CHECK:
        out["changed"] = True
        return
    port, user, real = params["Port"], params["Superuser"], params["SuperuserPassword"]
    option_file = params["OptionFile"].lower()
    if pg_connect(port, user, real) is None:
        files.pop(option_file, None)
        out["result"] = {"set": False, "one_time_refused": None}
        return
    text = pg_text(params["OptionFile"]) or ""
    line = next((l for l in text.splitlines() if l.startswith("superpassword=")), None)
    if line is None:
        out.update(failed=True, msg="psql.exe as %s refuses postgresql_superuser_password, and there is no installer option file" % user)
        return
    one_time = line[len("superpassword="):]
    problem = pg_connect(port, user, one_time)
    if problem:
        out.update(failed=True, msg="psql.exe as %s with the install's one-time password failed (2): %s" % (user, problem))
        return
    if pg_state().get("in_recovery"):
        # A standby is read-only (xact.c PreventCommandIfReadOnly); psql exits 3 under ON_ERROR_STOP.
        out.update(failed=True, msg="psql.exe as %s with the install's one-time password failed (3): ERROR:  cannot execute "
                                    "ALTER ROLE in a read-only transaction" % user)
        return
    pg_state()["superuser_password_sha"] = pg_sha(real)
    pg_state()["lsn"] = pg_state().get("lsn", PG_INITDB_LSN) + PG_WRITE
    assert pg_connect(port, user, real) is None and pg_connect(port, user, one_time) is not None
    files.pop(option_file, None)
    out.update(changed=True, result={"set": True, "one_time_refused": True})


def pg_win_regedit():
    """win_regedit.ps1 on EDB's registration (HKLM:\\SOFTWARE\\PostgreSQL\\Installations\\<id>): one string value set
    when it differs; check mode reports only."""
    key = args["path"].rstrip("\\").rsplit("\\", 1)[-1]
    install = host.get("pg_installations", {}).get(key)
    if install is None:
        out.update(changed=True)  # win_regedit creates the key; nothing of the simulated installer reads it then
        return
    if install.get(args["name"]) != args.get("data"):
        out["changed"] = True
        if not CHECK:
            install[args["name"]] = args.get("data")


def pg_acl_reset_script():
    """postgresql_acl_reset.ps1: icacls /reset /T on everything inside each directory, /setowner Administrators
    (files have no ACLs in this simulation: the call is recorded for the tests)."""
    if CHECK:
        out["changed"] = True
        return
    done = [d for d in args["parameters"]["Directories"] if d.lower() in dirs]
    host.setdefault("pg_acl_resets", []).append(done)
    out.update(changed=bool(done), result={"reset": done})


# --- streaming replication: postgresql_standby.ps1, its pg_basebackup.exe and the standby's WAL receiver ---
# The primary is another simulated host, reached through sim_verify.py's network (_v_connect: DNS by inventory name,
# something listening there for other hosts, that host's Windows Firewall admitting this host's address); its state is
# read, never written (its own modules may be saving it at the same moment).

def pg_conninfo(text):
    """libpq conninfo_parse: keyword = value pairs; a value bare or in single quotes, a backslash escaping the next
    character. (params, None) or (None, libpq's error)."""
    params, i, n = {}, 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        equals = text.find("=", i)
        if equals < 0:
            return None, 'missing "=" after "%s" in connection info string' % text[i:].split()[0]
        key = text[i:equals].strip()
        i = equals + 1
        while i < n and text[i].isspace():
            i += 1
        value = []
        if i < n and text[i] == "'":
            i += 1
            while i < n and text[i] != "'":
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            if i >= n:
                return None, "unterminated quoted string in connection info string"
            i += 1
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
        params[key] = "".join(value)
    return params, None


def pg_passfile_password(path_, hostname, port, dbname, user):
    """libpq passwordFromFile: the first line host:port:database:username:password whose four fields match (* any; \\
    escapes : and \\); lines starting with # are comments. None when the file or a line is missing."""
    text = pg_text(path_.replace("/", "\\"))
    if text is None:
        return None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields, current, i = [], [], 0
        while i < len(line):
            if line[i] == "\\" and i + 1 < len(line):
                current.append(line[i + 1])
                i += 2
                continue
            if line[i] == ":" and len(fields) < 4:
                fields.append("".join(current))
                current = []
            else:
                current.append(line[i])
            i += 1
        fields.append("".join(current))
        if len(fields) == 5 and all(f in ("*", want) for f, want in zip(fields[:4], (hostname, str(port), dbname, user))):
            return fields[4]
    return None


def pg_data_dir_of(state):
    """The data directory of a host's PostgreSQL service (its EDB registration)."""
    for inst in state.get("pg_installations", {}).values():
        if inst.get("Service ID") in state.get("services", {}):
            return inst.get("Data Directory")
    return None


def pg_replication_connect(params, passfile_env=None):
    """A physical replication connection (replication=true, dbname replication, as pg_basebackup and the WAL receiver
    open it) with libpq to the host in params: (the primary's state, None) or (None, libpq's error text)."""
    target, port, user = params.get("host", "localhost"), str(params.get("port", "5432")), params.get("user", "")
    state, problem = _v_connect(target, int(port))
    if state is None:
        if problem.startswith("No such host"):
            return None, 'could not translate host name "%s" to address: No such host is known.' % target
        known = _v_host_by_name(target)
        if _v_admitted(known, int(port), host.get("address", "")):
            # The firewall lets the SYN in and nothing listens: Windows answers with a reset.
            return None, ('connection to server at "%s" (%s), port %s failed: Connection refused (0x0000274D/10061)\n\tIs '
                          'the server running on that host and accepting TCP/IP connections?' % (target, known.get("address"), port))
        # A dropped SYN ends at connect_timeout as libpq's "timeout expired".
        return None, 'connection to server at "%s" (%s), port %s failed: timeout expired' % (target, known.get("address"), port)
    prefix = 'connection to server at "%s" (%s), port %s failed: ' % (target, state.get("address", target), port)
    primary = state.get("pg", {})
    sslmode = params.get("sslmode", "prefer")
    ssl_on = pg_norm("ssl", primary.get("loaded", {}).get("ssl", "off")) == "on"
    if sslmode in ("require", "verify-ca", "verify-full") and not ssl_on:
        return None, prefix + "server does not support SSL, but SSL was required"
    if sslmode in ("verify-ca", "verify-full"):
        root = params.get("sslrootcert", "%APPDATA%/postgresql/root.crt")
        if lookup(root.replace("/", "\\")) is None:
            return None, prefix + ('root certificate file "%s" does not exist\nEither provide the file, use the system\'s '
                                   'trusted roots with sslrootcert=system, or change sslmode to disable server certificate '
                                   'verification.' % root)
    ssl_in_use = ssl_on and sslmode != "disable"
    caller = host.get("address", "")
    encryption = "SSL encryption" if ssl_in_use else "no encryption"
    # hba.c check_hba: the first line of the loaded rules that matches; for a physical replication connection only the
    # database keyword "replication" matches (check_db: not "all").
    entry = None
    for rule in primary.get("hba", []):
        if rule["type"] == "local" or (rule["type"] == "hostssl" and not ssl_in_use) or (rule["type"] == "hostnossl" and ssl_in_use):
            continue
        if rule["database"] != "replication" or rule["user"] not in ("all", user):
            continue
        try:
            if ipaddress.ip_address(caller) not in ipaddress.ip_network(rule["address"], strict=False):
                continue
        except ValueError:
            continue
        entry = rule
        break
    if entry is None:
        return None, prefix + 'FATAL:  no pg_hba.conf entry for replication connection from host "%s", user "%s", %s' % (
            caller, user, encryption)
    if entry["method"] == "reject":
        return None, prefix + 'FATAL:  pg_hba.conf rejects replication connection for host "%s", user "%s", %s' % (
            caller, user, encryption)
    superuser = user == primary.get("superuser")
    role = {"login": True, "replication": True, "password_sha": primary.get("superuser_password_sha")} if superuser \
        else primary.get("roles", {}).get(user)
    if entry["method"] != "trust":
        password = params.get("password")
        if password is None:
            # The passfile keyword wins over PGPASSFILE; the host field is compared with the host name as given.
            password = pg_passfile_password(params.get("passfile") or passfile_env or "", target, port, "replication", user)
        if password is None:
            return None, prefix + "fe_sendauth: no password supplied"
        if role is None or not role.get("password_sha") or role["password_sha"] != pg_sha(password):
            return None, prefix + 'FATAL:  password authentication failed for user "%s"' % user
    if role is None:
        return None, prefix + 'FATAL:  role "%s" does not exist' % user
    if not role.get("login"):
        return None, prefix + 'FATAL:  role "%s" is not permitted to log in' % user
    if not superuser and not role.get("replication"):
        return None, prefix + ("FATAL:  permission denied to start WAL sender\nDETAIL:  Only roles with the REPLICATION "
                               "attribute may start a WAL sender process.")
    if int(primary.get("postmaster", {}).get("max_wal_senders", "10")) < 1:
        return None, prefix + "FATAL:  number of requested standby connections exceeds max_wal_senders (currently 0)"
    return state, None


# basebackup.c excludeFiles: what BASE_BACKUP never sends (pg_replslot's contents are excluded too: the primary's
# slots are not the standby's).
_PG_BASEBACKUP_EXCLUDED = ("postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "backup_manifest",
                           "postgresql.auto.conf.tmp", "current_logfiles.tmp")


def pg_tree(path_):
    """The file and directory keys at path_ and under it (lower-case, as the host keeps them)."""
    base = path_.lower().rstrip("\\")
    inside = lambda p: p == base or p.startswith(base + "\\")
    return [p for p in files if inside(p)], [d for d in dirs if inside(d)]


def pg_move_tree(source, target):
    """Rename-Item of a directory: its files (and their texts) and directories under the new name."""
    old, new = source.lower().rstrip("\\"), target.lower().rstrip("\\")
    tree_files, tree_dirs = pg_tree(source)
    texts = host.setdefault("texts", {})
    for p in tree_files:
        files[new + p[len(old):]] = files.pop(p)
        if p in texts:
            texts[new + p[len(old):]] = texts.pop(p)
    for d in tree_dirs:
        dirs[new + d[len(old):]] = dirs.pop(d)


def pg_remove_tree(path_):
    """Remove-Item -Recurse -Force."""
    tree_files, tree_dirs = pg_tree(path_)
    for p in tree_files:
        files.pop(p)
        host.setdefault("texts", {}).pop(p, None)
    for d in tree_dirs:
        dirs.pop(d)


def pg_copy_tree(source, target, acl=None):
    """Copy-Item -Recurse: a file or a directory tree; the copies' directories get acl (inherited from the target's
    parent) when given, else the source's."""
    old, new = source.lower().rstrip("\\"), target.lower().rstrip("\\")
    tree_files, tree_dirs = pg_tree(source)
    texts = host.setdefault("texts", {})
    for p in tree_files:
        files[new + p[len(old):]] = files[p]
        if p in texts:
            texts[new + p[len(old):]] = texts[p]
    for d in tree_dirs:
        dirs[new + d[len(old):]] = {"acl": dict(acl if acl is not None else dirs[d].get("acl", {})), "protected": False}


def pg_basebackup(data_dir, conninfo, slot, passfile_env):
    """pg_basebackup.exe -D <data_dir> -X stream -c fast -S <slot> -w -d <conninfo>: None when the cluster was copied,
    else its stderr (exit code 1). The main connection runs BASE_BACKUP; the WAL streamer's START_REPLICATION SLOT
    fails when the primary has no such slot (walsender.c, ReplicationSlotAcquire), after the base backup was received,
    and pg_basebackup removes what it wrote."""
    params, problem = pg_conninfo(conninfo)
    if problem:
        return "pg_basebackup: error: " + problem
    state, problem = pg_replication_connect(params, passfile_env)
    if problem:
        return "pg_basebackup: error: " + problem
    primary = state["pg"]
    if slot not in primary.get("slots", {}):
        return ('pg_basebackup: error: could not send replication command "START_REPLICATION": ERROR:  replication slot '
                '"%s" does not exist\npg_basebackup: error: child thread exited with error 1\n'
                'pg_basebackup: removing contents of data directory "%s"' % (slot, data_dir))
    # The primary's data directory, file by file, into the empty one (its directories inherit the new one's rules).
    source = (pg_data_dir_of(state) or "").lower()
    new, texts = data_dir.lower(), host.setdefault("texts", {})
    acl = dirs.get(new, {}).get("acl", {})
    for p, digest in state.get("files", {}).items():
        if p.startswith(source + "\\") and p.rsplit("\\", 1)[-1] not in _PG_BASEBACKUP_EXCLUDED:
            files[new + p[len(source):]] = digest
            if p in state.get("texts", {}):
                texts[new + p[len(source):]] = state["texts"][p]
    for d in state.get("dirs", {}):
        if d.startswith(source + "\\"):
            dirs[new + d[len(source):]] = {"acl": dict(acl), "protected": False}
    # The catalog is the primary's: its roles (the superuser's password too), databases and their objects; no slot.
    pg = pg_state()
    pg.update(superuser=primary.get("superuser"), superuser_password_sha=primary.get("superuser_password_sha"),
              roles=_pg_json.loads(_pg_json.dumps(primary.get("roles", {}))),
              databases=_pg_json.loads(_pg_json.dumps(primary.get("databases", {}))), slots={},
              seeded_from=params.get("host"))
    # -X stream: the copy holds the primary's WAL up to the end of the backup; its pg_control names the backup's
    # checkpoint (-c fast).
    end = primary.get("lsn", PG_INITDB_LSN)
    pg.update(lsn=end, checkpoint_lsn=end, received_lsn=end, replayed_lsn=end, replayed_at=pg_timestamp(), receiving=None)
    return None


def pg_wal_receiver_status():
    """pg_stat_wal_receiver.status on this server: 'streaming' on a standby whose primary_conninfo connects (the same
    checks as pg_basebackup's connection, its password from the conninfo's passfile) and whose primary_slot_name exists
    there; else no row (the receiver exits and retries), which the script's query reads as 'none'."""
    pg = pg_state()
    conninfo = pg["loaded"].get("primary_conninfo", "")
    if not pg.get("in_recovery") or not conninfo:
        return "none"
    params, problem = pg_conninfo(conninfo)
    state, problem = pg_replication_connect(params) if params else (None, problem)
    if problem:
        return "none"
    slot = pg["loaded"].get("primary_slot_name", "")
    return "streaming" if not slot or slot in state["pg"].get("slots", {}) else "none"


def pg_timestamp():
    """A timestamptz as psql shows it (DateStyle ISO, TimeZone UTC), from the host's clock."""
    return (_pg_dt.datetime(2026, 1, 1) + _pg_dt.timedelta(seconds=NOW)).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def pg_lsn_text(lsn):
    """pg_lsn's output (pg_lsn.c pg_lsn_out: %X/%X of the two 32-bit halves)."""
    return "%X/%X" % (lsn >> 32, lsn & 0xFFFFFFFF) if lsn is not None else ""


def pg_lsn_parse(text):
    """pg_lsn's input (pg_lsn_in_internal): two hexadecimal halves of 1 to 8 digits each, else an error."""
    match = _pg_re.match(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$", text)
    return (int(match.group(1), 16) << 32) + int(match.group(2), 16) if match else None


def pg_service_running(state):
    """Whether the PostgreSQL service of a host's state runs."""
    for inst in state.get("pg_installations", {}).values():
        if state.get("services", {}).get(inst.get("Service ID"), {}).get("running"):
            return True
    return False


def pg_replay():
    """A standby that streams has received all of its primary's WAL and replayed what it committed: its catalog (roles
    and their passwords, databases and their objects) is the primary's as read now; slots and the configuration files
    are not WAL-logged and stay its own. Which postmaster run of the primary it streams from is noted
    (pg["receiving"]): when that primary has since shut down cleanly, its WAL sender sent the shutdown checkpoint
    before it exited, so the standby has everything up to it. One that does not stream keeps what it received last."""
    pg = pg_state()
    conninfo = pg["loaded"].get("primary_conninfo", "")
    if not pg.get("in_recovery") or not conninfo:
        return
    params, _problem = pg_conninfo(conninfo)
    state = _v_host_by_name(params["host"]) if params and params.get("host") else None
    if state is None:
        pg["receiving"] = None
        return
    primary = state.get("pg", {})
    if pg_wal_receiver_status() == "streaming":
        pg["receiving"] = {"host": params["host"], "run": primary.get("run", 0)}
    else:
        receiving = pg.get("receiving") or {}
        sent_at_shutdown = (receiving.get("host") == params["host"] and receiving.get("run") == primary.get("run", 0)
                            and not pg_service_running(state) and primary.get("shutdown_run") == primary.get("run", 0))
        # The receiver has lost its primary either way: it retries, and receives nothing more until it streams again.
        pg["receiving"] = None
        if not sent_at_shutdown:
            return
    for key in ("superuser_password_sha", "roles", "databases"):
        pg[key] = _pg_json.loads(_pg_json.dumps(primary.get(key)))
    end = primary.get("lsn", PG_INITDB_LSN)
    if end != pg.get("received_lsn"):
        pg.update(received_lsn=end, replayed_lsn=end, replayed_at=pg_timestamp())


def pg_start_service(name):
    """Start-Service: a disabled service does not start (ERROR_SERVICE_DISABLED); a postmaster that exits at start
    fails it too. None, or the cmdlet's error."""
    if services[name].get("start_mode") == "disabled":
        return ("Service '%s (%s)' cannot be started due to the following error: Cannot start service %s on computer '.'."
                % (name, name, name))
    problem = pg_start(name)
    return "Service '%s (%s)' cannot be started due to the following error: %s" % (name, name, problem) if problem else None


def pg_param(name, default=None):
    """A win_powershell parameter, from parameters or sensitive_parameters (value: passed as a SecureString)."""
    for item in args.get("sensitive_parameters") or []:
        if item.get("name") == name:
            return item.get("value")
    return (args.get("parameters") or {}).get(name, default)


def pg_local_sql_status():
    """Invoke-LocalSql of the script with the WAL receiver's query: pg_stat_wal_receiver's status ('none' without a
    row); '' when psql does not answer ([string]$null)."""
    return pg_wal_receiver_status() if pg_connect(pg_param("Port"), pg_param("Superuser"), pg_param("SuperuserPassword")) is None else ""


def pg_standby_script():
    """postgresql_standby.ps1, step by step. Each call is noted in host["pg_standby_runs"] (the task is no_log)."""
    data_dir, name = pg_param("DataDir").rstrip("\\"), pg_param("ServiceName")
    port, user, password = pg_param("Port"), pg_param("Superuser"), pg_param("SuperuserPassword")
    database, host_name = pg_param("Database"), pg_param("HostName") or host.get("computer", "")
    reseed = str(pg_param("Reseed", False)).lower() in ("true", "1", "yes", "on")
    runs = host.setdefault("pg_standby_runs", []) if not CHECK else []
    run = {"reseed": reseed, "seeded": False, "kept": "", "error": ""}

    def fail(message):
        # win_powershell.ps1 on a throw: failed, no msg; the error record's exception message is in error[0]
        # (ansible.windows 3.3.0: Result.error from $ps.Streams.Error, Format-Exception).
        out.update(failed=True, result={}, error=[{"exception": {"message": message,
                                                                 "type": "System.Management.Automation.RuntimeException"},
                                                   "fully_qualified_error_id": message, "output": message + "\n"}])
        run["error"] = message
        runs.append(run)
        # What the script did before its throw stays done (a stopped or disabled service, a renamed directory): the
        # body does not save the host after a failed win_powershell, so this does.
        save_state(host, path)

    signal = data_dir + "\\standby.signal"
    if lookup(signal) is not None and not reseed:
        out["result"] = {"seeded": False, "kept": "", "receiver": pg_local_sql_status()}
        run["receiver"] = out["result"]["receiver"]
        runs.append(run)
        return
    svc = services.get(name)
    if svc is None:
        return fail("Cannot find any service with service name '%s'." % name)
    was_running = bool(svc.get("running"))
    if not reseed:
        if not was_running:
            return fail("PostgreSQL (%s) is not running, so whether %s holds the Prefect database cannot be read: start "
                        "it, or seed this standby anyway with -e postgresql_reseed=true (the directory is kept, renamed)."
                        % (name, data_dir))
        # 'recovery|has the Prefect database', or '' when psql does not answer (Invoke-LocalSql's $null).
        state = ""
        if pg_connect(port, user, password) is None:
            pg = pg_state()
            state = "%s|%s" % (str(bool(pg.get("in_recovery"))).lower(), str(database in pg["databases"]).lower())
        if state == "false|true":
            # Left running: with a stale inventory it is the only primary (failover.yml promoted it).
            return fail("This host is a primary with the %s database, not a standby; nothing was changed. If "
                        "playbooks/failover.yml promoted it, swap prefect_database_host and prefect_database_standby_host "
                        "in the inventory. If it is a former primary back on the network, stop it now (it is a second "
                        "primary); to make it the standby of the other host, run this playbook with --limit %s "
                        "-e postgresql_reseed=true." % (database, host_name))
        if state != "false|false":
            return fail("PostgreSQL (%s) did not say what %s holds (got '%s'): nothing was seeded." % (name, data_dir, state))
    out["diff"] = {"before": data_dir + "\n", "after": "%s (standby seeded from the primary; the old directory kept)\n" % data_dir}
    if CHECK:
        out.update(changed=True, result={"seeded": True, "kept": "", "receiver": ""})
        return
    stamp = (_pg_dt.datetime(2026, 1, 1) + _pg_dt.timedelta(seconds=NOW)).strftime("%Y%m%d%H%M%S")
    kept = "%s.before-standby-%s" % (data_dir, stamp)
    # Stop-Service -Force: the services that depend on it stop first.
    pg_stop(name)
    out["changed"] = True
    reason = None
    pg_move_tree(data_dir, kept)
    # The new directory with the kept one's access rules.
    dirs[data_dir.lower()] = {"acl": dict(dirs.get(kept.lower(), {}).get("acl", {})),
                              "protected": dirs.get(kept.lower(), {}).get("protected", False)}
    if lookup(pg_param("BinDir") + "\\pg_basebackup.exe") is None:
        reason = 'Exception calling "Start" with "1" argument(s): "The system cannot find the file specified"'
    else:
        stderr = pg_basebackup(data_dir, pg_param("Conninfo"), pg_param("Slot"), pg_param("PassFile"))
        if stderr:
            reason = "pg_basebackup.exe from the primary failed (1): %s" % stderr.strip()
    if reason:
        # catch: what the failed seed left is moved aside (<leaf>.failed-seed-<stamp>), the kept directory put back,
        # the service started again if it ran.
        if any(pg_tree(kept)) and any(pg_tree(data_dir)):
            pg_move_tree(data_dir, "%s.failed-seed-%s" % (data_dir, stamp))
        if any(pg_tree(kept)):
            pg_move_tree(kept, data_dir)
        problem = pg_start_service(name) if was_running else None
        if problem:
            return fail(problem)
        return fail("Seeding %s from the primary failed; the data directory is back as it was before the seed: %s"
                    % (data_dir, reason))
    for keep in pg_param("KeepFiles") or ["postgresql.conf", "pg_hba.conf", "pg_ident.conf", "conf.d", "server.crt",
                                          "server.key"]:
        source, target = kept + "\\" + keep, data_dir + "\\" + keep
        if any(pg_tree(source)):
            pg_remove_tree(target)
            pg_copy_tree(source, target, acl=dirs[data_dir.lower()]["acl"])
    pg_write(signal, "")
    # Set-Service -StartupType Automatic (a former primary that failover.yml fenced was disabled), Start-Service.
    svc["start_mode"] = "auto"
    problem = pg_start_service(name)
    if problem:
        return fail(problem)
    # The script polls pg_stat_wal_receiver for StreamingTimeout seconds; what the receiver meets does not change here.
    status = pg_local_sql_status()
    if status != "streaming":
        return fail("The standby was seeded and started but does not stream from the primary after %s s (WAL receiver: "
                    "'%s'); its log in the log directory says why. The old data directory is kept in %s."
                    % (pg_param("StreamingTimeout", 120), status, kept))
    run.update(seeded=True, kept=kept, primary=pg_state().get("seeded_from"), receiver=status)
    runs.append(run)
    out["result"] = {"seeded": True, "kept": kept, "receiver": status}


# --- playbooks/failover.yml: postgresql_standby_state.ps1, postgresql_controldata.ps1, postgresql_promote.ps1 ---

def pg_bind(spec):
    """PowerShell's binding of win_powershell's parameters (values as JSON gave them) and sensitive_parameters (each a
    SecureString, a PSCredential with username) to a script's param block. spec: {name: (type, mandatory)}, types
    string, int, bool and securestring; names compare case-insensitively. (values by the spec's names, None) or
    (None, the ParameterBindingException's message)."""
    names = {n.lower(): n for n in spec}
    given = [(k, "plain", v) for k, v in (args.get("parameters") or {}).items()]
    given += [(p["name"], "credential" if p.get("username") else "secure", p.get("value") or "")
              for p in args.get("sensitive_parameters") or []]
    ps_type = lambda v: "System.Boolean" if isinstance(v, bool) else "System.Int32" if isinstance(v, int) else \
        "System.Management.Automation.PSCredential" if isinstance(v, dict) else "System.String"
    values = {}
    for key, how, value in given:
        name = names.get(key.lower())
        if name is None:
            return None, "A parameter cannot be found that matches parameter name '%s'." % key
        kind, mandatory = spec[name]
        prefix = "Cannot process argument transformation on parameter '%s'. " % name
        if how == "credential" and kind != "string":
            return None, prefix + 'Cannot convert the "System.Management.Automation.PSCredential" value of type ' \
                                  '"System.Management.Automation.PSCredential" to type "%s".' % kind
        if kind == "securestring":
            # ArgumentTypeConverterAttribute: a string is no SecureString (ConvertTo-SecureString is the caller's job).
            if how != "secure":
                return None, prefix + 'Cannot convert the "%s" value of type "%s" to type "System.Security.SecureString".' % (
                    value, ps_type(value))
            values[name] = value
        elif how != "plain":
            # A SecureString (or PSCredential) bound to [string]: its ToString(), the type's name.
            if kind != "string":
                return None, prefix + 'Cannot convert the "System.Security.SecureString" value of type ' \
                                      '"System.Security.SecureString" to type "%s".' % kind
            values[name] = "System.Security.SecureString" if how == "secure" else "System.Management.Automation.PSCredential"
        elif kind == "int":
            try:
                values[name] = int(value)
            except (TypeError, ValueError):
                return None, prefix + 'Cannot convert value "%s" to type "System.Int32". Error: "Input string was not in a ' \
                                      'correct format."' % value
        elif kind == "bool":
            # [bool] parameters take booleans and numbers only (ArgumentTypeConverterAttribute, LanguagePrimitives).
            if not isinstance(value, (bool, int, float)):
                return None, prefix + 'Cannot convert value "%s" to type "System.Boolean". Boolean parameters accept only ' \
                                      'Boolean values and numbers, such as $True, $False, 1 or 0.' % ps_type(value)
            values[name] = bool(value)
        else:
            if value is None and mandatory:
                return None, "Cannot bind argument to parameter '%s' because it is null." % name
            values[name] = "" if value is None else ("True" if value is True else "False" if value is False else str(value))
            if mandatory and values[name] == "":
                return None, "Cannot bind argument to parameter '%s' because it is an empty string." % name
    missing = [n for n, (_kind, mandatory) in spec.items() if mandatory and n not in values]
    if missing:
        return None, "Cannot process command because of one or more missing mandatory parameters: %s." % " ".join(missing)
    return values, None


def pg_throw(message, exception_type="System.Management.Automation.RuntimeException", error_id=None):
    """win_powershell.ps1 when the script throws (or its parameters do not bind): failed, no msg, $Ansible.Result as the
    script left it (these scripts set it last: {}), the error record's message in error[0]. What the script did before
    its throw stays done: the body does not save the host after a failed win_powershell, so this does."""
    out.update(failed=True, result={}, error=[{"exception": {"message": message, "type": exception_type},
                                               "fully_qualified_error_id": error_id or message, "output": message + "\n"}])
    save_state(host, path)


def pg_script_bind(spec):
    values, problem = pg_bind(spec)
    if problem:
        # The script never ran: $Ansible.Changed keeps win_powershell's default, true.
        out["changed"] = True
        pg_throw(problem, "System.Management.Automation.ParameterBindingException", "ParameterBindingFailed")
    return values


def pg_psql(values):
    """psql.exe -h 127.0.0.1 -p Port -U Superuser (PGPASSWORD) as the scripts' ProcessStartInfo starts it: True when it
    connected, else False with the script's throw recorded (Process.Start of a missing psql.exe, or psql's exit 2)."""
    if lookup(values["BinDir"].rstrip("\\") + "\\psql.exe") is None:
        pg_throw('Exception calling "Start" with "1" argument(s): "The system cannot find the file specified"',
                 "System.Management.Automation.MethodInvocationException")
        return False
    problem = pg_connect(values["Port"], values["Superuser"], values["SuperuserPassword"])
    if problem:
        pg_throw("psql.exe as %s on port %s failed (2): %s" % (values["Superuser"], values["Port"], problem))
        return False
    return True


def pg_standby_state_script():
    """postgresql_standby_state.ps1: one query as the superuser: pg_is_in_recovery(), pg_stat_wal_receiver.status
    ('none' without a row: a primary, or a receiver that is not connected), pg_last_wal_receive_lsn(),
    pg_last_wal_replay_lsn() (NULL, '', on a server started without recovery; static after a promotion) and
    pg_last_xact_replay_timestamp(). Read-only, in check mode too."""
    values = pg_script_bind({"BinDir": ("string", True), "Port": ("int", True), "Superuser": ("string", True),
                             "SuperuserPassword": ("securestring", True)})
    if values is None or not pg_psql(values):
        return
    pg = pg_state()
    line = "|".join([str(bool(pg.get("in_recovery"))).lower(), pg_wal_receiver_status(),
                     pg_lsn_text(pg.get("received_lsn")), pg_lsn_text(pg.get("replayed_lsn")), pg.get("replayed_at") or ""])
    recovery, receiver, received, replayed, replayed_at = line.split("|")
    out["result"] = {"in_recovery": recovery == "true", "receiver": receiver, "received_lsn": received,
                     "replayed_lsn": replayed, "replayed_at": replayed_at}


def pg_controldata_state():
    """pg_controldata's "Database cluster state" of this host's cluster (pg_control as the postmaster last wrote it):
    a running server's 'in production' (a primary) or 'in archive recovery' (a standby); after a clean shutdown
    'shut down' or 'shut down in recovery'; a server that stopped without one (a crash, a killed process) leaves the
    running state in pg_control."""
    pg = pg_state()
    name, _inst = pg_service_name()
    recovery = bool(pg.get("in_recovery"))
    if not services[name].get("running") and pg.get("shutdown_run") == pg.get("run", 0):
        return "shut down in recovery" if recovery else "shut down"
    return "in archive recovery" if recovery else "in production"


def pg_controldata_script():
    """postgresql_controldata.ps1: & pg_controldata.exe -D DataDir (LC_ALL=C), its "name: value" lines; until the state
    is 'shut down' it reads again every 2 s for WaitSeconds (here no time passes: a state that is not 'shut down'
    stays so, and the script returns it after its wait). Read-only, in check mode too."""
    values = pg_script_bind({"BinDir": ("string", True), "DataDir": ("string", True), "WaitSeconds": ("int", False)})
    if values is None:
        return
    program = values["BinDir"].rstrip("\\") + "\\pg_controldata.exe"
    data_dir = values["DataDir"].rstrip("\\")
    if lookup(program) is None:
        # ErrorActionPreference Stop: the call operator's CommandNotFoundException ends the script.
        return pg_throw("The term '%s' is not recognized as the name of a cmdlet, function, script file, or operable "
                        "program. Check the spelling of the name, or if a path was included, verify that the path is "
                        "correct and try again." % program, "System.Management.Automation.CommandNotFoundException",
                        "CommandNotFoundException")
    name, inst = pg_service_name()
    if inst is None or inst["Data Directory"].lower().rstrip("\\") != data_dir.lower() \
            or lookup(data_dir + "\\postgresql.conf") is None:
        # pg_controldata exits 1 and says why on stderr (host_err); stdout, which the script joins, is empty.
        out["host_err"] = ('pg_controldata: error: could not open file "%s/global/pg_control" for reading: No such file '
                           'or directory\n' % data_dir.replace("\\", "/"))
        return pg_throw("pg_controldata.exe -D %s failed (1): " % values["DataDir"])
    pg = pg_state()
    lines = ["pg_control version number:            1700",
             "Database cluster state:               %s" % pg_controldata_state(),
             "Latest checkpoint location:           %s" % pg_lsn_text(pg.get("checkpoint_lsn", PG_INITDB_LSN)),
             "Latest checkpoint's TimeLineID:       %d" % pg.get("timeline", 1)]
    found = dict(_pg_re.match(r"^([^:]+):\s+(.*)$", line).groups() for line in lines)
    out["result"] = {"state": found["Database cluster state"].strip(), "checkpoint_lsn": found["Latest checkpoint location"].strip()}


def pg_promote_script():
    """postgresql_promote.ps1: reads recovery and replay; on a standby with MinimumLsn, compares (pg_lsn) what it received
    with it and refuses to promote short of it unless AcceptDataLoss (the wait of WaitSeconds changes nothing here: no
    WAL arrives from a stopped primary); then pg_promote(true, 60) unless check mode (ShouldProcess), and whether it
    accepts writes. pg_promote ends recovery (xlogrecovery.c): standby.signal and recovery.signal are removed, a new
    timeline starts after the last WAL replayed (an end-of-recovery record, then a checkpoint), the WAL receiver stops."""
    values = pg_script_bind({"BinDir": ("string", True), "Port": ("int", True), "Superuser": ("string", True),
                             "SuperuserPassword": ("securestring", True), "MinimumLsn": ("string", False),
                             "AcceptDataLoss": ("bool", False), "WaitSeconds": ("int", False)})
    if values is None or not pg_psql(values):
        return
    pg = pg_state()
    recovery = bool(pg.get("in_recovery"))
    replay_lsn, replay_time = pg_lsn_text(pg.get("replayed_lsn")), pg.get("replayed_at") or ""
    minimum_text = values.get("MinimumLsn", "")
    received = ""
    promoted = False
    if recovery and minimum_text:
        lsn = _pg_re.sub(r"[^0-9A-Fa-f/]", "", minimum_text)
        minimum = pg_lsn_parse(lsn)
        if not pg_psql(values):
            return
        if minimum is None:
            # '<lsn>'::pg_lsn: psql stops at the error (ON_ERROR_STOP, exit 3).
            return pg_throw('psql.exe as %s on port %s failed (3): psql:<stdin>:1: ERROR:  invalid input syntax for type '
                            'pg_lsn: "%s"' % (values["Superuser"], values["Port"], lsn))
        caught_up = (pg.get("received_lsn") or 0) >= minimum
        received = pg_lsn_text(pg.get("received_lsn"))
        if not caught_up and not values.get("AcceptDataLoss", False):
            return pg_throw(
                "The standby received WAL up to %s, short of the stopped primary's last checkpoint %s: promoted now, it "
                "would lose what the primary wrote after that. Nothing was promoted; the primary is stopped and disabled. "
                "Start it again (Set-Service -StartupType Automatic; Start-Service) and find why the standby lags, or "
                "promote anyway with failover_accept_data_loss." % (received, lsn))
    if recovery:
        out["diff"] = {"before": "standby\n", "after": "primary\n"}
        if not CHECK:
            if not pg_psql(values):
                return
            _name, inst = pg_service_name()
            for signal in ("standby.signal", "recovery.signal"):
                files.pop((inst["Data Directory"] + "\\" + signal).lower(), None)
                host.setdefault("texts", {}).pop((inst["Data Directory"] + "\\" + signal).lower(), None)
            end = max(pg.get("received_lsn") or 0, pg.get("replayed_lsn") or 0) or pg.get("lsn", PG_INITDB_LSN)
            pg.update(in_recovery=False, receiving=None, timeline=pg.get("timeline", 1) + 1,
                      checkpoint_lsn=end + PG_END_OF_RECOVERY_RECORD,
                      lsn=end + PG_END_OF_RECOVERY_RECORD + PG_CHECKPOINT_RECORD)
            promoted = True
        out["changed"] = True
    writable = False
    if not recovery or promoted:
        if not pg_psql(values):
            return
        writable = not pg_state().get("in_recovery")
    out["result"] = {"was_standby": recovery, "promoted": promoted, "writable": writable, "replayed_lsn": replay_lsn,
                     "replayed_at": replay_time, "received_lsn": received}


SCRIPTS["postgresql_standby_state.ps1"] = pg_standby_state_script
SCRIPTS["postgresql_controldata.ps1"] = pg_controldata_script
SCRIPTS["postgresql_promote.ps1"] = pg_promote_script
SCRIPTS["postgresql_acl_reset.ps1"] = pg_acl_reset_script
SCRIPTS["postgresql_standby.ps1"] = pg_standby_script
STANDINS["win_regedit"] = pg_win_regedit
SCRIPTS["installer_options.ps1"] = pg_installer_options_script
SCRIPTS["superuser_password.ps1"] = pg_superuser_password_script
SCRIPTS["postgresql_facts.ps1"] = pg_facts_script
SCRIPTS["postgresql_reload.ps1"] = pg_reload_script
SCRIPTS["prefect_objects.ps1"] = pg_objects_script
STANDINS["win_template"] = pg_win_template
STANDINS["win_lineinfile"] = pg_win_lineinfile
# Modules other roles use too: only this role's calls (the EDB installer or its Add/Remove Programs entry, the option
# file and the TLS files, the PostgreSQL service). dict.__setitem__: sim_iis.py keeps every win_package call with a
# product_id and every win_copy with content for itself, which would take the uninstall and the option file.


def _pg_mine():
    call = _PG_ARGS
    if NAME == "win_package":
        path_ = str(call.get("path") or "").rsplit("\\", 1)[-1]
        return pg_win_package if _PG_INSTALLER.match(path_) or _PG_ARP.match(str(call.get("product_id") or "")) else None
    if NAME == "win_copy" and "content" in call:
        dest = str(call.get("dest", "")).lower()
        # The replication passfile and the enclave CA beside it (tasks/replication.yml).
        return pg_win_copy_content if dest.endswith((".options", "\\server.crt", "\\server.key", ".pgpass", "\\root.crt")) \
            else None
    if NAME == "win_service":
        import os as _pg_os
        state = _pg_json.load(open(_pg_os.environ["ENCLAVE_SIM_STATE"]))
        ours = {i.get("Service ID") for i in state.get("pg_installations", {}).values()}
        return pg_win_service if call.get("name") in ours else None
    return None


if _pg_mine():
    dict.__setitem__(STANDINS, NAME, _pg_mine())
ipaddress = _SimLazy("ipaddress")  # noqa: F821 (simhost.py's prelude)
