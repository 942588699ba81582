"""Prefect in high availability, for real on 127.0.0.1: two API replicas (`prefect server start --no-services`) and
one background-services process (`prefect server services start`) of the pinned Prefect on one PostgreSQL database
and Debian's redis-server, migrated once by `prefect server database upgrade -y`, behind a round-robin proxy, with two
process workers of one pool through that proxy. The settings and where each is read in the installed source: tests/integration/ha.py.
Every Prefect server process runs what the roles write: the nssm_services plan of inventories/ha (prefect-api01 for
the replicas, prefect-svc01 for the services process) asked from Ansible, with Redis and the database the test's, and
only the Windows paths and port 4200 replaced (ha.py role_plans, Replica, ServicesProcess).

Proven: the roles' plans carry every HA setting, `--no-services` on the replicas and `server services start` on the
services host, and the processes run them unchanged but for the host-specific values; every HA setting is a name
Prefect reads and six of them default to one process's memory; flows run to
COMPLETED with both replicas serving; events reach the services process through Redis, and a replica left on the
in-memory broker loses them (negative control); both workers are ONLINE; killing one replica while a flow runs loses no
run and the workers go on through the other; the unavailability a polling client sees then, and flow-run API throughput with one and two
replicas side by side (figures in build/ha-replicas.json, docs/benchmarks.md).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from arr_proxy import ArrProxy
from ha import (MEMORY_DEFAULTS, REDIS_DATABASES, REPLICA_REPLACED, SERVICES_ADDED, SERVICES_REPLACED, RedisServer,
                Replica, ServicesProcess, effective_settings, ha_environment, kill, replica, role_plans, run_load)
from servers import REPO, PrefectServer, PrefectWorker, Unavailable, copy_flows, http, prefect_bin

POOL = "ha-process"
FIGURES = REPO / "build" / "ha-replicas.json"
# The services process logs this once it has scheduled its perpetual services (its Docket worker is running).
SERVICES_READY = "Perpetual services:"
# Seconds of load per benchmark round (figures only: every round saturates both cores, so the suite keeps them short;
# ENCLAVE_HA_LOAD_SECONDS=5 for the rounds of docs/benchmarks.md).
LOAD_SECONDS = float(os.environ.get("ENCLAVE_HA_LOAD_SECONDS", "2"))


@dataclass
class Ha:
    redis: RedisServer
    database_url: str
    plans: dict  # the role's nssm_services plans: "server" (prefect-api01) and "services" (prefect-svc01)
    replicas: list[Replica]
    services: ServicesProcess
    proxy: ArrProxy
    front: PrefectServer  # a client's view: the proxy's URL (api() and client_env() of PrefectServer)
    worker: PrefectWorker
    flows: Path
    root: Path
    figures: dict = field(default_factory=dict)
    extra: list = field(default_factory=list)
    # Both workers of the pool (worker is the first): each polls the pool through the proxy, so through both replicas.
    workers: list = field(default_factory=list)

    def run(self, deployment: str, parameters: dict | None = None) -> str:
        status, dep = self.front.api("GET", f"/deployments/name/{deployment}")
        assert status == 200, dep
        status, run = self.front.api("POST", f"/deployments/{dep['id']}/create_flow_run",
                                     {"parameters": parameters or {}})
        assert status in (200, 201), run
        return run["id"]

    def wait_state(self, run_id: str, states: set[str], timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        run = {}
        while time.monotonic() < deadline:
            status, run = self.front.api("GET", f"/flow_runs/{run_id}")
            if status == 200 and run["state"] and run["state"]["type"] in states:
                return run
            time.sleep(0.5)
        raise AssertionError(f"flow run {run_id} not in {states} after {timeout}s: {run.get('state')}\n"
                             + "".join(f"\n{w.name} log:\n{w.log_path.read_text(errors='replace')[-2000:]}"
                                       for w in self.workers or [self.worker]))


def deploy_flows(server: PrefectServer, source_dir: Path, flows: tuple[tuple[str, str], ...], pool: str,
                 home: Path) -> list[str]:
    """servers.deploy_flow for several (entrypoint, deployment) pairs in one process of the pinned Prefect (one import
    of Prefect instead of one each). Returns the deployment ids."""
    script = (
        "import json, sys\n"
        "from prefect import flow\n"
        "src, pool = sys.argv[1:3]\n"
        "for entry, name in json.loads(sys.argv[3]):\n"
        "    dep_id = flow.from_source(source=src, entrypoint=entry).deploy(\n"
        "        name=name, work_pool_name=pool, print_next_steps=False)\n"
        "    print('DEPLOYMENT_ID', dep_id, flush=True)\n"
    )
    res = subprocess.run([prefect_bin("python"), "-c", script, str(source_dir), pool, json.dumps(flows)],
                         env=server.client_env(home), cwd=source_dir, capture_output=True, text=True, timeout=180)
    ids = [line.split(" ", 1)[1].strip() for line in res.stdout.splitlines() if line.startswith("DEPLOYMENT_ID ")]
    if res.returncode != 0 or len(ids) != len(flows):
        raise RuntimeError(f"deploying {flows} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return ids


@pytest.fixture(scope="module")
def ha(prefect_venv, pg_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("ha")
    started = time.monotonic()
    redis = RedisServer(root / "redis")
    stack: list = []
    try:
        try:
            redis.start()
        except Unavailable as exc:
            pytest.skip(f"HA tests skipped: {exc}")
        stack.append(redis)
        database_url = pg_cluster.create_database("prefect_ha_" + uuid.uuid4().hex[:8])
        plans = role_plans(tmp_path_factory.mktemp("ha-plans"), redis, database_url)
        replicas = [replica(root / f"replica-{i}", plans["server"]) for i in (1, 2)]
        # Migrations once, before any replica starts (every replica has migrate-on-start off), with the first API
        # host's program and environment as the role does.
        migrated = replicas[0].migrate(timeout=300)
        assert migrated.returncode == 0, migrated.stdout[-2000:] + migrated.stderr[-2000:]
        services = ServicesProcess(root / "services", plans["services"]).start()
        stack.append(services)
        # One replica after the other: on a new database, replicas started together race in the block types'
        # registration at start (PREFECT_SERVER_BLOCKS_REGISTER_ON_START) and one exits with 3 (UniqueViolation on
        # uq_block_type__slug, seen here in one start of two); once the first has registered them, the next finds them.
        for r in replicas:
            stack.append(r)
            r.start()
        services.wait_running(SERVICES_READY)
        proxy = ArrProxy(0, forwarded_proto="http", upstreams=[r.port for r in replicas]).start()
        stack.append(proxy)
        # The replicas demand a CSRF token on state-changing calls (the role's plan): api() fetches one.
        front = PrefectServer(root / "client", port=proxy.port, csrf=replicas[0].csrf)
        # Two workers of one pool, as two worker hosts would run them.
        workers = [PrefectWorker(front, POOL, root / f"worker-{i}", name=f"ha-worker-{i}") for i in (1, 2)]
        for worker in workers:
            worker.start(timeout=180)  # generous: a loaded machine starts Prefect slowly
            stack.append(worker)
        flows = copy_flows(root / "flows")
        deploy_flows(front, flows, (("hello.py:hello", "ha-hello"), ("sleepy.py:sleepy", "ha-sleepy")), POOL,
                     root / "deploy-home")
        ha = Ha(redis, database_url, plans, replicas, services, proxy, front, workers[0], flows, root, workers=workers)
        ha.figures["setup_s"] = round(time.monotonic() - started, 1)
        yield ha
        stack.extend(ha.extra)
    finally:
        for thing in reversed(stack):
            thing.stop()
        if FIGURES.parent.exists() and "ha" in locals() and ha.figures:
            FIGURES.write_text(json.dumps(ha.figures, indent=1) + "\n")


def test_ha_settings_are_what_prefect_reads(prefect_venv, tmp_path):
    """Each HA variable lands in the settings field named in ha.py (read by the pinned Prefect and prefect-redis), and
    without them six backends stay in one process's memory."""
    redis = RedisServer(tmp_path, port=6390)  # not started: only its URL and password are used
    env = ha_environment(redis)
    defaults, configured = effective_settings({}), effective_settings(env)
    for name, (memory, redis_value) in MEMORY_DEFAULTS.items():
        assert defaults[name] == memory, (name, defaults[name])
        assert configured[name] == (redis_value or redis.url(REDIS_DATABASES["docket"])), name
    assert (defaults["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"], configured["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"]) \
        == (True, False)
    assert configured["redis_messaging"] == {"host": "127.0.0.1", "port": 6390, "db": REDIS_DATABASES["messaging"],
                                             "username": "default", "password_set": True, "url": None}
    assert configured["redis_cleanup"] == {"host": "127.0.0.1", "port": 6390, "db": REDIS_DATABASES["cleanup"],
                                           "username": "default", "password_set": True, "url": None}
    assert defaults["redis_messaging"]["password_set"] is False


