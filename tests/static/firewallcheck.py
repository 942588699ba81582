"""Checks Windows Firewall rules of the firewall role: no block rule, nothing opening the Prefect API port, no allow
rule from any address on a Prefect port.

Windows Firewall lets an explicit block rule beat every allow rule (FINDINGS), so a block rule on a Prefect host
silently shuts out whoever the allow rules admit; the API port must never be reachable from the network (IIS is the
way in); and a rule from any address on a Prefect port undoes the narrow ranges.

Rules come from one of:
  - the role's own derivation (plugins/filter/firewall.py through roles/firewall/tasks/preflight.yml) for every host
    of an inventory, rendered on the control node by ansible-playbook (no Windows host): the default, for
    inventories/example;
  - a YAML file: {api_port: 4200, prefect_ports: [443, ...], rules: [{name, action, direction, enabled, protocol,
    localport, remoteip}]} (the negative fixtures in tests/fixtures/static/firewall/);
  - the simulated host's state (sim_rules(), used by tests/roles/test_firewall.py).

    .venv/bin/python tests/static/firewallcheck.py                      # the example inventory's topologies
    .venv/bin/python tests/static/firewallcheck.py FILE.yml ...         # rule files

Prints "source: rule 'name': problem" lines and exits 1 when it finds one.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# The running virtual environment's ansible-playbook when it is one of the checkout's (.venv-core-<version> runs the
# checks against another ansible-core), else .venv's.
BIN = Path(sys.prefix) / "bin" if Path(sys.prefix).parent == REPO else REPO / ".venv" / "bin"
ANY = {"", "*", "any", "internet"}

RENDER = """
- name: Firewall rules of every host, as the role derives them
  hosts: all
  gather_facts: false
  connection: local
  vars:
    ansible_connection: local
  tasks:
    - name: The role's input is checked and its rules derived
      ansible.builtin.include_role:
        name: enclave.prefect.firewall
        tasks_from: preflight
        public: true
    - name: Rules are shown
      ansible.builtin.debug:
        msg:
          plan: "{{ firewall_plan }}"
          api_port: "{{ prefect_server_port | int }}"
          prefect_ports: "{{ [prefect_public_port, prefect_worker_port, prefect_database_port, 80,
                              firewall_winrm_port] | map('int') | list }}"
"""


def _ports(text: str) -> list[tuple[int, int]] | None:
    """(low, high) ranges of a LocalPorts value; None for every port."""
    ranges = []
    for part in str(text).split(","):
        part = part.strip()
        if part.lower() in ANY:
            return None
        low, _sep, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            ranges.append((int(low), int(high or low)))
    return ranges


def _covers(localport: str, port: int) -> bool:
    ranges = _ports(localport)
    return ranges is None or any(low <= port <= high for low, high in ranges)


def _from_any(remoteip: str) -> bool:
    for entry in str(remoteip).split(","):
        entry = entry.strip()
        if entry.lower() in ANY:
            return True
        try:
            if "-" not in entry and ipaddress.IPv4Network(entry, strict=False).prefixlen == 0:
                return True
        except ValueError:
            continue
    return False


def check_rules(rules: list[dict], api_port: int, prefect_ports: set[int] | list[int]) -> list[str]:
    """One message per problem; enabled inbound rules only (a disabled or outbound rule admits nothing)."""
    problems = []
    for rule in rules:
        if not rule.get("enabled", True) or str(rule.get("direction", "in")).lower() != "in":
            continue
        if str(rule.get("protocol", "tcp")).lower() not in ("tcp", "6", "any", "256"):
            continue
        name, localport = rule.get("name"), str(rule.get("localport", "*"))
        if str(rule.get("action", "allow")).lower() == "block":
            problems.append("rule %r: a block rule (TCP %s): it beats every allow rule, use the default inbound block"
                            % (name, localport))
            continue
        if _covers(localport, int(api_port)):
            problems.append("rule %r: opens the Prefect API port %d (TCP %s from %s)" % (name, api_port, localport, rule.get("remoteip")))
        open_ports = sorted(p for p in prefect_ports if _covers(localport, int(p)))
        if open_ports and _from_any(rule.get("remoteip", "*")):
            problems.append("rule %r: allows TCP %s from any address (%s)" % (
                name, ",".join(map(str, open_ports)), rule.get("remoteip")))
    return problems


def sim_rules(state: dict) -> list[dict]:
    """The simulated host's rules (COM view, sim_firewall.py) in the checker's form."""
    return [{"name": r["Name"], "enabled": r["Enabled"], "direction": "out" if r["Direction"] == 2 else "in",
             "action": "block" if r["Action"] == 0 else "allow", "protocol": str(r["Protocol"]),
             "localport": r["LocalPorts"], "remoteip": r["RemoteAddresses"]}
            for r in state.get("firewall", {}).get("rules", [])]


def render(inventory: Path, limit: str = "all", extra: dict | None = None) -> dict[str, dict]:
    """{host: {plan, api_port, prefect_ports}} as the role derives them on the control node."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    with tempfile.TemporaryDirectory() as tmp:
        playbook = Path(tmp) / "render.yml"
        playbook.write_text(RENDER)
        argv = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), "--limit", limit]
        if extra:
            (Path(tmp) / "extra.json").write_text(json.dumps(extra))
            argv += ["-e", "@" + str(Path(tmp) / "extra.json")]
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    data = json.loads(proc.stdout[proc.stdout.find("{"):])
    rendered, failed = {}, []
    for play in data["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                if result.get("failed"):
                    failed.append("%s: %s" % (host, result.get("msg")))
                elif task["task"]["name"] == "Rules are shown":
                    rendered[host] = result["msg"]
    if failed or proc.returncode:
        raise RuntimeError("the role refused the inventory's input:\n" + "\n".join(failed or [proc.stderr[-2000:]]))
    return rendered


def check_rendered(rendered: dict[str, dict]) -> list[str]:
    return ["%s: %s" % (host, problem) for host, item in sorted(rendered.items())
            for problem in check_rules(item["plan"]["rules"], item["api_port"], set(item["prefect_ports"]))]


def check_file(path: Path) -> list[str]:
    data = yaml.safe_load(path.read_text())
    return ["%s: %s" % (path, p) for p in check_rules(data["rules"], data["api_port"], set(data["prefect_ports"]))]


def main(argv: list[str]) -> int:
    if argv:
        problems = [p for arg in argv for p in check_file(Path(arg))]
    else:
        problems = check_rendered(render(REPO / "inventories/example/hosts.yml"))
    for problem in problems:
        print(problem)
    print("%d firewall rule problem(s)" % len(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
