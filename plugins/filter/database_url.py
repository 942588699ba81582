# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Prefect server's database URL, and what the postgresql role writes on the database host.

``database_url`` composes ``postgresql+asyncpg://user:password@host:port/database`` from the collection-wide
``prefect_database_*`` values: the password and user URL-encoded (SQLAlchemy's ``make_url`` decodes them), 127.0.0.1
when the database is on the server's own host, ``?ssl=verify-full`` when it is not (asyncpg then validates the
server certificate against ``PGSSLROOTCERT`` and refuses to connect without one).

``postgresql_plan`` derives the settings of the role's configuration file and the ``pg_hba.conf`` entries from the
role's variables and the host's memory, with one message per bad value.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import quote

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: database_url
short_description: The Prefect server's PostgreSQL URL, password URL-encoded
version_added: 0.2.0
description:
  - Composes C(postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE) for C(PREFECT_SERVER_DATABASE_CONNECTION_URL).
  - User, password and database name are percent-encoded (every character but letters, digits and C(-._~)), so that
    C(@), C(:), C(/), C(%), C(#), C(?), C(&) and spaces in a password work.
  - With O(local) the host is C(127.0.0.1) (the server and PostgreSQL share the host; no TLS over loopback).
    Otherwise the database host's name is used and C(?ssl=verify-full) is appended; asyncpg then requires the server
    certificate to be valid for that name and signed by the CA file named in C(PGSSLROOTCERT) in the server's
    environment.
  - An empty host gives an empty string (no PostgreSQL; Prefect stays on SQLite).
positional: _input
options:
  _input:
    description: The database host's inventory name (C(prefect_database_host)).
    type: str
    required: true
  port:
    description: TCP port.
    type: int
    default: 5432
  name:
    description: Database name.
    type: str
    default: prefect
  user:
    description: Database role.
    type: str
    default: prefect
  password:
    description: The role's password; required when the host is not empty.
    type: str
    required: true
  local:
    description: The database is on the Prefect server's own host.
    type: bool
    default: false
  standby:
    description:
      - The inventory name of the streaming standby of the database host (C(prefect_database_host)), or empty.
      - With a standby, both hosts are named in asyncpg's multi-host form,
        C(postgresql+asyncpg://USER:PASSWORD@/DATABASE?host=PRIMARY:PORT&host=STANDBY:PORT&target_session_attrs=read-write&ssl=verify-full),
        so that the server connects to whichever of the two is writable (after a promotion, the former standby).
      - O(local) is then ignored (the postgresql role refuses a Prefect server on a host of the pair).
    type: str
    default: ""
  order:
    description:
      - The C(prefect_database) group's hosts. With O(standby), the two hosts are named in this order, not primary first,
        so that swapping C(prefect_database_host) and C(prefect_database_standby_host) after a failover leaves the URL
        (and every server's environment) as it is; C(target_session_attrs=read-write) skips the standby wherever it is.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Server database URL
  ansible.builtin.set_fact:
    server_db_url: >-
      {{ prefect_database_host | enclave.prefect.database_url(port=prefect_database_port, name=prefect_database_name,
         user=prefect_database_user, password=prefect_database_password,
         local=prefect_database_host == inventory_hostname) }}
  no_log: true
"""

RETURN = r"""
_value:
  description: The URL, or an empty string without a host.
  type: str
"""

_SIZE = re.compile(r"^[1-9][0-9]*(kB|MB|GB|TB)$")
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
# Prefect's "How to maintain your Prefect database" (docs/v3/advanced/database-maintenance, section "Tune autovacuum
# for Prefect workloads"): cluster-wide values here; the per-table values are applied by prefect_objects.sql.
AUTOVACUUM = {"autovacuum": "on", "autovacuum_vacuum_scale_factor": "0.1"}


def _quote(text) -> str:
    return quote(str(text), safe="")


def _url_host(host) -> str:
    address = str(host)
    return "[%s]" % address if ":" in address and not address.startswith("[") else address


def database_url(host, port=5432, name="prefect", user="prefect", password=None, local=False, standby="", order=()):
    if not host:
        return ""
    if not password:
        raise AnsibleFilterError("database_url: the database host %s is set but the password of %s is empty" % (host, user))
    if standby:
        # asyncpg's multi-host form (SQLAlchemy hands each ?host= to asyncpg.connect): the writable host of the two,
        # measured in tests/integration/test_ha_standby.py.
        order = list(order or [])
        pair = sorted((host, standby), key=lambda h: order.index(h) if h in order else len(order))
        hosts = "&".join("host=%s:%d" % (_url_host(h), int(port)) for h in pair)
        return "postgresql+asyncpg://%s:%s@/%s?%s&target_session_attrs=read-write&ssl=verify-full" % (
            _quote(user), _quote(password), _quote(name), hosts)
    address = "127.0.0.1" if local else _url_host(host)
    url = "postgresql+asyncpg://%s:%s@%s:%d/%s" % (_quote(user), _quote(password), address, int(port), _quote(name))
    return url if local else url + "?ssl=verify-full"


# Prefect 3 accepts these two drivers only (prefect/settings/models/server/database.py: "all Prefect database engines
# must use an async driver"). A remote host needs asyncpg's ssl=verify-full, the one mode that checks both the server's
# certificate and its name (verify-ca checks no name, require neither).
PREFECT_URL_SCHEMES = ("postgresql+asyncpg", "sqlite+aiosqlite")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def database_url_errors(url) -> list:
    """Problems of prefect_database_url (the override), each naming the variable and never the URL: it holds a password."""
    if not url:
        return []
    if not isinstance(url, str):
        return ["prefect_database_url must be a string, a SQLAlchemy URL (got a %s)" % type(url).__name__]
    name = "prefect_database_url"
    errors = []
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in PREFECT_URL_SCHEMES:
        errors.append("%s must start with postgresql+asyncpg:// or sqlite+aiosqlite:/// (Prefect 3 runs on these async "
                      "drivers only); got a URL with the scheme %r" % (name, scheme if sep else "(none)"))
        return errors
    if scheme.lower() == "sqlite+aiosqlite":
        # sqlite:///<database>: a database path starting with two separators is a UNC path on Windows.
        if rest[1:].replace("/", "\\").startswith("\\\\"):
            errors.append("%s must name a SQLite file on a local disk of the server, not on a network share (SQLite's "
                          "locking does not hold over SMB)" % name)
        return errors
    # SQLAlchemy's URL pattern: the password runs to the first '@', the user to the first ':' or '/'. An '@' or '/' left
    # unencoded in them moves the host and the database into the password (and would show part of it here).
    userinfo, at, hostpart = rest.partition("@")
    if not at or "@" in hostpart or "/" in userinfo:
        return errors + ["%s must be postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE with the user and password "
                         "URL-encoded (%%40 for '@', %%2F for '/', %%3A for ':'); it has %s" % (
                             name, "no USER:PASSWORD@" if not at else "an unencoded '@' or '/' before the host")]
    if not userinfo.partition(":")[2]:
        errors.append("%s names no password (USER:PASSWORD@): the database accepts the Prefect role with its password "
                      "only" % name)
    authority, _slash, tail = rest.partition("/")
    host = authority.rpartition("@")[2]
    if "," in host:
        # libpq's host1:port1,host2:port2 is no URL SQLAlchemy reads (measured: tests/integration/test_ha_standby.py).
        return errors + ["%s names several hosts in its authority (h1:p1,h2:p2), which SQLAlchemy does not read: name "
                         "them in the query, postgresql+asyncpg://USER:PASSWORD@/DATABASE?host=H1:P1&host=H2:P2"
                         "&target_session_attrs=read-write" % name]
    if host.startswith("[") and "]" in host:
        host = host[1:host.index("]")]
    elif ":" in host:
        host = host.rpartition(":")[0]
    query = tail.partition("?")[2]
    pairs = [part.partition("=")[::2] for part in query.split("&") if part]
    params = {key.lower(): value for key, value in pairs}
    # A primary and its standby (a pair your database team runs): asyncpg's multi-host form, each host in a ?host= of
    # the query and none in the authority, asyncpg connecting to the writable one (target_session_attrs=read-write).
    query_hosts = [value for key, value in pairs if key.lower() == "host"]
    hosts = [host] if host else []
    if "hostaddr" in params or ("port" in params and not query_hosts):
        errors.append("%s must name the database host in the URL's authority, or every host as ?host=HOST:PORT, not "
                      "?hostaddr= or a lone ?port= (they would send the connection elsewhere than the host checked "
                      "here)" % name)
    elif query_hosts and host:
        errors.append("%s names a host in its authority and more in its query: name one host in the authority, or every "
                      "host (a primary and its standbys) as ?host=HOST:PORT with nothing between '@' and '/'" % name)
    elif query_hosts:
        ports = [p for p in params.get("port", "").split(",") if p]
        hosts = []
        for value in query_hosts:
            for item in value.split(","):
                item = item.strip()
                if item.startswith("[") and "]" in item:
                    item = item[1:item.index("]")]
                elif item.count(":") == 1:
                    item = item.partition(":")[0]
                hosts.append(item)
        if ports and len(ports) != len(hosts):
            errors.append("%s names %d hosts and %d ports: give each host its port (?host=H1:P1&host=H2:P2)"
                          % (name, len(hosts), len(ports)))
        if len(hosts) > 1 and params.get("target_session_attrs", "").lower() != "read-write":
            # Without it asyncpg stays on the first host that answers, a standby after a failover, where every write
            # is refused (measured: tests/integration/test_ha_standby.py).
            errors.append("%s names %d hosts without ?target_session_attrs=read-write: the server would stay on the first "
                          "host that answers, a read-only standby after a failover" % (name, len(hosts)))
    if not hosts or not all(hosts):
        errors.append("%s names no database host (postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE)" % name)
    else:
        remote = [h for h in hosts if not _loopback(h)]
        if remote and params.get("ssl", params.get("sslmode", "")).lower() != "verify-full":
            errors.append("%s names the remote database host %s without ?ssl=verify-full: the password and the data would "
                          "cross the network unencrypted or to an unverified server. Append ?ssl=verify-full (the server "
                          "then checks PostgreSQL's certificate against the enclave CA, prefect_api_ca_cert)"
                          % (name, ", ".join(remote)))
    if not tail.partition("?")[0]:
        errors.append("%s names no database (postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE)" % name)
    return errors


def _size(kb: int) -> str:
    """A size in the largest unit PostgreSQL accepts that keeps it whole (MB at least)."""
    mb = max(1, kb // 1024)
    return "%dGB" % (mb // 1024) if mb % 1024 == 0 else "%dMB" % mb


def _memory(ram_mb: int) -> dict:
    """Sizes derived from the host's memory: shared_buffers a quarter (128MB to 8GB), effective_cache_size a half,
    maintenance_work_mem a sixteenth (64MB to 1GB)."""
    ram_kb = max(int(ram_mb), 1024) * 1024
    return {"shared_buffers": _size(min(max(ram_kb // 4, 128 * 1024), 8 * 1024 ** 2)),
            "effective_cache_size": _size(max(ram_kb // 2, 256 * 1024)),
            "maintenance_work_mem": _size(min(max(ram_kb // 16, 64 * 1024), 1024 ** 2))}


def _ipv4(text):
    """The IPv4 or IPv6 address of a host (an IPv4-mapped one as IPv4: how PostgreSQL sees that client), else None."""
    try:
        address = ipaddress.ip_address(str(text))
    except ValueError:
        return None
    return getattr(address, "ipv4_mapped", None) or address


def _host_cidr(text):
    """pg_hba.conf's one-address network of a host: a.b.c.d/32 or an IPv6 address /128."""
    address = _ipv4(text)
    return "%s/%d" % (address, address.max_prefixlen)


def _errors(cfg) -> list:
    errors = []
    for key in ("shared_buffers", "effective_cache_size", "maintenance_work_mem", "work_mem"):
        value = cfg.get(key)
        if value in ("", None) and key != "work_mem":
            continue
        if not isinstance(value, str) or not _SIZE.match(value):
            errors.append("postgresql_%s must be a size such as 512MB or 2GB (a whole number and kB, MB, GB or TB; "
                          "got %r)" % (key, value))
    for cidr in cfg.get("extra_client_cidrs") or []:
        try:
            network = ipaddress.ip_network(str(cidr), strict=True)
        except ValueError:
            network = None
        if network is None or not isinstance(cidr, str) or "/" not in cidr or network.prefixlen == 0:
            errors.append("postgresql_extra_client_cidrs must list IPv4 or IPv6 networks such as 10.20.0.0/28, with no host "
                          "bits set and not /0 (got %r)" % (cidr,))
    settings = cfg.get("settings") or {}
    if not isinstance(settings, Mapping):
        errors.append("postgresql_settings must be a mapping of setting names to values (got %r)" % (settings,))
        settings = {}
    for key, value in settings.items():
        if not _SETTING_NAME.match(str(key)) or isinstance(value, (Mapping, list)) or "\n" in str(value) or "\r" in str(value):
            errors.append("postgresql_settings: %r must be a setting name with one value on one line (got %r)" % (key, value))
        elif str(key).lower() in ENFORCED_SETTINGS:
            errors.append("postgresql_settings must not set %s: %s" % (key, ENFORCED_SETTINGS[str(key).lower()]))
    if cfg.get("listen_addresses") and not re.match(r"^[A-Za-z0-9.:*,\- ]+$", str(cfg["listen_addresses"])):
        errors.append("postgresql_listen_addresses must be host names or addresses separated by commas (got %r)"
                      % (cfg["listen_addresses"],))
    for server in cfg.get("servers") or []:
        if server["name"] != cfg["host"] and not _ipv4(server.get("address")):
            errors.append("prefect_host_address of %s must be its IPv4 or IPv6 address: PostgreSQL on %s admits the Prefect "
                          "server from that address only (got %r)" % (server["name"], cfg["host"], server.get("address")))
    rep = cfg.get("replication") or {}
    if rep.get("mode", "none") != "none":
        if not _ipv4(rep.get("peer_address")):
            errors.append("prefect_host_address of %s must be its IPv4 or IPv6 address: PostgreSQL on %s admits streaming "
                          "replication from that address only (got %r)" % (rep["peer"], cfg["host"], rep.get("peer_address")))
        if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", str(rep.get("slot") or "")):
            errors.append("postgresql_replication_slot must be a slot name of lower-case letters, digits and _ (got %r)"
                          % (rep.get("slot"),))
        on_pair = [s["name"] for s in cfg.get("servers") or [] if s["name"] in (rep.get("primary"), rep.get("standby"))]
        if on_pair:
            errors.append("%s runs a Prefect server on a database host of the primary/standby pair %s and %s: with a standby, "
                          "put the Prefect servers on hosts of their own (a promotion must not depend on the host that "
                          "failed)" % (", ".join(on_pair), rep.get("primary"), rep.get("standby")))
        if str((cfg.get("settings") or {}).get("wal_level", "replica")).lower() == "minimal":
            errors.append("postgresql_settings must not set wal_level to minimal: the standby of %s needs replica"
                          % rep.get("primary"))
    if cfg.get("remote_clients") and not _ipv4(cfg.get("host_address")):
        errors.append("prefect_host_address of %s must be its IPv4 or IPv6 address: PostgreSQL listens on it for the Prefect "
                      "servers on other hosts (got %r)" % (cfg["host"], cfg.get("host_address")))
    return errors


# Settings the role derives and enforces (who may connect, how, over what; where the logs and files are; what code the
# server loads): postgresql_settings is for tuning, and these keep their own variables or stay as the role sets them.
ENFORCED_SETTINGS = {
    "listen_addresses": "set postgresql_listen_addresses", "port": "set postgresql_port",
    "password_encryption": "the role uses scram-sha-256, which its pg_hba.conf entries require",
    "ssl": "the role turns TLS on for every remote client", "ssl_cert_file": "the role installs postgresql_ssl_cert",
    "ssl_key_file": "the role installs postgresql_ssl_key", "ssl_min_protocol_version": "the role requires TLS 1.2 or later",
    "hba_file": "the role writes pg_hba.conf", "ident_file": "the role writes the data directory's files",
    "data_directory": "set postgresql_data_dir", "log_directory": "set postgresql_log_dir",
    "shared_preload_libraries": "a library loaded into every PostgreSQL process is not tuning",
    "session_preload_libraries": "a library loaded into sessions is not tuning",
    "local_preload_libraries": "a library loaded into sessions is not tuning",
    "dynamic_library_path": "it decides where PostgreSQL loads code from",
    "primary_conninfo": "the role writes it on the standby (prefect_database_standby_host)",
    "primary_slot_name": "set postgresql_replication_slot",
}


def drill_database(database):
    """The scratch database of the backup role's drills: the Prefect database's name, cut so that the whole name stays
    within PostgreSQL's 63 bytes, with _drill (never the Prefect database's own name: one that ends so is refused)."""
    return str(database)[:40] + "_drill"


def postgresql_plan(cfg):
    """Settings for the role's configuration file, pg_hba.conf entries and input errors."""
    host = cfg["host"]
    names = cfg.get("server_names") or []
    addresses = cfg.get("server_addresses") or []
    database_hosts = cfg.get("server_database_hosts") or [host] * len(names)
    standby_hosts = cfg.get("server_standby_hosts") or [""] * len(names)
    # The servers of this host, and of the pair it belongs to (a standby serves its primary's servers once promoted).
    servers = [{"name": n, "address": a} for n, a, d, s in zip(names, addresses, database_hosts, standby_hosts)
               if host in (d, s)]
    replication = _replication(cfg)
    remote = (any(s["name"] != host for s in servers) or bool(cfg.get("extra_client_cidrs"))
              or replication["mode"] != "none")
    cfg = dict(cfg, remote_clients=remote, servers=servers, replication=replication)
    errors = _errors(cfg)
    method = "scram-sha-256"
    database, user = cfg["database"], cfg["user"]
    superuser = cfg["superuser"]
    # The superuser from this host only: psql.exe of the role connects over loopback TCP (PostgreSQL on Windows has
    # no Unix socket by default), `local` serves where sockets exist.
    hba = [{"type": "local", "database": "all", "user": superuser, "address": "", "method": method},
           {"type": "host", "database": "all", "user": superuser, "address": "127.0.0.1/32", "method": method},
           {"type": "host", "database": "all", "user": superuser, "address": "::1/128", "method": method}]
    # The owner from this host: the local server, and pg_restore of playbooks/restore.yml on the database host. The
    # backup role's read-only login (pg_dump of the scheduled task) from this host too.
    hba.append({"type": "host", "database": database, "user": user, "address": "127.0.0.1/32", "method": method})
    if cfg.get("backup_user"):
        hba.append({"type": "host", "database": database, "user": cfg["backup_user"], "address": "127.0.0.1/32", "method": method})
        # Its drills' scratch database (roles/backup backup_drill.sql: made, restored into, counted and dropped by it).
        hba.append({"type": "host", "database": drill_database(database), "user": cfg["backup_user"], "address": "127.0.0.1/32",
                    "method": method})
    clients = [_host_cidr(s.get("address")) for s in servers if s["name"] != host and _ipv4(s.get("address"))]
    clients += [str(c) for c in cfg.get("extra_client_cidrs") or []]
    for address in sorted(set(clients), key=clients.index):
        hba.append({"type": "hostssl", "database": database, "user": user, "address": address, "method": method})
    # Streaming replication: the replication role from the other host of the pair only, over TLS (either host may be
    # the primary after a failover, so both have the line).
    if replication["mode"] != "none" and _ipv4(replication.get("peer_address")):
        hba.append({"type": "hostssl", "database": "replication", "user": replication["user"],
                    "address": _host_cidr(replication["peer_address"]), "method": method})
    # Servers on other hosts: every address. One pinned to this host's address can be missing when the service starts
    # at boot (the NIC not up yet): PostgreSQL then binds what it can, loopback only, and remote servers fail until a
    # restart. pg_hba.conf (hostssl from the server hosts only, above) and the firewall rule (the same hosts) narrow it.
    listen = cfg.get("listen_addresses") or ("*" if remote else "localhost")
    settings = {
        "listen_addresses": listen,
        "port": int(cfg["port"]) if str(cfg["port"]).isdigit() else cfg["port"],
        "max_connections": cfg["max_connections"],
        "password_encryption": method,
        "logging_collector": "on",
        "log_destination": "stderr",
        "log_directory": str(cfg["log_dir"]).replace("\\", "/"),
        "log_filename": "postgresql-%Y-%m-%d.log",
        "log_rotation_age": "1d",
        "log_rotation_size": "0",
        "log_truncate_on_rotation": "off",
        "log_line_prefix": "%m [%p] %q%u@%d ",
        "log_connections": "on",
        "log_disconnections": "on",
        "ssl": "on" if remote else "off",
    }
    if remote:
        settings.update(ssl_cert_file="server.crt", ssl_key_file="server.key", ssl_min_protocol_version="TLSv1.2")
    ram_mb = int(cfg.get("ram_mb") or 0)
    derived = _memory(ram_mb) if ram_mb else {}
    for key in ("shared_buffers", "effective_cache_size", "maintenance_work_mem"):
        value = cfg.get(key) or derived.get(key)
        if value:
            settings[key] = value
    settings["work_mem"] = cfg.get("work_mem")
    settings.update(AUTOVACUUM)
    if not errors:
        settings.update({str(k): v for k, v in (cfg.get("settings") or {}).items()})
    if replication["mode"] != "none":
        settings.update(REPLICATION_SETTINGS)
    if replication["mode"] == "standby":
        settings.update(primary_conninfo=replication["conninfo"], primary_slot_name=replication["slot"])
    return {"settings": settings, "hba": hba, "remote": remote, "errors": errors, "replication": replication}


# Both hosts of a primary/standby pair (either is the primary after a failover). wal_level replica is PostgreSQL's
# default and runbook 001's value, written so that nothing lowers it; max_slot_wal_keep_size bounds the WAL the slot
# keeps for a standby that is gone (unbounded by default: a dead standby's slot would fill the primary's disk).
REPLICATION_SETTINGS = {"wal_level": "replica", "max_wal_senders": 10, "max_replication_slots": 10,
                        "max_slot_wal_keep_size": "1GB", "hot_standby": "on"}


def _conninfo_value(text) -> str:
    """A libpq connection-string value: single-quoted, backslash and quote escaped (libpq's conninfo_parse)."""
    return "'" + str(text).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _replication(cfg) -> dict:
    """This host's part in a primary/standby pair: mode none, primary or standby; the other host and its address; on
    the standby, primary_conninfo (the primary by its inventory name, which its certificate names, verify-full against
    the enclave CA; the password in the passfile only)."""
    rep = dict(cfg.get("replication") or {})
    host, primary, standby = cfg["host"], rep.get("primary") or "", rep.get("standby") or ""
    mode = "none"
    if primary and standby:
        mode = "primary" if host == primary else "standby" if host == standby else "none"
    rep["mode"] = mode
    rep["peer"] = standby if mode == "primary" else primary if mode == "standby" else ""
    if mode == "standby":
        params = [("host", primary), ("port", cfg["port"]), ("user", rep.get("user")),
                  ("passfile", rep.get("passfile")), ("sslmode", "verify-full"), ("sslrootcert", rep.get("root_cert")),
                  ("application_name", rep.get("application_name") or host), ("connect_timeout", 10)]
        rep["conninfo"] = " ".join("%s=%s" % (k, _conninfo_value(v)) for k, v in params)
    return rep


def postgresql_conf_value(value) -> str:
    """A value as postgresql.conf reads it: numbers and on/off bare, anything else single-quoted."""
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value)
    if re.match(r"^-?[0-9]+(\.[0-9]+)?$", text) or text in ("on", "off"):
        return text
    return "'%s'" % text.replace("\\", "\\\\").replace("'", "''")


class FilterModule:
    def filters(self):
        return {"database_url": database_url, "postgresql_plan": postgresql_plan,
                "postgresql_conf_value": postgresql_conf_value, "drill_database": drill_database}
