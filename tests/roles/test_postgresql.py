"""The postgresql role (playbooks/postgresql.yml) against the simulated Windows host (simhost.py with sim_postgresql.py).

The stand-ins behave as the upstream sources do: the EDB installer as edb-installers' installer.xml.in, pgserver.xml.in
and initcluster.vbs describe it (Installations and Add/Remove Programs keys, the service, the data directory's icacls
grants, the five postgresql.conf edits, an upgrade that ignores the command line), win_package's registry provider,
win_lineinfile's last-match rule, win_template rendered by the real action plugin, and the role's scripts played against
a cluster that reads its configuration at start and on reload (pending_restart, pg_hba_file_rules errors).

What these tests cannot show: that EDB's installer, psql.exe and the PowerShell scripts behave on Windows as the
stand-ins do. The SQL and the rendered configuration run on a real PostgreSQL in tests/integration.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from rolerun import REPO
from simhost import FORBIDDEN_ON_RERUN, PG_INSTALLER_NAME, SECRETS, Sim, by_name, host_results, make_bundle, module_runs, reached

pytestmark = pytest.mark.simulated

AIO, DB = "prefect-aio.corp.local", "prefect-db01.corp.local"
# Documented in docs/roles.md ("No-op re-run"); update both together.
# prefect-db01 also compares server.crt and server.key (win_copy: a checksum query, no transfer when they match).
EXPECTED_NOOP = {AIO: (8, 8), DB: (10, 10)}
DATA = "d:\\postgresql\\17\\data"
OPTIONS = "c:\\prefect\\staging\\postgresql-options\\postgresql-install.options"
SUPERUSER = "Superuser has the password from Vault, and the install's one-time password no longer works"
OBJECTS = "Prefect role, its database and pg_trgm are as configured"
INSTALL = "PostgreSQL is installed silently from the EDB installer"
SECRET_VALUES = [SECRETS["vault_prefect_database_password"], SECRETS["vault_postgresql_superuser_password"],
                 "PgDb-Secret-3e9a", "PgSu-Secret-71c4"]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _pem(root: Path) -> dict:
    """A server certificate and key for prefect-db01 (PEM files on the control node; the stand-ins do not parse them)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import datetime
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DB)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    (root / "db01.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "db01.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return {"postgresql_ssl_cert": str(root / "db01.crt"), "postgresql_ssl_key": str(root / "db01.key")}


def _sim(root: Path, ansible_env: dict, host: str = AIO, state: dict | None = None) -> tuple[Sim, dict]:
    sim = Sim(root, ansible_env, state)
    extra = {"prefect_bundle_dir": str(make_bundle(root)), **SECRETS}
    if host == DB:
        extra.update(_pem(root))
    return sim, extra


def _pg(data: dict, host: str = AIO) -> list[tuple[str, dict]]:
    return [(n, r) for n, r in reached(data, host) if n.split(" : ", 1)[0].endswith(("postgresql", "common"))]


def _meaningful(state: dict) -> dict:
    """The host without the call counter and the empty containers the stand-ins create on their first call."""
    return {k: v for k, v in state.items() if k != "clock" and v not in ({}, [])}


def _changed(data: dict, host: str = AIO) -> list[str]:
    return [n.split(" : ", 1)[-1] for n, r in reached(data, host) if r.get("changed")]


@pytest.fixture(scope="module", params=[AIO, DB])
def converged(request, tmp_path_factory, ansible_env):
    """First run on an empty host (-vvv), then the re-run, on the all-in-one host and on the distributed database host."""
    host = request.param
    sim, extra = _sim(tmp_path_factory.mktemp("pg"), ansible_env, host)
    first = sim.run(extra, playbook="postgresql.yml", limit=host, args=["-vvv"])
    after_first = sim.state
    second = sim.run(extra, playbook="postgresql.yml", limit=host)
    return host, sim, extra, first, after_first, second


def test_first_run_installs_and_configures(converged):
    host, sim, _extra, first, state, _second = converged
    changed = _changed(first[1], host)
    for task in [INSTALL, SUPERUSER, "Installer's postgresql.conf reads the role's directory last",
                 "Prefect's settings are in the role's configuration file",
                 "Client authentication admits the Prefect servers only, with SCRAM",
                 "PostgreSQL service is stopped to move to its account", "PostgreSQL service logs on as its account",
                 "PostgreSQL service runs and starts with Windows", OBJECTS]:
        assert task in changed, (task, changed)
    # Moved off the installer's NetworkService before the directories were given to the virtual account, so the
    # server started once, with the role's settings: nothing left for a restart.
    dirs_task = "Prefect root inherits nothing and the listed directories have their rules"  # common's dirs.yml
    assert changed.index("PostgreSQL service logs on as its account") < max(i for i, t in enumerate(changed) if t == dirs_task)
    # The installer ran once, silently, with the passwords in its option file only; the file is gone afterwards.
    (argv,) = [run for run in state["installer_runs"] if run[0].endswith(PG_INSTALLER_NAME)]
    for option in ["--mode", "unattended", "--unattendedmodeui", "none", "--optionfile", "--datadir", "D:\\PostgreSQL\\17\\data",
                   "--serviceaccount", "NT AUTHORITY\\NetworkService", "pgAdmin,stackbuilder", "--enable_acledit"]:
        assert option in argv, argv
    assert not any(s in " ".join(argv) for s in SECRET_VALUES), "a password on the installer's command line"
    assert state["pg_option_files_seen"] == ["C:\\Prefect\\staging\\postgresql-options\\postgresql-install.options"]
    assert OPTIONS not in state["files"]
    # The installer got a one-time superuser password made on the host (it hands it to initcluster.vbs as an
    # argument), never the one from Vault; the role set the real one through psql afterwards.
    assert state["texts"][OPTIONS].startswith("superpassword=") and not any(v in state["texts"][OPTIONS] for v in SECRET_VALUES)
    assert state["dirs"]["c:\\prefect\\staging\\postgresql-options"] == {
        "acl": {"S-1-5-18": "FullControl", "S-1-5-32-544": "FullControl"}, "protected": True}
    assert state["pg"]["superuser_password_sha"] == _sha(SECRETS["vault_postgresql_superuser_password"])
    assert state["pg_installations"]["postgresql-x64-17"]["Version"] == "17.6-1"
    # initcluster.vbs granted the installing user and CREATOR OWNER full control and left inheritance on: the role
    # leaves SYSTEM, Administrators and the service account (Modify) only.
    virtual = [sid for sid in state["dirs"][DATA]["acl"] if sid.startswith("S-1-5-80-")]
    assert len(virtual) == 1, state["dirs"][DATA]["acl"]
    for directory in (DATA, "d:\\postgresql\\17\\log"):
        assert state["dirs"][directory] == {"acl": {"S-1-5-18": "FullControl", "S-1-5-32-544": "FullControl",
                                                    virtual[0]: "Modify"}, "protected": True}, directory
    # The installer's listen_addresses='*' and shared_buffers=128MB needed a restart, which happened after the reload.
    pg = state["pg"]
    svc = state["services"]["postgresql-x64-17"]
    assert svc["running"] and svc["object_name"] == "NT SERVICE\\postgresql-x64-17"
    assert svc["process_owner"] == "NT SERVICE\\postgresql-x64-17", "the running server is the one started as its account"
    conf = state["texts"][DATA + "\\postgresql.conf"]
    assert conf.count("include_dir = 'conf.d'") == 1 and conf.endswith("include_dir = 'conf.d'\r\n")
    assert pg["postmaster"]["shared_buffers"] == "4GB"  # a quarter of the simulated 16 GB
    assert pg["loaded"]["password_encryption"] == "scram-sha-256"
    assert pg["roles"]["prefect"]["password_sha"] == _sha(SECRETS["vault_prefect_database_password"])
    assert pg["databases"]["prefect"] == {"owner": "prefect", "extensions": ["pg_trgm"], "tables": {}}
    hba = [(e["type"], e["database"], e["user"], e["address"]) for e in pg["hba"] if e["user"] == "prefect"]
    if host == AIO:
        assert pg["postmaster"]["listen_addresses"] == "localhost" and pg["loaded"]["ssl"] == "off"
        assert hba == [("host", "prefect", "prefect", "127.0.0.1/32")]
    else:
        # prefect-srv01 (10.20.1.20) names prefect-db01 as its database host: TLS from that address only, and the owner
        # from the database host itself (pg_restore of playbooks/restore.yml).
        assert pg["postmaster"]["listen_addresses"] == "*" and pg["loaded"]["ssl"] == "on"
        assert hba == [("host", "prefect", "prefect", "127.0.0.1/32"), ("hostssl", "prefect", "prefect", "10.20.1.20/32")]
        assert DATA + "\\server.crt" in state["files"] and DATA + "\\server.key" in state["files"]
    assert all(e["method"] == "scram-sha-256" for e in pg["hba"])
    assert not [e for e in pg["hba"] if e["user"] == "all"], "the installer's entries for every role are gone"


def test_noop_rerun_is_cheap_and_changes_nothing(converged):
    host, _sim, _extra, _first, _state, second = converged
    hits = _pg(second[1], host)
    assert not [n for n, r in hits if r.get("changed")], "a no-op re-run reported changes"
    actions = {r.get("action", "").rsplit(".", 1)[-1] for _n, r in hits}
    assert not actions & (set(FORBIDDEN_ON_RERUN) - ({"win_copy"} if host == DB else set())), actions
    listing = "\n".join(f"  {n} ({r.get('action')})" for n, r in hits)
    print(f"{host}: tasks reaching the host {len(hits)}, module runs {module_runs(hits)}\n{listing}")
    assert (len(hits), module_runs(hits)) == EXPECTED_NOOP[host], listing


def test_secrets_never_appear_at_vvv(converged):
    """The first run at -vvv (installer option file, superuser psql sessions, TLS key) and the re-run."""
    _host, _sim, _extra, first, _state, second = converged
    for proc in (first[0], second[0]):
        output = proc.stdout + proc.stderr
        for secret in SECRET_VALUES:
            assert secret not in output, "a Vault value leaked"


def _example_inventory(root: Path) -> str:
    """The example inventory with prefect-db01's certificate and key (host variables) made by _pem(): extra variables
    would give them to prefect-aio too, in a run of both hosts."""
    example = REPO / "inventories" / "example"
    root.mkdir(parents=True, exist_ok=True)
    (root / "hosts.yml").write_text((example / "hosts.yml").read_text())
    (root / "group_vars").symlink_to(example / "group_vars")
    (root / "host_vars").mkdir()
    for path in (example / "host_vars").iterdir():
        if path.name == DB + ".yml":
            (root / "host_vars" / path.name).write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **_pem(root)}))
        else:
            (root / "host_vars" / path.name).symlink_to(path)
    return str(root / "hosts.yml")


