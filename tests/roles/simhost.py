"""A simulated Windows host for the real playbooks and roles, run on the control node.

Every Windows module the roles call (and the Prefect API plugins) is replaced by a stand-in that keeps the
host in a JSON file (`ENCLAVE_SIM_STATE`). The stand-ins behave as the real programs do, as read in their
sources, not as an ideal key/value store; the body of every stand-in is `sim_module.py`, whose comments name
the source of each behaviour (NSSM's settings.cpp/registry.cpp/service.cpp at 897c7ad, ansible.windows 3.3.0).
"""
from __future__ import annotations

import hashlib
import json
import py_compile
import subprocess
from pathlib import Path

import yaml

from rolerun import CONTROLLER_ACTIONS, PINNED_PREFECT, REPO, run_cost
from toolchain import VENV, VENV_BIN

HOST = "prefect-aio.corp.local"
BODY = (Path(__file__).parent / "sim_module.py").read_text()
# Stand-ins of other areas, one file each (sim_<area>.py). The first line names the modules it stands in for:
# "# modules: microsoft.iis.website ansible.windows.win_feature ..."; the text defines functions and registers them
# in STANDINS / SCRIPTS, which sim_module.py calls.
PARTS = sorted(p for p in Path(__file__).parent.glob("sim_*.py") if p.name != "sim_module.py")

WINDOWS_MODULES = {
    ("ansible", "windows"): ["win_reg_stat", "win_stat", "win_powershell", "win_service", "win_service_info", "win_user",
                             "win_user_right", "win_acl", "win_acl_inheritance", "win_file", "win_copy", "win_get_url", "win_package"],
    ("community", "windows"): ["win_unzip"],
    ("enclave", "prefect"): ["server_health", "work_pool"],
}
# Action plugins of this collection that the roles call and that run on the control node only.
ROLE_ACTIONS = ["role_input", "redis_info"]
# Tasks that must not reach the host on a re-run (transfers, installs, builds, restarts).
FORBIDDEN_ON_RERUN = ["win_copy", "win_get_url", "win_package", "win_unzip"]

# The committed lock: prefect_venv checks that the bundle carries it.
LOCK = (REPO / "requirements" / "windows" / "prefect-py312.lock").read_bytes()
WHEELHOUSE = b"not a real wheelhouse"
NSSM_ZIP = b"not a real nssm zip"
INSTALLER = b"not a real python installer"
# What Get-AuthenticodeSignature reports for the stand-in installer's content (authenticode_signature.ps1): the
# python.org installer is signed by the Python Software Foundation and the host trusts its root.
INSTALLER_SIGNATURE = {"status": "Valid", "status_message": "Signature verified.", "signer": "Python Software Foundation",
                       "subject": "CN=Python Software Foundation, O=Python Software Foundation, L=Beaverton, S=Oregon, C=US",
                       "thumbprint": "0" * 40}
# The EDB installer of the catalogue entry postgresql-17 (sim_postgresql.py stands in for it), signed by EnterpriseDB.
PG_INSTALLER_NAME = "postgresql-17.6-1-windows-x64.exe"
PG_INSTALLER = b"not a real EDB installer"
PG_INSTALLER_SIGNATURE = {"status": "Valid", "status_message": "Signature verified.", "signer": "EnterpriseDB Corporation",
                          "subject": "CN=EnterpriseDB Corporation, O=EnterpriseDB Corporation, L=Bedford, S=Massachusetts, C=US",
                          "thumbprint": "1" * 40}
# The IIS extensions of the catalogue entries url-rewrite and arr (sim_iis.py stands in for msiexec and IIS), signed by
# Microsoft; the ProductCode win_package reads from each MSI (the stand-ins' own, not Microsoft's GUIDs).
REWRITE_MSI_NAME, ARR_MSI_NAME = "rewrite_amd64_en-US.msi", "requestRouter_amd64.msi"
REWRITE_MSI, ARR_MSI = b"not the real rewrite msi", b"not the real arr msi"
MS_SIGNATURE = {"status": "Valid", "status_message": "Signature verified.", "signer": "Microsoft Corporation",
                "subject": "CN=Microsoft Corporation, O=Microsoft Corporation, L=Redmond, S=Washington, C=US",
                "thumbprint": "2" * 40}
MSI_PRODUCTS = {hashlib.sha256(REWRITE_MSI).hexdigest(): {"code": "{0B5C8F1E-5A9D-4C41-9E6B-2F6D1A7C0001}", "name": "URL Rewrite"},
                hashlib.sha256(ARR_MSI).hexdigest(): {"code": "{0B5C8F1E-5A9D-4C41-9E6B-2F6D1A7C0002}",
                                                      "name": "Application Request Routing"}}
