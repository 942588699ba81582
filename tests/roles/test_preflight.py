"""The preflight (playbooks/preflight.yml): site.yml and every layer playbook check every targeted host's input on the
control node first. One wrongly typed or missing variable of one host stops the whole run there: no task of a later
play reaches any host, and the output names the host and the variable, one line per problem.

The runs use the real playbooks and roles with the simulated host's stand-ins (simhost.py) against a copy of
inventories/example whose Vault values are set. Every stand-in writes the simulated state file when it runs, so an
untouched file proves that no Windows module ran; a good-input run of the same setup changes it (control).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rolerun import REPO, run_cost
from toolchain import VENV_BIN
from simhost import INSTALLER, SECRETS, Sim, host_results, make_bundle, reached

pytestmark = pytest.mark.simulated

HOSTS = ["prefect-aio.corp.local", "prefect-srv01.corp.local", "prefect-wrk01.corp.local", "prefect-wrk02.corp.local"]
PREFLIGHT_PLAY = "Preflight of every targeted host's input, on the control node"
VERDICT = "Every targeted host's input is valid"
CA = REPO / "tests" / "fixtures" / "roles" / "enclave-ca.pem"


def _inventory(root: Path, bundle: Path, bad: dict[str, dict] | None = None) -> Path:
    """inventories/example with its Vault values and CA set (good for every host), plus each host's `bad` variables
    (host name -> variables) in its host_vars."""
    inventory = root / "inventory"
    shutil.copytree(REPO / "inventories" / "example", inventory)
    # The stand-in installer is not python.org's, so its digest replaces the catalogue's.
    vault = {**SECRETS, "prefect_api_ca_cert": str(CA), "prefect_bundle_dir": str(bundle),
             "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest(), "ansible_psrp_ca_cert": str(CA)}
    (inventory / "group_vars" / "all" / "vault.yml").write_text(yaml.safe_dump(vault))
    for host, variables in (bad or {}).items():
        path = inventory / "host_vars" / f"{host}.yml"
        host_vars = yaml.safe_load(path.read_text()) or {}
        path.write_text(yaml.safe_dump({**host_vars, **variables}))
    return inventory


def _run(sim: Sim, inventory: Path, playbook: str, args: list[str] | None = None, env: dict | None = None,
         local: bool = True) -> subprocess.CompletedProcess:
    """ansible-playbook on every host of the inventory (no --limit unless in args), as an operator runs it."""
    extra = ["-e", f"@{sim.root / 'local.json'}"] if local else []
    (sim.root / "local.json").write_text(json.dumps(sim.base))
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory),
            str(sim.collections / "ansible_collections/enclave/prefect/playbooks" / playbook), *extra, *(args or [])]
    with run_cost(playbook, "(inventory)", args):
        return subprocess.run(argv, env=env or sim.env, cwd=sim.root, capture_output=True, text=True, timeout=600,
                              check=False)


def _json(proc: subprocess.CompletedProcess) -> dict:
    start = proc.stdout.find("{")
    assert start >= 0, f"no json output, rc={proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout[start:])


@pytest.fixture
def sim(tmp_path, ansible_env):
    sim = Sim(tmp_path, ansible_env)
    sim.bundle = make_bundle(tmp_path)
    return sim


# Every host the preflight play targets: the four Prefect hosts and the database host, whose host_vars in the example
# name placeholder certificate files (its verdict is not checked here).
ALL_HOSTS = [*HOSTS, "prefect-db01.corp.local"]


def _stopped_in_preflight(sim: Sim, before: bytes, proc: subprocess.CompletedProcess, bad: dict[str, list[str]]) -> None:
    """The run stopped in the preflight: no later play, no task reached any host, no Windows module stand-in ran; each
    bad host's verdict names only itself, one line per problem, with the words `bad` lists; every other host's
    verdict is skipped (it had nothing wrong, and did not run on either)."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-6000:]
    data = _json(proc)
    plays = [p["play"]["name"] for p in data["plays"] if p["tasks"]]
    assert plays == [PREFLIGHT_PLAY], plays
    for name in ALL_HOSTS:
        assert reached(data, name) == [], (name, reached(data, name))
    assert sim.state_path.read_bytes() == before, "a Windows module stand-in ran"
    verdicts = {h: dict(host_results(data, h)).get(VERDICT, {}) for h in HOSTS}
    for host, words in bad.items():
        assert verdicts[host].get("failed"), verdicts[host]
        lines = verdicts[host]["msg"].splitlines()
        assert lines and all(line.startswith(f"{host}: ") for line in lines), lines
        for word in words:
            assert any(word in line for line in lines), (host, word, lines)
    for other in set(HOSTS) - set(bad):
        assert verdicts[other].get("skipped"), (other, verdicts[other])
    for secret in SECRETS.values():
        assert secret not in output


