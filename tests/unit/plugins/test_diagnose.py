"""The ranked findings of playbooks/diagnose.yml (plugins/filter/diagnose.py) and the operator playbooks' closing
table (plugins/filter/operate.py): each rule on a report that trips it and on one that does not."""
from __future__ import annotations

import pytest

from ansible_collections.enclave.prefect.plugins.filter.diagnose import diagnose_findings, diagnose_summary
from ansible_collections.enclave.prefect.plugins.filter.operate import operate_host_rows, operate_table

pytestmark = pytest.mark.unit

NOW = "2026-03-01T12:00:00+00:00"
GB = 1024 ** 3


def _messages(report, **thresholds):
    return [f["message"] for f in diagnose_findings({"h1": dict(report, collected_at=NOW)}, thresholds)]


def test_healthy_report_has_no_finding():
    report = {"services": [{"name": "PrefectServer", "state": "Running", "app_pid": 10}],
              "prefect": {"health": "True", "ready": "OK"},
              "pools": [{"name": "etl", "status": "READY", "workers": [{"name": "w", "status": "ONLINE"}]}],
              "certificates": [{"subject": "CN=x", "thumbprint": "AB", "days_left": 200}],
              "disks": [{"drive": "C:", "used_percent": 40, "free": 50 * GB}],
              "database": {"sqlite_bytes": 10 * 1024 ** 2}, "logs": {"dir_bytes": 1024}, "errors": {}}
    assert diagnose_findings({"h1": dict(report, collected_at=NOW)}) == []


def test_worker_offline_names_how_long():
    report = {"pools": [{"name": "etl", "status": "READY", "workers": [
        {"name": "w1", "status": "OFFLINE", "last_heartbeat_time": "2026-03-01T10:00:00Z"},
        {"name": "w2", "status": "ONLINE", "last_heartbeat_time": NOW}]}]}
    assert _messages(report) == ["worker w1 of pool etl OFFLINE for 2 h"]


@pytest.mark.parametrize("days, severity, text", [(9, "critical", "expires in 9 days"), (20, "warning", "expires in 20 days"),
                                                  (-3, "critical", "expired 3 days ago"), (31, None, None)])
def test_certificate_expiry(days, severity, text):
    found = diagnose_findings({"h": {"collected_at": NOW, "certificates": [{"subject": "CN=p", "thumbprint": "ABCDEF12", "days_left": days}]}})
    if severity is None:
        assert found == []
    else:
        assert found[0]["severity"] == severity and text in found[0]["message"]


def test_sqlite_size_disk_and_logs():
    disks = [{"drive": "C:", "used_percent": 93.4, "free": 5 * GB}, {"drive": "D:", "used_percent": 89.9, "free": GB}]
    msgs = _messages({"database": {"sqlite_bytes": int(1.2 * GB)}, "disks": disks, "logs": {"dir_bytes": 6 * GB}})
    assert "SQLite database 1.2 GB: move to PostgreSQL" in msgs
    assert "C: 93% full (5.0 GB free)" in msgs
    assert not [m for m in msgs if m.startswith("D:")]
    assert [m for m in msgs if m.startswith("service logs take 6.0 GB")]


def test_restarts_counted_per_service_from_nssm_and_scm_events():
    events = [{"message": "Program python.exe for service PrefectWorker exited with return code 1."}] * 14
    events += [{"message": "The PrefectServer service terminated unexpectedly."}] * 3
    events += [{"message": "Started PrefectServer"}] * 50
    report = {"services": [{"name": "PrefectWorker", "state": "Running", "app_pid": 1},
                           {"name": "PrefectServer", "state": "Running", "app_pid": 2}], "events": events}
    found = diagnose_findings({"h": dict(report, collected_at=NOW)})
    assert [(f["severity"], f["message"]) for f in found] == [
        ("critical", "PrefectWorker restarted 14 times in the collected event window"),
        ("warning", "PrefectServer restarted 3 times in the collected event window")]


def test_services_prefect_and_database():
    msgs = _messages({"services": [{"name": "A", "state": "Stopped", "start_mode": "Auto"}, {"name": "B", "state": "Paused"},
                                   {"name": "C", "state": "Running", "app_pid": 0}, {"name": "D", "state": "Stopped", "start_mode": "Disabled"}],
                      "prefect": {"health": "True", "ready": "error: 503"},
                      "database": {"host": "db01", "port": 5432, "reachable": False, "detail": "refused"}})
    assert "A is Stopped" in msgs and "C runs but its application does not (NSSM is restarting it)" in msgs
    assert [m for m in msgs if m.startswith("B is PAUSED")] and not [m for m in msgs if m.startswith("D ")]
    assert msgs[0].startswith("Prefect is not ready") and "database db01:5432 unreachable: refused" in msgs


def test_late_and_stuck_runs_and_paused_pools():
    runs = {"late": [{"expected_start_time": "2026-03-01T11:00:00Z"}, {"expected_start_time": "2026-03-01T09:00:00Z"}],
            "active": [{"name": "old", "id": "1", "state_name": "Running", "start_time": "2026-02-28T12:00:00Z"},
                       {"name": "young", "id": "2", "state_name": "Running", "start_time": "2026-03-01T11:00:00Z"}],
            "stuck_hours": 6}
    msgs = _messages({"flow_runs": runs, "pools": [{"name": "p", "status": "PAUSED", "is_paused": True, "workers": []}]})
    assert "2 flow run(s) Late, the oldest 3 h behind: no worker picks them up" in msgs
    assert "flow run old (1) Running for 24 h" in msgs and not [m for m in msgs if "young" in m]
    assert "work pool p is paused: no flow run starts from it" in msgs


def test_ranking_and_unreachable_hosts():
    reports = {"b": {"collected_at": NOW, "disks": [{"drive": "C:", "used_percent": 91, "free": 0}], "errors": {"iis": "boom"}},
               "a": {"unreachable": True, "msg": "timed out"},
               "c": {"collected_at": NOW, "disks": [{"drive": "C:", "used_percent": 99, "free": 0}]}}
    found = diagnose_findings(reports)
    assert [(f["rank"], f["host"], f["severity"]) for f in found] == [
        (1, "a", "critical"), (2, "c", "critical"), (3, "b", "warning"), (4, "b", "info")]
    summary = diagnose_summary(found, ["a", "b", "c"])
    assert summary.splitlines()[4].startswith("| 1 | critical | a | host | could not be read: timed out")
    assert "- b: 1 problem(s), details in b/" in summary


def test_thresholds_can_be_overridden():
    assert _messages({"disks": [{"drive": "C:", "used_percent": 85, "free": 0}]}, disk_warn_percent=80) == ["C: 85% full (0 bytes free)"]


def test_operate_table_and_rows():
    rows = operate_host_rows({"h1": {"operate_steps": [{"step": "a", "result": "done"}]}, "h2": {}}, ["h1", "h2"])
    assert rows == [{"step": "a", "result": "done", "host": "h1"}]
    assert operate_table(rows, ["host", "step", "result"]) == ["HOST | STEP | RESULT", "h1   | a    | done"]
