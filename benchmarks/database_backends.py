#!/usr/bin/env python3
"""The runbooks' SQLite default against PostgreSQL as the postgresql role configures it, same Prefect, same machine, one run.

    .venv/bin/python benchmarks/database_backends.py [--clients 1,4,16] [--seconds 20] [--write docs/benchmarks.md]

Starts two pinned Prefect servers (.venv-prefect, 127.0.0.1, background services on, as the NSSM service runs them):
one on SQLite under PREFECT_HOME (runbook 000 Phase 3's default), one on a throwaway PostgreSQL cluster whose settings
are those the postgresql role writes (plugins/filter/database_url.py postgresql_plan for this machine's RAM, fsync and
full_page_writes on as in production). For each client count N, N threads each repeat for --seconds: create a flow run
(POST /api/flow_runs/) and move it through PENDING, RUNNING and COMPLETED (POST /api/flow_runs/{id}/set_state, the
orchestration rules applied). Reported per backend and N: finished flow runs per second, p50/p95 latency of a request,
failed requests by kind, and `database is locked` in responses and in the server's log. Prefect 3.8.8 answers SQLITE_BUSY
("database is locked") with HTTP 503 "Service Unavailable" (prefect/server/api/server.py is_client_retryable_exception)
and logs nothing, so the 503s are where the locks show; Prefect's own clients retry them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "plugins" / "filter"))

from servers import PostgresCluster, PrefectServer, Unavailable, prefect_bin  # noqa: E402

BEGIN = "<!-- BEGIN database_backends.py -->"
END = "<!-- END database_backends.py -->"
LOCKED = "database is locked"


def role_settings() -> dict:
    """What the postgresql role writes into its conf.d file for a host with this machine's memory."""
    from database_url import postgresql_plan  # noqa: E402  (ansible is in .venv)
    ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024 ** 2
    plan = postgresql_plan({"host": "db", "server_names": ["db"], "server_addresses": ["127.0.0.1"], "database": "prefect",
                            "user": "prefect", "superuser": "postgres", "port": 5432, "max_connections": 100,
                            "log_dir": "/tmp", "ram_mb": ram_mb, "work_mem": "16MB", "settings": {}})
    if plan["errors"]:
        raise SystemExit(f"postgresql_plan: {plan['errors']}")
    # Where the cluster listens and logs is the benchmark's business; everything that shapes performance is the role's.
    skip = {"listen_addresses", "port", "logging_collector", "log_destination", "log_directory", "log_filename",
            "log_rotation_age", "log_rotation_size", "log_truncate_on_rotation", "log_line_prefix", "log_connections",
            "log_disconnections", "ssl"}
    return {k: v for k, v in plan["settings"].items() if k not in skip}


def start_postgres(settings: dict) -> PostgresCluster:
    """The fixture's cluster, restarted with the role's settings and durable writes (the fixture turns fsync off)."""
    from database_url import postgresql_conf_value  # noqa: E402
    cluster = PostgresCluster().start()
    data = cluster.root / "data"
    cluster._run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    conf = data / "enclave_prefect.conf"
    conf.write_text("".join(f"{k} = {postgresql_conf_value(v)}\n" for k, v in settings.items())
                    + "fsync = on\nfull_page_writes = on\nsynchronous_commit = on\n")
    with open(data / "postgresql.conf", "a", encoding="utf-8") as handle:
        handle.write("include = 'enclave_prefect.conf'\n")
    if os.geteuid() == 0:
        import pwd
        os.chown(conf, pwd.getpwnam("postgres").pw_uid, -1)
    opts = f"-c listen_addresses=127.0.0.1 -c port={cluster.port} -c unix_socket_directories={cluster.root}"
    cluster._run("pg_ctl", "-D", str(data), "-l", str(cluster.root / "postgres.log"), "-o", opts, "-w", "-t", "60", "start")
    return cluster


