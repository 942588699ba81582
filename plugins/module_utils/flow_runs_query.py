# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The flow runs in given states (optionally per work pool and by how long they have been in that state):
list them, cancel them on request, wait until none is left.

What an upgrade needs around a maintenance window (pause pools, wait for running runs, cancel on request)
and what a diagnosis reads (late runs, runs stuck in RUNNING).
"""

from __future__ import annotations

from datetime import datetime, timezone

from ansible_collections.enclave.prefect.plugins.module_utils.flow_runs import TERMINAL_STATES
from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import (
    PrefectError,
    PrefectValidationError,
    common_argument_spec,
)

# LATE is not a state type: the server's late-runs service renames a SCHEDULED run "Late" once it is overdue.
LATE = "LATE"
STATE_CHOICES = ("SCHEDULED", LATE, "PENDING", "RUNNING", "PAUSED", "CANCELLING", "COMPLETED", "FAILED", "CRASHED",
                 "CANCELLED")
ACTIVE_STATES = ["PENDING", "RUNNING", "CANCELLING"]
# Cancelling these is left alone: already on the way out, or over.
NOT_CANCELLABLE = ("CANCELLING",) + TERMINAL_STATES
CANCEL_MESSAGE = "Cancelled by enclave.prefect.flow_runs"
MAX_LIMIT = 1000
MESSAGE_RUNS = 10


def argument_spec():
    spec = common_argument_spec()
    spec.update(
        states=dict(type="list", elements="str", default=list(ACTIVE_STATES), choices=list(STATE_CHOICES)),
        work_pools=dict(type="list", elements="str"),
        min_state_age=dict(type="int", default=0),
        limit=dict(type="int", default=100),
        cancel=dict(type="bool", default=False),
        wait_until_none=dict(type="bool", default=False),
        timeout=dict(type="int", default=600),
        poll_interval=dict(type="int", default=5),
    )
    return spec


def validate(params):
    problems = []
    if not params["states"]:
        problems.append("states must list at least one state")
    if params.get("work_pools") is not None and not all((p or "").strip() for p in params["work_pools"]):
        problems.append("work_pools must not contain empty names")
    if params["min_state_age"] < 0:
        problems.append("min_state_age must be 0 or more seconds")
    if not 1 <= params["limit"] <= MAX_LIMIT:
        problems.append("limit must be between 1 and %d" % MAX_LIMIT)
    if params["timeout"] < 1:
        problems.append("timeout must be at least 1 second")
    if params["poll_interval"] < 1:
        problems.append("poll_interval must be at least 1 second")
    if problems:
        raise PrefectValidationError("Invalid arguments: %s" % "; ".join(problems))


def utc_now():
    return datetime.now(timezone.utc)


def parse_time(value):
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def state_types(states):
    """The state types to ask the server for (LATE is a SCHEDULED run named Late)."""
    types = {s for s in states if s != LATE}
    if LATE in states:
        types.add("SCHEDULED")
    return sorted(types)


def run_filter(params):
    body = {"flow_runs": {"state": {"type": {"any_": state_types(params["states"])}}},
            "sort": "EXPECTED_START_TIME_ASC"}
    if params.get("work_pools") is not None:
        body["work_pools"] = {"name": {"any_": list(params["work_pools"])}}
    return body


def state_age(run, now):
    """Seconds the run has been in its current state, or None when the server gave no timestamp."""
    stamp = parse_time((run.get("state") or {}).get("timestamp"))
    return None if stamp is None else round((now - stamp).total_seconds(), 1)


def matches(run, params, now):
    state = run.get("state") or {}
    state_type = state.get("type") or run.get("state_type")
    state_name = state.get("name") or run.get("state_name")
    wanted = set(params["states"])
    if state_type not in wanted and not (LATE in wanted and state_type == "SCHEDULED" and state_name == "Late"):
        return False
    if params["min_state_age"]:
        age = state_age(run, now)
        return age is not None and age >= params["min_state_age"]
    return True


def describe(run, now, flows=None, deployments=None):
    """The run as the task returns it."""
    state = run.get("state") or {}
    return dict(
        id=run.get("id"),
        name=run.get("name"),
        flow_name=(flows or {}).get(run.get("flow_id")),
        deployment=(deployments or {}).get(run.get("deployment_id")),
        deployment_id=run.get("deployment_id"),
        work_pool_name=run.get("work_pool_name"),
        work_queue_name=run.get("work_queue_name"),
        state_type=state.get("type") or run.get("state_type"),
        state_name=state.get("name") or run.get("state_name"),
        state_timestamp=state.get("timestamp"),
        state_age_s=state_age(run, now),
        expected_start_time=run.get("expected_start_time"),
        start_time=run.get("start_time"),
    )


def find(client, params, now):
    """Every run the task selects (the server filters by type and pool; name and age are checked here)."""
    return [r for r in client.read_all("flow_runs/filter", run_filter(params)) if matches(r, params, now)]


def by_id(client, path, key, ids):
    """{id: object} for the flows or deployments of the listed runs (one request, only when there are any)."""
    ids = sorted({i for i in ids if i})
    if not ids:
        return {}
    return {item.get("id"): item for item in client.read(path, {key: {"id": {"any_": ids}}, "limit": len(ids)}) or []}


def describe_all(client, runs, now):
    """The runs as the task returns them, with their flow's name and their deployment as flow/deployment."""
    flows = {k: v.get("name") for k, v in by_id(client, "flows/filter", "flows", [r.get("flow_id") for r in runs]).items()}
    deployments = by_id(client, "deployments/filter", "deployments", [r.get("deployment_id") for r in runs])
    names = {k: "%s/%s" % (flows.get(v.get("flow_id"), v.get("flow_id")), v.get("name")) for k, v in deployments.items()}
    return [describe(r, now, flows, names) for r in runs]


