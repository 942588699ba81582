"""The python role (playbooks/python.yml) against the simulated Windows host (simhost.py).

The stand-ins behave as the real programs do, as read in their sources: win_package quotes list arguments as
Process.psm1 does and the python.org bootstrapper splits them with CommandLineToArgvW; without /norestart a quiet
run that needs a restart reboots the host (exit 1641); an upgrade keeps the registered directory; files held by a
running service's interpreter make the installer return 3010; win_service_info reports NSSM's binary path.
"""
from __future__ import annotations

import copy
import hashlib

import pytest

from simhost import INSTALLER, Sim, by_name, host_results, make_bundle, module_runs, reached

pytestmark = pytest.mark.simulated

PROGRAM_FILES_DIR = "C:\\Program Files\\Python312"
NSSM_EXE = "C:\\Prefect\\tools\\nssm-0123456789ab\\nssm-2.24-101-g897c7ad\\win64\\nssm.exe"
VENV_PYTHON = "c:\\prefect\\venvs\\prefect-3.8.8-py312-abc\\scripts\\python.exe"
HARDENING = ["Administrators and SYSTEM have full control of the Python directory, Users read and execute",
             "Python directory inherits nothing from its parent"]


def _python_tasks(data: dict) -> list[tuple[str, dict]]:
    """Tasks of the python role that reached the host."""
    return [(n, r) for n, r in reached(data) if n.split(" : ", 1)[0].endswith("python")]


