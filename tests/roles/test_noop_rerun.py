"""How many tasks reach a Windows host when site.yml re-runs on an all-in-one host that is already converged.

No Windows host is needed: the run goes through the real playbooks and roles on the control node, with every
Windows module (and the Prefect API plugins) replaced by a stand-in that answers as a converged host does
(Python at the pinned version, the current venv built from the lock, NSSM unpacked, services running as the
service account, no setting differing). The stand-ins never report a change, so what this measures is the
control flow: which tasks the roles skip because an earlier read already answered the question. A stand-in
for a module that must not run on a re-run (copy, download, install, unzip) fails the run.

Counted, not measured on Windows: the numbers are documented in docs/roles.md ("No-op re-run").
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from rolerun import CONTROLLER_ACTIONS, REPO

pytestmark = pytest.mark.static

# Documented in docs/roles.md; update both together.
EXPECTED_HOST_TASKS = 18
EXPECTED_MODULE_RUNS = 31

# The committed lock: prefect_venv checks that the bundle carries it.
LOCK = (REPO / "requirements" / "windows" / "prefect-py312.lock").read_bytes()
WHEELHOUSE = b"not a real wheelhouse"
NSSM_ZIP = b"not a real nssm zip"
INSTALLER = b"not a real python installer"
# Vault values of the example inventory; they must never show up in any output.
SECRETS = {
    "vault_prefect_service_password": "Svc-Secret-4c1d",
    "vault_prefect_api_auth_string": "prefect:Auth-Secret-93be",
    "vault_prefect_database_url": "postgresql+asyncpg://prefect:Db-Secret-0a7f@db01:5432/prefect",
}

FAKE = r"""#!/usr/bin/python
# WANT_JSON
# Stand-in for {name}: keeps the simulated host in a JSON file (tests/roles/test_noop_rerun.py).
import hashlib
import json
import os
import sys

NAME = "{name}"
args = json.load(open(sys.argv[1]))
path = os.environ["ENCLAVE_SIM_STATE"]
host = json.load(open(path))
files, services = host.setdefault("files", {{}}), host.setdefault("services", {{}})
out = {{"changed": False}}


def lookup(p):
    p = p.lower()
    for link, target in host.setdefault("junctions", {{}}).items():
        if p.startswith(link + "\\"):
            p = target + p[len(link):]
    if p in files:
        return files[p]
    if any(p.startswith(d + "\\") for d in host.setdefault("unpacked", [])):
        return ""
    return None


if NAME == "win_reg_stat":
    out.update(exists="python" in host, value=host.get("python", ""))
elif NAME == "win_stat":
    digest = lookup(args["path"])
    out["stat"] = {{"exists": digest is not None, "checksum": digest or "", "path": args["path"]}}
elif NAME == "win_copy":
    # share delivery: the UNC path is the local bundle directory in this simulation.
    source = args["src"].replace("\\", "/") if args.get("remote_src") else args["src"]
    digest = hashlib.sha256(open(source, "rb").read()).hexdigest()
    out["changed"] = files.get(args["dest"].lower()) != digest
    files[args["dest"].lower()] = digest
elif NAME == "win_get_url":
    # url delivery: the enclave web server is the local bundle directory in this simulation.
    source = args["url"].replace(host["url_prefix"], host["bundle_dir"], 1)
    digest = hashlib.sha256(open(source, "rb").read()).hexdigest()
    if args.get("checksum_algorithm") != "sha256" or args.get("checksum") != digest:
        out.update(failed=True, msg="checksum mismatch or missing")
    files[args["dest"].lower()] = digest
    out["changed"] = True
elif NAME == "win_unzip":
    host["unpacked"].append(args["dest"].lower())
    out["changed"] = True
elif NAME == "win_package":
    host["python"] = args["path"].rsplit("\\", 1)[-1].split("-")[1]
    out["changed"] = True