@pytest.fixture(scope="module")
def fresh_check(tmp_path_factory, ansible_env):
    """One --check run of both hosts on one empty simulated host (check mode writes nothing, which the test asserts):
    the host before and after, and the results."""
    root = tmp_path_factory.mktemp("pg-check")
    sim = Sim(root, ansible_env)
    before = sim.state
    extra = {"prefect_bundle_dir": str(make_bundle(root)), **SECRETS}
    data = sim.run(extra, playbook="postgresql.yml", limit=f"{AIO}:{DB}", args=["--check"],
                   inventory=_example_inventory(root / "inventory"))[1]
    return before, sim.state, data


def test_check_mode_changes_nothing(tmp_path, ansible_env, converged, fresh_check):
    """On an empty host check mode reports the install and touches nothing; on the converged host a changed setting and
    password are reported, and nothing is written, reloaded or restarted."""
    host, sim, extra, _first, _state, _second = converged
    before, after, data = fresh_check
    assert INSTALL in _changed(data, host)
    assert _meaningful(after) == _meaningful(before)
    if host == DB:
        # The converged host: a changed setting and password take the same tasks on prefect-db01 as on prefect-aio (the
        # configuration file and the objects); its own branches in check mode (TLS files, listening on every address)
        # are those of the empty host above, and on the converged host test_noop_rerun_is_cheap_and_changes_nothing's.
        return
    copy = Sim(tmp_path / "copy", ansible_env, sim.state)
    before = copy.state
    changed_extra = dict(extra, postgresql_max_connections=200, vault_prefect_database_password="Other-Secret-99xy")
    data = copy.run(changed_extra, playbook="postgresql.yml", limit=host, args=["--check", "--diff"])[1]
    changed = _changed(data, host)
    assert "Prefect's settings are in the role's configuration file" in changed and OBJECTS in changed, changed
    assert "PostgreSQL is restarted for settings that need it" not in changed
    assert _meaningful(copy.state) == _meaningful(before)


