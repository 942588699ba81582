"""Every task of the Windows roles carries its role's name and a stage tag, so partial runs work."""
from __future__ import annotations

import re
import subprocess

import pytest

from rolerun import REPO
from toolchain import VENV_BIN

pytestmark = pytest.mark.static

STAGES = {"install", "config", "service", "pools", "verify"}
ROLES = {"python", "prefect_venv", "postgresql", "nssm_services", "backup", "iis_proxy", "firewall"}
LINE = re.compile(r"^\s+(?:enclave\.prefect\.)?(?P<role>\w+) : (?P<name>.*?)\tTAGS: \[(?P<tags>[^\]]*)\]$")


def test_every_role_task_has_role_and_stage_tags(ansible_env):
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "--list-tasks", "playbooks/site.yml"],
                          cwd=REPO, env=ansible_env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen, missing = set(), []
    for line in proc.stdout.splitlines():
        match = LINE.match(line)
        if not match or match["role"] not in ROLES | {"common"}:
            continue
        tags = {t.strip() for t in match["tags"].split(",") if t.strip()}
        if match["name"].startswith("Validating arguments against arg spec"):
            assert "always" in tags, line  # role input is checked whatever the tags
            continue
        if match["role"] == "common":
            # common's own checks run always; its artifact tasks inherit the importing role's tags.
            if not ("always" in tags or (tags & ROLES and tags & STAGES)):
                missing.append(line.strip())
            continue
        seen.add(match["role"])
        if match["role"] not in tags or not tags & STAGES:
            missing.append(line.strip())
    assert seen == ROLES, seen
    assert not missing, "\n".join(missing)


def test_dynamic_includes_give_their_tasks_the_includes_tags():
    """A role's tasks/main.yml includes validate.yml dynamically (skipped after the preflight); the included tasks do
    not inherit the include's tags, so `apply` must give them the same ones (`--list-tasks` cannot show them)."""
    import yaml

    seen = 0
    for main in sorted(REPO.glob("roles/*/tasks/main.yml")):
        for task in yaml.safe_load(main.read_text()) or []:
            include = task.get("ansible.builtin.include_tasks")
            if include is None:
                continue
            seen += 1
            assert isinstance(include, dict) and "apply" in include, (main, task.get("name"))
            assert sorted(include["apply"].get("tags", [])) == sorted(task.get("tags", [])), (main, task.get("name"))
    assert seen >= len(ROLES) + 1, seen