elif NAME == "win_powershell":
    params = args["parameters"]
    if args["path"] == "venv_build.ps1":
        marker = (params["VenvDir"] + "\\enclave-prefect.lock").lower()
        out["changed"] = files.get(marker) != params["LockSha256"]
        files[marker] = params["LockSha256"]
    elif args["path"] == "venv_switch.ps1":
        junctions = host.setdefault("junctions", {{}})
        out["changed"] = junctions.get(params["Link"].lower()) != params["Target"].lower()
        junctions[params["Link"].lower()] = params["Target"].lower()
    elif args["path"] == "nssm_settings.ps1":
        report = {{}}
        for svc in params["Services"]:
            old = services.get(svc["name"])
            wanted = {{"params": svc["params"], "environment": svc["environment"]}}
            changes = ["install"] if old is None else [k for k in svc["params"] if old["params"].get(k) != svc["params"][k]]
            if old is not None and old["environment"] != svc["environment"]:
                changes.append("AppEnvironmentExtra")
            report[svc["name"]] = {{"installed": old is None, "was_running": bool(old and old.get("running")),
                                    "changes": changes, "account_differs": old is None}}
            services[svc["name"]] = dict(old or {{}}, **wanted)
        out.update(services=report, changed=any(r["changes"] for r in report.values()))
elif NAME == "win_service":
    svc = services.setdefault(args["name"], {{}})
    if args.get("state") == "absent":
        out["changed"] = services.pop(args["name"], None) is not None
    else:
        out["changed"] = not svc.get("running") or ("username" in args and svc.get("username") != args["username"])
        svc["running"] = True
        svc["username"] = args.get("username", svc.get("username"))
        out.update(exists=True, name=args["name"], state="running", username=svc["username"])
elif NAME in ("win_acl", "win_acl_inheritance") and args["path"].lower().startswith("hklm:\\system\\currentcontrolset\\services\\"):
    # A service's Parameters key exists once NSSM registered the service; the modules fail on a missing path.
    service = args["path"].split("\\")[4]
    if service not in services:
        out.update(failed=True, msg=args["path"] + " does not exist")
    elif NAME == "win_acl":
        rules = services[service].setdefault("parameters_acl", {{}})
        out["changed"] = rules.get(args["user"]) != args["rights"]
        rules[args["user"]] = args["rights"]
    else:
        out["changed"] = not services[service].get("parameters_protected")
        services[service]["parameters_protected"] = args["state"] == "absent"
elif NAME == "server_health":
    out.update(healthy=True, ready=True, checks=[])
