# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Desired state of a Prefect work pool and its queues: validation, diff and reconcile.

Only fields the task sets are managed; everything is compared as parsed JSON and only the fields
that differ are sent (PATCH). Queue priorities are applied lowest first, as the server shifts other
queues out of the way when a priority is taken.
"""

from __future__ import annotations

import copy
import json
import re

from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import (
    PrefectApiError,
    PrefectError,
    PrefectValidationError,
    common_argument_spec,
    quote_segment,
)

BANNED_NAME_CHARACTERS = ("/", "%", "&", ">", "<")
WORKER_METADATA_PATH = "collections/views/aggregate-worker-metadata"
DEFAULT_QUEUE = "default"
# option name -> API field, for the pool and for queues
POOL_FIELDS = (("description", "description"), ("paused", "is_paused"), ("concurrency_limit", "concurrency_limit"),
               ("base_job_template", "base_job_template"))
QUEUE_FIELDS = (("priority", "priority"), ("concurrency_limit", "concurrency_limit"), ("paused", "is_paused"),
                ("description", "description"))
PLACEHOLDER = re.compile(r"{{\s*([\w.\-\[\]$]+)\s*}}")

QUEUE_OPTIONS = dict(
    name=dict(type="str", required=True),
    priority=dict(type="int"),
    concurrency_limit=dict(type="int"),
    paused=dict(type="bool"),
    description=dict(type="str"),
)


def argument_spec():
    spec = common_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        type=dict(type="str", default="process"),
        description=dict(type="str"),
        concurrency_limit=dict(type="int"),
        paused=dict(type="bool"),
        base_job_template=dict(type="dict"),
        queues=dict(type="list", elements="dict", options=QUEUE_OPTIONS),
        purge_queues=dict(type="bool", default=False),
        recreate=dict(type="bool", default=False),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    return spec


def info_argument_spec():
    spec = common_argument_spec()
    spec.update(name=dict(type="str"))
    return spec


def name_problems(what, name, reserved_prefix=False):
    """Why `name` cannot be a Prefect pool/queue name (the server's own rules), or []."""
    if name is None or not str(name).strip("' \""):
        return ["%s must not be empty" % what]
    problems = []
    banned = [c for c in BANNED_NAME_CHARACTERS if c in name]
    if banned:
        problems.append("%s %r must not contain %s" % (what, name, " ".join(banned)))
    if reserved_prefix and name.lower().startswith("prefect"):
        problems.append("%s %r is reserved: names starting with 'prefect' belong to the server" % (what, name))
    return problems


def template_problems(template):
    """Why `template` is not a usable base job template, or []. Mirrors the server's own check."""
    if not isinstance(template, dict):
        return ["base_job_template must be a dict with job_configuration and variables"]
    problems = []
    job_configuration = template.get("job_configuration")
    variables = template.get("variables")
    missing = [k for k in ("job_configuration", "variables") if not template.get(k)]
    if missing:
        return ["base_job_template must contain non-empty job_configuration and variables (missing: %s)"
                % ", ".join(missing)]
    if not isinstance(job_configuration, dict):
        problems.append("base_job_template.job_configuration must be a dict")
    if not isinstance(variables, dict):
        problems.append("base_job_template.variables must be a dict (a JSON schema)")
    elif not isinstance(variables.get("properties", {}), dict):
        problems.append("base_job_template.variables.properties must be a dict")
    if problems:
        return problems
    used = set()
    for value in job_configuration.values():
        used.update(PLACEHOLDER.findall(json.dumps(value)))
    # prefect.blocks.*, prefect.variables.* and $ENV placeholders are resolved by the worker, not declared
    used = {u for u in used if not u.startswith(("prefect.", "$"))}
    declared = set((variables.get("properties") or {}).keys())
    undeclared = sorted(used - declared)
    if undeclared:
        problems.append("base_job_template.job_configuration uses variables not declared in "
                        "variables.properties: %s" % ", ".join(undeclared))
    return problems


def validate(params, ctx):
    """All input problems at once, before any request. Raises PrefectValidationError."""
    problems = name_problems("name", params.get("name"), reserved_prefix=True)
    if params["state"] == "present":
        if not (params.get("type") or "").strip():
            problems.append("type must not be empty")
        if params.get("concurrency_limit") is not None and params["concurrency_limit"] < 0:
            problems.append("concurrency_limit must be 0 or more (omit it, or set null, for no limit)")
        if params.get("base_job_template") is not None:
            problems.extend(template_problems(params["base_job_template"]))
        seen_names, seen_priorities = set(), {}
        for queue in params.get("queues") or []:
            qname = queue.get("name")
            problems.extend(name_problems("queue name", qname))
            if qname in seen_names:
                problems.append("queue %r is listed twice" % qname)
            seen_names.add(qname)
            if queue.get("priority") is not None:
                if queue["priority"] < 1:
                    problems.append("queue %r: priority must be 1 or more (1 is the highest)" % qname)
                elif queue["priority"] in seen_priorities:
                    problems.append("queues %r and %r both ask for priority %d: priorities must differ"
                                    % (seen_priorities[queue["priority"]], qname, queue["priority"]))
                seen_priorities.setdefault(queue["priority"], qname)
            if queue.get("concurrency_limit") is not None and queue["concurrency_limit"] < 0:
                problems.append("queue %r: concurrency_limit must be 0 or more" % qname)
    if problems:
        raise PrefectValidationError("Invalid work pool definition: %s" % "; ".join(problems))


def managed_pool_fields(params, ctx):
    """{api_field: wanted value} for the pool fields the task sets (explicit null included)."""
    wanted = {}
    for option, field in POOL_FIELDS:
        if params.get(option) is not None or (option == "concurrency_limit" and ctx.given(option)):
            wanted[field] = params.get(option)
    return wanted


def managed_queue_fields(params, ctx):
    """[(name, {api_field: value})] for the listed queues, in the task's order."""
    raw_queues = ctx.raw_args.get("queues")
    raw_queues = raw_queues if isinstance(raw_queues, list) else []
    out = []
    for index, queue in enumerate(params.get("queues") or []):
        raw = raw_queues[index] if index < len(raw_queues) and isinstance(raw_queues[index], dict) else {}
        wanted = {}
        for option, field in QUEUE_FIELDS:
            if queue.get(option) is not None or (option == "concurrency_limit" and option in raw):
                wanted[field] = queue.get(option)
        out.append((queue["name"], wanted))
    return out


def same(field, current, wanted):
    """Equality as the API means it: parsed JSON; no description and an empty one are the same."""
    if field == "description":
        return (current or "") == (wanted or "")
    return current == wanted


def changed_fields(current, wanted):
    return {field: value for field, value in wanted.items() if not same(field, current.get(field), value)}


def take_priority(priorities, name, priority):
    """Queue priorities after `name` takes `priority`: the server's rule (queues at or below it move down
    just enough to keep every priority distinct and the order unchanged)."""
    others = sorted((p, n) for n, p in priorities.items() if n != name)
    ordered = [n for p, n in others if p < priority] + [name] + [n for p, n in others if p >= priority]
    result = dict(priorities)
    result[name] = priority
    last = 0
    for queue in ordered:
        if result[queue] <= last:
            last += 1
            result[queue] = last
        else:
            last = result[queue]
    return result


def first_free_priority(priorities):
    """The priority the server gives a new queue created without one: the first gap, else max + 1."""
    taken = sorted(priorities.values())
    for index, priority in enumerate(taken):
        if index + 1 != priority:
            return index + 1
    return (taken[-1] if taken else 0) + 1


def queue_plan(current_queues, wanted_queues, purge):
    """Ordered operations to turn the current queues into the wanted ones, and the resulting priorities.

    Returns ([(op, name, body)], {queue name: priority}) with op in create/patch/delete. Taking a priority
    moves other queues down, so listed queues are handled lowest wanted priority first and each one's
    priority is compared with where the earlier operations will have moved it: one run settles.
    """
    current = {q["name"]: q for q in current_queues}
    priorities = {q["name"]: q.get("priority") or 0 for q in current_queues}
    ordered = sorted(wanted_queues, key=lambda item: (item[1].get("priority") is None, item[1].get("priority") or 0))
    plan = []
    for name, wanted in ordered:
        priority = wanted.get("priority")
        if name not in current:
            plan.append(("create", name, dict(wanted, name=name)))
            if priority is None:
                priorities[name] = first_free_priority(priorities)
            else:
                priorities = take_priority(dict(priorities, **{name: priority}), name, priority)
            continue
        body = changed_fields(current[name], {k: v for k, v in wanted.items() if k != "priority"})
        if priority is not None and priorities[name] != priority:
            body["priority"] = priority
            priorities = take_priority(priorities, name, priority)
        if body:
            plan.append(("patch", name, body))
    if purge:
        listed = {name for name, _wanted in wanted_queues}
        for name in sorted(current):
            if name not in listed and name != DEFAULT_QUEUE:
                plan.append(("delete", name, None))
                priorities.pop(name, None)
    return plan, priorities


def apply_queue_plan_locally(current_queues, plan, priorities):
    """The queues as they would look after `plan` (check mode prediction)."""
    queues = {q["name"]: copy.deepcopy(q) for q in current_queues}
    for op, name, body in plan:
        if op == "delete":
            queues.pop(name, None)
        elif op == "create":
            queue = {"name": name, "description": "", "is_paused": False, "concurrency_limit": None, "priority": None}
            queue.update(body)
            queues[name] = queue
        else:
            queues[name].update(body)
    for name, queue in queues.items():
        queue["priority"] = priorities.get(name, queue.get("priority"))
    return sorted(queues.values(), key=lambda q: (q.get("priority") is None, q.get("priority") or 0, q["name"]))


def projection(pool, queues):
    """What diff mode shows: the managed fields of the pool and its queues."""
    if not pool:
        return {}
    return {
        "name": pool.get("name"),
        "type": pool.get("type"),
        "description": pool.get("description"),
        "is_paused": pool.get("is_paused"),
        "concurrency_limit": pool.get("concurrency_limit"),
        "base_job_template": pool.get("base_job_template"),
        "queues": {q["name"]: {k: q.get(k) for k in ("priority", "concurrency_limit", "is_paused", "description")}
                   for q in queues},
    }


def worker_types(metadata):
    """{type: worker entry} from the aggregate-worker-metadata view ({collection: {slug: entry}})."""
    types = {}
    for workers in (metadata or {}).values():
        if not isinstance(workers, dict):
            continue
        for slug, entry in workers.items():
            if isinstance(entry, dict):
                types[entry.get("type") or slug] = entry
    return types


def default_template(client, pool_type, required):
    """The type's default base job template from the server's worker metadata.

    required: fail when it cannot be found (no template given), else return None and let the
    given template be used.
    """
    try:
        metadata = client.get_json(WORKER_METADATA_PATH)
    except PrefectApiError as exc:
        if not required:
            return None, None
        raise PrefectError("Cannot find the default base job template for type %r: %s. Give base_job_template "
                           "explicitly (e.g. from `prefect work-pool get-default-base-job-template --type %s`)."
                           % (pool_type, exc.message, pool_type))
    types = worker_types(metadata)
    entry = types.get(pool_type)
    template = (entry or {}).get("default_base_job_configuration")
    if entry is None:
        if required:
            raise PrefectValidationError("Unknown work pool type %r: the server knows %s. Check type, or give "
                                         "base_job_template for a custom worker type."
                                         % (pool_type, ", ".join(sorted(types)) or "no types"))
        return None, sorted(types)
    if not template and required:
        raise PrefectError("The server's worker metadata has no default base job template for type %r: give "
                           "base_job_template explicitly." % pool_type)
    return template, sorted(types)


def pool_path(name):
    return "work_pools/%s" % quote_segment(name)


def read_queues(client, name):
    return client.read_all("%s/queues/filter" % pool_path(name))


def reconcile(client, params, ctx):
    """Make the pool match the task. Returns the task result (changed, work_pool, queues, actions, diff)."""
    validate(params, ctx)
    name = params["name"]
    current = client.get_json(pool_path(name), allow_404=True)
    current_queues = read_queues(client, name) if current else []
    before = projection(current, current_queues)
    actions = []

    if params["state"] == "absent":
        if current:
            actions.append("delete pool")
            if not ctx.check_mode:
                client.request("DELETE", pool_path(name), expect=(204, 404))
        return dict(changed=bool(actions), actions=actions, work_pool={}, queues=[],
                    diff=dict(before=before, after={}))

    pool_type = params["type"].strip()
    wanted = managed_pool_fields(params, ctx)
    wanted_queues = managed_queue_fields(params, ctx)

    type_change = bool(current) and current.get("type") != pool_type
    if type_change and not params["recreate"]:
        raise PrefectError("Work pool %r has type %r; the task asks for %r. The type of a pool cannot change: "
                           "set recreate: true to delete the pool (and its queues) and create it again."
                           % (name, current.get("type"), pool_type))
    if current is None or type_change:
        # Resolve the new type's template before anything is deleted: an unknown type fails with the pool intact.
        template, known = default_template(client, pool_type, required="base_job_template" not in wanted)
    if type_change:
        actions.append("delete pool (type %s -> %s)" % (current.get("type"), pool_type))
        if not ctx.check_mode:
            client.request("DELETE", pool_path(name), expect=(204, 404))
        current, current_queues = None, []

    if current is None:
        body = dict(name=name, type=pool_type)
        body.update(wanted)
        if "base_job_template" in wanted:
            if known is not None and pool_type not in known:
                ctx.warn("Type %r is not in the server's worker metadata (%s): creating the pool with the given "
                         "base_job_template" % (pool_type, ", ".join(known)))
        else:
            body["base_job_template"] = template
        actions.append("create pool")
        if ctx.check_mode:
            pool = dict(body, id=None, status="NOT_READY", default_queue_id=None)
            pool.setdefault("description", None)
            pool.setdefault("is_paused", False)
            pool.setdefault("concurrency_limit", None)
            base_queues = [{"name": DEFAULT_QUEUE, "description": "The work pool's default queue.",
                            "is_paused": False, "concurrency_limit": None, "priority": 1}]
        else:
            pool = client.post_json("work_pools/", body, expect=(201,))
            base_queues = read_queues(client, name)
    else:
        pool = current
        base_queues = current_queues
        patch = changed_fields(current, wanted)
        if patch:
            actions.append("patch pool: %s" % ", ".join(sorted(patch)))
            if ctx.check_mode:
                pool = dict(copy.deepcopy(current), **patch)
            else:
                client.request("PATCH", pool_path(name), body=patch, expect=(204,))

    # purge_queues acts on an explicit queue list only: omitting queues never deletes any (documented).
    purge = params["purge_queues"] and params.get("queues") is not None
    plan, priorities = queue_plan(base_queues, wanted_queues, purge)
    for op, qname, body in plan:
        actions.append("%s queue %s" % (op, qname) + (": %s" % ", ".join(sorted(body)) if op == "patch" else ""))
        if ctx.check_mode:
            continue
        if op == "create":
            client.post_json("%s/queues" % pool_path(name), body, expect=(201,))
        elif op == "patch":
            client.request("PATCH", "%s/queues/%s" % (pool_path(name), quote_segment(qname)), body=body,
                           expect=(204,))
        else:
            client.request("DELETE", "%s/queues/%s" % (pool_path(name), quote_segment(qname)), expect=(204, 404))

    if ctx.check_mode:
        queues = apply_queue_plan_locally(base_queues, plan, priorities)
    elif actions:
        pool = client.get_json(pool_path(name))
        queues = read_queues(client, name)
    else:
        queues = base_queues
    return dict(changed=bool(actions), actions=actions, work_pool=pool, queues=queues,
                diff=dict(before=before, after=projection(pool, queues)))


def info(client, params, ctx):
    """One or all pools with their queues and workers."""
    name = params.get("name")
    if name is not None:
        problems = name_problems("name", name)
        if problems:
            raise PrefectValidationError("Invalid arguments: %s" % "; ".join(problems))
        pool = client.get_json(pool_path(name), allow_404=True)
        pools = [pool] if pool else []
    else:
        pools = client.read_all("work_pools/filter")
    out = []
    for pool in pools:
        pool = dict(pool)
        pool["queues"] = read_queues(client, pool["name"])
        workers = client.read_all("%s/workers/filter" % pool_path(pool["name"]))
        pool["workers"] = [
            {k: w.get(k) for k in ("name", "status", "last_heartbeat_time", "heartbeat_interval_seconds")}
            for w in workers
        ]
        out.append(pool)
    return dict(changed=False, work_pools=out)