def request(api: str, method: str, path: str, body=None, timeout: float = 60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{api}{path}", data=data, method=method, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError as exc:
        status, raw = 599, str(exc).encode()
    return status, raw.decode("utf-8", "replace"), time.perf_counter() - started


def load(api: str, flow_id: str, clients: int, seconds: float) -> dict:
    latencies, lock = [], threading.Lock()
    stats = {"runs": 0, "failed": 0, "locked": 0, "rejected": 0}
    kinds: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    def client():
        local_lat, local, local_kinds = [], {"runs": 0, "failed": 0, "locked": 0, "rejected": 0}, {}

        def failure(status, text):
            local["failed"] += 1
            local["locked"] += LOCKED in text
            kind = f"HTTP {status} " + re.sub(r"\s+", " ", text)[:90]
            local_kinds[kind] = local_kinds.get(kind, 0) + 1
        while time.monotonic() < deadline:
            status, text, took = request(api, "POST", "/flow_runs/", {"flow_id": flow_id, "state": {"type": "SCHEDULED"}})
            local_lat.append(took)
            if status != 201:
                failure(status, text)
                continue
            run_id = json.loads(text)["id"]
            ok = True
            for state in ("PENDING", "RUNNING", "COMPLETED"):
                status, text, took = request(api, "POST", f"/flow_runs/{run_id}/set_state", {"state": {"type": state}})
                local_lat.append(took)
                if status not in (200, 201):
                    failure(status, text)
                    ok = False
                    break
                if json.loads(text).get("status") != "ACCEPT":
                    local["rejected"] += 1
                    ok = False
                    break
            local["runs"] += ok
        with lock:
            latencies.extend(local_lat)
            for key, value in local.items():
                stats[key] += value
            for key, value in local_kinds.items():
                kinds[key] = kinds.get(key, 0) + value

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {**stats, "kinds": kinds, "requests": len(latencies), "seconds": elapsed, "runs_per_s": stats["runs"] / elapsed,
            "p50_ms": 1000 * statistics.median(latencies) if latencies else 0,
            "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0}


def log_locked(server: PrefectServer) -> int:
    return server.log_path.read_text(errors="replace").count(LOCKED) if server.log_path.exists() else 0


def bench(server: PrefectServer, levels: list[int], seconds: float) -> list[dict]:
    status, flow = request(server.api_url, "POST", "/flows/", {"name": "bench-backends"})[:2]
    assert status in (200, 201), flow
    flow_id = json.loads(flow)["id"]
    rows = []
    for clients in levels:
        before = log_locked(server)
        print(f"  {server.database}: {clients} client(s) for {seconds:.0f} s ...", flush=True)
        row = load(server.api_url, flow_id, clients, seconds)
        row.update(clients=clients, log_locked=log_locked(server) - before)
        rows.append(row)
        print(f"    {row['runs_per_s']:.1f} runs/s, p95 {row['p95_ms']:.0f} ms, failed {row['failed']}, "
              f"locked {row['locked']} (log {row['log_locked']}) {row['kinds']}", flush=True)
    return rows


def markdown(sqlite_rows, pg_rows, settings, seconds, load_before, load_after, version) -> str:
    lines = [BEGIN, "", "## Database backends: SQLite (the runbooks' default) against PostgreSQL (the postgresql role)", "",
             f"Prefect {version} on one machine, one run per backend and client count: N client threads each, for {seconds:.0f} s,",
             "create a flow run and move it through PENDING, RUNNING and COMPLETED over the API (4 requests per run, the server's",
             "orchestration rules applied, background services on). PostgreSQL 15 with the settings the postgresql role writes for",
             "this machine's memory (`postgresql_plan`), fsync and full_page_writes on; SQLite in WAL mode as Prefect sets it.",
             "Prefect answers SQLite's SQLITE_BUSY (`database is locked`) with HTTP 503 `Service Unavailable` and logs nothing",
             "(`is_client_retryable_exception` in prefect/server/api/server.py; on SQLite only BUSY/locked and a few session errors map",
             "to 503): the 503s below are the locks. Prefect's own clients",
             "(workers, flow runs) retry a 503, so they slow down instead of failing; a run counts here only if all 4 requests passed.", "",
             "| clients | SQLite runs/s | PostgreSQL runs/s | PG / SQLite | SQLite p50 / p95 ms | PostgreSQL p50 / p95 ms | SQLite failed requests (HTTP 503 = SQLITE_BUSY) | text `database is locked` in SQLite responses / server log | PostgreSQL failed requests |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s, p in zip(sqlite_rows, pg_rows):
        ratio = p["runs_per_s"] / s["runs_per_s"] if s["runs_per_s"] else float("inf")
        lines.append(f"| {s['clients']} | {s['runs_per_s']:.1f} | {p['runs_per_s']:.1f} | {ratio:.2f}x | "
                     f"{s['p50_ms']:.0f} / {s['p95_ms']:.0f} | {p['p50_ms']:.0f} / {p['p95_ms']:.0f} | "
                     f"{s['failed']} of {s['requests']} | {s['locked']} / {s['log_locked']} | {p['failed']} of {p['requests']} |")
    lines += ["", "Failed requests by kind (the most frequent three per row):", ""]
    for name, rows in (("SQLite", sqlite_rows), ("PostgreSQL", pg_rows)):
        for row in rows:
            for kind, n in sorted(row["kinds"].items(), key=lambda kv: -kv[1])[:3]:
                lines.append(f"- {name}, {row['clients']} clients: {n} x `{kind.replace('`', '')}`")
    lines += ["", "PostgreSQL settings used (from the role): " + ", ".join(f"`{k}={v}`" for k, v in settings.items()) + ".", "",
              f"Measured {datetime.date.today().isoformat()} on {platform.system()} {platform.machine()} with {os.cpu_count()} CPUs, "
              f"Python {platform.python_version()}, 1-minute load average {load_before:.1f} at start and {load_after:.1f} at the end "
              "(the client threads share the CPUs with the server and the database).", "", "Reproduce:", "", "```sh",
              ".venv/bin/python benchmarks/database_backends.py --clients 1,4,16 --seconds 20 --write docs/benchmarks.md", "```", "", END]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--write", type=Path, help="put the figures as a Markdown section into this file")
    args = parser.parse_args()
    levels = [int(x) for x in args.clients.split(",")]
    try:
        prefect_bin()
    except Unavailable as exc:
        raise SystemExit(str(exc)) from exc
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="prefect-bench-db-"))
    settings = role_settings()
    results = {}
    cluster = None
    try:
        for backend in ("sqlite", "postgresql"):
            url = None
            if backend == "postgresql":
                cluster = start_postgres(settings)
                url = cluster.url
            server = PrefectServer(root / backend, database_url=url)
            print(f"starting Prefect server on {backend} in {root / backend} ...", flush=True)
            server.start()
            try:
                status, version = request(server.api_url, "GET", "/admin/version")[:2]
                results[backend] = bench(server, levels, args.seconds)
            finally:
                server.stop()
    finally:
        if cluster:
            cluster.stop()
    text = markdown(results["sqlite"], results["postgresql"], settings, args.seconds, load_before, os.getloadavg()[0],
                    json.loads(version))
    print(text)
    if args.write:
        doc = args.write.read_text() if args.write.exists() else ""
        if BEGIN in doc:
            doc = doc.split(BEGIN)[0] + text + doc.split(END, 1)[1]
        else:
            doc = doc.rstrip("\n") + "\n\n" + text + "\n"
        args.write.write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
