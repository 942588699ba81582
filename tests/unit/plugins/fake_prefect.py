"""An in-memory model of the parts of the Prefect 3 REST API the plugins use.

It keeps state (pools, queues, workers, deployments, runs, logs) and answers like the real server
(statuses and bodies as seen on Prefect 3.8.8, see FINDINGS), so create -> read -> patch round-trips
are real. It can demand basic auth or CSRF tokens, play an IIS proxy demanding Windows auth, and
inject faults (HTTP statuses or transport errors) to exercise retries.
"""
from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import Response, TransportError

API = "http://127.0.0.1:4200/api"
PASSWORD = "Corr3ct-Horse-Battery"
AUTH_STRING = "admin:" + PASSWORD

PROCESS_TEMPLATE = {
    "job_configuration": {"command": "{{ command }}", "env": "{{ env }}", "name": "{{ name }}"},
    "variables": {"type": "object", "properties": {
        "command": {"type": "string"}, "env": {"type": "object"}, "name": {"type": "string"}}},
}
DOCKER_TEMPLATE = {
    "job_configuration": {"image": "{{ image }}"},
    "variables": {"type": "object", "properties": {"image": {"type": "string"}}},
}
WORKER_METADATA = {
    "prefect": {"process": {"type": "process", "default_base_job_configuration": PROCESS_TEMPLATE}},
    "prefect-docker": {"docker": {"type": "docker", "default_base_job_configuration": DOCKER_TEMPLATE}},
}
BANNED = re.compile(r"[/%&><]")


def _json(status, body=None, headers=None):
    text = "" if body is None else json.dumps(body)
    return Response(status, text, dict({"content-type": "application/json"}, **(headers or {})), 0.004)


