# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start a run of a deployment, wait for a terminal state and collect its last log lines."""

from __future__ import annotations

from datetime import datetime

from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import (
    PrefectError,
    PrefectValidationError,
    common_argument_spec,
    quote_segment,
)

TERMINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
STATE_TYPES = ("SCHEDULED", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "CRASHED", "PAUSED",
               "CANCELLING")
# Logs reach the server in batches, after the state: wait this long at most for the engine's last line.
LOG_SETTLE_SECONDS = 10
FINAL_LOG_MARKER = "Finished in state"
# The API refuses a /logs/filter limit above 200 (HTTP 422), after the run was created.
MAX_LOG_LINES = 200
LOG_LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


def argument_spec():
    spec = common_argument_spec()
    spec.update(
        deployment=dict(type="str", required=True),
        parameters=dict(type="dict", default={}),
        run_name=dict(type="str"),
        idempotency_key=dict(type="str", no_log=False),
        wait=dict(type="bool", default=True),
        timeout=dict(type="int", default=600),
        poll_interval=dict(type="int", default=5),
        expected_states=dict(type="list", elements="str", default=["COMPLETED"], choices=list(TERMINAL_STATES)),
        log_lines=dict(type="int", default=20),
    )
    return spec


def split_deployment(value):
    """'flow/deployment' -> (flow, deployment); raises PrefectValidationError otherwise."""
    parts = (value or "").split("/")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise PrefectValidationError("deployment must be 'flow-name/deployment-name' (got %r)" % value)
    return parts[0], parts[1]


def validate(params):
    problems = []
    try:
        split_deployment(params["deployment"])
    except PrefectValidationError as exc:
        problems.append(exc.message)
    unknown = [s for s in params["expected_states"] if s.upper() not in TERMINAL_STATES]
    if unknown:
        problems.append("expected_states must be terminal state types (%s), not %s"
                        % (", ".join(TERMINAL_STATES), ", ".join(unknown)))
    if params["timeout"] < 1:
        problems.append("timeout must be at least 1 second")
    if params["poll_interval"] < 1:
        problems.append("poll_interval must be at least 1 second")
    if not 0 <= params["log_lines"] <= MAX_LOG_LINES:
        problems.append("log_lines must be between 0 and %d (the API's page limit)" % MAX_LOG_LINES)
    if problems:
        raise PrefectValidationError("Invalid arguments: %s" % "; ".join(problems))


def _parse_time(value):
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def summary(run):
    """The flow run as the task returns it."""
    state = run.get("state") or {}
    start, end = _parse_time(run.get("start_time")), _parse_time(run.get("end_time"))
    if start and end:
        duration = round((end - start).total_seconds(), 3)
    else:
        duration = run.get("total_run_time")
    return dict(
        id=run.get("id"),
        name=run.get("name"),
        deployment_id=run.get("deployment_id"),
        state_type=state.get("type") or run.get("state_type"),
        state_name=state.get("name") or run.get("state_name"),
        state_message=state.get("message"),
        start_time=run.get("start_time"),
        end_time=run.get("end_time"),
        duration_s=duration,
        parameters=run.get("parameters"),
    )


def format_log(entry):
    level = entry.get("level")
    level = LOG_LEVELS.get(level, str(level))
    return "%s %s %s" % (entry.get("timestamp", ""), level, entry.get("message", ""))


def last_logs(client, run_id, count, ctx=None, settle=0):
    """The run's last `count` log lines, oldest first.

    With `settle` seconds, read again (every second) until the flow engine's final line arrived: logs
    are shipped in batches and may trail the terminal state.
    """
    if count <= 0:
        return []
    body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_DESC", "limit": count, "offset": 0}
    deadline = ctx.clock() + settle if ctx else 0
    while True:
        entries = client.read("logs/filter", body) or []
        if not ctx or any(FINAL_LOG_MARKER in (e.get("message") or "") for e in entries) or \
                ctx.clock() + 1 > deadline:
            return [format_log(e) for e in reversed(entries)]
        ctx.sleep(1)


def run(client, params, ctx):
    """flow_run's logic."""
    validate(params)
    flow, deployment_name = split_deployment(params["deployment"])
    deployment = client.get_json("deployments/name/%s/%s" % (quote_segment(flow), quote_segment(deployment_name)),
                                 allow_404=True)
    if deployment is None:
        raise PrefectError("Deployment %r not found: check the flow and deployment names "
                           "(`prefect deployment ls` lists them as flow/deployment)" % params["deployment"])
    if ctx.check_mode:
        return dict(changed=True, flow_run={}, logs=[], deployment_id=deployment.get("id"))

    body = {"parameters": params["parameters"] or {}}
    if params.get("run_name"):
        body["name"] = params["run_name"]
    if params.get("idempotency_key"):
        body["idempotency_key"] = params["idempotency_key"]
    # With an idempotency key a repeated POST returns the same run, so it is safe to retry.
    response = client.request("POST", "deployments/%s/create_flow_run" % deployment["id"], body=body,
                              expect=(200, 201), idempotent=bool(params.get("idempotency_key")))
    flow_run = response.json()
    changed = response.status == 201
    run_id = flow_run["id"]

    if params["wait"]:
        deadline = ctx.clock() + params["timeout"]
        while (flow_run.get("state") or {}).get("type") not in TERMINAL_STATES:
            if ctx.clock() + params["poll_interval"] > deadline:
                raise PrefectError(
                    "Flow run %s (%s) is still %s after %d s: is a worker polling the deployment's work pool? "
                    "(enclave.prefect.work_pool_info shows its workers)" % (
                        flow_run.get("name"), run_id, (flow_run.get("state") or {}).get("type"), params["timeout"]),
                    result=dict(changed=changed, flow_run=summary(flow_run), logs=last_logs(client, run_id,
                                                                                            params["log_lines"])))
            ctx.sleep(params["poll_interval"])
            flow_run = client.get_json("flow_runs/%s" % run_id)

    settle = LOG_SETTLE_SECONDS if params["wait"] else 0
    result = dict(changed=changed, flow_run=summary(flow_run),
                  logs=last_logs(client, run_id, params["log_lines"], ctx, settle))
    state_type = result["flow_run"]["state_type"]
    expected = [s.upper() for s in params["expected_states"]]
    if params["wait"] and state_type not in expected:
        message = result["flow_run"].get("state_message") or ""
        raise PrefectError("Flow run %s (%s) of %s ended %s (%s)%s; expected %s. Last log lines are in `logs`."
                           % (flow_run.get("name"), run_id, params["deployment"], state_type,
                              result["flow_run"]["state_name"], (": %s" % message) if message else "",
                              " or ".join(expected)), result=result)
    return result