@pytest.mark.parametrize("converged", [AIO], indirect=True)
def test_changed_vault_password_is_applied_and_reported(tmp_path, ansible_env, converged):
    host, sim, extra, *_ = converged
    copy = Sim(tmp_path, ansible_env, sim.state)
    new = dict(extra, vault_prefect_database_password="Rotated-Secret-55ab")
    data = copy.run(new, playbook="postgresql.yml", limit=host)[1]
    assert _changed(data, host) == [OBJECTS]
    assert copy.state["pg"]["roles"]["prefect"]["password_sha"] == _sha("Rotated-Secret-55ab")
    assert by_name(host_results(data, host))["Changes to the Prefect role, database and extension are shown"]["msg"] == \
        ["role prefect password"]
    # The next run with the new password changes nothing: the password comparison of
    # test_noop_rerun_is_cheap_and_changes_nothing (the same tasks with another value); not run again here.


@pytest.mark.parametrize("converged", [AIO], indirect=True)
def test_prefect_tables_get_autovacuum_settings_once(tmp_path, ansible_env, converged):
    """After Prefect's migrations created events, flow_run and flow_run_state, the next run sets their autovacuum
    options (Prefect's database maintenance guide) and the one after changes nothing."""
    host, sim, extra, *_ = converged
    state = sim.state
    state["pg"]["databases"]["prefect"]["tables"] = {"events": [], "flow_run": ["fillfactor=90"], "flow_run_state": [], "log": []}
    copy = Sim(tmp_path, ansible_env, state)
    data = copy.run(extra, playbook="postgresql.yml", limit=host)[1]
    assert by_name(host_results(data, host))["Changes to the Prefect role, database and extension are shown"]["msg"] == \
        ["autovacuum settings of events, flow_run_state, flow_run"]
    tables = copy.state["pg"]["databases"]["prefect"]["tables"]
    assert "fillfactor=90" in tables["flow_run"] and "autovacuum_vacuum_threshold=500" in tables["flow_run"]
    assert tables["log"] == []
    assert _changed(copy.run(extra, playbook="postgresql.yml", limit=host)[1], host) == []


