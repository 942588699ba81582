#!/usr/bin/env python3
"""Reconcile N work pools with enclave.prefect.work_pool and with the runbooks' Prefect CLI, same server, one run.

    .venv/bin/python benchmarks/work_pool_reconcile.py [--pools 20] [--write docs/benchmarks.md]

Starts its own Prefect server (pinned, .venv-prefect, SQLite, 127.0.0.1) behind a counting pass-through proxy,
then measures, for N pools each:
  module  first run   one ansible-playbook run, enclave.prefect.work_pool in a loop (creates the pools)
  module  no-op run   the same playbook again (nothing changes)
  CLI     first run   `prefect work-pool create NAME --type process` per pool (runbook 000 / 001)
  CLI     no-op run   `prefect work-pool inspect NAME` per pool (how a runbook checks a pool exists)
and the HTTP requests each approach sends per unchanged pool (counted at the proxy).
"""
from __future__ import annotations

import argparse
import collections
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

from ntlm_proxy import AuthProxy  # noqa: E402
from playbooks import Playbook  # noqa: E402
from servers import PrefectServer, Unavailable, prefect_bin  # noqa: E402

TARGET_NOOP_RATIO = 3.0


def module_run(playbook: Playbook, api_url: str, names: list[str]) -> tuple[float, dict]:
    task = {
        "name": "pools",
        "enclave.prefect.work_pool": {"api_url": api_url, "name": "{{ item }}", "type": "process"},
        "loop": names,
    }
    started = time.perf_counter()
    res = playbook.run([task])
    elapsed = time.perf_counter() - started
    if res.rc != 0:
        raise SystemExit(f"module run failed:\n{res.explain()}")
    return elapsed, res.task("pools")


def cli_run(env: dict, argv_for, names: list[str]) -> float:
    started = time.perf_counter()
    for name in names:
        proc = subprocess.run(argv_for(name), env=env, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv_for(name))} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - started


BREAKDOWN: dict[str, collections.Counter] = {}


