#!/usr/bin/env python3
"""Markdown report of a Windows acceptance run (molecule/windows), to send back to the project.

Reads the run's output: molecule's text log (`molecule test -s windows 2>&1 | tee run.log`, as
scripts/windows-acceptance.sh captures it), or the output of ansible-playbook with the json callback
(ANSIBLE_STDOUT_CALLBACK=ansible.posix.json), one file per playbook run given as STEP=FILE
(converge=site.json idempotence=site-again.json verify=verify.json destroy=uninstall.json).

The report holds: the collection and Prefect versions, the Windows edition, build and locale (the line the scenario's
create step prints), the result of each molecule step, the tasks changed by the second converge, verify.yml's table,
the uninstall table, every failure with its task and message, and the task counts and timings per role and step.

Every secret is masked: the value of each environment variable whose name holds PASSWORD, PASSWD, SECRET or TOKEN
(and of each --mask-env NAME) is replaced with ******** wherever it appears, also URL-encoded or JSON-escaped.

    python3 scripts/acceptance_report.py --host win2022-lab --exit-code 0 -o report.md run.log
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

MASK = "********"
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN", re.I)
# Shorter values would blank out ordinary words of the log; no real password is this short.
MIN_SECRET_LENGTH = 3
ROOT = Path(__file__).resolve().parent.parent

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# molecule 25+: "INFO     [windows > converge] Executing" / "... Executed: Successful"; older: "Running windows > converge".
STEP_LINE = re.compile(r"\[(?P<scenario>[\w.-]+) > (?P<step>[\w-]+)\] (?:Executing|Executed: (?P<result>.+?))\s*$")
STEP_LINE_OLD = re.compile(r"^INFO\s+Running (?P<scenario>[\w.-]+) > (?P<step>[\w-]+)\s*$")
TASK_HEADER = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<name>.*)\] \**\s*$")
# ansible.posix.profile_tasks, after each task header: "<date> (<time since the previous task started>)  <total> ****"
TASK_TIME = re.compile(r"\((\d+):(\d{2}):(\d{2})\.(\d{3})\)\s+\d+:\d{2}:\d{2}\.\d{3}\s*\**\s*$")
RESULT_LINE = re.compile(
    r"^(?P<status>ok|changed|skipping|fatal|failed|unreachable): \[(?P<host>[^\]]+?)(?: -> [^\]]+)?\]"
    r"(?:: (?:FAILED|UNREACHABLE)!)?(?: \(item=(?P<item>.*?)\))?(?: => (?P<rest>.*))?$")
MOLECULE_PROBLEM = re.compile(r"^(?:CRITICAL|ERROR)\s+(?P<msg>.+)$")
IDEMPOTENCE_ITEM = re.compile(r"^\* \[(?P<host>[^\]]+)\] => (?P<task>.+)$")
WINDOWS_LINE = "Windows host:"
# molecule's own messages that are no problem of the run: it looks for a default scenario first.
BENIGN = re.compile(r"molecule/default/molecule\.yml' glob failed")


@dataclass
class Task:
    step: str
    name: str
    hosts: dict[str, str] = field(default_factory=dict)  # host -> ok | changed | skipped | failed
    failures: list[tuple[str, str]] = field(default_factory=list)  # (host, message)
    results: list[dict] = field(default_factory=list)  # parsed result bodies (debug messages among them)
    seconds: float | None = None
    handled: set[str] = field(default_factory=set)  # hosts whose failure was ignored or rescued

    @property
    def role(self) -> str:
        if " : " not in self.name:
            return "(playbook tasks)"
        return self.name.split(" : ", 1)[0].rsplit(".", 1)[-1]

    @property
    def status(self) -> str:
        states = set(self.hosts.values())
        for state in ("failed", "changed", "ok", "skipped"):
            if state in states:
                return state
        return "ok"


@dataclass
class Run:
    tasks: list[Task] = field(default_factory=list)
    steps: list[tuple[str, str]] = field(default_factory=list)  # (step, result)
    problems: list[str] = field(default_factory=list)  # molecule's own error lines
    idempotence_changed: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------- masking
def secret_values(environ: dict[str, str], extra_names: list[str]) -> list[str]:
    names = {n for n in environ if SECRET_NAME.search(n)} | set(extra_names)
    return sorted({environ[n] for n in names if len(environ.get(n) or "") >= MIN_SECRET_LENGTH})


def masker(secrets: list[str]):
    """A function replacing each secret, as given, URL-encoded (either case of hex digits), form-encoded or
    JSON-escaped, with ********."""
    variants: set[str] = set()
    for value in secrets:
        for form in (value, urllib.parse.quote(value, safe=""), urllib.parse.quote(value),
                     urllib.parse.quote_plus(value), json.dumps(value)[1:-1], value.replace("\\", "\\\\")):
            variants.add(form)
            variants.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), form))
    variants = {v for v in variants if len(v) >= MIN_SECRET_LENGTH}
    if not variants:
        return lambda text: text
    pattern = re.compile("|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True)))
    return lambda text: pattern.sub(MASK, text)


# ---------------------------------------------------------------------------------------------------------- parsing
def _json_block(first: str, lines: list[str], i: int) -> tuple[object, int]:
    """A JSON value that starts with `first` (the rest of a result line) and may go on over the next lines."""
    text = first
    while True:
        try:
            return json.loads(text), i
        except ValueError:
            if i >= len(lines) or len(text) > 2_000_000:
                return None, i
            text += "\n" + lines[i]
            i += 1


def _yaml_msg(lines: list[str], i: int) -> tuple[str, int]:
    """The msg of a result in the YAML result format: the indented lines after the result line."""
    block = []
    while i < len(lines) and lines[i].startswith("    "):
        block.append(lines[i].strip())
        i += 1
    text = " ".join(block)
    found = re.search(r"(?:^|\s)msg: (.*?)(?:\s\w+: |$)", text)
    return (found.group(1).strip("'\"") if found else text[:500]), i


def _message(result: object, fallback: str) -> str:
    if not isinstance(result, dict):
        return fallback or "failed"
    msg = result.get("msg") or fallback or "failed"
    if not isinstance(msg, str):
        msg = json.dumps(msg)
    stderr = result.get("stderr") or ""
    if stderr and isinstance(stderr, str) and stderr.strip() not in msg:
        msg += " | stderr: " + " / ".join(stderr.strip().splitlines()[-5:])
    return msg


def parse_text(text: str, default_step: str = "playbook") -> Run:
    run = Run()
    lines = ANSI.sub("", text).replace("\r\n", "\n").split("\n")
    step = default_step
    task: Task | None = None
    timed: Task | None = None  # the task the next profile_tasks line measures
    header_just_seen: Task | None = None
    last_error = ""
    in_idempotence_list = False
    seen_in_playbook: dict[str, list[Task]] = {}  # host -> tasks that ran on it in the current playbook run
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        step_match = STEP_LINE.search(line) or STEP_LINE_OLD.search(line)
        if step_match:
            step = step_match.group("step")
            result = step_match.groupdict().get("result")
            # "Missing playbook": a step the scenario does not have (cleanup, run by molecule after a failure).
            if result and not result.startswith("Missing playbook"):
                run.steps.append((step, result.strip()))
            task = timed = header_just_seen = None
            in_idempotence_list = False
            seen_in_playbook = {}
            continue
        if "Idempotence test failed because of the following tasks" in line:
            in_idempotence_list = True
            run.problems.append("Idempotence test failed: the second converge changed the tasks listed above.")
            continue
        if in_idempotence_list:
            item = IDEMPOTENCE_ITEM.match(line.strip())
            if item:
                run.idempotence_changed.append(item.group("task"))
                continue
            in_idempotence_list = False
        problem = MOLECULE_PROBLEM.match(line)
        if problem and "Executed:" not in line and "Executing" not in line and not BENIGN.search(line):
            run.problems.append(problem.group("msg").strip())
            continue
        header = TASK_HEADER.match(line)
        if header:
            task = Task(step=step, name=header.group("name"))
            run.tasks.append(task)
            header_just_seen = task
            last_error = ""
            continue
        if line.startswith("TASKS RECAP"):
            header_just_seen = None
            continue
        if line.startswith("PLAY RECAP"):
            seen_in_playbook = {}
            task = None
            continue
        timing = TASK_TIME.search(line)
        if timing:
            h, m, s, ms = (int(g) for g in timing.groups())
            if timed is not None:
                timed.seconds = (timed.seconds or 0.0) + h * 3600 + m * 60 + s + ms / 1000
            timed, header_just_seen = header_just_seen, None
            continue
        if line.startswith("[ERROR]: "):
            last_error = line[len("[ERROR]: "):].strip()
            continue
        if line.strip() == "...ignoring" and task is not None:
            task.handled.update(h for h, s in task.hosts.items() if s == "failed")
            continue
        result_match = RESULT_LINE.match(line)
        if not result_match or task is None:
            continue
        status, host, rest = result_match.group("status"), result_match.group("host"), result_match.group("rest")
        body: object = None
        if rest is not None:
            rest = rest.strip()
            if rest.startswith(("{", "[")):
                body, i = _json_block(rest, lines, i)
            elif rest == "":
                body, i = _yaml_msg(lines, i)
                body = {"msg": body}
        if isinstance(body, dict):
            task.results.append(body)
        # A host that failed earlier in this playbook run and still runs tasks: that failure was rescued or ignored.
        for earlier in seen_in_playbook.get(host, []):
            if earlier is not task and earlier.hosts.get(host) == "failed":
                earlier.handled.add(host)
        seen_in_playbook.setdefault(host, [])
        if task not in seen_in_playbook[host]:
            seen_in_playbook[host].append(task)
        state = {"skipping": "skipped", "fatal": "failed", "unreachable": "failed"}.get(status, status)
        if state == "failed":
            label = f" (item={result_match.group('item')})" if result_match.group("item") else ""
            task.failures.append((host, _message(body, last_error) + label))
        previous = task.hosts.get(host)
        order = ["skipped", "ok", "changed", "failed"]
        if previous is None or order.index(state) > order.index(previous):
            task.hosts[host] = state
    return run


def parse_json(text: str, step_names: list[str]) -> Run:
    """ansible.posix.json output: one or more JSON documents, one per playbook run, named by step_names in order."""
    run = Run()
    decoder = json.JSONDecoder()
    position, index = 0, 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            break
        document, position = decoder.raw_decode(text, position)
        step = step_names[index] if index < len(step_names) else f"playbook {index + 1}"
        index += 1
        last_task_of_host: dict[str, int] = {}
        start = len(run.tasks)
        for play in document.get("plays", []):
            for entry in play.get("tasks", []):
                info = entry.get("task", {})
                task = Task(step=step, name=info.get("name", ""))
                duration = info.get("duration") or {}
                if duration.get("start") and duration.get("end"):
                    begin = dt.datetime.fromisoformat(duration["start"].replace("Z", "+00:00"))
                    end = dt.datetime.fromisoformat(duration["end"].replace("Z", "+00:00"))
                    task.seconds = (end - begin).total_seconds()
                for host, result in (entry.get("hosts") or {}).items():
                    task.results.append(result)
                    if result.get("failed") or result.get("unreachable"):
                        task.hosts[host] = "failed"
                        items = [r for r in result.get("results", []) if isinstance(r, dict) and r.get("failed")]
                        for item in items or [result]:
                            label = f" (item={item.get('_ansible_item_label', item.get('item'))})" if items else ""
                            task.failures.append((host, _message(item, "") + label))
                    elif result.get("changed"):
                        task.hosts[host] = "changed"
                    elif result.get("skipped"):
                        task.hosts[host] = "skipped"
                    else:
                        task.hosts[host] = "ok"
                    last_task_of_host[host] = len(run.tasks)
                run.tasks.append(task)
        # A failed host that has results in later tasks of the same run: its failure was rescued or ignored.
        for number in range(start, len(run.tasks)):
            task = run.tasks[number]
            task.handled.update(h for h, s in task.hosts.items() if s == "failed" and last_task_of_host.get(h, -1) > number)
        failed = any(s.get("failures") or s.get("unreachable") for s in (document.get("stats") or {}).values())
        run.steps.append((step, "Failed" if failed else "Successful"))
    return run


def read_runs(paths: list[str], mask=lambda text: text) -> Run:
    """The runs in these files, every secret masked before anything is read from them."""
    merged = Run()
    json_steps = ["converge", "idempotence", "verify", "destroy"]
    for argument in paths:
        step, _, path = argument.rpartition("=") if "=" in argument and not Path(argument).exists() else ("", "", argument)
        text = mask(Path(path).read_text(encoding="utf-8", errors="replace"))
        if text.lstrip().startswith("{"):
            names = [step] if step else json_steps[len({t.step for t in merged.tasks}):]
            part = parse_json(text, names)
        else:
            part = parse_text(text, step or "playbook")
        merged.tasks += part.tasks
        merged.steps += part.steps
        merged.problems += part.problems
        merged.idempotence_changed += part.idempotence_changed
    return merged


# ---------------------------------------------------------------------------------------------------------- report
def _version(path: Path, key: str) -> str:
    try:
        found = re.search(rf"^{key}:\s*[\"']?([^\"'\s#]+)", path.read_text(encoding="utf-8"), re.M)
    except OSError:
        return "unknown"
    return found.group(1) if found else "unknown"


def windows_facts(run: Run) -> dict[str, str]:
    for task in run.tasks:
        for result in task.results:
            msg = result.get("msg")
            if isinstance(msg, str) and msg.startswith(WINDOWS_LINE):
                pairs = (part.split("=", 1) for part in msg[len(WINDOWS_LINE):].split(";") if "=" in part)
                return {k.strip(): v.strip() for k, v in pairs}
    return {}


def table_of(run: Run, name: re.Pattern[str], step: str = "") -> list[str]:
    """The lines of the last table a task called `name` printed (verify.yml's and uninstall.yml's reports)."""
    for task in reversed(run.tasks):
        if name.search(task.name) and (not step or task.step == step):
            for result in task.results:
                if isinstance(result.get("msg"), list):
                    return [str(line) for line in result["msg"]]
    return []


def cell(value: str) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_table(lines: list[str]) -> list[str]:
    if not lines:
        return ["(not printed: the step did not get that far)"]
    columns = [c.strip() for c in lines[0].split(" | ")]
    out = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
    for line in lines[1:]:
        values = [v.strip() for v in line.split(" | ", len(columns) - 1)]
        values += [""] * (len(columns) - len(values))
        out.append("| " + " | ".join(cell(v) for v in values) + " |")
    return out


def changed_on_second_converge(run: Run) -> list[str]:
    names = [f"{t.name} ({', '.join(h for h, s in t.hosts.items() if s == 'changed')})"
             for t in run.tasks if t.step == "idempotence" and t.status == "changed"]
    if not names:
        names = list(dict.fromkeys(run.idempotence_changed))
    return names


def seconds(value: float) -> str:
    return f"{value:.1f}" if value < 600 else f"{value:.0f} ({value / 60:.1f} min)"


def render(run: Run, *, host: str, exit_code: int | None, project: Path, when: dt.datetime) -> str:
    facts = windows_facts(run)
    failed_steps = [s for s, r in run.steps if r.lower() != "successful"]
    if exit_code is not None:
        verdict = "PASSED" if exit_code == 0 else f"FAILED (exit code {exit_code})"
    else:
        verdict = "FAILED" if failed_steps or any(t.failures and set(t.hosts) - t.handled for t in run.tasks) else "PASSED"
    out = [f"# Windows acceptance run: {host or 'unknown host'}", ""]
    out += ["| | |", "| --- | --- |",
            f"| Result | {verdict} |",
            f"| Date (UTC) | {when.strftime('%Y-%m-%d %H:%M')} |",
            f"| Collection | enclave.prefect {_version(project / 'galaxy.yml', 'version')} |",
            f"| Prefect | {_version(project / 'roles/common/defaults/main.yml', 'prefect_version')} |",
            f"| Windows | {cell(facts.get('product', 'not recorded'))}, build {cell(facts.get('build', '?'))} |",
            f"| Locale | system {cell(facts.get('system_locale', '?'))}, culture {cell(facts.get('culture', '?'))}, "
            f"UI language {cell(facts.get('ui_language', '?'))}, time zone {cell(facts.get('time_zone', '?'))} |",
            f"| Steps | {cell(', '.join(f'{s}: {r}' for s, r in run.steps) or 'none recorded')} |", ""]

    out += ["## Second converge (idempotence)", ""]
    if not any(t.step == "idempotence" for t in run.tasks) and not run.idempotence_changed:
        out += ["The second converge did not run.", ""]
    else:
        changed = changed_on_second_converge(run)
        out += ([f"- {cell(name)}" for name in changed] if changed else ["No task changed."]) + [""]

    out += ["## Verify", ""] + markdown_table(table_of(run, re.compile(r"^Verify report$"))) + [""]
    uninstall = table_of(run, re.compile(r"^Report of (?:Uninstall|\{\{)"), "destroy")
    out += ["## Uninstall", ""] + markdown_table(uninstall) + [""]

    out += ["## Failures", ""]
    stopping = [(t, h, m) for t in run.tasks for h, m in t.failures if h not in t.handled]
    handled = [(t, h, m) for t in run.tasks for h, m in t.failures if h in t.handled]
    for t, h, m in stopping:
        out.append(f"- **{cell(t.step)}** / {cell(t.name)} on {cell(h)}: {cell(m)[:1500]}")
    out += [f"- **molecule**: {cell(p)[:1500]}" for p in dict.fromkeys(run.problems)]
    if not stopping and not run.problems:
        out.append("None.")
    if handled:
        out += ["", "Failures the run rescued or ignored (it went on):", ""]
        out += [f"- {cell(t.step)} / {cell(t.name)} on {cell(h)}: {cell(m)[:300]}" for t, h, m in handled]
    out.append("")

    out += ["## Tasks per role", "", "Time: seconds, from the task timings the run printed.", ""]
    for step in dict.fromkeys(t.step for t in run.tasks):
        tasks = [t for t in run.tasks if t.step == step]
        out += [f"### {step}", "", "| Role | Tasks | Changed | Failed | Skipped | Time (s) |",
                "| --- | ---: | ---: | ---: | ---: | ---: |"]
        roles: dict[str, list[Task]] = {}
        for t in tasks:
            roles.setdefault(t.role, []).append(t)
        for role, group in sorted(roles.items(), key=lambda kv: -sum(t.seconds or 0 for t in kv[1])):
            count = {s: sum(1 for t in group if t.status == s and not (s == "failed" and set(t.hosts) <= t.handled))
                     for s in ("changed", "failed", "skipped")}
            timed = [t.seconds for t in group if t.seconds is not None]
            out.append(f"| {cell(role)} | {len(group)} | {count['changed']} | {count['failed']} | {count['skipped']} | "
                       f"{seconds(sum(timed)) if timed else '-'} |")
        total = [t.seconds for t in tasks if t.seconds is not None]
        out += [f"| **all** | {len(tasks)} | | | | {seconds(sum(total)) if total else '-'} |", ""]
    slow = sorted((t for t in run.tasks if t.seconds), key=lambda t: -(t.seconds or 0))[:10]
    if slow:
        out += ["### Slowest tasks", "", "| Step | Task | Time (s) |", "| --- | --- | ---: |"]
        out += [f"| {cell(t.step)} | {cell(t.name)} | {seconds(t.seconds or 0)} |" for t in slow] + [""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", metavar="[STEP=]FILE",
                        help="molecule's text log, or ansible json callback output (one file per playbook run)")
    parser.add_argument("--host", default=os.environ.get("MOLECULE_WINDOWS_HOST", ""), help="the VM's name")
    parser.add_argument("--exit-code", type=int, help="molecule's exit code (the verdict); else read from the log")
    parser.add_argument("-o", "--output", help="Markdown file to write (default: standard output)")
    parser.add_argument("--mask-env", action="append", default=[], metavar="NAME",
                        help="also mask the value of this environment variable")
    parser.add_argument("--project", default=str(ROOT), help="the collection checkout (galaxy.yml)")
    args = parser.parse_args(argv)

    mask = masker(secret_values(dict(os.environ), args.mask_env))
    # Masked twice: in what is read (nothing derived from it can hold a secret) and in the report itself.
    run = read_runs(args.logs, mask)
    report = mask(render(run, host=args.host, exit_code=args.exit_code, project=Path(args.project),
                         when=dt.datetime.now(dt.timezone.utc)))
    if args.output:
        Path(args.output).write_text(report, encoding="utf-8")
    else:
        sys.stdout.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