# The proxy's certificate for prefect_public_host, already in Cert:\LocalMachine\My of a simulated proxy host; the tests
# pass its thumbprint as iis_proxy_certificate_thumbprint (the example inventory's value is a placeholder).
PROXY_CERT_THUMBPRINT = "5E0C1D7A9B3F4E2D8C6A1B0F9E8D7C6B5A4F3E2D"

# Vault values of the example inventory; they must never show up in any output.
SECRETS = {
    "vault_prefect_service_password": "Svc-Secret-4c1d",
    "vault_prefect_worker_password": "Wrk-Secret-6e21",
    "vault_prefect_worker_api_auth_string": "prefect_machine:WrkApi-Secret-5b3c",
    # An override of the composed URL on loopback (plugins/filter/database_url.py refuses a remote host without TLS).
    "vault_prefect_database_url": "postgresql+asyncpg://prefect:Db-Secret-0a7f@127.0.0.1:5432/prefect",
    # PostgreSQL on the prefect_database hosts (roles/postgresql): the Prefect role's and the superuser's passwords.
    "vault_prefect_database_password": "PgDb-Secret-3e9a@:/%#",
    "vault_postgresql_superuser_password": "PgSu-Secret-71c4",
    # Backups on the prefect_database hosts (roles/backup): the task account's and the pg_dump login's passwords.
    "vault_backup_account_password": "Bkp-Secret-2d8e",
    "vault_backup_database_password": "PgBkp-Secret-9c05",
}


def part_modules() -> dict[tuple[str, str], list[str]]:
    """WINDOWS_MODULES with the modules the sim_<area>.py parts stand in for."""
    modules = {key: list(names) for key, names in WINDOWS_MODULES.items()}
    for part in PARTS:
        first = part.read_text().splitlines()[0]
        assert first.startswith("# modules:"), f"{part.name}: the first line must be '# modules: <fqcn> ...'"
        for fqcn in first.split(":", 1)[1].split():
            namespace, name, module = fqcn.split(".")
            modules.setdefault((namespace, name), []).append(module)
    return modules


# Modules most stand-in calls never use (ipaddress, uuid) are imported at their first use: each stand-in call is a
# process of its own, and those imports were a third of its start (python -X importtime).
LAZY_PRELUDE = ("class _SimLazy:\n    def __init__(self, name):\n        self._sim_name = name\n"
                "    def __getattr__(self, attr):\n        import importlib\n"
                "        return getattr(importlib.import_module(self._sim_name), attr)\n")


def build_sim(root: Path, pipelined: bool = True) -> Path:
    """A collections path whose ansible.windows, community.windows and enclave.prefect hold the stand-ins;
    enclave.prefect carries the real roles, playbooks and filter plugins. pipelined=False writes the stand-ins as
    modules that read their arguments from a file (a temporary directory per call; benchmarks/test_run_speedups.py)."""
    collections = root / "collections" / "ansible_collections"
    # The stand-ins' text lives once, as an importable module, so that Python compiles it once per host (its .pyc)
    # instead of at every module call; each module file names itself and imports it.
    body_dir = root / "simbody"
    body_dir.mkdir(parents=True)
    parts = "".join(p.read_text() + "\n" for p in PARTS)
    # The module's arguments come in its text (ansible's JSON-arguments module style, as the stub below is written), so
    # that the module runs pipelined: one process per call, no temporary directory, argument file or chmod on the host.
    (body_dir / "enclave_sim_body.py").write_text(
        "import json as _sim_json\nimport sys as _sim_sys\nNAME = _sim_sys.modules['__main__'].NAME\n"
        f"{LAZY_PRELUDE}def _sim_args():\n    main = _sim_sys.modules['__main__']\n"
        "    return _sim_json.loads(main.ARGS) if hasattr(main, 'ARGS') else _sim_json.load(open(_sim_sys.argv[1]))\n"
        f"STANDINS, SCRIPTS = {{}}, {{}}\n{parts}{BODY}")
    # Written here: with PYTHONDONTWRITEBYTECODE set, no module call would write it.
    py_compile.compile(str(body_dir / "enclave_sim_body.py"), doraise=True)
    for (namespace, name), modules in part_modules().items():
        base = collections / namespace / name
        (base / "plugins" / "modules").mkdir(parents=True)
        (base / "meta").mkdir()
        (base / "meta" / "runtime.yml").write_text('requires_ansible: ">=2.19.0"\n')
        for module in modules:
            arguments = ('# <<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>\nARGS = "<<INCLUDE_ANSIBLE_MODULE_COMPLEX_ARGS>>"\n'
                         if pipelined else "# WANT_JSON\n")
            (base / "plugins" / "modules" / f"{module}.py").write_text(
                f"#!/usr/bin/python\n{arguments}NAME = {module!r}\n"
                f"import sys\nsys.path.insert(0, {str(body_dir)!r})\nimport enclave_sim_body  # noqa: E402,F401\n")
    # win_template is the real action plugin (ansible.windows plugins/action/win_template.py): it renders on the control
    # node and runs the win_copy action, here the plain module call of the win_template stand-in (sim_postgresql.py).
    action = collections / "ansible" / "windows" / "plugins" / "action"
    action.mkdir(exist_ok=True)
    (action / "win_template.py").symlink_to(next(VENV.glob(
        "lib/python*/site-packages/ansible_collections/ansible/windows/plugins/action/win_template.py")))
    (action / "win_copy.py").write_text("from ansible.plugins.action.normal import ActionModule  # noqa: F401\n")
    prefect = collections / "enclave" / "prefect"
    (prefect / "roles").symlink_to(REPO / "roles")
    (prefect / "playbooks").symlink_to(REPO / "playbooks")
    (prefect / "plugins" / "filter").symlink_to(REPO / "plugins" / "filter")
    # The real controller-side action plugins of the roles (the API plugins' stand-ins are modules above).
    (prefect / "plugins" / "action").mkdir()
    for action in ROLE_ACTIONS:
        (prefect / "plugins" / "action" / f"{action}.py").symlink_to(REPO / "plugins" / "action" / f"{action}.py")
    return root / "collections"