CASES = [
    # layer playbook, host, bad host variables, words the host's line must hold
    ("python.yml", "prefect-wrk02.corp.local", {"python_prepend_path": "sometimes"}, ["python_prepend_path", "bool"]),
    # prefect_venv.yml: test_placeholder_files_on_the_control_node_are_named_before_any_connection (three bad hosts).
    ("nssm_services.yml", "prefect-wrk01.corp.local", {"nssm_services_workers": [{"service": "W", "pool": "p", "queue": "x"}]},
     ["nssm_services_workers.queue", "queues"]),
]


@pytest.mark.parametrize("playbook, host, bad, words", CASES, ids=[f"{c[0]}-{next(iter(c[2]))}" for c in CASES])
def test_one_bad_host_stops_every_host_in_the_preflight(sim, playbook, host, bad, words):
    """Each layer playbook imports the preflight: one bad host stops every other host. site.yml with three bad hosts
    beside a good one: test_readable_on_a_control_node_without_the_repository_configuration."""
    inventory = _inventory(sim.root, sim.bundle, {host: bad})
    before = sim.state_path.read_bytes()
    # Even with only the verify stage asked for, the preflight runs.
    proc = _run(sim, inventory, playbook, args=["--tags", "verify"])
    _stopped_in_preflight(sim, before, proc, {host: words})