def test_the_processes_run_what_the_roles_write(ha):
    """The role's plans for inventories/ha carry the HA environment (ha.py's settings, read in the installed Prefect)
    and the test's database; the replicas run prefect-api01's plan and the services process prefect-svc01's, each
    equal to it except the host-specific values (and the services' log level, added)."""
    server, services = ha.plans["server"], ha.plans["services"]
    assert "--no-services" in shlex.split(server["parameters"]), server["parameters"]
    assert "server services start" in services["parameters"], services["parameters"]
    assert server["parameters"] == "-P -m prefect server start --host 127.0.0.1 --port 4200 --no-services"
    assert services["parameters"] == "-P -m prefect server services start"
    for plan in (server, services):
        env = plan["environment"]
        assert ha_environment(ha.redis).items() <= env.items(), {k: env.get(k) == v for k, v in
                                                                 ha_environment(ha.redis).items()}
        assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == ha.database_url
    python = prefect_bin("python")
    for r in ha.replicas:
        running, planned = r.environment, server["environment"]
        assert running.keys() == planned.keys()
        assert {k for k in planned if running[k] != planned[k]} == REPLICA_REPLACED
        assert (running["PREFECT_SERVER_API_PORT"], running["PREFECT_API_URL"]) == (str(r.port), r.api_url)
        args = shlex.split(server["parameters"])
        args[args.index("--port") + 1] = str(r.port)
        assert r.argv == [python, *args], r.argv
    running, planned = ha.services.environment, services["environment"]
    assert running.keys() - planned.keys() == SERVICES_ADDED.keys() and planned.keys() <= running.keys()
    assert {k for k in planned if running[k] != planned[k]} == SERVICES_REPLACED
    assert ha.services.argv == [python, *shlex.split(services["parameters"])]