def make_bundle(root: Path, lock: bytes = LOCK, thumbprints: dict[str, str] | None = None) -> Path:
    """The bundle on the control node; with thumbprints (file name -> signer certificate SHA1), a MANIFEST.json that
    records them as playbooks/bundle.yml does (without: a bundle of an earlier release)."""
    bundle = root / "bundle"
    (bundle / "windows" / "installers").mkdir(parents=True, exist_ok=True)
    files = {
        "windows/prefect-py312.lock": lock,
        f"windows/prefect-{PINNED_PREFECT}-py312-wheels.zip": WHEELHOUSE,
        "windows/installers/nssm-2.24-101-g897c7ad.zip": NSSM_ZIP,
        "windows/installers/python-3.12.10-amd64.exe": INSTALLER,
        "windows/installers/" + PG_INSTALLER_NAME: PG_INSTALLER,
        "windows/installers/" + REWRITE_MSI_NAME: REWRITE_MSI,
        "windows/installers/" + ARR_MSI_NAME: ARR_MSI,
    }
    if thumbprints is not None:
        files["MANIFEST.json"] = json.dumps({"format": 1, "installers": [
            {"filename": name, "signer_thumbprint": thumbprint} for name, thumbprint in thumbprints.items()]}).encode()
    for name, content in files.items():
        (bundle / name).write_bytes(content)
    (bundle / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(v).hexdigest()}  {k}\n" for k, v in files.items()))
    return bundle


# Names every process of a Windows Server host has in its environment (the system's and the logon's): the simulated
# host's environment (state "environment_names"), which NSSM's expansion of %NAME% reads.
DEFAULT_ENVIRONMENT_NAMES = [
    "ALLUSERSPROFILE", "APPDATA", "CommonProgramFiles", "CommonProgramFiles(x86)", "CommonProgramW6432", "COMPUTERNAME",
    "ComSpec", "DriverData", "HOMEDRIVE", "HOMEPATH", "LOCALAPPDATA", "NUMBER_OF_PROCESSORS", "OS", "Path", "PATHEXT",
    "PROCESSOR_ARCHITECTURE", "PROCESSOR_IDENTIFIER", "PROCESSOR_LEVEL", "PROCESSOR_REVISION", "ProgramData",
    "ProgramFiles", "ProgramFiles(x86)", "ProgramW6432", "PSModulePath", "PUBLIC", "SystemDrive", "SystemRoot", "TEMP",
    "TMP", "USERDOMAIN", "USERNAME", "USERPROFILE", "windir"]


def default_state(computer: str = "PREFECT-AIO") -> dict:
    """What a prepared Windows host has before the first run: the installers' signatures as Get-AuthenticodeSignature
    reports them, the MSIs' ProductCodes, the proxy certificate in LocalMachine\\My, and HTTP/<prefect_public_host>
    registered on the computer account (setspn -S, runbook 000 Phase 6), which the proxy's ApplicationPoolIdentity
    uses to decrypt Kerberos tickets; the domain groups of the example inventories' iis_proxy_allowed_groups."""
    return {"signatures": {hashlib.sha256(INSTALLER).hexdigest(): INSTALLER_SIGNATURE,
                           hashlib.sha256(PG_INSTALLER).hexdigest(): PG_INSTALLER_SIGNATURE,
                           **{digest: MS_SIGNATURE for digest in MSI_PRODUCTS}},
            "msi_products": MSI_PRODUCTS, "computer": computer, "environment_names": DEFAULT_ENVIRONMENT_NAMES,
            "iis": {"certificates": [PROXY_CERT_THUMBPRINT]}, "spns": {"HTTP/prefect.corp.local": [computer + "$"]},
            "groups": {"CORP\\Prefect Users": {"sid": "S-1-5-21-2000-5101"}},
            # A domain account for the machine path (prefect_worker_api_auth_string = CORP\\svc_prefect_api:...): the
            # proxy's workers' site admits it by name, resolved in the domain.
            "directory": {"CORP\\svc_prefect_api": {"sid": "S-1-5-21-2000-5301"}},
            # Who is in them (URL Authorization on the proxy, sim_verify.py); the operator's Kerberos ticket names kerberos_user.
            "group_members": {"CORP\\Prefect Users": ["CORP\\operator"]}, "kerberos_user": "CORP\\operator",
            # What the server's /api/admin/version answers (sim_verify.py).
            "prefect_version": PINNED_PREFECT}


