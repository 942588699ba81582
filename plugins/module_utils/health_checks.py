# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait for a Prefect server to be healthy and ready, then run the optional checks.

/api/health and /api/ready answer without credentials even when the server demands auth, so the
wait works before credentials are right; everything after it uses the task's credentials.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import (
    PrefectApiError,
    PrefectError,
    PrefectValidationError,
    common_argument_spec,
    excerpt,
    quote_segment,
)


def argument_spec():
    spec = common_argument_spec()
    spec.update(
        timeout=dict(type="int", default=120),
        interval=dict(type="int", default=2),
        expect_unauthenticated_status=dict(type="int"),
        denied_username=dict(type="str"),
        denied_password=dict(type="str", no_log=True),
        expect_denied_status=dict(type="int", default=401),
        work_pools_ready=dict(type="list", elements="str", default=[]),
        workers_online=dict(type="list", elements="dict", default=[], options=dict(
            pool=dict(type="str", required=True),
            name=dict(type="str", required=True),
            heartbeat_after=dict(type="str"),
        )),
    )
    return spec


def parse_time(value):
    """An ISO 8601 time as Prefect and PowerShell write it (Z or an offset, up to 7 fraction digits) -> aware UTC."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", str(value).strip().replace("Z", "+00:00"))
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _answer(response, secrets):
    return "HTTP %s %s" % (response.status, excerpt(response.text, secrets, 120))


class Checker:
    def __init__(self, client, params, ctx):
        self.client = client
        self.params = params
        self.ctx = ctx
        self.started = ctx.clock()
        self.deadline = self.started + params["timeout"]
        self.checks = []
        self.latency_ms = None
        self.refused = False

    def record(self, name, ok, detail):
        self.checks.append(dict(name=name, ok=ok, detail=detail))
        return ok

    def elapsed(self):
        return round(self.ctx.clock() - self.started, 1)

    def fail(self, name, detail):
        self.record(name, False, detail)
        passed = {c["name"] for c in self.checks if c["ok"]}
        raise PrefectError("server_health: check '%s' failed after %.1f s: %s" % (name, self.elapsed(), detail),
                           result=self.result(healthy="health" in passed, ready="ready" in passed))

    def wait_for(self, name, attempt):
        """Call attempt() -> (ok, detail) every `interval` until ok or the deadline; an answer that waiting cannot
        change (the credentials refused) fails at once."""
        while True:
            self.refused = False
            ok, detail = attempt()
            if ok:
                return self.record(name, True, detail)
            if self.refused:
                self.fail(name, "%s (the credentials were refused: not retried)" % detail)
            if self.ctx.clock() + self.params["interval"] > self.deadline:
                self.fail(name, "%s (waited %d s)" % (detail, self.params["timeout"]))
            self.ctx.sleep(self.params["interval"])

    def probe(self, path, accept):
        started = self.ctx.clock()
        response, problem = self.client.probe(path)
        if response is None:
            return False, "GET %s: %s" % (self.client.url(path), problem)
        # 401 or 403 to a request that carried credentials: a server that is still starting never answers so, and
        # the same credentials will be refused again.
        self.refused = response.status in (401, 403) and self.client.auth_mode != "none"
        ok = accept(response)
        if ok and path == "health":
            seconds = response.elapsed if response.elapsed is not None else self.ctx.clock() - started
            self.latency_ms = round(seconds * 1000.0, 1)
        return ok, "GET %s: %s" % (self.client.url(path), _answer(response, self.client.secrets))

    def result(self, **extra):
        out = dict(changed=False, checks=self.checks, latency_ms=self.latency_ms, elapsed_s=self.elapsed())
        out.update(extra)
        return out


def _health_ok(response):
    try:
        return response.status == 200 and response.json() is True
    except ValueError:
        return False


def check(client, params, ctx):
    """server_health's logic. Returns the task result; raises PrefectError naming the failed check."""
    problems = []
    if params["timeout"] < 0:
        problems.append("timeout must be 0 or more seconds")
    if params["interval"] < 1:
        problems.append("interval must be at least 1 second")
    for name in params["work_pools_ready"]:
        if not (name or "").strip():
            problems.append("work_pools_ready must not contain empty names")
    for worker in params["workers_online"]:
        if not (worker.get("pool") or "").strip() or not (worker.get("name") or "").strip():
            problems.append("workers_online entries need a pool and a worker name")
        if worker.get("heartbeat_after"):
            try:
                parse_time(worker["heartbeat_after"])
            except ValueError:
                problems.append("workers_online heartbeat_after must be an ISO 8601 time (got %r)" % worker["heartbeat_after"])
    status = params.get("expect_unauthenticated_status")
    if status is not None and not 100 <= status <= 599:
        problems.append("expect_unauthenticated_status must be an HTTP status (100-599)")
    if params.get("denied_username") and not params.get("denied_password"):
        problems.append("denied_username needs denied_password")
    if params.get("denied_username") and params["auth"] not in ("negotiate", "ntlm", "kerberos", "basic"):
        problems.append("denied_username needs auth negotiate, ntlm, kerberos or basic (the way the allowed account signs in)")
    if not 100 <= params["expect_denied_status"] <= 599:
        problems.append("expect_denied_status must be an HTTP status (100-599)")
    if problems:
        raise PrefectValidationError("Invalid arguments: %s" % "; ".join(problems))

    checker = Checker(client, params, ctx)
    checker.wait_for("health", lambda: checker.probe("health", _health_ok))
    checker.wait_for("ready", lambda: checker.probe("ready", lambda r: r.status == 200))

    try:
        prefect_version = client.get_json("admin/version")
        api_version = client.get_json("version")
    except PrefectApiError as exc:
        checker.fail("version", exc.message)
    checker.record("version", True, "Prefect %s, API %s" % (prefect_version, api_version))

    if status is not None:
        anonymous = ctx.make_client(auth="none", username=None, password=None, auth_string=None)
        path = "admin/version"
        response, problem = anonymous.probe(path)
        if response is None:
            checker.fail("unauthenticated", "GET %s without credentials: %s" % (anonymous.url(path), problem))
        seen = "GET %s without credentials: %s" % (anonymous.url(path), _answer(response, client.secrets))
        if response.status != status:
            checker.fail("unauthenticated", "%s, expected HTTP %d%s" % (
                seen, status, ": authentication is not enforced" if response.status < 300 else ""))
        checker.record("unauthenticated", True, seen)

    if params.get("denied_username"):
        # An account that signs in but is not allowed (IIS URL Authorization answers 401.2): proves authorization, not
        # only authentication. The allowed account's answer above is the other half.
        user, password = params["denied_username"], params["denied_password"]
        overrides = (dict(auth_string="%s:%s" % (user, password)) if params["auth"] == "basic"
                     else dict(username=user, password=password))
        denied = ctx.make_client(**overrides)
        path = "admin/version"
        response, problem = denied.probe(path)
        if response is None:
            checker.fail("not allowed", "GET %s as %s: %s" % (denied.url(path), user, problem))
        seen = "GET %s as %s: %s" % (denied.url(path), user, _answer(response, client.secrets))
        if response.status != params["expect_denied_status"]:
            checker.fail("not allowed", "%s, expected HTTP %d%s" % (
                seen, params["expect_denied_status"], ": authorization is not enforced, every account that signs in is let through"
                if response.status < 300 else ""))
        checker.record("not allowed", True, seen)

    for name in params["work_pools_ready"]:
        checker.wait_for("work_pool:%s" % name, lambda name=name: pool_ready(client, name))

    for worker in params["workers_online"]:
        checker.wait_for("worker:%s/%s" % (worker["pool"], worker["name"]), lambda worker=worker: worker_online(client, worker))

    return checker.result(healthy=True, ready=True, prefect_version=prefect_version, api_version=api_version)