@pytest.mark.parametrize("converged", [AIO], indirect=True)
def test_rejected_setting_fails_before_a_restart(tmp_path, ansible_env, converged):
    """A name PostgreSQL does not know: the reload reports it from pg_file_settings, the role stops before the restart
    and the server keeps running with its previous configuration."""
    host, sim, extra, *_ = converged
    copy = Sim(tmp_path, ansible_env, sim.state)
    data = copy.run(dict(extra, postgresql_settings={"shared_bufers": "1GB"}, postgresql_max_connections=150),
                    playbook="postgresql.yml", limit=host, expect_rc=2)[1]
    failed = [(n, r) for n, r in host_results(data, host) if r.get("failed")]
    assert failed[0][0].endswith("PostgreSQL accepts its configuration files"), failed
    assert 'unrecognized configuration parameter "shared_bufers"' in failed[0][1]["msg"]
    assert "PostgreSQL is restarted for settings that need it" not in by_name(host_results(data, host))
    state = copy.state
    assert state["services"]["postgresql-x64-17"]["running"] and state["pg"]["postmaster"]["max_connections"] == "100"


def test_installer_failure_still_deletes_the_option_file(tmp_path, ansible_env):
    sim, extra = _sim(tmp_path, ansible_env)
    sim.update(pg_installer_fails=True)
    data = sim.run(extra, playbook="postgresql.yml", expect_rc=2)[1]
    results = by_name(host_results(data))
    assert results[INSTALL]["failed"] and results["Installer option file is gone when the install failed before making a cluster"]["changed"]
    state = sim.state
    assert state["pg_option_files_seen"] and OPTIONS not in state["files"]
    assert "pg_installations" not in state or not state["pg_installations"]
    # The next run installs.
    data = sim.run(extra, playbook="postgresql.yml")[1]
    assert sim.state["pg_installations"]["postgresql-x64-17"]["Version"] == "17.6-1" and OPTIONS not in sim.state["files"], \
        [(n, r.get("skipped"), r.get("changed")) for n, r in host_results(data) if "uperuser" in n or "option" in n.lower()]


