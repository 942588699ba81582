"""The Prefect server exactly as the roles configure it, on 127.0.0.1.

`server_plan()` asks Ansible for the nssm_services plan of the example inventory's all-in-one host (the role's own
defaults, vars and filter, through `include_role`), so the tests run the environment the role writes into the
service's registry key, not a copy typed here. Only what cannot exist on this machine is replaced: the Windows
paths (PREFECT_HOME, the UI's static directory) become temporary directories, port 4200 a free one, and the
PostgreSQL database of the plan SQLite.
"""
from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from servers import PROXY_VARS, REPO, PrefectServer, clean_env, free_port, prefect_bin, seed_sqlite_home

EXAMPLE_INVENTORY = REPO / "inventories" / "example" / "hosts.yml"
ALL_IN_ONE = "prefect-aio.corp.local"
# Values of the plan that name Windows places or the production port: replaced here, everything else is kept.
HOST_SPECIFIC = {"PREFECT_HOME", "PREFECT_UI_STATIC_DIRECTORY", "PREFECT_SERVER_API_PORT", "PREFECT_API_URL"}
# The database the plan names (PostgreSQL on the all-in-one host) does not exist here: SQLite under PREFECT_HOME
# instead. Nothing of the header contract or the UI depends on the database engine.
DATABASE = {"PREFECT_SERVER_DATABASE_CONNECTION_URL", "PGSSLROOTCERT"}
# Placeholders for the example inventory's Vault values (its vault.yml.example keys); none reaches the server.
VAULT = {"vault_prefect_service_password": "Plan-Svc-2b1e", "vault_prefect_worker_password": "Plan-Wrk-77c0",
         "vault_prefect_worker_api_auth_string": "prefect_machine:Plan-Api-4d9a",
         "vault_prefect_database_password": "Plan-Db-0c3e"}


def server_plan(tmp: Path, host: str = ALL_IN_ONE, extra_vars: dict | None = None, kind: str = "server",
                inventory: Path = EXAMPLE_INVENTORY) -> dict:
    """The first `kind` service (server, worker, services) of nssm_services_plan for `host` of `inventory` (default the
    example inventory; inventories/ha for an HA deployment), validated by the role."""
    play = [{"name": "nssm_services plan", "hosts": host, "gather_facts": False, "connection": "local",
             "vars": {"ansible_connection": "local"},
             "tasks": [{"name": "Role input is valid", "ansible.builtin.include_role": {
                            "name": "enclave.prefect.nssm_services", "tasks_from": "validate", "public": True}},
                       {"name": "Server service", "ansible.builtin.debug": {
                            "var": f"nssm_services_plan.services | selectattr('kind', 'equalto', '{kind}') | list"}}]}]
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "plan.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    (tmp / "vault.json").write_text(json.dumps({**VAULT, **(extra_vars or {})}))
    env = {k: v for k, v in clean_env().items() if not k.startswith("PREFECT_") and k.lower() not in PROXY_VARS}
    env.update(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="0")
    proc = subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inventory), str(tmp / "plan.yml"),
                           "-e", f"@{tmp / 'vault.json'}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    data = json.loads(proc.stdout[proc.stdout.find("{"):]) if "{" in proc.stdout else {}
    results = {t["task"]["name"]: t["hosts"].get(host, {}) for p in data.get("plays", []) for t in p["tasks"]}
    found = results.get("Server service", {}).get(f"nssm_services_plan.services | selectattr('kind', 'equalto', '{kind}') | list")
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"no {kind} plan for {host} (rc={proc.returncode}):\n"
                           f"{json.dumps(results, indent=1)[-3000:]}\n{proc.stderr[-2000:]}")
    return found[0]


@dataclass
class RolesServer(PrefectServer):
    """`python -P -m prefect server start ...` with the plan's parameters and environment (UI on, as the role has it).

    extra_env: variables added on top of the plan (the lock-out control sets PREFECT_SERVER_API_AUTH_STRING).
    """

    plan: dict = field(default_factory=dict)

    @property
    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in self.plan["environment"].items() if k not in DATABASE}
        env.update(PREFECT_HOME=str(self.root / "home"), PREFECT_UI_STATIC_DIRECTORY=str(self.root / "ui"),
                   PREFECT_SERVER_API_PORT=str(self.port), PREFECT_API_URL=self.api_url)
        env.update(self.extra_env)
        return env

    def start(self) -> "RolesServer":
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        # api() fetches a CSRF token for state-changing calls when the plan turns the protection on.
        self.csrf = self.environment.get("PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED") == "true"
        self.auth_string = self.extra_env.get("PREFECT_SERVER_API_AUTH_STRING") or None
        args = shlex.split(self.plan["parameters"])
        # The role's AppParameters with this machine's interpreter and port: "-P -m prefect server start --port 4200".
        port_at = args.index("--port") + 1
        args[port_at] = str(self.port)
        argv = [str(Path(prefect_bin("python"))), *args]
        if self.seeded and not any(k.startswith("PREFECT_SERVER_DATABASE") for k in self.environment):
            seed_sqlite_home(Path(self.environment["PREFECT_HOME"]))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=clean_env(**self.environment), cwd=self.root, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready()
        return self