class FakePrefect:
    def __init__(self, auth_string=None, csrf=False, windows_auth=False, metadata=None):
        self.auth_string = auth_string
        self.csrf = csrf
        self.windows_auth = windows_auth
        self.metadata = copy.deepcopy(WORKER_METADATA) if metadata is None else metadata
        self.metadata_status = 200
        self.ready_status = 200
        self.health_after = 0  # answer /health with a connection error this many times first
        self.pools = {}
        self.queues = {}  # pool name -> {queue name -> queue}
        self.workers = {}  # pool name -> [worker]
        self.deployments = {}  # "flow/name" -> deployment
        self.runs = {}
        self.run_script = {}  # run id -> remaining state types to go through on each read
        self.logs = []
        self.csrf_tokens = {}
        self.faults = []  # [(method or None, path prefix or None, status int or TransportError kind)]
        self.calls = []  # [(method, path, body, headers)]

    # --- test helpers -------------------------------------------------------------------------
    def writes(self):
        return [(m, p) for m, p, _b, _h in self.calls if m in ("POST", "PATCH", "DELETE")
                and not p.endswith("/filter") and p != "logs/filter"]

    def add_worker(self, pool, name="worker-1", status="ONLINE"):
        self.workers.setdefault(pool, []).append({
            "name": name, "status": status, "last_heartbeat_time": "2026-01-12T08:15:02.123456Z",
            "heartbeat_interval_seconds": 30, "work_pool_id": self.pools[pool]["id"]})
        self._refresh_status(pool)

    def add_deployment(self, flow, name, states=("PENDING", "RUNNING", "COMPLETED"), logs=("hello",), late_logs=(),
                       late_after_reads=0):
        """late_logs become visible only after logs/filter was read `late_after_reads` times (batched shipping)."""
        dep = {"id": str(uuid.uuid4()), "name": name, "flow_name": flow, "states": list(states), "logs": list(logs),
               "late_logs": list(late_logs), "late_after_reads": late_after_reads}
        self.deployments["%s/%s" % (flow, name)] = dep
        return dep

    # --- the HTTP surface ---------------------------------------------------------------------
    def handle(self, method, url, headers=None, body=None):
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        parts = urlsplit(url)
        path = parts.path.split("/api/", 1)[1] if "/api/" in parts.path else parts.path.lstrip("/")
        data = json.loads(body) if body else None
        self.calls.append((method, path, data, headers))
        for fault in list(self.faults):
            f_method, f_path, outcome = fault
            if (f_method is None or f_method == method) and (f_path is None or path.startswith(f_path)):
                self.faults.remove(fault)
                if isinstance(outcome, int):
                    return _json(outcome, {"detail": "injected %d" % outcome})
                raise TransportError(outcome, "injected %s error" % outcome)
        if self.windows_auth and not headers.get("authorization", "").startswith(("NTLM ", "Negotiate ")):
            return Response(401, "<html>401 - Unauthorized: Access is denied due to invalid credentials.</html>",
                            {"www-authenticate": "Negotiate, NTLM", "content-type": "text/html"})
        open_paths = ("health", "ready")
        if self.auth_string and not (method == "GET" and path in open_paths):
            expected = "Basic " + base64.b64encode(self.auth_string.encode()).decode()
            if headers.get("authorization") != expected:
                return _json(401, {"exception_message": "Unauthorized"})
        if self.csrf and method in ("POST", "PUT", "PATCH", "DELETE"):
            token, client = headers.get("prefect-csrf-token"), headers.get("prefect-csrf-client")
            if token is None:
                return _json(403, {"detail": "Missing CSRF token."})
            if client is None:
                return _json(403, {"detail": "Missing client identifier."})
            if self.csrf_tokens.get(client) != token:
                return _json(403, {"detail": "Invalid CSRF token or client identifier."})
        return self.route(method, path, parse_qs(parts.query), data)

    def route(self, method, path, query, data):
        seg = [unquote(s) for s in path.rstrip("/").split("/")]
        if method == "GET" and path == "health":
            if self.health_after > 0:
                self.health_after -= 1
                raise TransportError("connect", "Connection refused")
            return _json(200, True)
        if method == "GET" and path == "ready":
            if self.ready_status != 200:
                return _json(self.ready_status, {"message": "Database is not available"})
            return _json(200, {"message": "OK"})
        if method == "GET" and path == "version":
            return _json(200, "0.8.4")
        if method == "GET" and path == "admin/version":
            return _json(200, "3.8.8")
        if method == "GET" and seg[0] == "csrf-token":
            if not self.csrf:
                return _json(422, {"detail": "CSRF protection is disabled."})
            client = query["client"][0]
            self.csrf_tokens[client] = uuid.uuid4().hex
            return _json(200, {"token": self.csrf_tokens[client], "client": client, "expiration": "2099-01-01"})
        if method == "GET" and path == "collections/views/aggregate-worker-metadata":
            if self.metadata_status != 200:
                return _json(self.metadata_status, {"detail": "upstream unavailable"})
            return _json(200, self.metadata)
        if seg[0] == "work_pools":
            return self.work_pools(method, seg[1:], data)
        if method == "POST" and path in ("flows/filter", "deployments/filter"):
            return self.filter_by_id(path.split("/")[0], data)
        if seg[0] == "deployments":
            return self.deployment_routes(method, seg[1:], data)
        if method == "GET" and seg[0] == "flow_runs" and len(seg) == 2:
            return self.read_run(seg[1])
        if method == "POST" and path == "flow_runs/filter":
            return self.filter_runs(data)
        if method == "POST" and seg[0] == "flow_runs" and seg[2:] == ["set_state"]:
            return self.set_state(seg[1], data)
        if method == "POST" and path == "logs/filter":
            return self.read_logs(data)
        return _json(404, {"detail": "Not Found"})

    # --- work pools -----------------------------------------------------------------------------
    def _refresh_status(self, name):
        pool = self.pools[name]
        online = any(w["status"] == "ONLINE" for w in self.workers.get(name, []))
        pool["status"] = "PAUSED" if pool["is_paused"] else ("READY" if online else "NOT_READY")

    @staticmethod
    def _page(items, data):
        data = data or {}
        offset, limit = data.get("offset", 0), data.get("limit", 200)
        return items[offset:offset + limit]

    def work_pools(self, method, seg, data):
        if method == "POST" and not seg:
            return self.create_pool(data)
        if method == "POST" and seg == ["filter"]:
            return _json(200, self._page([copy.deepcopy(p) for _n, p in sorted(self.pools.items())], data))
        name = seg[0]
        if name not in self.pools:
            return _json(404, {"detail": "Work pool not found."})
        if len(seg) == 1:
            if method == "GET":
                return _json(200, copy.deepcopy(self.pools[name]))
            if method == "PATCH":
                extra = set(data) - {"description", "is_paused", "base_job_template", "concurrency_limit",
                                     "storage_configuration"}
                if extra:
                    return _json(422, {"detail": [{"type": "extra_forbidden", "loc": ["body", sorted(extra)[0]]}]})
                if "base_job_template" in data and self._template_error(data["base_job_template"]):
                    return _json(422, {"detail": self._template_error(data["base_job_template"])})
                self.pools[name].update(data)
                self._refresh_status(name)
                return Response(204)
            if method == "DELETE":
                del self.pools[name]
                self.queues.pop(name, None)
                self.workers.pop(name, None)
                return Response(204)
        if seg[1] == "workers" and seg[2:] == ["filter"] and method == "POST":
            return _json(200, self._page(copy.deepcopy(self.workers.get(name, [])), data))
        if seg[1] == "queues":
            return self.queue_routes(method, name, seg[2:], data)
        return _json(404, {"detail": "Not Found"})

    @staticmethod
    def _template_error(template):
        if template == {}:
            return None
        if not (template.get("job_configuration") and template.get("variables")):
            return "The `base_job_template` must contain both a `job_configuration` key and a `variables` key."
        return None

    def create_pool(self, data):
        name = data["name"]
        if name.lower().startswith("prefect"):
            return _json(403, {"detail": "Work pools starting with 'Prefect' are reserved for internal use."})
        if BANNED.search(name):
            return _json(422, {"detail": "name must not contain banned characters"})
        if name in self.pools:
            return _json(409, {"detail": "A work pool with this name already exists."})
        template = data.get("base_job_template", {})
        if self._template_error(template):
            return _json(422, {"detail": self._template_error(template)})
        queue_id = str(uuid.uuid4())
        pool = {"id": str(uuid.uuid4()), "name": name, "type": data.get("type", "prefect-agent"),
                "description": data.get("description"), "base_job_template": template,
                "is_paused": data.get("is_paused", False), "concurrency_limit": data.get("concurrency_limit"),
                "default_queue_id": queue_id, "status": "NOT_READY", "active_slots": None,
                "storage_configuration": {"bundle_upload_step": None}}
        self.pools[name] = pool
        self.queues[name] = {"default": {"id": queue_id, "name": "default", "priority": 1, "is_paused": False,
                                         "concurrency_limit": None, "work_pool_name": name,
                                         "description": "The work pool's default queue."}}
        self._refresh_status(name)
        return _json(201, copy.deepcopy(pool))

    def _take_priority(self, pool, queue, priority):
        """The server's rule: taking a priority pushes the queues at or below it down, keeping order."""
        others = sorted((q for q in self.queues[pool].values() if q is not queue), key=lambda q: q["priority"])
        queue["priority"] = priority
        ordered = [q for q in others if q["priority"] < priority] + [queue] + \
                  [q for q in others if q["priority"] >= priority]
        last = 0
        for q in ordered:
            if q["priority"] <= last:
                last += 1
                q["priority"] = last
            else:
                last = q["priority"]

    def queue_routes(self, method, pool, seg, data):
        queues = self.queues[pool]
        if method == "POST" and not seg:
            if data["name"] in queues:
                return _json(409, {"detail": "A work queue with this name already exists."})
            queue = {"id": str(uuid.uuid4()), "name": data["name"], "description": data.get("description", ""),
                     "is_paused": data.get("is_paused", False), "concurrency_limit": data.get("concurrency_limit"),
                     "work_pool_name": pool, "priority": None}
            queues[queue["name"]] = queue
            if data.get("priority"):
                self._take_priority(pool, queue, data["priority"])
            else:  # the server's rule: the first unused priority, else the highest plus one
                taken = sorted(q["priority"] for q in queues.values() if q is not queue)
                queue["priority"] = next((i + 1 for i, p in enumerate(taken) if i + 1 != p),
                                         (taken[-1] if taken else 0) + 1)
            return _json(201, copy.deepcopy(queue))
        if method == "POST" and seg == ["filter"]:
            ordered = sorted(queues.values(), key=lambda q: q["priority"])
            return _json(200, self._page(copy.deepcopy(ordered), data))
        if not seg or seg[0] not in queues:
            return _json(404, {"detail": "Work queue not found."})
        queue = queues[seg[0]]
        if method == "GET":
            return _json(200, copy.deepcopy(queue))
        if method == "PATCH":
            for key, value in data.items():
                if key == "priority":
                    self._take_priority(pool, queue, value)
                else:
                    queue[key] = value
            return Response(204)
        if method == "DELETE":
            if queue["id"] == self.pools[pool]["default_queue_id"]:
                return _json(400, {"detail": "Can't delete a pool's default queue."})
            del queues[seg[0]]
            return Response(204)
        return _json(405, {"detail": "Method Not Allowed"})

    # --- deployments, runs, logs ------------------------------------------------------------------
    def deployment_routes(self, method, seg, data):
        if method == "GET" and seg[0] == "name" and len(seg) == 3:
            dep = self.deployments.get("%s/%s" % (seg[1], seg[2]))
            if not dep:
                return _json(404, {"detail": "Deployment not found"})
            return _json(200, {k: dep[k] for k in ("id", "name")})
        if method == "POST" and len(seg) == 2 and seg[1] == "create_flow_run":
            dep = next((d for d in self.deployments.values() if d["id"] == seg[0]), None)
            if dep is None:
                return _json(404, {"detail": "Deployment not found"})
            key = data.get("idempotency_key")
            for run in self.runs.values():
                if key and run["idempotency_key"] == key and run["deployment_id"] == dep["id"]:
                    return _json(200, copy.deepcopy(run))
            run = {"id": str(uuid.uuid4()), "name": data.get("name") or "smart-beaver", "deployment_id": dep["id"],
                   "parameters": data.get("parameters", {}), "idempotency_key": key,
                   "state": {"type": "SCHEDULED", "name": "Scheduled", "message": None},
                   "start_time": None, "end_time": None, "total_run_time": 0.0}
            self.runs[run["id"]] = run
            self.run_script[run["id"]] = list(dep["states"])
            for i, line in enumerate(dep["logs"] + dep["late_logs"]):
                self.logs.append({"flow_run_id": run["id"], "level": 20, "message": line,
                                  "timestamp": "2026-01-12T08:15:%02d.000000Z" % i,
                                  "visible_after": dep["late_after_reads"] if i >= len(dep["logs"]) else 0})
            return _json(201, copy.deepcopy(run))
        return _json(404, {"detail": "Not Found"})

    def read_run(self, run_id):
        run = self.runs.get(run_id)
        if run is None:
            return _json(404, {"detail": "Flow run not found"})
        script = self.run_script.get(run_id)
        if script:
            state = script.pop(0)
            run["state"] = {"type": state, "name": state.capitalize(),
                            "message": "Flow run encountered an exception: boom" if state == "FAILED" else None}
            if state == "RUNNING":
                run["start_time"] = "2026-01-12T08:15:00.000000Z"
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                run["start_time"] = run["start_time"] or "2026-01-12T08:15:00.000000Z"
                run["end_time"] = "2026-01-12T08:15:02.500000Z"
        return _json(200, copy.deepcopy(run))

    def add_run(self, state_type, state_name=None, pool="etl", timestamp="2026-01-12T08:00:00+00:00", name=None,
                infrastructure_pid=None, flow=("flow-id-1", "nightly"), deployment=("dep-id-1", "prod")):
        """A flow run in a given state (for flow_runs); its flow and deployment are known to the filters."""
        self.flows = getattr(self, "flows", {})
        self.flows[flow[0]] = {"id": flow[0], "name": flow[1]}
        self.deployment_rows = getattr(self, "deployment_rows", {})
        self.deployment_rows[deployment[0]] = {"id": deployment[0], "name": deployment[1], "flow_id": flow[0]}
        run = {"id": str(uuid.uuid4()), "name": name or "run-%d" % len(self.runs), "flow_id": flow[0],
               "deployment_id": deployment[0], "work_pool_name": pool, "work_queue_name": "default",
               "infrastructure_pid": infrastructure_pid, "expected_start_time": "2026-01-12T07:%02d:00+00:00"
               % len(self.runs), "start_time": None, "end_time": None,
               "state": {"type": state_type, "name": state_name or state_type.capitalize(), "timestamp": timestamp}}
        self.runs[run["id"]] = run
        return run

    def filter_runs(self, data):
        """The server's /flow_runs/filter: state type any_, work pool name any_, EXPECTED_START_TIME_ASC."""
        types = set(data["flow_runs"]["state"]["type"]["any_"])
        pools = (data.get("work_pools") or {}).get("name", {}).get("any_")
        found = [copy.deepcopy(r) for r in self.runs.values() if r["state"]["type"] in types
                 and (pools is None or r.get("work_pool_name") in pools)]
        found.sort(key=lambda r: r.get("expected_start_time") or "")
        return _json(200, self._page(found, data))

    def filter_by_id(self, kind, data):
        rows = getattr(self, "flows", {}) if kind == "flows" else getattr(self, "deployment_rows", {})
        wanted = data[kind]["id"]["any_"]
        return _json(200, [copy.deepcopy(rows[i]) for i in wanted if i in rows])

    def set_state(self, run_id, data):
        """Prefect's orchestration of a cancel: terminal runs abort, scheduled runs without a process go straight
        to CANCELLED (BypassCancellingFlowRunsWithNoInfra), others are accepted as CANCELLING."""
        run = self.runs.get(run_id)
        if run is None:
            return _json(404, {"detail": "Flow run not found"})
        wanted = data["state"]["type"]
        current = run["state"]["type"]
        if current in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return _json(200, {"status": "ABORT", "state": None, "details": {"reason": "This run has already terminated."}})
        if wanted == "CANCELLING" and current == "SCHEDULED" and not run.get("infrastructure_pid"):
            run["state"] = {"type": "CANCELLED", "name": "Cancelled", "timestamp": "2026-01-12T09:00:00+00:00"}
            return _json(200, {"status": "REJECT", "state": copy.deepcopy(run["state"]),
                               "details": {"reason": "Scheduled flow run has no infrastructure to terminate."}})
        run["state"] = {"type": wanted, "name": wanted.capitalize(), "timestamp": "2026-01-12T09:00:00+00:00"}
        return _json(201, {"status": "ACCEPT", "state": copy.deepcopy(run["state"]), "details": {}})

    def read_logs(self, data):
        wanted = set(((data.get("logs") or {}).get("flow_run_id") or {}).get("any_") or [])
        if data.get("sort", "TIMESTAMP_ASC") not in ("TIMESTAMP_ASC", "TIMESTAMP_DESC"):
            return _json(422, {"detail": "bad sort"})
        self.log_reads = getattr(self, "log_reads", 0) + 1
        entries = [{k: v for k, v in e.items() if k != "visible_after"} for e in self.logs
                   if (not wanted or e["flow_run_id"] in wanted) and self.log_reads > e["visible_after"]]
        entries.sort(key=lambda e: e["timestamp"], reverse=data.get("sort") == "TIMESTAMP_DESC")
        return _json(200, self._page(entries, data))