@pytest.mark.parametrize("converged", [AIO], indirect=True)
def test_minor_update_in_place_stops_and_starts_the_service(tmp_path, ansible_env, converged):
    host, sim, extra, *_ = converged
    state = sim.state
    state["pg_installations"]["postgresql-x64-17"]["Version"] = "17.4-1"
    copy = Sim(tmp_path, ansible_env, state)
    data = copy.run(extra, playbook="postgresql.yml", limit=host)[1]
    order = _changed(data, host)
    assert order.index("PostgreSQL service is stopped for the update in place") < order.index(INSTALL)
    after = copy.state
    assert after["pg_installations"]["postgresql-x64-17"]["Version"] == "17.6-1"
    assert after["services"]["postgresql-x64-17"]["running"] and OPTIONS not in after["files"]
    # The installer registered the service again as NetworkService: it is moved back to its own account.
    assert after["services"]["postgresql-x64-17"]["object_name"] == "NT SERVICE\\postgresql-x64-17"
    assert "PostgreSQL service logs on as its account" in order
    assert _changed(copy.run(extra, playbook="postgresql.yml", limit=host)[1], host) == []


@pytest.mark.parametrize("installed, message", [
    ("16.10-1", "PostgreSQL 16 is installed on prefect-aio.corp.local and postgresql_major_version is 17. A major upgrade "
                "needs its data converted"),
    ("17.9-1", "PostgreSQL 17.9-1 is installed on prefect-aio.corp.local, newer than the bundle's 17.6-1"),
])
def test_major_or_downgrade_is_refused(tmp_path, ansible_env, installed, message):
    major = installed.split(".")[0]
    state = {"pg_installations": {"postgresql-x64-" + major: {
        "Version": installed, "Base Directory": "C:\\Program Files\\PostgreSQL\\" + major,
        "Data Directory": "D:\\PostgreSQL\\%s\\data" % major, "Service ID": "postgresql-x64-" + major}}}
    sim, extra = _sim(tmp_path, ansible_env, state=state)
    data = sim.run(extra, playbook="postgresql.yml", expect_rc=2)[1]
    failed = [(n, r) for n, r in host_results(data) if r.get("failed")]
    assert failed[0][0].endswith("Installed PostgreSQL can be kept or updated in place"), failed
    assert message in " ".join(failed[0][1]["msg"].split()), failed[0][1]["msg"]
    if major == "16":
        assert "playbooks/backup.yml" in failed[0][1]["msg"] and "pg_upgrade" in failed[0][1]["msg"]
    assert "installer_runs" not in sim.state


@pytest.mark.parametrize("purge", [False, True])
@pytest.mark.parametrize("converged", [AIO], indirect=True)
def test_absent_uninstalls_and_keeps_data_unless_purged(tmp_path, ansible_env, converged, purge):
    host, sim, extra, *_ = converged
    copy = Sim(tmp_path, ansible_env, sim.state)
    data = copy.run(dict(extra, postgresql_state="absent", postgresql_purge_data=purge), playbook="postgresql.yml", limit=host)[1]
    assert "PostgreSQL is uninstalled silently" in _changed(data, host)
    state = copy.state
    assert "postgresql-x64-17" not in state["pg_installations"] and "PostgreSQL 17" not in state["uninstall_keys"]
    assert "postgresql-x64-17" not in state["services"]
    assert not [p for p in state["files"] if p.startswith("c:\\program files\\postgresql\\17\\")]
    uninstall = state["installer_runs"][-1]
    assert uninstall[0] == '"C:\\Program Files\\PostgreSQL\\17\\uninstall-postgresql.exe"' and "unattended" in uninstall
    kept = [p for p in state["files"] if p.startswith(DATA + "\\")]
    if purge:
        assert not kept and DATA not in state["dirs"] and "d:\\postgresql\\17\\log" not in state["dirs"]
    else:
        assert DATA + "\\postgresql.conf" in kept and DATA in state["dirs"]
        assert "its data stays in" in by_name(host_results(data, host))["PostgreSQL data directory is kept"]["msg"]
    if purge:
        # The re-run changes nothing. Once, with the purge: the uninstall's check is the same with either value, and the
        # kept data adds only a message on the control node, where the purge adds the deletes on the host.
        again = copy.run(dict(extra, postgresql_state="absent", postgresql_purge_data=purge), playbook="postgresql.yml", limit=host)
        assert _changed(again[1], host) == []