def _sim(tmp_path, ansible_env, state: dict | None = None) -> tuple[Sim, dict]:
    sim = Sim(tmp_path, ansible_env, state)
    bundle = make_bundle(tmp_path)
    # The stand-in installer is not python.org's, so its digest replaces the catalogue's.
    return sim, {"prefect_bundle_dir": str(bundle), "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest()}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, ansible_env):
    """A fresh host after one python.yml run with the defaults: its state and the run's results (read only)."""
    sim, extra = _sim(tmp_path_factory.mktemp("fresh"), ansible_env)
    data = sim.run(extra, playbook="python.yml")[1]
    return sim.state, data


@pytest.fixture(scope="module")
def fresh_check(tmp_path_factory, ansible_env):
    """A fresh host and a --check run of python.yml with the defaults: the state after it and the run's results."""
    sim, extra = _sim(tmp_path_factory.mktemp("fresh-check"), ansible_env)
    data = sim.run(extra, playbook="python.yml", args=["--check"])[1]
    return sim.state, data


@pytest.fixture(scope="module")
def converged_rerun(tmp_path_factory, ansible_env, fresh):
    """The same run again on a copy of the fresh host's converged state: the re-run's results."""
    sim, extra = _sim(tmp_path_factory.mktemp("rerun"), ansible_env, copy.deepcopy(fresh[0]))
    return sim.run(extra, playbook="python.yml")[1]


def _service(image: str, running: bool, application: str = "", **more) -> dict:
    return {"running": running, "image_path": image, "registry": {"Application": application}, "object_name": "svc_prefect",
            **more}


def test_fresh_install_into_program_files(fresh):
    """(a) /quiet /norestart InstallAllUsers=1 CompileAll=1 and TargetDir under Program Files as one argument; no
    hardening, because Program Files already lets Users read and execute only."""
    state, data = fresh
    tasks = by_name(_python_tasks(data))
    install = tasks["Python is installed for all users"]
    assert install["changed"]
    arguments = install["invocation"]["module_args"]["arguments"]
    for argument in ["/quiet", "/norestart", "InstallAllUsers=1", "CompileAll=1", "TargetDir=" + PROGRAM_FILES_DIR]:
        assert argument in arguments, arguments
    # As the bootstrapper splits the command line win_package builds from the list.
    argv = state["installer_runs"][-1]
    assert "TargetDir=" + PROGRAM_FILES_DIR in argv and "Files\\Python312" not in argv, argv
    assert state["python"] == "3.12.10" and state["python_dir"] == PROGRAM_FILES_DIR
    assert not set(HARDENING) & set(tasks), sorted(tasks)
    # Nothing was installed, so there were no services to look at or stop.
    assert "Windows services and their state are known before the interpreter changes" not in tasks


def test_target_dir_outside_program_files_is_hardened(tmp_path, ansible_env):
    """(b) C:\\Python312 would inherit C:\\'s ACL (Users may create files): explicit rules by SID, then no inheritance."""
    sim, extra = _sim(tmp_path, ansible_env)
    data = sim.run({**extra, "prefect_python_dir": "C:\\Python312"}, playbook="python.yml")[1]
    tasks = by_name(_python_tasks(data))
    rules = {r["item"]["account"]: r["item"]["rights"] for r in tasks[HARDENING[0]]["results"]}
    assert rules == {"S-1-5-32-544": "FullControl", "S-1-5-18": "FullControl", "S-1-5-32-545": "ReadAndExecute"}, rules
    assert all(r["invocation"]["module_args"]["path"] == "C:\\Python312" and r["invocation"]["module_args"]["type"] == "allow"
               for r in tasks[HARDENING[0]]["results"])
    inheritance = tasks[HARDENING[1]]["invocation"]["module_args"]
    assert (inheritance["path"], inheritance["state"], inheritance["reorganize"]) == ("C:\\Python312", "absent", False)
    directory = sim.state["dirs"]["c:\\python312"]
    assert directory["protected"] and directory["acl"]["S-1-5-32-545"] == "ReadAndExecute", directory
    order = [n.split(" : ", 1)[-1] for n, _r in _python_tasks(data)]
    assert order.index("Python is installed for all users") < order.index(HARDENING[0]) < order.index(HARDENING[1])
    # A re-run finds the pinned Python there: no installer; the hardening reads the rules and changes nothing.
    again = by_name(_python_tasks(sim.run({**extra, "prefect_python_dir": "C:\\Python312"}, playbook="python.yml")[1]))
    assert list(again) == ["Installed Python version and location are known", *HARDENING], list(again)
    assert not any(r.get("changed") for r in again.values()), again


def test_previous_release_host_gets_its_python_directory_hardened(tmp_path, ansible_env):
    """A host deployed by the previous release: the pinned Python in C:\\Python312, installed with the directory's
    inherited rules (Users may create files) and never hardened. Keeping that directory (prefect_python_dir) converges
    it with no hand step: no installer, the rules written, inheritance cut; the next run changes nothing."""
    state = {"python": "3.12.10", "python_dir": "C:\\Python312",
             "dirs": {"c:\\python312": {"acl": {"S-1-5-32-545": "CreateFiles"}, "protected": False}}}
    sim, extra = _sim(tmp_path, ansible_env, state)
    extra["prefect_python_dir"] = "C:\\Python312"
    tasks = by_name(_python_tasks(sim.run(extra, playbook="python.yml")[1]))
    assert "Python is installed for all users" not in tasks, list(tasks)
    assert tasks[HARDENING[0]]["changed"] and tasks[HARDENING[1]]["changed"], tasks
    directory = sim.state["dirs"]["c:\\python312"]
    assert directory["protected"] and directory["acl"]["S-1-5-32-545"] == "ReadAndExecute", directory
    again = by_name(_python_tasks(sim.run(extra, playbook="python.yml")[1]))
    assert not any(r.get("changed") for r in again.values()), again


def test_in_place_upgrade_stops_and_restarts_the_running_prefect_services(tmp_path, ansible_env):
    """(c) Only the running NSSM services of this collection are stopped before the installer and started after it;
    a stopped Prefect service stays stopped and other services are not touched."""
    state = {"python": "3.12.9", "python_dir": PROGRAM_FILES_DIR, "services": {
        "PrefectServer": _service(NSSM_EXE, True, VENV_PYTHON),
        "PrefectWorker": _service(NSSM_EXE, True, VENV_PYTHON, dependencies=["PrefectServer"]),
        "PrefectWorkerSpare": _service(NSSM_EXE, False, VENV_PYTHON),
        "Spooler": _service("C:\\Windows\\System32\\spoolsv.exe", True),
        "OtherNssmApp": _service("C:\\Tools\\nssm.exe", True, "C:\\Python311\\python.exe"),
    }}
    sim, extra = _sim(tmp_path, ansible_env, state)
    data = sim.run(extra, playbook="python.yml")[1]
    results = _python_tasks(data)
    tasks = by_name(results)
    stopped = [r["item"]["name"] for r in tasks["Prefect services are stopped while the interpreter they run on is upgraded or removed"]["results"]]
    started = [r["item"]["name"] for r in tasks["Prefect services that ran before the interpreter changed run again"]["results"]]
    # A dependent service stops before the service it depends on and starts after it.
    assert stopped == ["PrefectWorker", "PrefectServer"], stopped
    assert started == ["PrefectServer", "PrefectWorker"], started
    order = [n.split(" : ", 1)[-1] for n, _r in results]
    assert (order.index("Prefect services are stopped while the interpreter they run on is upgraded or removed")
            < order.index("Python is installed for all users")
            < order.index("Prefect services that ran before the interpreter changed run again"))
    assert tasks["Python is installed for all users"]["reboot_required"] is False
    services = sim.state["services"]
    assert services["PrefectServer"]["running"] and services["PrefectWorker"]["running"]
    assert not services["PrefectWorkerSpare"]["running"]
    assert services["Spooler"]["running"] and services["OtherNssmApp"]["running"]
    assert "app_started" not in services["Spooler"] and "app_started" not in services["OtherNssmApp"]
    assert sim.state["python"] == "3.12.10" and sim.state["python_dir"] == PROGRAM_FILES_DIR


def test_upgrade_stops_every_prefect_service_that_is_not_stopped(tmp_path, ansible_env):
    """NSSM pauses a service while it throttles the restarts of a crashing application, and a start-pending service is
    about to launch it: either would launch the interpreter during the upgrade (the installer would return 3010). Every
    Prefect service that is not stopped is stopped; only those that were running or starting run again. One host with a
    worker in each of these SCM states (paused, start-pending, stop-pending) beside its running server."""
    workers = {"PrefectWorkerPaused": ("paused", False), "PrefectWorkerStarting": ("start_pending", True),
               "PrefectWorkerStopping": ("stop_pending", False)}
    state = {"python": "3.12.9", "python_dir": PROGRAM_FILES_DIR, "services": {
        "PrefectServer": _service(NSSM_EXE, True, VENV_PYTHON),
        **{name: _service(NSSM_EXE, False, VENV_PYTHON, scm_state=scm_state) for name, (scm_state, _runs) in workers.items()},
    }}
    sim, extra = _sim(tmp_path, ansible_env, state)
    data = sim.run(extra, playbook="python.yml")[1]
    tasks = by_name(_python_tasks(data))
    stopped = [r["item"]["name"] for r in tasks["Prefect services are stopped while the interpreter they run on is upgraded or removed"]["results"]]
    started = [r["item"]["name"] for r in tasks["Prefect services that ran before the interpreter changed run again"]["results"]]
    assert sorted(stopped) == sorted(["PrefectServer", *workers]), stopped
    assert sorted(started) == sorted(["PrefectServer", *(n for n, (_s, runs_after) in workers.items() if runs_after)]), started
    # A service left in any of these states would hold the interpreter's files: the installer would return 3010.
    assert tasks["Python is installed for all users"]["reboot_required"] is False
    services = sim.state["services"]
    for name, (scm_state, runs_after) in workers.items():
        assert services[name].get("running", False) is runs_after and "scm_state" not in services[name], (scm_state, services[name])


def test_pending_restart_names_the_host(tmp_path, ansible_env):
    """Files held by a process that is not a Prefect service still make the installer return 3010: the role stops
    with a message naming the host, and the Prefect services it stopped run again."""
    state = {"python": "3.12.9", "python_dir": PROGRAM_FILES_DIR, "services": {
        "PrefectServer": _service(NSSM_EXE, True, VENV_PYTHON),
        "SomeoneElsesPython": _service("C:\\Tools\\nssm.exe", True, PROGRAM_FILES_DIR + "\\python.exe"),
    }}
    sim, extra = _sim(tmp_path, ansible_env, state)
    data = sim.run(extra, playbook="python.yml", expect_rc=2)[1]
    failed = [(n, r) for n, r in host_results(data) if r.get("failed")]
    assert failed[0][0].endswith("Python change is complete without a pending restart"), failed
    assert "prefect-aio.corp.local" in failed[0][1]["msg"] and "restart" in failed[0][1]["msg"].lower()
    assert sim.state["services"]["PrefectServer"]["running"]


def test_right_version_in_another_directory_stops_before_delivery(tmp_path, ansible_env):
    """(d) The installer cannot move an installation: the run stops before anything is copied, saying what to do."""
    sim, extra = _sim(tmp_path, ansible_env, {"python": "3.12.10", "python_dir": "C:\\Python312"})
    data = sim.run(extra, playbook="python.yml", expect_rc=2)[1]
    failed = [(n, r) for n, r in host_results(data) if r.get("failed")]
    assert failed and failed[0][0].endswith("Installed Python is in python_target_dir"), failed
    msg = failed[0][1]["msg"]
    for words in ["C:\\Python312", PROGRAM_FILES_DIR, "prefect-aio.corp.local", "cannot move", "python_state: absent",
                  "prefect_python_dir"]:
        assert words in msg, (words, msg)
    actions = {r.get("action", "").rsplit(".", 1)[-1] for _n, r in reached(data)}
    assert not actions & {"win_copy", "win_get_url", "win_package", "win_service"}, actions


def test_older_release_in_another_directory_stops_before_delivery(tmp_path, ansible_env):
    """An upgrade would stay in the registered directory, not go to python_target_dir."""
    sim, extra = _sim(tmp_path, ansible_env, {"python": "3.12.9", "python_dir": "C:\\Python312"})
    data = sim.run(extra, playbook="python.yml", expect_rc=2)[1]
    failed = [(n, r) for n, r in host_results(data) if r.get("failed")]
    assert failed and failed[0][0].endswith("Installed Python is in python_target_dir"), failed
    assert not {r.get("action", "").rsplit(".", 1)[-1] for _n, r in reached(data)} & {"win_copy", "win_package"}


def test_newer_release_is_never_downgraded(tmp_path, ansible_env):
    sim, extra = _sim(tmp_path, ansible_env, {"python": "3.12.11", "python_dir": PROGRAM_FILES_DIR})
    data = sim.run(extra, playbook="python.yml", expect_rc=2)[1]
    failed = [(n, r) for n, r in host_results(data) if r.get("failed")]
    assert failed[0][0].endswith("Installed Python can be moved to the pinned version with the pinned installer")
    assert "3.12.11" in failed[0][1]["msg"] and "cannot go back" in failed[0][1]["msg"]
    assert not {r.get("action", "").rsplit(".", 1)[-1] for _n, r in reached(data)} & {"win_copy", "win_package"}


def test_converged_rerun_costs_two_registry_reads(converged_rerun):
    """(e) On a converged host the python role sends one task, two module runs, and changes nothing."""
    data = converged_rerun
    tasks = _python_tasks(data)
    assert [n.split(" : ", 1)[-1] for n, _r in tasks] == ["Installed Python version and location are known"], tasks
    assert module_runs(tasks) <= 2, module_runs(tasks)
    assert not [n for n, r in reached(data) if r.get("changed")]


def test_check_mode_fresh_install_changes_nothing(fresh_check):
    state, data = fresh_check
    assert by_name(_python_tasks(data))["Python is installed for all users"]["changed"]
    assert "python" not in state


# The installer's signature (roles/common/tasks/signature.yml; the rest of it: test_installer_signature.py) on the runs
# above: the same python.yml runs with the same input as that module's default cases.
SIGNATURE_READ = "Installer signature is read on the host"
STAGED = "C:\\Prefect\\staging\\python-3.12.10-amd64.exe"


def test_signature_is_checked_after_delivery_and_before_the_installer_runs(fresh):
    _state, data = fresh
    order = [n.split(" : ", 1)[-1] for n, _r in reached(data)]
    assert (order.index("Artifact is copied from the control node as one file") < order.index(SIGNATURE_READ)
            < order.index("Python is installed for all users"))
    read = by_name(reached(data))[SIGNATURE_READ]
    assert read["invocation"]["module_args"]["parameters"] == {"Path": STAGED}
    assert not read["changed"] and read["result"]["signer"] == "Python Software Foundation"


def test_check_mode_on_a_new_host_does_not_fail_on_the_undelivered_installer(fresh_check):
    _state, data = fresh_check
    tasks = by_name(reached(data))
    assert tasks[SIGNATURE_READ]["result"]["exists"] is False and not tasks[SIGNATURE_READ]["changed"]


def test_converged_host_does_not_read_the_signature(converged_rerun):
    assert SIGNATURE_READ not in by_name(reached(converged_rerun))


def test_removal_stops_the_services_and_says_so(tmp_path, ansible_env):
    """(f) python_state absent runs the installer with /quiet /uninstall /norestart after stopping the Prefect services,
    which stay stopped."""
    state = {"python": "3.12.10", "python_dir": PROGRAM_FILES_DIR,
             "services": {"PrefectServer": _service(NSSM_EXE, True, VENV_PYTHON)}}
    sim, extra = _sim(tmp_path, ansible_env, state)
    data = sim.run({**extra, "python_state": "absent"}, playbook="python.yml")[1]
    tasks = by_name(host_results(data))
    removal = tasks["Python is removed"]
    assert removal["changed"]
    arguments = removal["invocation"]["module_args"]["arguments"]
    assert {"/quiet", "/uninstall", "/norestart"} <= set(arguments), arguments
    assert removal["invocation"]["module_args"]["creates_path"] == PROGRAM_FILES_DIR + "\\python.exe"
    assert "python" not in sim.state
    assert not sim.state["services"]["PrefectServer"]["running"]
    assert "PrefectServer" in tasks["Prefect services stopped for the removal stay stopped"]["msg"]
    assert tasks["Prefect services that ran before the interpreter changed run again"].get("skipped")


def test_digest_mismatch_stops_with_both_digests(tmp_path, ansible_env):
    """The installer whose digest on the host differs from the expected one never runs, and no service is stopped."""
    state = {"python": "3.12.9", "python_dir": PROGRAM_FILES_DIR,
             "services": {"PrefectServer": _service(NSSM_EXE, True, VENV_PYTHON)}}
    sim, extra = _sim(tmp_path, ansible_env, state)
    expected = "ab" * 32
    data = sim.run({**extra, "python_installer_sha256": expected}, playbook="python.yml", expect_rc=2)[1]
    failed = [(n, r) for n, r in host_results(data) if r.get("failed")]
    assert failed and failed[0][0].endswith("Artifact on the host has the expected SHA256"), failed
    assert expected in failed[0][1]["msg"] and hashlib.sha256(INSTALLER).hexdigest() in failed[0][1]["msg"]
    assert "Python is installed for all users" not in by_name(reached(data))
    assert sim.state["services"]["PrefectServer"]["running"] and "app_started" not in sim.state["services"]["PrefectServer"]
