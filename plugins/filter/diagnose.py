# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ranked findings of playbooks/diagnose.yml, computed on the control node from what diagnose.ps1 collected on
each host. Each rule reads one part of a host's report and says what is wrong in words an operator acts on."""
from __future__ import annotations

import re
from datetime import datetime, timezone

DOCUMENTATION = r"""
name: diagnose_findings
short_description: Ranked problems found in the reports of playbooks/diagnose.yml
version_added: 0.1.0
description:
  - Takes a dict host -> report (the result of C(diagnose.ps1), or a dict with C(unreachable) true and C(msg) for a
    host that could not be read) and returns a list of findings C({rank, severity, host, area, message}), most urgent
    first, C(critical), then C(warning), then C(info), and within a severity the larger problem first.
  - "Rules: a service not running or paused; a service restarted too often in the collected event window; a worker
    OFFLINE (and for how long); a pool not READY or paused; Prefect not healthy or not ready; late and stuck flow runs;
    certificates expired or expiring; a SQLite database past a size; the database unreachable; a full disk; a large
    log directory; a section the host could not collect."
positional: _input
options:
  _input:
    description: Reports by host.
    type: dict
    required: true
  thresholds:
    description: Overrides of the thresholds (see C(THRESHOLDS) in the source).
    type: dict
    default: {}
  more:
    description: More findings C({severity, host, area, message, evidence, fix, weight}) to rank with these.
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Findings are ranked
  ansible.builtin.set_fact:
    findings: "{{ reports | enclave.prefect.diagnose_findings({'cert_warn_days': 45}) }}"
"""

RETURN = r"""
_value:
  description: Findings, most urgent first; C(rank) from 1, and C(evidence) and C(fix) where the rule gives them.
  type: list
  elements: dict
"""

THRESHOLDS = {
    "cert_critical_days": 14,
    "cert_warn_days": 30,
    "disk_critical_percent": 95,
    "disk_warn_percent": 90,
    "sqlite_warn_bytes": 1024 ** 3,
    "restarts_warn": 3,
    "restarts_critical": 10,
    "log_dir_warn_bytes": 5 * 1024 ** 3,
    "stuck_hours": 6,
    "late_warn": 1,
}
SEVERITY = {"critical": 0, "warning": 1, "info": 2}
# NSSM writes an Application-log entry each time the application exits and is started again (event source "nssm");
# the Service Control Manager logs 7031/7034 when a service terminates unexpectedly.
RESTART_MESSAGE = re.compile(r"(?i)exited with return code|terminated unexpectedly")