BAD = [
    ({"postgresql_port": 80}, "postgresql_port must be a TCP port from 1024 to 65535"),
    ({"postgresql_data_dir": "C:\\PostgreSQL\\data"}, "on a drive other than the system drive C:"),
    ({"postgresql_shared_buffers": "lots"}, "postgresql_shared_buffers must be a size such as 512MB"),
    ({"postgresql_extra_client_cidrs": ["10.20.0.1/16"]}, "postgresql_extra_client_cidrs must list IPv4 or IPv6 networks"),
    ({"postgresql_service_account": "BUILTIN\\Administrators"}, "postgresql_service_account must be a least-privileged"),
    # An audit's: a trailing space got past the list (now refused as a name first).
    ({"postgresql_service_account": "NT AUTHORITY\\SYSTEM "}, "postgresql_service_account must be an account name"),
    # A custom account without postgresql_service_password (test_a_custom_service_account_gets_its_password_...).
    ({"postgresql_service_account": ".\\svc_pg"}, "a dedicated local or domain account with postgresql_service_password "
                                                   "(a gMSA, DOMAIN\\name$, needs none); never SYSTEM, an administrator or "
                                                   "another service's virtual account (got .\\svc_pg)"),
    ({"vault_postgresql_superuser_password": "short"}, "postgresql_superuser_password and prefect_database_password"),
    ({"postgresql_major_version": "15"}, "postgresql_major_version must name a catalogue entry"),
    ({"postgresql_settings": {"bad name": "1"}}, "postgresql_settings: 'bad name' must be a setting name"),
]


def _bad_host(number: int) -> str:
    return f"prefect-bad{number}.corp.local"


@pytest.fixture(scope="module")
def bad_input(tmp_path_factory, ansible_env):
    """One postgresql.yml run for every BAD case: one all-in-one host per case (prefect-aio's groups and host variables,
    its own address, the Vault values, the case's bad value), each refused by the preflight on its own line(s)."""
    root = tmp_path_factory.mktemp("pg-bad")
    sim = Sim(root, ansible_env)
    aio_vars = yaml.safe_load((REPO / "inventories" / "example" / "host_vars" / f"{AIO}.yml").read_text())
    hosts = {_bad_host(number): {**aio_vars, "prefect_host_address": f"10.20.1.{100 + number}", **SECRETS, **bad}
             for number, (bad, _message) in enumerate(BAD)}
    groups = ("all_in_one", "prefect_server", "prefect_workers", "prefect_database", "prefect_proxy")
    (root / "inventory").mkdir()
    (root / "inventory" / "hosts.yml").write_text(yaml.safe_dump(
        {"all": {"hosts": hosts, "children": {group: {"hosts": {h: None for h in hosts}} for group in groups}}}))
    (root / "inventory" / "group_vars").symlink_to(REPO / "inventories" / "example" / "group_vars")
    before = sim.state_path.read_text()
    # The Vault values are host variables here: extra variables would override the bad superuser password.
    proc, data = sim.run({"prefect_bundle_dir": str(make_bundle(root))}, playbook="postgresql.yml", limit=":".join(hosts),
                         expect_rc=2, inventory=str(root / "inventory" / "hosts.yml"))
    return proc, data, before, sim.state_path.read_text()


@pytest.mark.parametrize("number", range(len(BAD)), ids=[next(iter(b)) for b, _m in BAD])
def test_bad_input_is_refused_before_any_host(bad_input, number):
    proc, data, before, after = bad_input
    host, message = _bad_host(number), BAD[number][1]
    failed = [r for _n, r in host_results(data, host) if r.get("failed")]
    assert failed, f"{host}: nothing failed"
    # The preflight's lines for this host ("<host>: <problem>"), without the host's name.
    lines = [line.split(": ", 1)[1] for line in str(failed[-1].get("msg", "")).splitlines() if line.startswith(host + ": ")]
    assert message in " ".join(" ".join(lines).split()), (host, failed[-1].get("msg"))
    assert after == before, "a task reached the host"
    assert not any(s in proc.stdout + proc.stderr for s in SECRET_VALUES)