json.dump(host, open(path, "w"))
out["invocation"] = {{"module_args": args}}
print(json.dumps(out))
"""

WINDOWS_MODULES = {
    ("ansible", "windows"): ["win_reg_stat", "win_stat", "win_powershell", "win_service", "win_user", "win_user_right",
                             "win_group_membership", "win_file", "win_acl", "win_acl_inheritance", "win_copy",
                             "win_get_url", "win_package"],
    ("community", "windows"): ["win_unzip"],
    ("enclave", "prefect"): ["server_health", "work_pool"],
}
# Tasks that must not reach the host on a re-run (transfers, installs, builds, restarts).
FORBIDDEN_ON_RERUN = ["win_copy", "win_get_url", "win_package", "win_unzip"]


def _build_sim(root: Path) -> Path:
    """A collections path whose ansible.windows, community.windows and enclave.prefect hold the stand-ins;
    enclave.prefect carries the real roles and playbooks."""
    collections = root / "collections" / "ansible_collections"
    for (namespace, name), modules in WINDOWS_MODULES.items():
        base = collections / namespace / name
        (base / "plugins" / "modules").mkdir(parents=True)
        (base / "meta").mkdir()
        (base / "meta" / "runtime.yml").write_text('requires_ansible: ">=2.19.0"\n')
        for module in modules:
            (base / "plugins" / "modules" / f"{module}.py").write_text(FAKE.format(name=module))
    prefect = collections / "enclave" / "prefect"
    (prefect / "roles").symlink_to(REPO / "roles")
    (prefect / "playbooks").symlink_to(REPO / "playbooks")
    return root / "collections"


def _run(root: Path, collections: Path, env: dict, extra: dict, playbook: str = "site.yml",
         expect_rc: int = 0) -> tuple[subprocess.CompletedProcess, dict]:
    (root / "extra.json").write_text(json.dumps(extra))
    argv = [str(REPO / ".venv/bin/ansible-playbook"), "-i", str(REPO / "inventories/example/hosts.yml"),
            str(collections / "ansible_collections/enclave/prefect/playbooks" / playbook),
            "--limit", "all_in_one", "-e", f"@{root / 'extra.json'}"]
    proc = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True, timeout=600, check=False)
    start = proc.stdout.find("{")
    try:
        data = json.loads(proc.stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        data = {}
    assert proc.returncode == expect_rc, f"rc={proc.returncode}\n{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}"
    return proc, data


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ansible_env):
    """A first run on an empty simulated host, then the re-run."""
    root = tmp_path_factory.mktemp("noop")
    collections = _build_sim(root)
    bundle = root / "bundle"
    (bundle / "windows" / "installers").mkdir(parents=True)
    files = {
        "windows/prefect-py312.lock": LOCK,
        "windows/prefect-3.8.8-py312-wheels.zip": WHEELHOUSE,
        "windows/installers/nssm-2.24-101-g897c7ad.zip": NSSM_ZIP,
        "windows/installers/python-3.12.10-amd64.exe": INSTALLER,
    }
    for name, content in files.items():
        (bundle / name).write_bytes(content)
    (bundle / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(v).hexdigest()}  {k}\n" for k, v in files.items()))
    (root / "state.json").write_text("{}")
    extra = {"ansible_connection": "local", "ansible_python_interpreter": str(REPO / ".venv/bin/python"),
             "prefect_bundle_dir": str(bundle), **SECRETS,
             # The stand-in installer is not python.org's, so its digest replaces the catalogue's.
             "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest()}
    env = dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=str(collections), ENCLAVE_SIM_STATE=str(root / "state.json"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    first = _run(root, collections, env, extra)
    second = _run(root, collections, env, extra)
    # A new bundle whose lock changed: a new venv, the junction moves, the running services restart.
    files["windows/prefect-py312.lock"] = LOCK + b"extra==1.0 --hash=sha256:1111\n"
    (bundle / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(v).hexdigest()}  {k}\n" for k, v in files.items()))
    # The check against the committed lock is turned off as for a deliberate change of bundle.
    third = _run(root, collections, env, {**extra, "prefect_venv_check_committed_lock": False})
    return first[1], second[1], third[1], [run[0].stdout + run[0].stderr for run in (first, second, third)]


def _host_results(data: dict) -> list[tuple[str, dict]]:
    return [(t["task"]["name"], t["hosts"]["prefect-aio.corp.local"])
            for play in data.get("plays", []) for t in play.get("tasks", []) if "prefect-aio.corp.local" in t["hosts"]]


def _reached(data: dict) -> list[tuple[str, dict]]:
    return [(n, r) for n, r in _host_results(data) if not r.get("skipped") and r.get("action") not in CONTROLLER_ACTIONS]


def test_first_run_installs_everything(runs):
    first = runs[0]
    changed = {n.split(" : ", 1)[-1] for n, r in _reached(first) if r.get("changed")}
    for task in ["Artifact is copied from the control node as one file", "Python is installed for all users",
                 "Artifact is unpacked on the host", "Venv for this Prefect version and lock is built",
                 "Current junction points at the venv that reports the pinned Prefect",
                 "NSSM settings of every Prefect service are as configured",
                 "Windows service settings, account and recovery actions are as configured"]:
        assert task in changed, (task, sorted(changed))
    # New services are started by the service task, not restarted.
    assert "Prefect services whose settings changed are restarted" not in {name.split(" : ", 1)[-1] for name, _result in _reached(first)}


def test_service_parameters_are_readable_only_by_system_administrators_and_the_account(runs):
    """The Parameters key of every service (environment with the database URL and auth strings) gets explicit
    rules for SYSTEM, Administrators and the service account, then stops inheriting the all-users read access."""
    first = dict((n.split(" : ", 1)[-1], r) for n, r in _reached(runs[0]))
    acl = first["Service parameters with secrets are readable only by SYSTEM, Administrators and the service account"]
    inheritance = first["Service parameters do not inherit read access for all users"]
    for service in ["PrefectServer", "PrefectWorker"]:
        key = f"HKLM:\\SYSTEM\\CurrentControlSet\\Services\\{service}\\Parameters"
        rules = {r["invocation"]["module_args"]["user"]: r["invocation"]["module_args"]["rights"]
                 for r in acl["results"] if r["invocation"]["module_args"]["path"] == key}
        assert rules == {"S-1-5-18": "FullControl", "S-1-5-32-544": "FullControl", "svc_prefect": "ReadKey"}, rules
        assert all(r["changed"] and r["invocation"]["module_args"]["type"] == "allow" for r in acl["results"])
        protect = [{k: r["invocation"]["module_args"][k] for k in ("path", "state", "reorganize")}
                   for r in inheritance["results"] if r["item"] == service]
        assert protect == [{"path": key, "state": "absent", "reorganize": False}], protect
    # Explicit rules before inheritance is dropped, both before the services start with the secrets in place.
    order = [n.split(" : ", 1)[-1] for n, _result in _reached(runs[0])]
    assert (order.index("Service parameters with secrets are readable only by SYSTEM, Administrators and the service account")
            < order.index("Service parameters do not inherit read access for all users")
            < order.index("Windows service settings, account and recovery actions are as configured"))


def test_noop_rerun_is_cheap_and_changes_nothing(runs):
    second = runs[1]
    reached = _reached(second)
    assert not [n for n, r in reached if r.get("changed")], "a no-op re-run reported changes"
    actions = {r.get("action", "").rsplit(".", 1)[-1] for _name, r in reached}
    assert not actions & set(FORBIDDEN_ON_RERUN), actions
    module_runs = sum(len([i for i in r["results"] if not i.get("skipped")]) if "results" in r else 1 for _name, r in reached)
    listing = "\n".join(f"  {n} ({r.get('action')}, {len(r.get('results', [])) or 1} run(s))" for n, r in reached)
    print(f"tasks reaching the host: {len(reached)}; module runs: {module_runs}\n{listing}")
    assert (len(reached), module_runs) == (EXPECTED_HOST_TASKS, EXPECTED_MODULE_RUNS), listing


def test_new_lock_switches_venv_and_restarts_running_services(runs):
    third = runs[2]
    reached = dict((n.split(" : ", 1)[-1], r) for n, r in _reached(third))
    assert reached["Venv for this Prefect version and lock is built"]["changed"]
    assert reached["Current junction points at the venv that reports the pinned Prefect"]["changed"]
    restarted = reached["Prefect services whose settings changed are restarted"]["results"]
    # The local worker depends on the server and restarts with it (force_dependent_services).
    assert [r["item"] for r in restarted] == ["PrefectServer"]
    assert all(r["invocation"]["module_args"]["force_dependent_services"] for r in restarted)


def test_python_is_never_downgraded(tmp_path, ansible_env):
    """A newer patch release on the host stops the python role before the installer is delivered."""
    collections = _build_sim(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({"python": "3.12.11"}))
    env = dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=str(collections), ENCLAVE_SIM_STATE=str(tmp_path / "state.json"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    extra = {"ansible_connection": "local", "ansible_python_interpreter": str(REPO / ".venv/bin/python")}
    data = _run(tmp_path, collections, env, extra, playbook="python.yml", expect_rc=2)[1]
    failed = [(n, r) for n, r in _host_results(data) if r.get("failed")]
    assert failed and failed[0][0].endswith("Installed Python can be moved to the pinned version with the pinned installer")
    assert "3.12.11" in failed[0][1]["msg"] and "cannot go back" in failed[0][1]["msg"], failed[0][1]["msg"]
    assert "Artifact is copied from the control node as one file" not in {name.split(" : ", 1)[-1] for name, _result in _reached(data)}


def test_secrets_never_appear_in_any_result(runs):
    """Install, re-run and upgrade with auth string, database URL and service password set: the json
    callback prints every task result in full, and none of them holds a secret."""
    for output in runs[3]:
        for secret in ("Svc-Secret-4c1d", "Auth-Secret-93be", "Db-Secret-0a7f"):
            assert secret not in output, f"{secret} leaked"


def test_digest_mismatch_stops_with_both_digests(tmp_path, ansible_env):
    """An artifact whose digest on the host differs from the expected one stops the role, naming both."""
    collections = _build_sim(tmp_path)
    bundle = tmp_path / "bundle" / "windows" / "installers"
    bundle.mkdir(parents=True)
    (bundle / "python-3.12.10-amd64.exe").write_bytes(INSTALLER)
    (tmp_path / "state.json").write_text("{}")
    env = dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=str(collections), ENCLAVE_SIM_STATE=str(tmp_path / "state.json"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    expected = "ab" * 32
    extra = {"ansible_connection": "local", "ansible_python_interpreter": str(REPO / ".venv/bin/python"),
             "prefect_bundle_dir": str(tmp_path / "bundle"), "python_installer_sha256": expected}
    data = _run(tmp_path, collections, env, extra, playbook="python.yml", expect_rc=2)[1]
    failed = [(n, r) for n, r in _host_results(data) if r.get("failed")]
    assert failed and failed[0][0].endswith("Artifact on the host has the expected SHA256"), failed
    msg = failed[0][1]["msg"]
    assert expected in msg and hashlib.sha256(INSTALLER).hexdigest() in msg, msg
    assert "Python is installed for all users" not in {n.split(" : ", 1)[-1] for n, _result in _reached(data)}


@pytest.mark.parametrize("mode", ["share", "url"])
def test_share_and_url_delivery(tmp_path, ansible_env, mode):
    """The installer arrives by a host-side copy from the share or a download with checksum, then is verified."""
    collections = _build_sim(tmp_path)
    bundle = tmp_path / "bundle"
    (bundle / "windows" / "installers").mkdir(parents=True)
    (bundle / "windows" / "installers" / "python-3.12.10-amd64.exe").write_bytes(INSTALLER)
    prefix = "https://nexus.corp.example/repository/prefect"
    (tmp_path / "state.json").write_text(json.dumps({"bundle_dir": str(bundle), "url_prefix": prefix}))
    env = dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=str(collections), ENCLAVE_SIM_STATE=str(tmp_path / "state.json"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    extra = {"ansible_connection": "local", "ansible_python_interpreter": str(REPO / ".venv/bin/python"),
             "prefect_artifact_delivery": mode, "prefect_bundle_share": str(bundle) + "\\",
             "prefect_bundle_url": prefix + "/", "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest()}
    data = _run(tmp_path, collections, env, extra, playbook="python.yml")[1]
    reached = {name.split(" : ", 1)[-1]: result for name, result in _reached(data)}
    if mode == "share":
        copy = reached["Artifact is copied from the enclave file share"]["invocation"]["module_args"]
        assert copy["src"] == str(bundle) + "\\windows\\installers\\python-3.12.10-amd64.exe" and copy["remote_src"]
    else:
        get = reached["Artifact is downloaded from the enclave web server"]["invocation"]["module_args"]
        assert get["url"] == prefix + "/windows/installers/python-3.12.10-amd64.exe"
    assert "Artifact is copied from the control node as one file" not in reached
    assert reached["Python is installed for all users"]["changed"]
