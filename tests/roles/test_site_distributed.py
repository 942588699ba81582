"""The real site.yml on the example inventory's distributed topology, `--limit distributed`: prefect-srv01 (server and
proxy, its database on prefect-db01), prefect-wrk01 and prefect-wrk02 (workers), prefect-db01 (PostgreSQL and the
backups). A first run succeeds on all four hosts, the re-run is a no-op on each at the counts below, and no Vault value
appears in any output.

Each inventory host is a simulated host of its own (one state file each, simhost.py's stand-ins): the modules of a host
run under an interpreter wrapper that points ENCLAVE_SIM_STATE at that host's file, so a local account, a service or a
file made on one host is not seen on another, and hosts run in parallel as Ansible's forks do. The shared state file
of Sim stays untouched (checked). Counted, not measured on Windows: documented in docs/roles.md ("No-op re-run").
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rolerun import REPO
from simhost import INSTALLER, PROXY_CERT_THUMBPRINT, SECRETS, Sim, default_state, make_bundle, module_runs, reached
from test_noop_rerun import forbidden_on_rerun, per_role
from test_postgresql import _pem

pytestmark = pytest.mark.simulated

SRV, WRK1, WRK2, DB = (f"prefect-{name}.corp.local" for name in ("srv01", "wrk01", "wrk02", "db01"))
HOSTS = [SRV, WRK1, WRK2, DB]
# Each host's address as the others see it (the example inventory's prefect_host_address): sim_verify.py's network
# connects a worker host's https calls to the proxy only when IIS listens there and its firewall admits that address.
ADDRESSES = {SRV: "10.20.1.20", WRK1: "10.20.1.21", WRK2: "10.20.1.22", DB: "10.20.1.30"}
CA = REPO / "tests" / "fixtures" / "roles" / "enclave-ca.pem"
# Documented in docs/roles.md ("No-op re-run"); update both together. Per host: {role: (tasks, module runs)}.
EXPECTED_PER_HOST = {
    # Server and proxy without a worker or a database (28 tasks, 34 module runs): one account, one service, the enclave CA
    # for PostgreSQL's TLS (a checksum query), no workers to see online; the workers' site for the two worker hosts; no
    # backup (the dumps are taken on prefect-db01); two allow rules (the UI, the workers' machine path).
    SRV: {"python": (1, 2), "prefect_venv": (1, 1), "nssm_services": (12, 15), "iis_proxy": (15, 20), "firewall": (3, 4)},
    # Worker hosts (15 and 19 each): one account, one worker service, the enclave CA (a checksum query), the worker online
    # through the proxy; no health or pool call (the server host's), no allow rule (they serve nothing).
    WRK1: {"python": (1, 2), "prefect_venv": (1, 1), "nssm_services": (11, 14), "firewall": (2, 2)},
    WRK2: {"python": (1, 2), "prefect_venv": (1, 1), "nssm_services": (11, 14), "firewall": (2, 2)},
    # PostgreSQL with its TLS files (two checksum queries), pg_dump backups with their own account (20 and 23).
    DB: {"postgresql": (10, 10), "backup": (7, 10), "firewall": (3, 3)},
}
# win_copy tasks of a converged host that only query checksums (see test_noop_rerun.CHECKSUM_QUERIES), beyond those of
# the all-in-one host: prefect-db01's TLS files, and the enclave CA on the hosts whose workers call the proxy over https.
MORE_QUERIES = {"Server certificate is in the data directory", "Server private key is in the data directory",
                "Enclave CA for the services' https API calls is on the host"}
# The Vault values' password parts (the JSON output escapes the rest); the worker API credential is checked apart.
FRAGMENTS = ("Svc-Secret-4c1d", "Wrk-Secret-6e21", "Db-Secret-0a7f", "PgDb-Secret-3e9a", "PgSu-Secret-71c4",
             "Bkp-Secret-2d8e", "PgBkp-Secret-9c05")
WORKER_API_SECRET = "WrkApi-Secret-5b3c"


class Hosts(Sim):
    """Sim with one state file per inventory host: <root>/hosts/<host>/state.json, chosen by the interpreter the host's
    modules run under (ansible_python_interpreter is templated per host)."""

    def __init__(self, root: Path, ansible_env: dict, hosts: dict[str, dict]):
        super().__init__(root, ansible_env)
        for host, state in hosts.items():
            home = root / "hosts" / host
            home.mkdir(parents=True)
            (home / "state.json").write_text(json.dumps(state))
            wrapper = home / "python"
            wrapper.write_text(f'#!/bin/sh\nENCLAVE_SIM_STATE="{home / "state.json"}" exec "{REPO / ".venv/bin/python"}" "$@"\n')
            wrapper.chmod(0o755)
        self.base["ansible_python_interpreter"] = str(root / "hosts") + "/{{ inventory_hostname }}/python"

    def host_state(self, host: str) -> dict:
        return json.loads((self.root / "hosts" / host / "state.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ansible_env):
    root = tmp_path_factory.mktemp("distributed")
    states = {host: {**default_state(host.split(".")[0].upper()), "address": ADDRESSES[host]} for host in HOSTS}
    sim = Hosts(root, ansible_env, states)
    shared = sim.state_path.read_text()
    # The example inventory's CA path, proxy thumbprint and database certificate are placeholders: real values here.
    # The server's database URL composed for prefect-db01 (?ssl=verify-full, the enclave CA in PGSSLROOTCERT), not the
    # Vault override.
    extra = {"prefect_bundle_dir": str(make_bundle(root)), **SECRETS, "vault_prefect_database_url": "",
             "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest(),
             "iis_proxy_certificate_thumbprint": PROXY_CERT_THUMBPRINT, "prefect_api_ca_cert": str(CA), **_pem(root)}
    first = sim.run(extra, limit="distributed")
    states = {host: sim.host_state(host) for host in HOSTS}
    second = sim.run(extra, limit="distributed")
    return {"sim": sim, "first": first, "states": states, "second": second, "shared": shared}


def test_each_host_is_its_own_simulated_host(runs):
    """Every module ran against its own host's file: the shared one is untouched and the hosts differ."""
    assert runs["sim"].state_path.read_text() == runs["shared"]
    for host in HOSTS:
        assert reached(runs["first"][1], host), host
        assert runs["states"][host]["clock"] > 0, host