class FakeTransport:
    """A transport that hands requests to a FakePrefect, adding the auth header the real one would."""

    def __init__(self, server, params=None):
        from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import basic_auth_header

        self.server = server
        self.extra = {}
        params = params or {}
        if params.get("auth") == "basic":
            auth_string = params.get("auth_string") or "%s:%s" % (params.get("username"), params.get("password"))
            self.extra["Authorization"] = basic_auth_header(auth_string)

    def send(self, method, url, headers=None, body=None):
        return self.server.handle(method, url, dict(headers or {}, **self.extra), body)


def fake_win_uri(server):
    """An `execute` for WinUriTransport that behaves like ansible.windows.win_uri in front of `server`."""
    seen = []

    def execute(args):
        seen.append(copy.deepcopy(args))
        headers = dict(args.get("headers") or {})
        if args.get("url_username") is not None and args.get("force_basic_auth"):
            raw = "%s:%s" % (args["url_username"], args.get("url_password") or "")
            headers["Authorization"] = "Basic " + base64.b64encode(raw.encode()).decode()
        if args.get("body") is not None:
            headers["Content-Type"] = args.get("content_type")
        try:
            response = server.handle(args["url_method"] if "url_method" in args else args["method"], args["url"],
                                     headers, args.get("body"))
        except TransportError as exc:
            messages = {"connect": "Unable to connect to the remote server",
                        "tls": "The underlying connection was closed: Could not establish trust relationship for "
                               "the SSL/TLS secure channel.",
                        "timeout": "The operation has timed out."}
            return {"failed": True, "elapsed": 0, "url": args["url"],
                    "msg": "Unhandled exception occurred when sending web request. Exception: %s"
                           % messages.get(exc.kind, exc.detail)}
        if response.status not in args.get("status_code", [200]):
            return {"failed": True, "status_code": response.status, "content": response.text,
                    "msg": "Status code of request '%d' is not in list of valid status codes" % response.status}
        result = {"changed": False, "status_code": response.status, "content": response.text,
                  "elapsed": 0.05, "url": args["url"], "content_type": response.headers.get("content-type", "")}
        if "www-authenticate" in response.headers:
            result["www_authenticate"] = response.headers["www-authenticate"]
        return result

    execute.seen = seen
    return execute


class FakeClock:
    """monotonic() and sleep() that only move when the code under test sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def validated(spec, args):
    """Task arguments after Ansible's own argument-spec validation (defaults filled in)."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    result = ArgumentSpecValidator(spec).validate(dict(args))
    assert not result.error_messages, result.error_messages
    return result.validated_parameters


class HttpHandler(BaseHTTPRequestHandler):
    """Serves the FakePrefect at `self.server.fake` over real HTTP (for the requests transport)."""

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else None
        try:
            response = self.server.fake.handle(self.command, "http://fake" + self.path, dict(self.headers), body)
        except TransportError:
            self.close_connection = True
            return
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        payload = response.text.encode()
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _serve

    def log_message(self, *args):
        pass
