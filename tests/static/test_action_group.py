"""meta/runtime.yml's `prefect_api` action group names every Prefect API plugin, and only those.

`module_defaults: {group/enclave.prefect.prefect_api: {api_url: ..., auth: ...}}` sets the connection options of the
plugins in the group; a plugin left out would silently run without them. The API plugins are the modules whose
documentation extends the `enclave.prefect.prefect_api` fragment (the connection options).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from toolchain import REPO

pytestmark = pytest.mark.static

MODULES = REPO / "plugins" / "modules"
FRAGMENT = "enclave.prefect.prefect_api"


def _documentation(path: Path) -> dict:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DOCUMENTATION" for t in node.targets):
            return yaml.safe_load(ast.literal_eval(node.value))
    raise AssertionError(f"{path.relative_to(REPO)} has no DOCUMENTATION")


def api_plugins(modules: Path = MODULES) -> set[str]:
    """Modules that take the Prefect API connection options (their documentation extends the fragment)."""
    return {path.stem for path in modules.glob("*.py") if path.name != "__init__.py"
            and FRAGMENT in (_documentation(path).get("extends_documentation_fragment") or [])}


def test_the_group_names_every_api_plugin_and_nothing_else():
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text(encoding="utf-8"))
    group = runtime["action_groups"]["prefect_api"]
    assert len(group) == len(set(group)), f"prefect_api names a plugin twice: {group}"
    plugins = api_plugins()
    assert plugins, "no module extends enclave.prefect.prefect_api: the discovery below is broken"
    assert not plugins - set(group), f"API plugins missing from the prefect_api action group: {sorted(plugins - set(group))}"
    assert not set(group) - plugins, f"prefect_api names what is no API plugin: {sorted(set(group) - plugins)}"


def test_a_plugin_without_the_fragment_is_not_an_api_plugin(tmp_path: Path):
    """The discovery itself: a module that does not extend the fragment (role_input) is not counted, one that does is."""
    for name in ("role_input.py", "work_pool.py"):
        (tmp_path / name).write_text((MODULES / name).read_text(encoding="utf-8"), encoding="utf-8")
    assert api_plugins(tmp_path) == {"work_pool"}