def one_line(run):
    where = " in pool %s" % run["work_pool_name"] if run.get("work_pool_name") else ""
    age = " for %d s" % run["state_age_s"] if run.get("state_age_s") is not None else ""
    return "%s (%s) %s%s%s" % (run.get("name"), run.get("id"), run.get("state_name") or run.get("state_type"), age,
                               where)


def listing(runs):
    shown = "; ".join(one_line(r) for r in runs[:MESSAGE_RUNS])
    if len(runs) > MESSAGE_RUNS:
        shown += "; and %d more" % (len(runs) - MESSAGE_RUNS)
    return shown


def cancel_run(client, run):
    """Ask the server to cancel one run. Returns {id, name, from_state, to_state, status}."""
    state = run.get("state") or {}
    body = {"state": {"type": "CANCELLING", "name": "Cancelling", "message": CANCEL_MESSAGE}, "force": False}
    answer = client.post_json("flow_runs/%s/set_state" % run["id"], body, expect=(200, 201)) or {}
    new_state = answer.get("state") or {}
    to_state = new_state.get("type")
    if not to_state:  # ABORT answers carry no state: the run's own tells what it is now
        to_state = ((client.get_json("flow_runs/%s" % run["id"]) or {}).get("state") or {}).get("type")
    return dict(id=run.get("id"), name=run.get("name"), from_state=state.get("type"), to_state=to_state,
                status=answer.get("status"), reason=(answer.get("details") or {}).get("reason"))


def select(client, params, ctx):
    """flow_runs' logic: list, cancel on request, wait until none is left."""
    validate(params)
    started = ctx.clock()
    now = utc_now()
    runs = find(client, params, now)
    described = describe_all(client, runs, now)
    result = dict(changed=False, count=len(runs), flow_runs=described[:params["limit"]], cancelled=[],
                  remaining=described[:params["limit"]], waited_s=0)

    if params["cancel"]:
        targets = [r for r in runs if ((r.get("state") or {}).get("type")) not in NOT_CANCELLABLE]
        if ctx.check_mode:
            result["cancelled"] = [dict(id=r.get("id"), name=r.get("name"), from_state=(r.get("state") or {}).get("type"),
                                        to_state=None, status=None, reason=None) for r in targets]
        else:
            result["cancelled"] = [cancel_run(client, r) for r in targets]
        result["changed"] = bool(targets)
        refused = [c for c in result["cancelled"]
                   if not ctx.check_mode and c["to_state"] not in ("CANCELLING", "CANCELLED") + TERMINAL_STATES]
        if refused:
            raise PrefectError(
                "The server did not cancel %d flow run(s): %s. Check the server log; a run the server will not "
                "cancel can be cancelled in the UI or with `prefect flow-run cancel <id>`." % (
                    len(refused), "; ".join("%s (%s) stayed %s: %s %s" % (c["name"], c["id"], c["to_state"],
                                                                          c["status"], c["reason"] or "")
                                            for c in refused)), result=result)

    if params["wait_until_none"] and not ctx.check_mode:
        deadline = started + params["timeout"]
        remaining = runs if not params["cancel"] else find(client, params, utc_now())
        while remaining:
            if ctx.clock() + params["poll_interval"] > deadline:
                now = utc_now()
                result.update(remaining=describe_all(client, remaining, now)[:params["limit"]],
                              waited_s=round(ctx.clock() - started, 1))
                raise PrefectError(
                    "%d flow run(s) still %s after %d s: %s. Wait longer (timeout), cancel them (cancel: true), or "
                    "look at their workers (enclave.prefect.work_pool_info)." % (
                        len(remaining), " or ".join(params["states"]), params["timeout"],
                        listing(result["remaining"])), result=result)
            ctx.sleep(params["poll_interval"])
            remaining = find(client, params, utc_now())
        result.update(remaining=[], waited_s=round(ctx.clock() - started, 1))
    return result
