"""Build the tree `ansible-test sanity` needs: <dest>/ansible_collections/enclave/prefect.

ansible-test only runs inside an `ansible_collections/<namespace>/<name>` directory, while this
repository root is the collection root. The tree is a copy of the files git knows about (tracked,
plus untracked files that are not ignored), minus:

- what galaxy.yml `build_ignore` lists: sanity checks what `ansible-galaxy collection build` ships,
  which is what users install. Developer tooling left out there (molecule/, scripts/, benchmarks/)
  is covered by ansible-lint, yamllint and the other tests/static checks instead;
- tests/fixtures/static/: deliberately broken inputs for the negative tests of tests/static.

Run: python tests/static/sanity_tree.py [DEST]   (default build/sanity); prints the collection path.
"""
from __future__ import annotations

import fnmatch
import shutil
import subprocess
import os
import sys
from pathlib import Path

if __name__ == "__main__":  # run with the project's virtualenv whatever `python` was used
    _VENV = Path(__file__).resolve().parents[2] / ".venv"
    if (_VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != _VENV.resolve():
        os.execv(str(_VENV / "bin" / "python"), [str(_VENV / "bin" / "python"), *sys.argv])

import yaml

REPO = Path(__file__).resolve().parents[2]
EXTRA_EXCLUDES = ("tests/fixtures/static",)


def collection_files(repo: Path = REPO) -> list[str]:
    """Relative paths of the files that belong in the sanity tree."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=repo, check=True, capture_output=True,
    ).stdout.decode()
    galaxy = yaml.safe_load((repo / "galaxy.yml").read_text(encoding="utf-8")) or {}
    patterns = list(galaxy.get("build_ignore") or []) + list(EXTRA_EXCLUDES)
    files = []
    for rel in sorted(p for p in out.split("\0") if p):
        if not (repo / rel).is_file():  # deleted but still tracked
            continue
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pat) for prefix in prefixes for pat in patterns):
            continue
        files.append(rel)
    return files


def build(dest: Path, repo: Path = REPO) -> Path:
    """(Re)create dest/ansible_collections/enclave/prefect and return that path."""
    galaxy = yaml.safe_load((repo / "galaxy.yml").read_text(encoding="utf-8"))
    root = dest / "ansible_collections" / galaxy["namespace"] / galaxy["name"]
    if root.exists():
        # Keep tests/output (ansible-test's cache of venvs and results) between runs.
        for child in root.iterdir():
            if child.name == "tests":
                for sub in child.iterdir():
                    if sub.name != "output":
                        shutil.rmtree(sub) if sub.is_dir() and not sub.is_symlink() else sub.unlink()
            elif child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    root.mkdir(parents=True, exist_ok=True)
    for rel in collection_files(repo):
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target, follow_symlinks=False)
    return root


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build" / "sanity"))