@pytest.mark.parametrize("key_format", ["pkcs8", "traditional"])
def test_an_encrypted_server_key_is_refused_before_any_host(tmp_path, ansible_env, key_format):
    """A passphrase-protected key is PEM too, but the service cannot answer PostgreSQL's passphrase prompt and TLS
    would stay off: both encrypted forms (PKCS#8 "ENCRYPTED PRIVATE KEY", traditional "Proc-Type: 4,ENCRYPTED")."""
    from cryptography.hazmat.primitives import serialization
    sim, extra = _sim(tmp_path, ansible_env, host=DB)
    key = serialization.load_pem_private_key(Path(extra["postgresql_ssl_key"]).read_bytes(), password=None)
    fmt = serialization.PrivateFormat.PKCS8 if key_format == "pkcs8" else serialization.PrivateFormat.TraditionalOpenSSL
    Path(extra["postgresql_ssl_key"]).write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt,
                                                                    serialization.BestAvailableEncryption(b"key-passphrase")))
    before = sim.state_path.read_text()
    proc, data = sim.run(extra, playbook="postgresql.yml", limit=DB, expect_rc=2)
    assert "the key is encrypted" in " ".join(json.dumps(data).split()), proc.stdout[-3000:]
    assert sim.state_path.read_text() == before, "a task reached the host"


def _option_file_left(state: dict, one_time: str) -> dict:
    """A host where an install left its option file: the cluster's superuser has that one-time password."""
    state["pg"]["superuser_password_sha"] = _sha(one_time)
    state["files"][OPTIONS] = _sha(f"superpassword={one_time}\r\n")
    state["texts"][OPTIONS] = f"superpassword={one_time}\r\n"
    return state


@pytest.mark.parametrize("converged", [AIO], indirect=True)
def test_a_run_stopped_after_the_install_is_finished_by_the_next(tmp_path, ansible_env, converged):
    """The install went through but the run stopped before the real superuser password was set: the option file with
    the one-time password is still there, and the next run sets the password and removes it."""
    host, sim, extra, *_ = converged
    copy = Sim(tmp_path, ansible_env, _option_file_left(sim.state, "OneTime12345678"))
    data = copy.run(extra, playbook="postgresql.yml")[1]
    assert SUPERUSER in _changed(data, host)
    after = copy.state
    assert after["pg"]["superuser_password_sha"] == _sha(SECRETS["vault_postgresql_superuser_password"])
    assert OPTIONS not in after["files"]


@pytest.mark.parametrize("converged", [AIO], indirect=True)
def test_a_server_of_the_previous_release_moves_to_its_own_account(tmp_path, ansible_env, converged):
    """0.1.0 left the service as NetworkService, with the data directory for NetworkService: the next run stops it,
    sets its own virtual account, gives the directories to that account alone and starts it; then nothing changes."""
    host, sim, extra, *_ = converged
    state = sim.state
    state["services"]["postgresql-x64-17"]["object_name"] = "NT AUTHORITY\\NetworkService"
    # The all-in-one host's Prefect server depends on PostgreSQL, its worker on the server; both run: the stop must take
    # them down with it (Stop-Service refuses otherwise) and they must run again afterwards.
    state["services"]["PrefectServer"] = {"running": True, "dependencies": ["postgresql-x64-17"], "registry": {},
                                          "object_name": ".\\svc_prefect"}
    state["services"]["PrefectWorker"] = {"running": True, "dependencies": ["PrefectServer"], "registry": {},
                                          "object_name": ".\\svc_prefect_worker"}
    for directory in (DATA, "d:\\postgresql\\17\\log"):
        state["dirs"][directory]["acl"] = {"S-1-5-18": "FullControl", "S-1-5-32-544": "FullControl", "S-1-5-20": "Modify"}
    copy = Sim(tmp_path, ansible_env, state)
    data = copy.run(extra, playbook="postgresql.yml", limit=host)[1]
    changed = _changed(data, host)
    assert changed.index("PostgreSQL service is stopped to move to its account") < changed.index(
        "PostgreSQL service logs on as its account") < changed.index("PostgreSQL service runs and starts with Windows")
    after = copy.state
    svc = after["services"]["postgresql-x64-17"]
    assert svc["running"] and svc["process_owner"] == "NT SERVICE\\postgresql-x64-17"
    assert "S-1-5-20" not in after["dirs"][DATA]["acl"], "NetworkService, shared with WinRM and others, keeps no access"
    assert after["services"]["PrefectServer"]["running"] and after["services"]["PrefectWorker"]["running"]
    assert "Services that depend on PostgreSQL run again" in changed
    # The files inside lose the rules initcluster.vbs put on each and NetworkService's ownership, while it is stopped.
    assert after["pg_acl_resets"][-1] == ["D:\\PostgreSQL\\17\\data", "D:\\PostgreSQL\\17\\log"]
    assert changed.index("PostgreSQL service logs on as its account") < changed.index(
        "Files in the data and log directories inherit the directories' rules and are owned by Administrators") < \
        changed.index("PostgreSQL service runs and starts with Windows")
    assert _changed(copy.run(extra, playbook="postgresql.yml", limit=host)[1], host) == []