def _time(value):
    if not value:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", str(value).strip().replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _duration(seconds):
    seconds = max(0, int(seconds))
    if seconds >= 2 * 86400:
        return "%d days" % (seconds // 86400)
    if seconds >= 3600:
        return "%d h" % (seconds // 3600)
    return "%d min" % (seconds // 60)


def _size(count):
    for unit, factor in (("GB", 1024 ** 3), ("MB", 1024 ** 2)):
        if count >= factor:
            return "%.1f %s" % (count / factor, unit)
    return "%d bytes" % count


def _finding(findings, severity, host, area, message, weight=0.0):
    findings.append({"severity": severity, "host": host, "area": area, "message": message, "weight": float(weight)})


def _services(findings, host, report, limits):
    for svc in report.get("services") or []:
        state = str(svc.get("state") or "")
        if state == "Paused":
            _finding(findings, "critical", host, "service", "%s is PAUSED: NSSM throttles it because its application exits "
                     "right after it starts (see its .err.log)" % svc.get("name"), 1000)
        elif state != "Running" and svc.get("start_mode") != "Disabled":
            _finding(findings, "critical", host, "service", "%s is %s" % (svc.get("name"), state or "in an unknown state"), 1000)
        elif state == "Running" and not svc.get("app_pid"):
            _finding(findings, "critical", host, "service", "%s runs but its application does not (NSSM is restarting it)"
                     % svc.get("name"), 900)
    counts = {}
    names = [svc.get("name") for svc in report.get("services") or [] if svc.get("name")]
    for event in report.get("events") or []:
        if not RESTART_MESSAGE.search(str(event.get("message") or "")):
            continue
        for name in names:
            if re.search(r"\b%s\b" % re.escape(name), str(event.get("message"))):
                counts[name] = counts.get(name, 0) + 1
    for name, count in sorted(counts.items()):
        if count >= limits["restarts_warn"]:
            severity = "critical" if count >= limits["restarts_critical"] else "warning"
            _finding(findings, severity, host, "service", "%s restarted %d times in the collected event window" % (name, count), count)


def _prefect(findings, host, report, limits, now):
    prefect = report.get("prefect")
    if prefect:
        if str(prefect.get("health")).lower() != "true":
            _finding(findings, "critical", host, "prefect", "Prefect /api/health answered %s" % prefect.get("health"), 2000)
        elif str(prefect.get("ready")) != "OK":
            _finding(findings, "critical", host, "prefect", "Prefect is not ready (/api/ready: %s): its database is not "
                     "available" % prefect.get("ready"), 1900)
    for pool in report.get("pools") or []:
        if pool.get("is_paused") or pool.get("status") == "PAUSED":
            _finding(findings, "warning", host, "pool", "work pool %s is paused: no flow run starts from it" % pool.get("name"), 10)
        elif pool.get("status") != "READY":
            _finding(findings, "critical", host, "pool", "work pool %s is %s: no worker polls it" % (pool.get("name"), pool.get("status")), 800)
        for worker in pool.get("workers") or []:
            if worker.get("status") == "ONLINE":
                continue
            beat = _time(worker.get("last_heartbeat_time"))
            since = " for %s" % _duration((now - beat).total_seconds()) if beat else ""
            _finding(findings, "critical", host, "worker", "worker %s of pool %s OFFLINE%s" % (worker.get("name"), pool.get("name"), since),
                     500 + ((now - beat).total_seconds() / 3600 if beat else 0))
    runs = report.get("flow_runs") or {}
    late = runs.get("late") or []
    if len(late) >= limits["late_warn"]:
        oldest = min((_time(r.get("expected_start_time")) for r in late if _time(r.get("expected_start_time"))), default=None)
        behind = ", the oldest %s behind" % _duration((now - oldest).total_seconds()) if oldest else ""
        _finding(findings, "warning", host, "flow runs", "%d flow run(s) Late%s: no worker picks them up" % (len(late), behind), len(late))
    stuck_hours = runs.get("stuck_hours") or limits["stuck_hours"]
    for run in runs.get("active") or []:
        started = _time(run.get("start_time")) or _time(run.get("expected_start_time"))
        if started and (now - started).total_seconds() > stuck_hours * 3600:
            _finding(findings, "warning", host, "flow runs", "flow run %s (%s) %s for %s" % (
                run.get("name"), run.get("id"), run.get("state_name") or run.get("state_type"),
                _duration((now - started).total_seconds())), (now - started).total_seconds() / 3600)


def _certificates(findings, host, report, limits):
    for cert in report.get("certificates") or []:
        days = cert.get("days_left")
        if days is None:
            continue
        label = "certificate %s (%s)" % (cert.get("subject"), str(cert.get("thumbprint"))[:8])
        if days < 0:
            _finding(findings, "critical", host, "certificate", "%s expired %d days ago" % (label, -days), 700 - days)
        elif days < limits["cert_critical_days"]:
            _finding(findings, "critical", host, "certificate", "%s expires in %d days" % (label, days), 700 - days)
        elif days < limits["cert_warn_days"]:
            _finding(findings, "warning", host, "certificate", "%s expires in %d days" % (label, days), 100 - days)


def _storage(findings, host, report, limits):
    db = report.get("database") or {}
    if db.get("sqlite_bytes", 0) >= limits["sqlite_warn_bytes"]:
        _finding(findings, "warning", host, "database", "SQLite database %s: move to PostgreSQL" % _size(db["sqlite_bytes"]),
                 db["sqlite_bytes"] / 1024 ** 3)
    if db.get("host") and db.get("reachable") is False:
        _finding(findings, "critical", host, "database", "database %s:%s unreachable: %s" % (db.get("host"), db.get("port"),
                 db.get("detail") or "no connection"), 1500)
    for disk in report.get("disks") or []:
        used = float(disk.get("used_percent") or 0)
        if used >= limits["disk_warn_percent"]:
            severity = "critical" if used >= limits["disk_critical_percent"] else "warning"
            _finding(findings, severity, host, "disk", "%s %d%% full (%s free)" % (disk.get("drive"), round(used), _size(disk.get("free") or 0)), used)
    logs = report.get("logs") or {}
    if logs.get("dir_bytes", 0) >= limits["log_dir_warn_bytes"]:
        _finding(findings, "warning", host, "logs", "service logs take %s: lower nssm_services_log_retention_days"
                 % _size(logs["dir_bytes"]), logs["dir_bytes"] / 1024 ** 3)


def diagnose_findings(reports, thresholds=None, more=None):
    limits = dict(THRESHOLDS, **(thresholds or {}))
    findings = [dict(f) for f in more or []]
    for host, report in sorted((reports or {}).items()):
        report = report or {}
        if report.get("unreachable") or report.get("failed"):
            _finding(findings, "critical", host, "host", "could not be read: %s" % (report.get("msg") or "no answer"), 5000)
            continue
        now = _time(report.get("collected_at")) or datetime.now(timezone.utc)
        _services(findings, host, report, limits)
        _prefect(findings, host, report, limits, now)
        _certificates(findings, host, report, limits)
        _storage(findings, host, report, limits)
        for section, message in sorted((report.get("errors") or {}).items()):
            _finding(findings, "info", host, section, "section %s could not be collected: %s" % (section, message))
    findings.sort(key=lambda f: (SEVERITY[f["severity"]], -f["weight"], f["host"], f["message"]))
    for rank, finding in enumerate(findings, start=1):
        finding["rank"] = rank
        del finding["weight"]
    return findings


def diagnose_summary(findings, hosts):
    """The Markdown page on top of the archive: the ranked findings, then one line per host."""
    lines = ["# Prefect diagnosis", ""]
    if findings:
        lines += ["| # | Severity | Host | Area | Finding |", "| --- | --- | --- | --- | --- |"]
        lines += ["| %d | %s | %s | %s | %s |" % (f["rank"], f["severity"], f["host"], f["area"], f["message"].replace("|", "\\|"))
                  for f in findings]
    else:
        lines.append("No problem found.")
    detailed = [f for f in findings if f.get("evidence") or f.get("fix")]
    if detailed:
        lines += ["", "## Evidence and fixes", ""]
        lines += ["%d. %s, %s: %s\n   - evidence: %s\n   - fix: %s" % (f["rank"], f["host"], f["area"], f["message"],
                                                                       f.get("evidence") or "-", f.get("fix") or "-") for f in detailed]
    lines += ["", "## Hosts", ""]
    for host in sorted(hosts or []):
        count = len([f for f in findings if f["host"] == host and f["severity"] != "info"])
        lines.append("- %s: %s, details in %s/" % (host, "%d problem(s)" % count if count else "no problem", host))
    return "\n".join(lines) + "\n"


def diagnose_details(findings):
    """Lines for the playbook's output: each finding with evidence or a fix, by its rank."""
    return ["#%d %s %s: evidence: %s | fix: %s" % (f["rank"], f["host"], f["area"], f.get("evidence") or "-", f.get("fix") or "-")
            for f in findings or [] if f.get("evidence") or f.get("fix")]


class FilterModule:
    def filters(self):
        return {"diagnose_findings": diagnose_findings, "diagnose_summary": diagnose_summary, "diagnose_details": diagnose_details}
