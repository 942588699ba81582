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
import os
import subprocess
from pathlib import Path

import pytest

from rolerun import CONTROLLER_ACTIONS, REPO

pytestmark = pytest.mark.static

# Documented in docs/roles.md; update both together.
EXPECTED_HOST_TASKS = 16
EXPECTED_MODULE_RUNS = 23

LOCK = b"prefect==3.8.8 --hash=sha256:0000\n"
WHEELHOUSE = b"not a real wheelhouse"
NSSM_ZIP = b"not a real nssm zip"
INSTALLER = b"not a real python installer"

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
    digest = hashlib.sha256(open(args["src"], "rb").read()).hexdigest()
    out["changed"] = files.get(args["dest"].lower()) != digest
    files[args["dest"].lower()] = digest
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
elif NAME in ("win_get_url", "win_package_absent"):
    out.update(failed=True, msg=NAME + " is not expected with push delivery")
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


def _run(root: Path, collections: Path, env: dict, extra: dict) -> tuple[subprocess.CompletedProcess, dict]:
    (root / "extra.json").write_text(json.dumps(extra))
    argv = [str(REPO / ".venv/bin/ansible-playbook"), "-i", str(REPO / "inventories/example/hosts.yml"),
            str(collections / "ansible_collections/enclave/prefect/playbooks/site.yml"),
            "--limit", "all_in_one", "-e", f"@{root / 'extra.json'}"]
    proc = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True, timeout=600)
    start = proc.stdout.find("{")
    try:
        data = json.loads(proc.stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        data = {}
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}"
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
             "prefect_bundle_dir": str(bundle), "vault_prefect_service_password": "sim-only",
             # The stand-in installer is not python.org's, so its digest replaces the catalogue's.
             "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest()}
    env = dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=str(collections), ENCLAVE_SIM_STATE=str(root / "state.json"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    first = _run(root, collections, env, extra)
    second = _run(root, collections, env, extra)
    # A new bundle whose lock changed: a new venv, the junction moves, the running services restart.
    files["windows/prefect-py312.lock"] = LOCK + b"extra==1.0 --hash=sha256:1111\n"
    (bundle / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(v).hexdigest()}  {k}\n" for k, v in files.items()))
    third = _run(root, collections, env, extra)
    return first[1], second[1], third[1]


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
    assert "Prefect services whose settings changed are restarted" not in {n.split(" : ", 1)[-1] for n, _ in _reached(first)}


def test_noop_rerun_is_cheap_and_changes_nothing(runs):
    second = runs[1]
    reached = _reached(second)
    assert not [n for n, r in reached if r.get("changed")], "a no-op re-run reported changes"
    actions = {r.get("action", "").rsplit(".", 1)[-1] for _, r in reached}
    assert not actions & set(FORBIDDEN_ON_RERUN), actions
    module_runs = sum(len([i for i in r["results"] if not i.get("skipped")]) if "results" in r else 1 for _, r in reached)
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