def test_first_run_deploys_every_layer_on_its_hosts(runs):
    states = runs["states"]
    srv, db = states[SRV], states[DB]
    # The server host: the server service, no worker, no database; the front door with both sites.
    assert set(srv["services"]) == {"PrefectServer"}
    assert "pg" not in srv and "tasks" not in srv
    assert set(srv["iis"]["sites"]) == {"Prefect", "Prefect-Workers"}
    ip = srv["iis"]["apphost"]["Prefect-Workers|system.webServer/security/ipSecurity"]
    assert ip["collection:"] == [f"ipAddress={a};subnetMask=255.255.255.255;allowed=true" for a in ("10.20.1.21", "10.20.1.22")]
    # The server's database URL is composed for prefect-db01, over TLS checked against the enclave CA.
    environment = srv["services"]["PrefectServer"]["environment"]
    url = environment["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://prefect:") and url.endswith("@prefect-db01.corp.local:5432/prefect?ssl=verify-full"), "url"
    assert environment["PGSSLROOTCERT"].lower().endswith(".pem"), environment.get("PGSSLROOTCERT")
    # The worker hosts: their worker, no server, no IIS.
    for host in (WRK1, WRK2):
        assert set(states[host]["services"]) == {"PrefectWorker-etl"}, host
        assert not states[host].get("iis", {}).get("sites"), host
    # The database host: PostgreSQL, the backup task as its own account, no Prefect service.
    assert db["pg"]["databases"]["prefect"]["owner"] == "prefect"
    assert db["tasks"]["\\enclave.prefect\\prefectdatabasebackup"]["principal"]["sid"] == db["accounts"]["svc_prefect_backup"]["sid"]
    assert set(db["services"]) == {"postgresql-x64-17"}, db["services"]


def test_rerun_is_a_noop_on_every_host(runs):
    data = runs["second"][1]
    report = []
    for host in HOSTS:
        hits = reached(data, host)
        assert not [n for n, r in hits if r.get("changed")], (host, [n for n, r in hits if r.get("changed")])
        allowed = [(n, r) for n, r in hits if not (n.split(" : ", 1)[-1] in MORE_QUERIES and not r.get("changed"))]
        assert not forbidden_on_rerun(allowed), (host, forbidden_on_rerun(allowed))
        report.append(f"{host}: tasks {len(hits)}, module runs {module_runs(hits)}, per role {per_role(hits)}")
    print("\n".join(report))
    for host in HOSTS:
        assert per_role(reached(data, host)) == EXPECTED_PER_HOST[host], "\n".join(report)


def test_no_secret_in_any_output(runs):
    fragments = (*FRAGMENTS, WORKER_API_SECRET)
    assert all(any(f in value for f in fragments) for value in SECRETS.values()), "a secret of SECRETS is not looked for"
    for proc, _data in (runs["first"], runs["second"]):
        for secret in FRAGMENTS:
            assert secret not in proc.stdout + proc.stderr, f"{secret} leaked"


def test_worker_api_credential_in_no_output(runs):
    """A remote worker host's API credential (IIS Basic authentication at the proxy): the json callback prints each loop
    item in full, so the online check's items name the variable to send (nssm_services_workers_online), never its value."""
    for proc, _data in (runs["first"], runs["second"]):
        assert WORKER_API_SECRET not in proc.stdout + proc.stderr, "the worker API credential leaked"