class Sim:
    """One simulated host (state file) and the collections path of the stand-ins."""

    def __init__(self, root: Path, ansible_env: dict, state: dict | None = None, pipelined: bool = True):
        self.root = root
        self.collections = build_sim(root, pipelined)
        self.state_path = root / "state.json"
        self.state_path.write_text(json.dumps({**default_state(), **(state or {})}))
        self.env = dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=str(self.collections),
                        ENCLAVE_SIM_STATE=str(self.state_path), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
        # ansible_become false: the local connection cannot run a module as another account (the one task that runs
        # as SYSTEM, the service account check, is checked as written by test_noop_rerun.py).
        self.base = {"ansible_connection": "local", "ansible_python_interpreter": str(VENV_BIN / "python"),
                     "ansible_become": False, "ansible_pipelining": pipelined}

    @property
    def state(self) -> dict:
        return json.loads(self.state_path.read_text())

    def update(self, **changes) -> None:
        state = self.state
        state.update(changes)
        self.state_path.write_text(json.dumps(state))

    def run(self, extra: dict, playbook: str = "site.yml", expect_rc: int = 0, limit: str = "all_in_one",
            args: list[str] | None = None, inventory: str | None = None) -> tuple[subprocess.CompletedProcess, dict]:
        """inventory: another one instead of the example's (sqlite_example_inventory: the same without a database)."""
        (self.root / "extra.json").write_text(json.dumps({**self.base, **extra}))
        inventory = inventory or getattr(self, "inventory", None) or str(REPO / "inventories/example/hosts.yml")
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", inventory,
                str(self.collections / "ansible_collections/enclave/prefect/playbooks" / playbook),
                "--limit", limit, "-e", f"@{self.root / 'extra.json'}", *(args or [])]
        with run_cost(playbook, limit, args):
            proc = subprocess.run(argv, env=self.env, cwd=self.root, capture_output=True, text=True, timeout=600, check=False)
        start = proc.stdout.find("{")
        try:
            data = json.loads(proc.stdout[start:]) if start >= 0 else {}
        except json.JSONDecodeError:
            data = {}
        assert proc.returncode == expect_rc, f"rc={proc.returncode}\n{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}"
        return proc, data


def host_results(data: dict, host: str = HOST) -> list[tuple[str, dict]]:
    return [(t["task"]["name"], t["hosts"][host])
            for play in data.get("plays", []) for t in play.get("tasks", []) if host in t["hosts"]]


def reached(data: dict, host: str = HOST) -> list[tuple[str, dict]]:
    """Tasks that reached the host: ran (not skipped) with an action that is not controller-only."""
    return [(n, r) for n, r in host_results(data, host) if not r.get("skipped") and r.get("action") not in CONTROLLER_ACTIONS]


def by_name(results: list[tuple[str, dict]]) -> dict[str, dict]:
    """Task results by task name without the role prefix (the last of several with the same name)."""
    return {name.split(" : ", 1)[-1]: result for name, result in results}


def module_runs(results: list[tuple[str, dict]]) -> int:
    """Loops count one module run per item that ran."""
    return sum(len([i for i in r["results"] if not i.get("skipped")]) if "results" in r else 1 for _name, r in results)


def sqlite_example_inventory(directory: Path, no_database_hosts: bool = False) -> str:
    """The example inventory with its all-in-one host out of prefect_database: the same host, variables and groups
    otherwise, on SQLite under PREFECT_HOME (prefect_database_host is then empty, and the backup role copies SQLite).
    no_database_hosts: prefect_database empty (a database outside the inventory, given by prefect_database_url)."""
    example = REPO / "inventories" / "example"
    hosts = yaml.safe_load((example / "hosts.yml").read_text())
    hosts["all"]["children"]["prefect_database"]["hosts"].pop(HOST)
    if no_database_hosts:
        hosts["all"]["children"]["prefect_database"]["hosts"] = {}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    for name in ("group_vars", "host_vars"):
        (directory / name).symlink_to(example / name)
    return str(directory / "hosts.yml")
