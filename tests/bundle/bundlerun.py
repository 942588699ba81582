"""Running playbooks/bundle.yml in the bundle tests: always with the tests' own cache and the stand-in catalogue."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from installer_fixtures import BundleFixtures
from toolchain import REPO, tool

# The tests' own cache, reused between sessions (wheels, built control-node wheels, collections) so that a second
# run is warm; its installers are dropped at the start of each session, since the stand-ins are signed anew.
TEST_CACHE = REPO / "build" / "bundle-test-cache"
# The user's default cache: no bundle test may read or write it.
USER_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "enclave-prefect-bundle"


def run(cmd: list[str], timeout: int, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout, **kwargs)


def build(env: dict[str, str], fixtures: BundleFixtures, base_url: str, output: Path, cache: Path, *extra: str,
          timeout: int = 3600, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """playbooks/bundle.yml with the stand-in catalogue, its CA and an explicit cache; extra are more arguments."""
    cmd = [*(prefix or []), tool("ansible-playbook"), str(REPO / "playbooks/bundle.yml"),
           "-e", f"bundle_output_dir={output}",
           "-e", f"bundle_cache_dir={cache}",
           "-e", f"bundle_installers_file={fixtures.catalogue}",
           "-e", f"bundle_installers_local_dir={fixtures.local}",
           "-e", f"bundle_signature_ca_file={fixtures.ca_file}",
           "-e", f"bundle_fixture_base_url={base_url}", *extra]
    return run(cmd, timeout=timeout, cwd=REPO, env=env)


def output_of(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def error_text(proc: subprocess.CompletedProcess[str]) -> str:
    """The messages of the failed tasks as ansible-core prints them (`[ERROR]: ...` up to its `Origin:` line)."""
    out = output_of(proc)
    parts = [part.split("\nOrigin:", 1)[0] for part in out.split("[ERROR]: ")[1:]]
    return "\n".join(parts) or out


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time (empty when root does not exist)."""
    state = {}
    for base, _dirs, files in os.walk(root):
        for name in files:
            path = Path(base, name)
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            state[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return state