def test_flows_complete_through_both_replicas(ha):
    """A flow run completes with both replicas serving: the proxy sends each request (one per connection) to the next
    replica in turn, so the run's own calls and the worker's polls reach both; its events reach the services process
    through Redis."""
    ha.proxy.reset()
    runs = [ha.run("hello/ha-hello", {"name": f"run-{i}"}) for i in (1, 2)]
    for run_id in runs:
        assert ha.wait_state(run_id, {"COMPLETED", "FAILED", "CRASHED"})["state"]["type"] == "COMPLETED"
    served = {s.upstream for s in ha.proxy.reset() if s.status and s.status < 400}
    assert served == {r.port for r in ha.replicas}, served
    # Both workers of the pool are ONLINE: their heartbeats reach the database through either replica.
    status, online = ha.front.api("POST", f"/work_pools/{POOL}/workers/filter", {})
    assert status == 200 and {w["name"] for w in online if w["status"] == "ONLINE"} >= {"ha-worker-1", "ha-worker-2"}, online
    # Redis carries the work: the messaging streams, Docket's keys and its own database.
    assert any(k.startswith("events") or "event" in k for k in ha.redis.keys(REDIS_DATABASES["messaging"])), \
        ha.redis.keys(REDIS_DATABASES["messaging"])
    assert ha.redis.keys(REDIS_DATABASES["docket"]), "Docket left nothing in Redis"
    # The services process persisted the runs' events, which the replicas published to Redis.
    events = wait_events(ha.front, runs[0], "prefect.flow-run.Completed")
    assert events, f"no Completed event persisted for {runs[0]}"


