"""scripts/acceptance_report.py: the Markdown report of a Windows acceptance run, fed a small fake molecule log."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.parse

import pytest

from toolchain import REPO

pytestmark = pytest.mark.static

SCRIPT = REPO / "scripts" / "acceptance_report.py"
SPEC = importlib.util.spec_from_file_location("acceptance_report", SCRIPT)
report = importlib.util.module_from_spec(SPEC)
sys.modules["acceptance_report"] = report  # dataclasses look their module up by name
SPEC.loader.exec_module(report)

DB_PASSWORD = "db p@ss/w%rd:1"
ADMIN_PASSWORD = "Adm1n-S3cret"
HOST = "win-lab.corp.local"
STAMP = "Sunday 06 December 2026  06:58:34 +0000 ({})       0:00:01.553 *******"


def fake_log() -> str:
    encoded = urllib.parse.quote(DB_PASSWORD, safe="")
    verify_table = ["HOST | STEP | RESULT",
                    f"{HOST} | proxy (negotiate 200, anonymous 401) | ok: https://prefect.corp.local Prefect 3.8.8",
                    f"{HOST} | pools READY, workers ONLINE | FAILED: "
                    f"postgresql+asyncpg://prefect:{encoded}@127.0.0.1/prefect refused"]
    return "\n".join([
        "INFO     [windows > create] Executing",
        "TASK [Windows host is recorded for the report] *********************************",
        STAMP.format("0:00:00.010"),
        f"ok: [{HOST}] => {{",
        '    "msg": "Windows host: product=Windows Server 2022 Standard; build=10.0.20348.2340; system_locale=de-DE; '
        'culture=de-DE; ui_language=en-US; time_zone=W. Europe Standard Time"',
        "}",
        "INFO     [windows > create] Executed: Successful",
        "INFO     [windows > converge] Executing",
        "PLAY [Python is installed on the Prefect hosts] ********************************",
        "TASK [enclave.prefect.python : Python installer is in place] *******************",
        STAMP.format("0:00:00.100"),
        f"changed: [{HOST}]",
        "TASK [enclave.prefect.postgresql : PostgreSQL is installed] ********************",
        STAMP.format("0:00:02.500"),
        f"changed: [{HOST}] => (item=server)",
        "PLAY RECAP *********************************************************************",
        f"{HOST}         : ok=2    changed=2    unreachable=0    failed=0    skipped=0",
        "TASKS RECAP ********************************************************************",
        STAMP.format("0:01:40.000"),
        "INFO     [windows > converge] Executed: Successful",
        "INFO     [windows > idempotence] Executing",
        "TASK [enclave.prefect.python : Python installer is in place] *******************",
        STAMP.format("0:00:00.100"),
        f"ok: [{HOST}]",
        "TASK [enclave.prefect.nssm_services : Service settings are as configured] ******",
        STAMP.format("0:00:01.000"),
        f"changed: [{HOST}] => (item=PrefectServer)",
        f"ok: [{HOST}] => (item=PrefectWorkerMolecule)",
        "TASK [enclave.prefect.backup : Backup login exists] ****************************",
        STAMP.format("0:00:03.000"),
        f"fatal: [{HOST}]: FAILED! => "
        + json.dumps({"changed": False, "msg": f"password authentication failed for prefect_backup ({ADMIN_PASSWORD})"}),
        "TASKS RECAP ********************************************************************",
        STAMP.format("0:00:04.000"),
        "CRITICAL Idempotence test failed because of the following tasks:",
        f"* [{HOST}] => enclave.prefect.nssm_services : Service settings are as configured",
        "ERROR    [windows > idempotence] \x1b[31mExecuted: Failed\x1b[0m",
        "INFO     [windows > verify] Executing",
        "TASK [Check tasks: pools READY, workers ONLINE] ********************************",
        STAMP.format("0:00:00.200"),
        f"fatal: [{HOST}]: FAILED! => " + json.dumps({"changed": False, "msg": "pool molecule-process is NOT_READY"}),
        "TASK [Verify report] ***********************************************************",
        STAMP.format("0:00:05.000"),
        f"ok: [{HOST}] => {{",
        '    "msg": ' + json.dumps(verify_table, indent=4).replace("\n", "\n    "),
        "}",
        "PLAY RECAP *********************************************************************",
        "INFO     [windows > verify] Executed: Successful",
        "",
    ])


@pytest.fixture()
def rendered(tmp_path, monkeypatch):
    log = tmp_path / "run.log"
    log.write_text(fake_log(), encoding="utf-8")
    monkeypatch.setenv("MOLECULE_WINDOWS_DB_PASSWORD", DB_PASSWORD)
    monkeypatch.setenv("MOLECULE_WINDOWS_PASSWORD", ADMIN_PASSWORD)
    out = tmp_path / "report.md"
    assert report.main(["--host", HOST, "--exit-code", "2", "-o", str(out), str(log)]) == 0
    return out.read_text(encoding="utf-8")


def test_secrets_are_masked_also_url_encoded(rendered):
    assert DB_PASSWORD not in rendered and urllib.parse.quote(DB_PASSWORD, safe="") not in rendered
    assert ADMIN_PASSWORD not in rendered
    assert "postgresql+asyncpg://prefect:********@127.0.0.1/prefect" in rendered
    assert "prefect_backup (********)" in rendered


def test_masker_covers_encodings():
    mask = report.masker([DB_PASSWORD])
    for form in (DB_PASSWORD, urllib.parse.quote(DB_PASSWORD, safe=""), urllib.parse.quote(DB_PASSWORD).lower(),
                 urllib.parse.quote_plus(DB_PASSWORD), json.dumps(DB_PASSWORD)[1:-1]):
        assert mask(f"x {form} y") == "x ******** y", form


def test_secret_values_come_from_secret_names_only():
    env = {"MOLECULE_WINDOWS_PASSWORD": "Adm1n-S3cret", "MOLECULE_WINDOWS_HOST": "win-lab", "API_TOKEN": "t0ken",
           "OTHER": "plain", "SHORT_PASSWORD": "ab"}
    assert report.secret_values(env, ["OTHER"]) == ["Adm1n-S3cret", "plain", "t0ken"]


def test_changed_tasks_of_the_second_converge(rendered):
    section = rendered.split("## Second converge (idempotence)", 1)[1].split("##", 1)[0]
    assert "enclave.prefect.nssm_services : Service settings are as configured" in section
    assert "Python installer is in place" not in section  # changed on the first converge only


def test_failures_name_step_task_and_message(rendered):
    section = rendered.split("## Failures", 1)[1].split("## Tasks per role", 1)[0]
    stopping, _, handled = section.partition("rescued or ignored")
    assert f"**idempotence** / enclave.prefect.backup : Backup login exists on {HOST}: password authentication" in stopping
    assert "Idempotence test failed" in stopping
    # verify.yml rescues a failed check (the run went on to print its table): listed apart.
    assert "Check tasks: pools READY, workers ONLINE" in handled and "Check tasks" not in stopping


def test_header_verify_table_and_timings(rendered):
    assert "| Result | FAILED (exit code 2) |" in rendered
    assert "| Windows | Windows Server 2022 Standard, build 10.0.20348.2340 |" in rendered
    assert "system de-DE, culture de-DE, UI language en-US" in rendered
    assert "idempotence: Failed" in rendered and "verify: Successful" in rendered
    assert f"| {HOST} | proxy (negotiate 200, anonymous 401) | ok: https://prefect.corp.local Prefect 3.8.8 |" in rendered
    converge = rendered.split("### converge", 1)[1].split("###", 1)[0]
    # Each timestamp line measures the task before it: postgresql ran 100 s (up to the recap), python 2.5 s.
    assert "| postgresql | 1 | 1 | 0 | 0 | 100.0 |" in converge
    assert "| python | 1 | 1 | 0 | 0 | 2.5 |" in converge


def test_json_callback_output(tmp_path):
    document = {"plays": [{"play": {"name": "Python"}, "tasks": [
        {"task": {"name": "enclave.prefect.python : Python is installed",
                  "duration": {"start": "2026-12-06T06:58:49.000000Z", "end": "2026-12-06T06:58:51.500000Z"}},
         "hosts": {HOST: {"changed": True}}},
        {"task": {"name": "enclave.prefect.python : Version is checked", "duration": {}},
         "hosts": {HOST: {"failed": True, "msg": "Python 3.11 found"}}}]}],
        "stats": {HOST: {"failures": 1, "unreachable": 0}}}
    path = tmp_path / "again.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    run = report.read_runs([f"idempotence={path}"])
    assert report.changed_on_second_converge(run) == [f"enclave.prefect.python : Python is installed ({HOST})"]
    assert run.tasks[0].seconds == 2.5
    assert run.tasks[1].failures == [(HOST, "Python 3.11 found")] and run.steps == [("idempotence", "Failed")]


def test_command_line_writes_to_stdout(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(fake_log(), encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "MOLECULE_WINDOWS_PASSWORD": ADMIN_PASSWORD}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--host", HOST, str(log)], capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"# Windows acceptance run: {HOST}") and ADMIN_PASSWORD not in proc.stdout
    assert "| Result | FAILED |" in proc.stdout  # no exit code given: read from the steps
