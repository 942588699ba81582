"""Level 1 of the pyramid: yamllint and ansible-lint (production profile) over the whole collection."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from toolchain import REPO, tool

pytestmark = pytest.mark.static

# Any attempt to reach Galaxy or PyPI fails at once instead of hanging: the checks run offline.
DEAD_PROXY = "http://127.0.0.1:9"


def _offline(env: dict[str, str]) -> dict[str, str]:
    env = dict(env)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[name] = DEAD_PROXY
    env["NO_PROXY"] = env["no_proxy"] = ""
    return env


def test_ansible_lint_config_is_strict() -> None:
    """The lint configuration itself: production profile, offline, no blanket skips."""
    config = yaml.safe_load((REPO / ".ansible-lint").read_text(encoding="utf-8"))
    assert config["profile"] == "production"
    assert config["offline"] is True
    for loose in ("skip_list", "warn_list", "enable_list_skip"):
        assert not config.get(loose), f".ansible-lint must not carry a {loose}"
    ignore = REPO / ".ansible-lint-ignore"
    if ignore.exists():
        for line in ignore.read_text(encoding="utf-8").splitlines():
            entry = line.split("#")[0].split()
            if entry:
                assert "[" in entry[1], f"{line!r}: ignore one sub-rule for one file, never a whole rule"
                assert (REPO / entry[0]).is_file(), f"{line!r}: stale entry, the file does not exist"


def test_yamllint(ansible_env: dict[str, str]) -> None:
    proc = subprocess.run([tool("yamllint"), "--strict", "-f", "parsable", "."], cwd=REPO,
                          env=ansible_env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"yamllint found problems:\n{proc.stdout}{proc.stderr}"


def test_ansible_lint_production(ansible_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [tool("ansible-lint"), "--offline", "--nocolor", "-f", "pep8"],
        cwd=REPO, env=_offline(ansible_env), capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, f"ansible-lint (production profile) failed:\n{proc.stdout}\n{proc.stderr}"