def wait_events(front: PrefectServer, run_id: str, event: str, timeout: float = 30) -> list:
    deadline = time.monotonic() + timeout
    while True:
        status, page = front.api("POST", "/events/filter", {
            "filter": {"any_resource": {"id": [f"prefect.flow-run.{run_id}"]}, "event": {"name": [event]},
                       "occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 10})
        assert status == 200, page
        if page["events"] or time.monotonic() > deadline:
            return page["events"]
        time.sleep(0.5)


def test_replica_with_memory_broker_loses_events(ha):
    """Negative control: a third replica with the messaging broker and cache left in memory publishes its events into
    its own process, where no event persister listens; the same state change through a Redis replica is persisted."""
    bad = replica(ha.root / "replica-memory", ha.plans["server"], in_memory=(
        "PREFECT_SERVER_EVENTS_MESSAGING_BROKER", "PREFECT_SERVER_EVENTS_MESSAGING_CACHE"))
    ha.extra.append(bad)
    bad.start()
    status, flow = ha.front.api("POST", "/flows/", {"name": "ha-events"})
    assert status in (200, 201), flow
    run_ids = {}
    for label, server in (("memory", bad), ("redis", ha.replicas[1])):
        status, run = server.api("POST", "/flow_runs/", {"flow_id": flow["id"], "state": {"type": "SCHEDULED"}})
        assert status in (200, 201), run
        status, moved = server.api("POST", f"/flow_runs/{run['id']}/set_state",
                                   {"state": {"type": "RUNNING"}, "force": True})
        assert status in (200, 201) and moved["status"] == "ACCEPT", moved
        run_ids[label] = run["id"]
    assert wait_events(ha.front, run_ids["redis"], "prefect.flow-run.Running"), "the control's event never arrived"
    # The persister has handled the control's event, published after the memory replica's: that one is lost.
    assert wait_events(ha.front, run_ids["memory"], "prefect.flow-run.Running", timeout=0) == []
    bad.stop()


def test_benchmark_one_against_two_replicas(ha):
    """Flow-run API throughput through the proxy (create + read a flow run) with one replica and with two, alternated
    in one run. Figures only: on two cores the replicas share the CPU with PostgreSQL, Redis, the proxy and the load."""
    status, flow = ha.front.api("POST", "/flows/", {"name": "ha-load"})
    assert status in (200, 201), flow
    url = ha.front.api_url
    rounds: dict[int, list] = {1: [], 2: []}
    for replicas in (1, 2, 2, 1):
        ha.proxy.set_upstreams([r.port for r in ha.replicas[:replicas]])
        ha.proxy.reset()
        result = run_load(url, flow["id"], seconds=LOAD_SECONDS, clients=8)
        served = {s.upstream for s in ha.proxy.reset()}
        assert served == {r.port for r in ha.replicas[:replicas]}, served
        assert result["failed"] == 0 and result["operations"] > 0, result
        rounds[replicas].append(result)
    ha.proxy.set_upstreams([r.port for r in ha.replicas])
    summary = {n: {"ops_per_s": round(sum(r["ops_per_s"] for r in rs) / len(rs), 2),
                   "p50_ms": max(r["p50_ms"] for r in rs), "p95_ms": max(r["p95_ms"] for r in rs),
                   "rounds": rs} for n, rs in rounds.items()}
    summary["ratio_2_to_1"] = round(summary[2]["ops_per_s"] / summary[1]["ops_per_s"], 2)
    summary["round_s"] = LOAD_SECONDS
    ha.figures["throughput"] = summary
    print(json.dumps(summary))


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(0.2)


def test_replica_kill_loses_no_flow_run(ha):
    """A replica dies (SIGKILL of its process group) while a flow runs: the run completes, a polling client sees how long
    the API was unavailable, and the worker runs the next flow through the other replica alone."""
    run_id = ha.run("sleepy/ha-sleepy", {"seconds": 6})
    ha.wait_state(run_id, {"RUNNING"}, timeout=60)
    polls: list[tuple[float, float, bool]] = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            began = time.monotonic()
            try:
                status, _ = http("GET", f"{ha.front.api_url}/flow_runs/{run_id}", timeout=5)
                ok = status == 200
            except OSError:
                ok = False
            polls.append((began, time.monotonic(), ok))
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    time.sleep(1)
    victim, survivor = ha.replicas
    killed_at = time.monotonic()
    kill(victim)
    try:
        final = ha.wait_state(run_id, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, timeout=90)
        assert final["state"]["type"] == "COMPLETED", final["state"]
        # The polling client has seen the kill through (the API answers it again): no need to poll on.
        wait_until(lambda: any(ok and began > killed_at for began, _, ok in polls), 30, "a successful poll after the kill")
        stop.set()
        # The worker goes on through the survivor alone.
        ha.proxy.reset()
        after = ha.run("hello/ha-hello", {"name": "after-kill"})
        assert ha.wait_state(after, {"COMPLETED", "FAILED", "CRASHED"})["state"]["type"] == "COMPLETED"
        assert {s.upstream for s in ha.proxy.reset() if s.upstream} == {survivor.port}
        assert [w.name for w in ha.workers if w.proc.poll() is not None] == [], "a worker died"
    finally:
        stop.set()
        poller.join(10)
    failed = [p for p in polls if not p[2] and p[1] >= killed_at - 5]
    # Unavailable: from the start of each failed poll to the end of the next successful one.
    outage, streak = 0.0, None
    for began, ended, ok in polls:
        if not ok and streak is None:
            streak = began
        elif ok and streak is not None:
            outage += ended - streak
            streak = None
    ha.figures["replica_kill"] = {"polls": len(polls), "failed_polls": len(failed), "unavailable_s": round(outage, 3),
                                  "poll_interval_s": 0.05}
    print(json.dumps(ha.figures["replica_kill"]))
    assert len(polls) > 20


def test_no_secret_in_logs(ha):
    """Neither the Redis password nor the database password appears in any log of the run."""
    secrets_ = [ha.redis.password, ha.database_url.split(":")[2].split("@")[0]]
    logs = list(ha.root.rglob("*.log"))
    assert len(logs) >= 5, logs
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in secrets_:
            assert secret not in text, f"a password is in {log}"
