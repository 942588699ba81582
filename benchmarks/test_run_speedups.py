#!/usr/bin/env python3
"""The test runs' ansible-playbook speed-ups (tests/jinja_cache/sitecustomize.py) on and off, same machine, one run.

    .venv/bin/python benchmarks/test_run_speedups.py [--rounds 3] [--write docs/benchmarks.md]

Each round runs, on two fresh simulated all-in-one hosts (tests/roles/simhost.py), the real site.yml (first run and
no-op re-run) and playbooks/python.yml once, "off": ENCLAVE_JINJA_CODE_CACHE empty (nothing patched, ansible-core as
shipped) and the stand-ins as modules that read their arguments from a file (a temporary directory, an argument
file and a chmod on the host per call), and "on": as the test suite runs them (compiled templates kept, Jinja
plugins and the local connection's settings loaded once in the parent, data tags shared by deep copies, stand-ins
pipelined); the order alternates between rounds. Measured per run: CPU seconds of ansible-playbook and every process it
started (user + system, from the kernel's accounting of waited-for children), and wall seconds. Reported: the median
per playbook and setting, and the on/off ratio. Both settings must give the same task results (checked, as
tests/roles/test_jinja_cache.py does); exit status 1 when they differ.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "roles"), str(REPO / "tests")]

from simhost import INSTALLER, PROXY_CERT_THUMBPRINT, SECRETS, Sim, make_bundle, reached  # noqa: E402

VOLATILE = {"start", "end", "delta", "duration", "invocation"}


def environment(cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ENCLAVE_JINJA_CODE_CACHE=cache, PYTHONPATH=str(REPO / "tests" / "jinja_cache"))
    return env


def measured(sim: Sim, extra: dict, playbook: str) -> tuple[float, float, list]:
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    data = sim.run(extra, playbook=playbook)[1]
    wall, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    results = [(n, {k: v for k, v in r.items() if k not in VOLATILE}) for n, r in reached(data)]
    return cpu, wall, json.loads(json.dumps(results).replace(str(sim.root), "ROOT"))


def one_round(root: Path, name: str, cache: str) -> dict[str, tuple[float, float, list]]:
    pipelined = bool(cache)
    sim = Sim(root / name, environment(cache), pipelined=pipelined)
    bundle = make_bundle(sim.root)
    extra = {"prefect_bundle_dir": str(bundle), **SECRETS, "python_installer_sha256": hashlib.sha256(INSTALLER).hexdigest(),
             "iis_proxy_certificate_thumbprint": PROXY_CERT_THUMBPRINT}
    out = {"site.yml, first run": measured(sim, extra, "site.yml"), "site.yml, no-op re-run": measured(sim, extra, "site.yml")}
    fresh = Sim(root / (name + "-python"), environment(cache), pipelined=pipelined)
    out["python.yml, first run"] = measured(fresh, {**extra, "prefect_bundle_dir": str(make_bundle(fresh.root))}, "python.yml")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path, help="append the table to this Markdown file")
    args = parser.parse_args()
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    same = True
    with tempfile.TemporaryDirectory(prefix="speedups-") as tmp:
        root = Path(tmp)
        for number in range(args.rounds):
            settings = [("off", ""), ("on", str(root / "cache"))]
            if number % 2:
                settings.reverse()
            rounds = {label: one_round(root, f"{label}{number}", cache) for label, cache in settings}
            for playbook in rounds["off"]:
                for label in ("off", "on"):
                    figures.setdefault((playbook, label), []).append(rounds[label][playbook][:2])
                if rounds["off"][playbook][2] != rounds["on"][playbook][2]:
                    same = False
                    print(f"DIFFERENT RESULTS: {playbook}, round {number + 1}")
    lines = [f"### Test-run speed-ups on and off ({datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
             f"Python {platform.python_version()}, median of {args.rounds} rounds)", "",
             "| Playbook on the simulated host | CPU off | CPU on | CPU on/off | wall off | wall on |",
             "| --- | --- | --- | --- | --- | --- |"]
    for playbook in dict.fromkeys(p for p, _ in figures):
        off_cpu, off_wall = (statistics.median(v[i] for v in figures[(playbook, "off")]) for i in (0, 1))
        on_cpu, on_wall = (statistics.median(v[i] for v in figures[(playbook, "on")]) for i in (0, 1))
        lines.append(f"| {playbook} | {off_cpu:.1f} s | {on_cpu:.1f} s | {on_cpu / off_cpu:.2f} | {off_wall:.1f} s | "
                     f"{on_wall:.1f} s |")
    lines.append("")
    lines.append("Same task results with and without: " + ("yes" if same else "NO"))
    print("\n".join(lines))
    if args.write:
        with open(args.write, "a", encoding="utf-8") as handle:
            handle.write("\n" + "\n".join(lines) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