def pool_ready(client, name):
    """(ok, detail): the pool is READY and has at least one ONLINE worker."""
    path = "work_pools/%s" % quote_segment(name)
    try:
        pool = client.get_json(path, allow_404=True)
        if pool is None:
            return False, "work pool %r does not exist" % name
        workers = client.read_all("%s/workers/filter" % path)
    except PrefectApiError as exc:
        return False, exc.message
    online = [w.get("name") for w in workers if w.get("status") == "ONLINE"]
    detail = "work pool %r is %s with %d worker(s), %d ONLINE%s" % (
        name, pool.get("status"), len(workers), len(online), (": %s" % ", ".join(online)) if online else "")
    return pool.get("status") == "READY" and bool(online), detail


def worker_online(client, wanted):
    """(ok, detail): the worker is listed in its pool by name, ONLINE, with a heartbeat after `heartbeat_after`
    (its process's start: an older heartbeat is from a process that has since died)."""
    path = "work_pools/%s/workers/filter" % quote_segment(wanted["pool"])
    try:
        workers = client.read_all(path)
    except PrefectApiError as exc:
        return False, exc.message
    found = [w for w in workers if w.get("name") == wanted["name"]]
    if not found:
        return False, "worker %r is not listed in work pool %r (it has not sent a heartbeat)" % (wanted["name"], wanted["pool"])
    worker = found[0]
    seen = worker.get("last_heartbeat_time")
    detail = "worker %r in pool %r is %s, last heartbeat %s" % (wanted["name"], wanted["pool"], worker.get("status"), seen)
    if worker.get("status") != "ONLINE":
        return False, detail
    if wanted.get("heartbeat_after"):
        if not seen or parse_time(seen) <= parse_time(wanted["heartbeat_after"]):
            return False, "%s, not after its start at %s" % (detail, wanted["heartbeat_after"])
    return True, detail
