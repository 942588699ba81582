"""The database_url filter (the server's PostgreSQL URL) and postgresql_plan (the postgresql role's settings, pg_hba
entries and input errors), as ordinary Python tests. The URL is parsed back with SQLAlchemy's make_url from the pinned
Prefect's environment (.venv-prefect), which is what Prefect does with PREFECT_SERVER_DATABASE_CONNECTION_URL."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.enclave.prefect.plugins.filter.database_url import (
    database_url,
    database_url_errors,
    drill_database,
    postgresql_conf_value,
    postgresql_plan,
)

pytestmark = pytest.mark.unit

HARD = "p@ss:w/rd%#?&= x+y'\"\\é"
PREFECT_PYTHON = Path(__file__).resolve().parents[3] / ".venv-prefect" / "bin" / "python"
PARSE = ("import json, sys\nfrom sqlalchemy.engine import make_url\n"
         "print(json.dumps([dict(drivername=u.drivername, host=u.host, port=u.port, database=u.database, username=u.username,"
         " password=u.password, query=dict(u.query)) for u in map(make_url, json.load(sys.stdin))]))")


def make_url(url):
    """SQLAlchemy's parse of the URL, run by the pinned Prefect's interpreter."""
    if not PREFECT_PYTHON.exists():
        pytest.skip(f"{PREFECT_PYTHON} is missing: bash scripts/setup.sh --with-test-servers")
    out = subprocess.run([str(PREFECT_PYTHON), "-c", PARSE], input=json.dumps([url]), capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return SimpleNamespace(**json.loads(out)[0])


@pytest.mark.parametrize("password", ["simple", HARD, "%40%3A", "#", "@@@", "a/b/c"])
def test_password_survives_the_url(password):
    url = make_url(database_url("db01.corp.local", 5433, "prefect", "prefect", password, local=False))
    assert url.password == password
    assert (url.drivername, url.host, url.port, url.database, url.username) == \
        ("postgresql+asyncpg", "db01.corp.local", 5433, "prefect", "prefect")
    assert url.query == {"ssl": "verify-full"}


def test_local_database_is_loopback_without_tls():
    url = database_url("prefect-aio.corp.local", 5432, "prefect", "prefect", HARD, local=True)
    parsed = make_url(url)
    assert parsed.host == "127.0.0.1" and parsed.query == {} and parsed.password == HARD
    assert "@" not in url.split("@", 1)[0].split("://", 1)[1].replace("%40", "")


def test_no_host_no_url_and_no_password_refused():
    assert database_url("", password="") == ""
    with pytest.raises(AnsibleFilterError) as exc:
        database_url("db01", password="")
    assert "password" in str(exc.value)


def plan(**changes):
    cfg = dict(host="db01", host_address="10.20.1.30", server_names=["aio", "srv01"],
               server_addresses=["10.20.1.10", "10.20.1.20"], server_database_hosts=["aio", "db01"],
               extra_client_cidrs=[], listen_addresses="", port=5432, database="prefect", user="prefect",
               superuser="postgres", backup_user="", log_dir="D:\\PostgreSQL\\17\\log", max_connections=100, shared_buffers="",
               effective_cache_size="", maintenance_work_mem="", work_mem="16MB", settings={}, ram_mb=16384)
    cfg.update(changes)
    return postgresql_plan(cfg)


def test_remote_server_gets_hostssl_from_its_address_only():
    result = plan()
    assert result["errors"] == [] and result["remote"]
    prefect = [e for e in result["hba"] if e["user"] == "prefect"]
    # Only the server whose database host is db01 (the all-in-one server uses its own), and the owner from this host
    # for restores.
    assert prefect == [{"type": "host", "database": "prefect", "user": "prefect", "address": "127.0.0.1/32",
                        "method": "scram-sha-256"},
                       {"type": "hostssl", "database": "prefect", "user": "prefect", "address": "10.20.1.20/32",
                        "method": "scram-sha-256"}]
    assert {e["user"] for e in result["hba"]} == {"prefect", "postgres"}
    assert all(e["method"] == "scram-sha-256" for e in result["hba"])
    assert all(e["address"] in ("", "127.0.0.1/32", "::1/128") for e in result["hba"] if e["user"] == "postgres")
    s = result["settings"]
    assert s["listen_addresses"] == "*" and s["ssl"] == "on" and s["ssl_cert_file"] == "server.crt"
    assert s["log_directory"] == "D:/PostgreSQL/17/log" and s["password_encryption"] == "scram-sha-256"
    assert (s["shared_buffers"], s["effective_cache_size"], s["maintenance_work_mem"]) == ("4GB", "8GB", "1GB")


def test_ipv6_server_addresses_get_one_address_networks():
    """An IPv6 prefect_host_address of a server host is admitted as that address /128 (an IPv4-mapped one as its IPv4
    address /32), and IPv6 networks are taken in postgresql_extra_client_cidrs; anything else is still refused."""
    result = plan(host_address="fd00:20::30", server_addresses=["10.20.1.10", "fd00:20::20"],
                  extra_client_cidrs=["fd00:40::/64"])
    assert result["errors"] == []
    assert [e["address"] for e in result["hba"] if e["user"] == "prefect" and e["type"] == "hostssl"][0] == "fd00:20::20/128"
    mapped = plan(server_addresses=["10.20.1.10", "::ffff:10.20.1.20"])
    assert [e["address"] for e in mapped["hba"] if e["type"] == "hostssl"][0] == "10.20.1.20/32"
    assert any("must be its IPv4 or IPv6 address" in e for e in plan(server_addresses=["10.20.1.10", "srv01"])["errors"])


REPLICATION = dict(primary="db01", standby="db02", user="prefect_replication", slot="prefect_standby",
                   passfile="D:/PostgreSQL/17/replication/replication.pgpass",
                   root_cert="D:/PostgreSQL/17/replication/root.crt")


def pair_plan(host, **changes):
    """The two hosts of a primary/standby pair serving the API replicas srv01 and srv02 (both naming db01 and db02)."""
    return plan(host=host, host_address={"db01": "10.20.1.30", "db02": "10.20.1.31"}[host],
                server_names=["srv01", "srv02"], server_addresses=["10.20.1.20", "10.20.1.21"],
                server_database_hosts=["db01", "db01"], server_standby_hosts=["db02", "db02"],
                replication=dict(REPLICATION, peer_address={"db01": "10.20.1.31", "db02": "10.20.1.30"}[host]),
                **changes)


def test_both_hosts_of_a_pair_serve_the_servers_and_replicate_with_the_other_only():
    primary, standby = pair_plan("db01"), pair_plan("db02")
    assert primary["errors"] == [] and standby["errors"] == []
    assert (primary["replication"]["mode"], standby["replication"]["mode"]) == ("primary", "standby")
    for result, peer in ((primary, "10.20.1.31/32"), (standby, "10.20.1.30/32")):
        # The standby admits the primary's servers too (they reach it after a promotion), and the replication role
        # from the other host alone, over TLS.
        assert [e["address"] for e in result["hba"] if e["user"] == "prefect" and e["type"] == "hostssl"] == \
            ["10.20.1.20/32", "10.20.1.21/32"]
        assert [e for e in result["hba"] if e["database"] == "replication"] == [
            {"type": "hostssl", "database": "replication", "user": "prefect_replication", "address": peer,
             "method": "scram-sha-256"}]
        s = result["settings"]
        assert (s["wal_level"], s["hot_standby"], s["max_slot_wal_keep_size"], s["ssl"], s["listen_addresses"]) == \
            ("replica", "on", "1GB", "on", "*")
    assert "primary_conninfo" not in primary["settings"] and "primary_slot_name" not in primary["settings"]
    assert standby["settings"]["primary_slot_name"] == "prefect_standby"
    # No password: the passfile's path; the primary by the name its certificate carries, verified against the CA.
    assert standby["settings"]["primary_conninfo"] == (
        "host='db01' port='5432' user='prefect_replication' passfile='D:/PostgreSQL/17/replication/replication.pgpass' "
        "sslmode='verify-full' sslrootcert='D:/PostgreSQL/17/replication/root.crt' application_name='db02' "
        "connect_timeout='10'")
    # postgresql.conf's quoting of it doubles the quotes (GUC_scanstr reads them back).
    assert postgresql_conf_value(standby["settings"]["primary_conninfo"]).startswith("'host=''db01'' port=''5432'' ")


def test_a_host_outside_the_pair_and_a_pair_without_a_standby_do_not_replicate():
    alone = plan()
    assert alone["replication"]["mode"] == "none" and "wal_level" not in alone["settings"]
    assert not [e for e in alone["hba"] if e["database"] == "replication"]
    other = plan(host="db03", replication=dict(REPLICATION, peer_address=""))
    assert other["replication"]["mode"] == "none" and other["errors"] == []


@pytest.mark.parametrize("changes, needle", [
    ({"replication": dict(REPLICATION, peer_address="db02.corp.local")}, "admits streaming replication from that address"),
    ({"replication": dict(REPLICATION, peer_address="10.20.1.31", slot="Standby-1")}, "postgresql_replication_slot"),
    ({"settings": {"wal_level": "minimal"}}, "wal_level to minimal"),
    ({"settings": {"primary_conninfo": "host=elsewhere"}}, "must not set primary_conninfo"),
    ({"server_names": ["db01"], "server_addresses": ["10.20.1.30"], "server_database_hosts": ["db01"],
      "server_standby_hosts": ["db02"]}, "on a database host of the primary/standby pair"),
])
def test_pair_input_problems_are_named(changes, needle):
    base = dict(replication=dict(REPLICATION, peer_address="10.20.1.31"))
    base.update(changes)
    errors = plan(**base)["errors"]
    assert any(needle in e for e in errors), errors


def test_the_url_names_both_hosts_of_a_pair_for_the_writable_one():
    url = database_url("db01.corp.local", 5433, "prefect", "prefect", HARD, local=True, standby="db02.corp.local")
    assert url.startswith("postgresql+asyncpg://prefect:") and "@/prefect?host=db01.corp.local:5433&host=db02.corp.local:5433" in url
    assert url.endswith("&target_session_attrs=read-write&ssl=verify-full")
    # The check of prefect_database_url takes it (the form measured to reach the writable host), and SQLAlchemy reads
    # the password back.
    assert database_url_errors(url) == []
    parsed = make_url(url)
    assert parsed.password == HARD and parsed.host is None and parsed.database == "prefect"
    assert parsed.query["host"] == ["db01.corp.local:5433", "db02.corp.local:5433"]
    # In the group's order, whichever is the primary: a failover's swap in the inventory changes no server's URL.
    swapped = database_url("db02.corp.local", 5433, "prefect", "prefect", HARD, standby="db01.corp.local",
                           order=["db01.corp.local", "db02.corp.local"])
    assert swapped == database_url("db01.corp.local", 5433, "prefect", "prefect", HARD, standby="db02.corp.local",
                                   order=["db01.corp.local", "db02.corp.local"]) == url


def test_the_backup_login_comes_from_this_host_only():
    backup = [e for e in plan(backup_user="prefect_backup")["hba"] if e["user"] == "prefect_backup"]
    # The Prefect database, and its drills' scratch database (the only other one the backup login reaches).
    assert backup == [{"type": "host", "database": "prefect", "user": "prefect_backup", "address": "127.0.0.1/32",
                       "method": "scram-sha-256"},
                      {"type": "host", "database": "prefect_drill", "user": "prefect_backup", "address": "127.0.0.1/32",
                       "method": "scram-sha-256"}]


def test_the_drill_database_fits_and_is_never_the_prefect_database():
    assert drill_database("prefect") == "prefect_drill"
    long = "p" * 63
    assert drill_database(long) == "p" * 40 + "_drill" and len(drill_database(long).encode()) <= 63
    # The one name that is its own drill database is refused by the backup role (validate.yml).
    assert drill_database("p" * 40 + "_drill") == "p" * 40 + "_drill"


def test_all_in_one_is_loopback_only():
    result = plan(host="aio", host_address="10.20.1.10")
    assert not result["remote"]
    assert [e for e in result["hba"] if e["user"] == "prefect"] == [
        {"type": "host", "database": "prefect", "user": "prefect", "address": "127.0.0.1/32", "method": "scram-sha-256"}]
    assert result["settings"]["listen_addresses"] == "localhost" and result["settings"]["ssl"] == "off"


@pytest.mark.parametrize("ram_mb, expected", [
    (1024, ("256MB", "512MB", "64MB")), (2048, ("512MB", "1GB", "128MB")), (65536, ("8GB", "32GB", "1GB")),
    (3000, ("750MB", "1500MB", "187MB")), (0, (None, None, None))])
def test_memory_follows_the_host(ram_mb, expected):
    s = plan(ram_mb=ram_mb)["settings"]
    assert (s.get("shared_buffers"), s.get("effective_cache_size"), s.get("maintenance_work_mem")) == expected


def test_overrides_win():
    s = plan(shared_buffers="2GB", settings={"max_wal_size": "4GB", "shared_buffers": "3GB"})["settings"]
    assert s["shared_buffers"] == "3GB" and s["max_wal_size"] == "4GB"


@pytest.mark.parametrize("changes, needle", [
    ({"shared_buffers": "512"}, "postgresql_shared_buffers"),
    ({"work_mem": "16 MB"}, "postgresql_work_mem"),
    ({"maintenance_work_mem": "1gb"}, "postgresql_maintenance_work_mem"),
    ({"effective_cache_size": {"a": 1}}, "postgresql_effective_cache_size"),
    ({"extra_client_cidrs": ["10.0.0.1/24"]}, "postgresql_extra_client_cidrs"),
    ({"extra_client_cidrs": ["0.0.0.0/0"]}, "postgresql_extra_client_cidrs"),
    ({"extra_client_cidrs": ["10.0.0.300/32"]}, "postgresql_extra_client_cidrs"),
    ({"extra_client_cidrs": ["10.0.0.1"]}, "postgresql_extra_client_cidrs"),
    ({"settings": {"bad name": 1}}, "postgresql_settings"),
    ({"settings": {"x": "a\nb"}}, "postgresql_settings"),
    # What the role enforces is not tuning (an audit found these accepted).
    ({"settings": {"listen_addresses": "*"}}, "postgresql_settings must not set listen_addresses: set postgresql_listen_addresses"),
    ({"settings": {"password_encryption": "md5"}}, "postgresql_settings must not set password_encryption"),
    ({"settings": {"ssl": "off"}}, "postgresql_settings must not set ssl"),
    ({"settings": {"shared_preload_libraries": "'C:\\evil.dll'"}}, "postgresql_settings must not set shared_preload_libraries"),
    ({"listen_addresses": "'*'; drop"}, "postgresql_listen_addresses"),
    ({"server_addresses": ["10.20.1.10", ""]}, "prefect_host_address of srv01"),
    ({"host_address": "db01.corp.local"}, "prefect_host_address of db01"),
])
def test_bad_input_is_named(changes, needle):
    errors = plan(**changes)["errors"]
    assert len(errors) == 1 and errors[0].startswith(needle), errors


def test_extra_networks_make_it_remote():
    result = plan(host="aio", extra_client_cidrs=["10.20.5.0/28"])
    assert result["remote"] and result["errors"] == []
    assert result["hba"][-1]["type"] == "hostssl" and result["hba"][-1]["address"] == "10.20.5.0/28"


@pytest.mark.parametrize("value, text", [(100, "100"), ("on", "on"), (True, "on"), ("0.1", "0.1"), ("512MB", "'512MB'"),
                                         ("a'b", "'a''b'"), ("D:/x", "'D:/x'"), ("%m [%p] ", "'%m [%p] '")])
def test_conf_values_are_quoted_as_postgresql_reads_them(value, text):
    assert postgresql_conf_value(value) == text


@pytest.mark.parametrize("url", [
    "",
    "postgresql+asyncpg://prefect:S3cr%40t@127.0.0.1:5432/prefect",
    "postgresql+asyncpg://prefect:S3cr%40t@[::1]/prefect",
    "postgresql+asyncpg://prefect:S3cr%40t@db01.corp.local:5432/prefect?ssl=verify-full",
    "postgresql+asyncpg://prefect:S3cr%40t@db01.corp.local/prefect?application_name=x&sslmode=verify-full",
    # A primary and its standby (tests/integration/test_ha_standby.py measures both forms with Prefect's engine).
    "postgresql+asyncpg://prefect:S3cr%40t@/prefect?host=db01.corp.local:5432&host=db02.corp.local:5432"
    "&target_session_attrs=read-write&ssl=verify-full",
    "postgresql+asyncpg://prefect:S3cr%40t@/prefect?host=db01,db02&port=5432,5433&target_session_attrs=read-write"
    "&ssl=verify-full",
    "postgresql+asyncpg://prefect:S3cr%40t@/prefect?host=127.0.0.1:5432&host=127.0.0.2:5433&target_session_attrs=read-write",
    "sqlite+aiosqlite:///C:/Prefect/data/prefect.db",
])
def test_urls_prefect_takes_pass(url):
    assert database_url_errors(url) == []


@pytest.mark.parametrize("url, words", [
    ("postgresql://prefect:S3cr@t@db01/prefect", ["must start with postgresql+asyncpg://", "'postgresql'"]),
    ("postgresql+psycopg2://prefect:S3cr@t@db01/prefect", ["'postgresql+psycopg2'"]),
    ("db01:5432/prefect", ["'(none)'"]),
    ("postgresql+asyncpg://prefect:S3cr%40t@db01:5432/prefect", ["remote database host db01 without ?ssl=verify-full"]),
    ("postgresql+asyncpg://prefect:S3cr%40t@[fd00::5]:5432/prefect?ssl=require", ["remote database host fd00::5"]),
    ("postgresql+asyncpg://prefect:S3cr%40t@127.0.0.1:5432/", ["names no database"]),
    ("postgresql+asyncpg://prefect:S3cr%40t@:5432/prefect", ["names no database host"]),
    # An independent audit's: an unencoded '@' or '/' in the password (SQLAlchemy would take part of it for the host),
    # no password, the host moved into the query, SQLite on a share.
    ("postgresql+asyncpg://prefect:p@ss/word@db01.corp.local/prefect", ["an unencoded '@' or '/' before the host"]),
    ("postgresql+asyncpg://prefect:x@Secr3tPart/y@db01.corp.local/prefect?ssl=verify-full", ["an unencoded '@' or '/'"]),
    ("postgresql+asyncpg://prefect@127.0.0.1/prefect", ["names no password"]),
    ("postgresql+asyncpg://127.0.0.1/prefect", ["no USER:PASSWORD@"]),
    ("postgresql+asyncpg://prefect:S3cr%40t@localhost/prefect?host=db01.corp.local", ["a host in its authority and more"]),
    # A primary and its standby: every host in the query, asyncpg told to find the writable one, TLS to remote hosts.
    ("postgresql+asyncpg://prefect:S3cr%40t@/prefect?host=db01:5432&host=db02:5432&ssl=verify-full",
     ["names 2 hosts without ?target_session_attrs=read-write"]),
    ("postgresql+asyncpg://prefect:S3cr%40t@/prefect?host=db01:5432&host=db02:5432&target_session_attrs=read-write",
     ["remote database host db01, db02 without ?ssl=verify-full"]),
    ("postgresql+asyncpg://prefect:S3cr%40t@db01:5432,db02:5432/prefect?target_session_attrs=read-write&ssl=verify-full",
     ["several hosts in its authority"]),
    ("postgresql+asyncpg://prefect:S3cr%40t@/prefect?host=db01,db02&port=5432&target_session_attrs=read-write"
     "&ssl=verify-full", ["names 2 hosts and 1 ports"]),
    ("postgresql+asyncpg://prefect:S3cr%40t@db01/prefect?hostaddr=10.0.0.5&ssl=verify-full", ["?hostaddr="]),
    ("postgresql+asyncpg://prefect:S3cr%40t@/prefect?port=5432", ["a lone ?port="]),
    ("sqlite+aiosqlite:///\\\\fileserver\\share\\prefect.db", ["not on a network share"]),
    ("sqlite+aiosqlite://///fileserver/share/prefect.db", ["not on a network share"]),
])
def test_urls_prefect_refuses_or_that_expose_the_password_are_named_never_shown(url, words):
    errors = database_url_errors(url)
    assert errors, url
    text = "\n".join(errors)
    for word in words:
        assert word in text, (word, text)
    assert "S3cr" not in text and all(e.startswith("prefect_database_url ") for e in errors), text


def test_a_url_that_is_not_text_is_named():
    assert database_url_errors({"host": "db01"}) == ["prefect_database_url must be a string, a SQLAlchemy URL (got a dict)"]