def test_good_input_of_every_host_passes_the_preflight(sim):
    """Control: the same inventory without the bad value passes every role's checks for all four hosts, then the
    layer reaches the hosts and the simulated state changes."""
    inventory = _inventory(sim.root, sim.bundle)
    proc = _run(sim, inventory, "python.yml", args=["--forks", "1"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    data = _json(proc)
    for name in HOSTS:
        assert dict(host_results(data, name))[VERDICT].get("skipped"), name
        assert reached(data, name), name
    assert sim.state["python"] == "3.12.10"


def test_limit_leaves_the_bad_host_out(sim):
    """--limit applies to the preflight: a bad host outside the limit does not stop the others."""
    inventory = _inventory(sim.root, sim.bundle, {"prefect-wrk01.corp.local": {"python_prepend_path": "sometimes"}})
    proc = _run(sim, inventory, "python.yml", args=["--limit", "all_in_one"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    data = _json(proc)
    assert reached(data, "prefect-aio.corp.local")
    assert not host_results(data, "prefect-wrk01.corp.local")


SITE_BAD = {
    # host: its bad variables, the start of its one line (after "<host>: ")
    "prefect-wrk01.corp.local": ({"nssm_services_rotate_bytes": "10MB"},
                                 "argument 'nssm_services_rotate_bytes' is of type str and we were unable to convert to int"),
    "prefect-aio.corp.local": ({"prefect_server_port": "http"},
                               "argument 'prefect_server_port' is of type str and we were unable to convert to int"),
    # A Vault variable missing for one host: a consistency check of the role, not an argument spec.
    "prefect-srv01.corp.local": ({"nssm_services_account_password": ""}, "Account svc_prefect needs a password"),
}


def test_readable_on_a_control_node_without_the_repository_configuration(sim):
    """The command of the issue, `ansible-playbook playbooks/site.yml -i inventories/example`, with the inventory's own
    connection settings (PSRP to hosts that do not exist) and no ansible.cfg, as on the installed control node: the
    run stops in the preflight, nothing tries to connect, and each problem is one line naming host and variable,
    without the argument spec dump of a failed role validation.

    Three hosts each with their own problem (a wrongly typed role variable, a wrongly typed collection-wide variable, a
    Vault variable missing for one host) stop every host in site.yml's preflight, the good prefect-wrk02 included:
    each bad host's verdict names only itself and its own problem, the good host's does not fail. (prefect-db01's
    certificate paths are the example's placeholders: its verdict names them, and it is not checked here.)"""
    inventory = _inventory(sim.root, sim.bundle, {host: variables for host, (variables, _line) in SITE_BAD.items()})
    env = {k: v for k, v in sim.env.items() if k not in ("ANSIBLE_CONFIG", "ANSIBLE_STDOUT_CALLBACK")}
    before = sim.state_path.read_bytes()
    proc = _run(sim, inventory, "site.yml", env=env, local=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-6000:]
    assert f"PLAY [{PREFLIGHT_PLAY}]" in output
    assert output.count("PLAY [") == 1, "a play after the preflight started"
    assert "UNREACHABLE" not in output and "psrp" not in output.lower(), output[-6000:]
    assert sim.state_path.read_bytes() == before, "a Windows module stand-in ran"
    # The verdict of each host: "fatal: [host]: FAILED! => <the result as JSON>" (ansible-core 2.19's default output and
    # 2.16's alike), after the verdict task's header.
    verdict_output = proc.stdout[proc.stdout.index(f"TASK [{VERDICT}]"):]
    verdicts = {}
    for line in verdict_output.splitlines():
        for host in HOSTS:
            if line.startswith(f"fatal: [{host}]: FAILED! => "):
                verdicts[host] = json.loads(line.split(" => ", 1)[1])
    assert set(verdicts) == set(SITE_BAD), sorted(verdicts)
    for host, (_variables, first) in SITE_BAD.items():
        wanted = f"{host}: {first}"
        lines = verdicts[host]["msg"].splitlines()
        assert lines and all(line.startswith(f"{host}: ") for line in lines), lines
        assert any(line.startswith(wanted) for line in lines), (wanted, lines)
        # ansible-core 2.19's default output: "Action failed: <msg>"; 2.16's (tests/static/test_core_versions.py): the
        # result as JSON, "fatal: [host]: FAILED! => {..., "msg": "<msg>"}".
        assert any("Action failed: " + wanted in line or ("FAILED! =>" in line and '"msg": "' + wanted in line)
                   for line in output.splitlines()), output[-6000:]
    # The good host: not failed, in the verdict nor anywhere (the recap counts its failures).
    recap = next(line for line in proc.stdout.splitlines() if line.startswith("prefect-wrk02.corp.local ") and " ok=" in line)
    assert " failed=0 " in recap, recap
    # What Ansible's own role validation would print: the whole spec of the role.
    assert "argument_spec_data" not in output and "Supported parameters include" not in output
    for secret in SECRETS.values():
        assert secret not in output


def test_placeholder_files_on_the_control_node_are_named_before_any_connection(sim):
    """The example's placeholder CA path (connection.yml) and a bundle directory that does not exist (on the all-in-one
    host), a bundle directory without SHA256SUMS (on the server host): the preflight names each variable and path,
    with the inventory's psrp connection, before any connection is tried. The venv layer's playbook (prefect_venv.yml)
    with a third bad host, a wrongly typed variable of its role (prefect-wrk01): all three stop every host, the good
    prefect-wrk02 included."""
    # The venv layer reads the lock's and the wheelhouse's digests from SHA256SUMS: a bundle directory without it.
    (sim.root / "empty-bundle").mkdir()
    inventory = _inventory(sim.root, sim.bundle, {
        "prefect-aio.corp.local": {"ansible_psrp_ca_cert": "/CHANGE-ME/enclave-ca.pem", "prefect_bundle_dir": "/nonexistent/bundle"},
        "prefect-srv01.corp.local": {"prefect_bundle_dir": str(sim.root / "empty-bundle")},
        "prefect-wrk01.corp.local": {"prefect_venv_keep": "all"}})
    env = {k: v for k, v in sim.env.items() if k not in ("ANSIBLE_CONFIG",)}
    before = sim.state_path.read_bytes()
    proc = _run(sim, inventory, "prefect_venv.yml", env=env, local=False)
    output = proc.stdout + proc.stderr
    _stopped_in_preflight(sim, before, proc, {
        "prefect-aio.corp.local": ["ansible_psrp_ca_cert", "prefect_bundle_dir"],
        "prefect-srv01.corp.local": ["prefect_bundle_checksums_file"],
        "prefect-wrk01.corp.local": ["prefect_venv_keep", "int"]})
    data = _json(proc)
    lines = dict(host_results(data, "prefect-aio.corp.local"))[VERDICT]["msg"].splitlines()
    assert any(line.startswith("prefect-aio.corp.local: ansible_psrp_ca_cert is not a file on the control node: "
                               "/CHANGE-ME/enclave-ca.pem (README.md, \"Before the first run") for line in lines), lines
    assert any(line.startswith("prefect-aio.corp.local: prefect_bundle_dir /nonexistent/bundle is not a directory")
               for line in lines), lines
    lines = dict(host_results(data, "prefect-srv01.corp.local"))[VERDICT]["msg"].splitlines()
    assert any(line.startswith(f"prefect-srv01.corp.local: prefect_bundle_checksums_file {sim.root / 'empty-bundle'}/SHA256SUMS"
                               " is not a file") for line in lines), lines
    assert "UNREACHABLE" not in output


def test_the_two_host_example_passes_the_preflight_of_every_role(sim):
    """inventories/two-hosts (a server with its PostgreSQL and the front door, and a worker host; the example's
    group_vars files by links), with the Vault values set: every role of site.yml accepts both hosts' input, and
    nothing reaches a host."""
    root = sim.root / "two-hosts-copy"
    shutil.copytree(REPO / "inventories", root, symlinks=True)
    assert (root / "two-hosts" / "group_vars" / "all" / "prefect.yml").is_symlink()
    vault = {**SECRETS, "prefect_api_ca_cert": str(CA), "prefect_bundle_dir": str(sim.bundle),
             "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest(), "ansible_psrp_ca_cert": str(CA)}
    (root / "two-hosts" / "group_vars" / "all" / "vault.yml").write_text(yaml.safe_dump(vault))
    before = sim.state_path.read_bytes()
    roles = ["python", "prefect_venv", "postgresql", "nssm_services", "backup", "iis_proxy", "firewall"]
    proc = _run(sim, root / "two-hosts" / "hosts.yml", "preflight.yml", args=["-e", json.dumps({"preflight_roles": roles})])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    data = _json(proc)
    for name in ("prefect-srv02.corp.local", "prefect-wrk03.corp.local"):
        assert dict(host_results(data, name))[VERDICT].get("skipped"), name
    assert sim.state_path.read_bytes() == before


HA_HOSTS = ["prefect-api01.corp.local", "prefect-api02.corp.local", "prefect-svc01.corp.local", "prefect-db02.corp.local",
            "prefect-db03.corp.local", "prefect-wrk04.corp.local"]


def _ha_preflight(sim, name, host_vars: dict[str, dict] | None = None, redis=None):
    root = sim.root / name
    shutil.copytree(REPO / "inventories", root, symlinks=True)
    from test_postgresql import _pem
    vault = {**SECRETS, "vault_prefect_redis_password": "Redis-Secret-9d2e", "prefect_api_ca_cert": str(CA),
             "vault_postgresql_replication_password": "Repl-Secret-4b1c",
             "prefect_bundle_dir": str(sim.bundle), "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest(),
             "ansible_psrp_ca_cert": str(CA), "vault_prefect_database_url": ""}
    (root / "ha" / "group_vars" / "all" / "vault.yml").write_text(yaml.safe_dump(vault))
    # Each case's change in its host's host_vars (real files, not links to the repository's).
    for host, variables in (host_vars or {}).items():
        path = root / "ha" / "host_vars" / f"{host}.yml"
        assert not path.is_symlink(), path
        path.write_text(yaml.safe_dump({**(yaml.safe_load(path.read_text()) or {}), **variables}))
    roles = ["python", "prefect_venv", "postgresql", "nssm_services", "backup", "iis_proxy", "firewall"]
    # Extra variables: the example's certificate placeholders of the database host (host_vars) as real files; the
    # enclave's Redis a real redis-server on loopback (the control node asks it; redis.corp.local would leave the machine).
    extra = {"preflight_roles": roles, **_pem(root)}
    if redis is not None:
        extra.update(prefect_redis_host="127.0.0.1", prefect_redis_port=redis.port)
    return _run(sim, root / "ha" / "hosts.yml", "preflight.yml", args=["-e", json.dumps(extra)])


@pytest.fixture
def ha_redis(tmp_path):
    """Debian's redis-server on 127.0.0.1 with the HA example's Vault password (tests/integration/ha.py), for the
    preflight's question from the control node (plugins/action/redis_info.py)."""
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    from ha import RedisServer
    from servers import Unavailable
    server = RedisServer(tmp_path / "redis", password="Redis-Secret-9d2e")
    try:
        server.start()
    except Unavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


def test_the_ha_example_passes_the_preflight_and_its_refusals_name_the_problem(sim, ha_redis):
    """inventories/ha (two API replicas each with its proxy, a background-services host, PostgreSQL and its standby, a
    worker host, a Redis): with the Vault values set every role accepts every host; without Redis, with SQLite, with a
    list of Redis hosts, with a backend set back to memory, or with a replication password that is no Vault secret, the
    preflight stops before any host, naming it. The refusals run
    once, each on a host of its own where it can (the API replicas and the background-services host are the hosts these
    checks apply to: one replica carries two), and each host's lines name its own problem."""
    before = sim.state_path.read_bytes()
    proc = _ha_preflight(sim, "ha-ok", redis=ha_redis)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    data = _json(proc)
    for name in HA_HOSTS:
        assert dict(host_results(data, name))[VERDICT].get("skipped"), name
    # The control node asked the real Redis once, from the first server host, and found it usable.
    asked = {h: {n.split(" : ", 1)[-1]: r for n, r in host_results(data, h)} for h in HA_HOSTS}
    ran = [h for h in HA_HOSTS if not asked[h].get("Redis is one prefect-redis can use", {"skipped": True}).get("skipped")]
    assert ran == ["prefect-api01.corp.local"], ran
    assert "Redis-Secret-9d2e" not in proc.stdout + proc.stderr
    cases = [
        ("no-redis", "prefect-api02.corp.local", {"prefect_redis_host": ""}, "prefect_ha: several Prefect processes"),
        # Asked from the control node (once, on the first server host): a Redis that refuses the password.
        ("redis-password", "prefect-api01.corp.local",
         {"prefect_redis_host": "127.0.0.1", "prefect_redis_port": ha_redis.port, "prefect_redis_password": "not-it"},
         "asked from the control node: Redis answered: WRONGPASS invalid username-password pair"),
        ("sqlite", "prefect-api02.corp.local", {"prefect_database_host": ""}, "need one PostgreSQL database"),
        ("redis-list", "prefect-svc01.corp.local", {"prefect_redis_host": "redis1.corp.local,redis2.corp.local"},
         "prefect_redis_host must be one host"),
        ("memory", "prefect-api02.corp.local",
         {"nssm_services_server_env": {"PREFECT_SERVER_EVENTS_MESSAGING_BROKER": "prefect.server.utilities.messaging.memory"}},
         "must not set PREFECT_SERVER_EVENTS_MESSAGING_BROKER"),
        # The standby of the pair: a replication password that is no Vault secret (too short).
        ("replication-password", "prefect-db03.corp.local", {"postgresql_replication_password": "short"},
         "is in the primary/standby pair prefect-db02.corp.local and prefect-db03.corp.local")]
    host_vars: dict[str, dict] = {}
    for _case, host, variables, _message in cases:
        host_vars.setdefault(host, {}).update(variables)
    proc = _ha_preflight(sim, "ha-refused", host_vars)
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-6000:]
    data = _json(proc)
    plays = [p["play"]["name"] for p in data["plays"] if p["tasks"]]
    assert plays == [PREFLIGHT_PLAY], plays
    for case, host, _variables, message in cases:
        lines = dict(host_results(data, host))[VERDICT]["msg"].splitlines()
        assert any(line.startswith(f"{host}: ") and message in line for line in lines), (case, lines)
    assert "Redis-Secret-9d2e" not in proc.stdout + proc.stderr
    assert "Repl-Secret-4b1c" not in proc.stdout + proc.stderr
    assert sim.state_path.read_bytes() == before


def test_a_play_of_your_own_after_the_preflight_checks_the_role_again(sim):
    """The layer plays of this collection skip the input checks their preflight ran (preflight_covers_play); a play of
    your own that applies a role after that preflight, with its own variables, checks them: a wrong python_version of
    the play is refused before any host is touched."""
    inventory = _inventory(sim.root, sim.bundle)
    mine = sim.root / "mine.yml"
    mine.write_text(yaml.safe_dump([
        {"ansible.builtin.import_playbook": "enclave.prefect.preflight", "vars": {"preflight_roles": ["python"]}},
        {"name": "A play of my own", "hosts": "prefect-aio.corp.local", "gather_facts": False,
         "vars": {"python_version": "3.11.9"}, "roles": [{"role": "enclave.prefect.python"}]}]))
    (sim.root / "local.json").write_text(json.dumps(sim.base))
    before = sim.state_path.read_bytes()
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory / "hosts.yml"), str(mine), "--limit", "prefect-aio.corp.local",
            "-e", f"@{sim.root / 'local.json'}"]
    with run_cost("mine.yml", "prefect-aio.corp.local", []):
        proc = subprocess.run(argv, env=sim.env, cwd=sim.root, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-6000:]
    data = _json(proc)
    verdict = dict(host_results(data, "prefect-aio.corp.local"))[VERDICT]
    assert verdict.get("skipped"), verdict
    failed = [(n, r) for n, r in host_results(data, "prefect-aio.corp.local") if r.get("failed")]
    assert [n.split(" : ", 1)[-1] for n, _r in failed] == ["Requested Python matches the minor version the venvs are built for"]
    assert "python_version 3.11.9 is not a 3.12.x release" in failed[0][1]["msg"]
    assert reached(data, "prefect-aio.corp.local") == [] and sim.state_path.read_bytes() == before