@pytest.mark.parametrize("converged", [AIO], indirect=True)
def test_a_custom_service_account_gets_its_password_through_the_service_manager(tmp_path, ansible_env, converged):
    host, sim, extra, *_ = converged
    state = sim.state
    state["accounts"]["svc_pg"] = {"sid": "S-1-5-21-1000-1077"}
    copy = Sim(tmp_path, ansible_env, state)
    more = dict(extra, postgresql_service_account=".\\svc_pg", postgresql_service_password="SvcPg-Secret-4e1a")
    proc, data = copy.run(more, playbook="postgresql.yml", limit=host)
    after = copy.state
    svc = after["services"]["postgresql-x64-17"]
    assert svc["running"] and svc["object_name"] == ".\\svc_pg" and svc["password_sha"] == _sha("SvcPg-Secret-4e1a")
    assert "S-1-5-21-1000-1077" in after["rights"]["SeServiceLogonRight"]
    assert after["dirs"][DATA]["acl"]["S-1-5-21-1000-1077"] == "Modify"
    assert "SvcPg-Secret-4e1a" not in proc.stdout + proc.stderr
    # Without its password it is refused before any host: BAD's postgresql_service_account case ".\\svc_pg".


@pytest.mark.parametrize("converged", [AIO], indirect=True)
def test_an_update_of_a_server_installed_with_a_custom_account_goes_through(tmp_path, ansible_env, converged):
    """0.1.0 installed with a custom account: the installer would take that account from its registration and validate
    the option file's service password (the one-time superuser password) and abort. The role points the registration
    at NetworkService first; the service then moves to its account again."""
    host, sim, extra, *_ = converged
    state = sim.state
    state["pg_installations"]["postgresql-x64-17"].update({"Version": "17.4-1", "Service Account": ".\\svc_pg"})
    state["accounts"]["svc_pg"] = {"sid": "S-1-5-21-1000-1077"}
    state["services"]["postgresql-x64-17"].update(object_name=".\\svc_pg", password_sha=_sha("SvcPg-Secret-4e1a"))
    copy = Sim(tmp_path, ansible_env, state)
    more = dict(extra, postgresql_service_account=".\\svc_pg", postgresql_service_password="SvcPg-Secret-4e1a")
    data = copy.run(more, playbook="postgresql.yml", limit=host)[1]
    after = copy.state
    assert after["pg_installations"]["postgresql-x64-17"]["Version"] == "17.6-1"
    assert after["pg_installations"]["postgresql-x64-17"]["Service Account"] == "NT AUTHORITY\\NetworkService"
    assert after["services"]["postgresql-x64-17"]["object_name"] == ".\\svc_pg" and after["services"]["postgresql-x64-17"]["running"]
    assert "PostgreSQL registration names the installer's service account for the update in place" in _changed(data, host)


@pytest.mark.parametrize("converged", [AIO], indirect=True)
def test_an_install_that_failed_after_initdb_keeps_the_one_time_password_for_the_next_run(tmp_path, ansible_env, converged):
    """The installer made the cluster (PG_VERSION) with the one-time password and failed later: the option file stays,
    the next run keeps it (installer_options.ps1 does not make a new one) and sets the real password with it."""
    host, sim, extra, *_ = converged
    state = _option_file_left(sim.state, "OneTimeLeft00001")
    # No registration and no service: the installer runs again (the role's check finds no release installed).
    state.pop("pg_installations")
    state["services"].pop("postgresql-x64-17")
    state["uninstall_keys"].pop("PostgreSQL 17", None)
    copy = Sim(tmp_path, ansible_env, state)
    data = copy.run(extra, playbook="postgresql.yml", limit=host)[1]
    kept = by_name(host_results(data, host))["Installer option file holds a one-time superuser password made on the host"]
    assert kept["result"] == {"kept": True}, kept
    after = copy.state
    assert after["pg"]["superuser_password_sha"] == _sha(SECRETS["vault_postgresql_superuser_password"])
    assert OPTIONS not in after["files"]