def count(proxy: AuthProxy, fn, *args, label: str = ""):
    proxy.reset()
    result = fn(*args)
    seen = proxy.reset()
    BREAKDOWN[label] = collections.Counter(
        f"{f.method} {re.sub(r'bench-(module|cli)-[0-9]+', '{name}', f.path.split('?')[0])}" for f in seen)
    return result, len(seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", type=int, default=20)
    parser.add_argument("--write", type=Path, help="write the figures as Markdown to this file")
    args = parser.parse_args()
    try:
        prefect = prefect_bin()
    except Unavailable as exc:
        raise SystemExit(str(exc)) from exc

    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="prefect-bench-"))
    # No background services: only the API answers, so both approaches see the same quiet server.
    server = PrefectServer(root / "server", services=False)
    print(f"starting Prefect server in {root} ...", flush=True)
    server.start()
    proxy = AuthProxy(f"http://127.0.0.1:{server.port}").start()
    api_url = f"{proxy.url}/api"
    try:
        n = args.pools
        mod_names = [f"bench-module-{i:02d}" for i in range(1, n + 1)]
        cli_names = [f"bench-cli-{i:02d}" for i in range(1, n + 1)]
        env = dict(os.environ)
        env.pop("ANSIBLE_CONFIG", None)
        env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}")
        playbook = Playbook(root, env)
        cli_env = server.client_env(root / "cli-home")
        cli_env["PREFECT_API_URL"] = api_url

        (m_first, m_first_result), m_first_req = count(proxy, module_run, playbook, api_url, mod_names,
                                                       label="module, first run")
        (m_noop, m_noop_result), m_noop_req = count(proxy, module_run, playbook, api_url, mod_names,
                                                     label="module, no-op re-run")
        created = sum(1 for r in m_first_result["results"] if r["changed"])
        unchanged = sum(1 for r in m_noop_result["results"] if not r["changed"])
        if created != n or unchanged != n:
            raise SystemExit(f"module: {created}/{n} created on the first run, {unchanged}/{n} unchanged after")

        c_first, c_first_req = count(proxy, cli_run, cli_env,
                                     lambda p: [prefect, "work-pool", "create", p, "--type", "process"], cli_names,
                                     label="CLI, first run")
        c_noop, c_noop_req = count(proxy, cli_run, cli_env, lambda p: [prefect, "work-pool", "inspect", p], cli_names,
                                   label="CLI, no-op re-run")
        for name in mod_names + cli_names:
            if not server.pool(name):
                raise SystemExit(f"pool {name} missing after the benchmark")
    finally:
        proxy.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    rows = [
        ("first run (create)", m_first, c_first, m_first_req, c_first_req),
        ("no-op re-run", m_noop, c_noop, m_noop_req, c_noop_req),
    ]
    noop_ratio = c_noop / m_noop
    lines = [
        f"| Pass ({n} pools) | module total | module per pool | CLI total | CLI per pool | CLI / module "
        "| HTTP requests per pool: module | HTTP requests per pool: CLI |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, mod, cli, mreq, creq in rows:
        lines.append(f"| {label} | {mod:.2f} s | {mod / n * 1000:.0f} ms | {cli:.2f} s | {cli / n * 1000:.0f} ms "
                     f"| {cli / mod:.1f}x | {mreq / n:.2f} | {creq / n:.2f} |")
    verdict = "met" if noop_ratio >= TARGET_NOOP_RATIO else "NOT met"
    table = "\n".join(lines)
    requests = "\n".join(
        f"- {label}: " + ", ".join(f"`{call}` x{num}" for call, num in sorted(calls.items()))
        for label, calls in BREAKDOWN.items())
    print()
    print(table)
    print("\nHTTP requests by call (all pools):\n" + requests)
    print(f"\nno-op target (>= {TARGET_NOOP_RATIO:.0f}x faster than the CLI per pool): {verdict} ({noop_ratio:.1f}x)")
    load = (load_before, os.getloadavg()[0])
    print(f"1-minute load average: {load[0]:.1f} at start, {load[1]:.1f} at end ({os.cpu_count()} CPUs)")
    if args.write:
        # Only this benchmark's section: the other benchmarks write theirs into the same file.
        text = BEGIN + "\n\n" + render(table, requests, n, noop_ratio, verdict, load).rstrip("\n") + "\n\n" + END
        doc = args.write.read_text() if args.write.exists() else "# Benchmarks\n"
        if BEGIN in doc:
            doc = doc.split(BEGIN)[0] + text + doc.split(END, 1)[1]
        else:
            head, sep, rest = doc.partition("\n\n")
            doc = head + sep + text + "\n\n" + rest if sep else doc.rstrip("\n") + "\n\n" + text + "\n"
        args.write.write_text(doc)
        print(f"written to {args.write}")
    return 0 if noop_ratio >= TARGET_NOOP_RATIO else 1


BEGIN = "<!-- BEGIN work_pool_reconcile.py -->"
END = "<!-- END work_pool_reconcile.py -->"


def render(table: str, requests: str, n: int, ratio: float, verdict: str, load: tuple[float, float]) -> str:
    return f"""## Work pool reconcile: `enclave.prefect.work_pool` against the Prefect CLI

Reconciling {n} work pools against one Prefect 3.8.8 server (SQLite, 127.0.0.1, no background services), in one
run: the module in one `ansible-playbook` run (a loop over the pools, controller mode) and the CLI the runbooks
use, one `prefect` command per pool (`prefect work-pool create NAME --type process` to create,
`prefect work-pool inspect NAME` to check). HTTP requests are counted at a pass-through proxy in front of the
server, per pool, for the whole pass (the module's per-run requests are included).

{table}

HTTP requests by call, all {n} pools together:

{requests}

Target for the no-op re-run, at least 3x faster than the CLI per pool: **{verdict}** ({ratio:.1f}x).

Why: each CLI call starts a Python interpreter and imports Prefect (about 1 s on an idle machine, several
under load) before it sends anything; the module runs inside the one `ansible-playbook` process and, for an
unchanged pool, only reads the pool and its queues. The module also compares queues, template and settings,
which `inspect` does not.

Measured {datetime.date.today().isoformat()} on {platform.system()} {platform.machine()} with {os.cpu_count()} CPUs, \
Python {platform.python_version()}, 1-minute load average {load[0]:.1f} at start and {load[1]:.1f} at the end.
Absolute times depend on the machine and its load (starting `prefect` is CPU-bound, so a busy machine slows the
CLI most); the ratio is measured in one run against one server.

Reproduce (after `bash scripts/setup.sh --with-test-servers`):

```sh
.venv/bin/python benchmarks/work_pool_reconcile.py --pools {n} --write docs/benchmarks.md
```
"""


if __name__ == "__main__":
    sys.exit(main())
