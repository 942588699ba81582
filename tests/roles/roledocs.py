"""Role READMEs generated from meta/argument_specs.yml.

Each roles/<role>/README.md has a hand-written part and, between the markers below, a variables table
generated from the role's argument_specs (the same data Ansible validates input against), so the two
cannot drift: tests/roles/test_role_docs.py fails when a README is stale.

Usage: .venv/bin/python tests/roles/roledocs.py [--write] [ROLE ...]   (default: every role with a README)
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BEGIN = "<!-- BEGIN GENERATED FROM meta/argument_specs.yml: tests/roles/roledocs.py --write -->"
END = "<!-- END GENERATED -->"


def _text(value) -> str:
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    text = str(value)
    # Ansible doc markup to Markdown.
    text = re.sub(r"[CVO]\(([^)]*)\)", r"`\1`", text)
    text = re.sub(r"[IB]\(([^)]*)\)", r"*\1*", text)
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _default(option: dict) -> str:
    if option.get("required"):
        return "required"
    if "default" not in option:
        return ""
    value = option["default"]
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{json.dumps(value)}`"


def _type(option: dict) -> str:
    kind = option.get("type", "str")
    if kind == "list" and option.get("elements"):
        kind = f"list of {option['elements']}"
    if option.get("choices"):
        kind += ": " + ", ".join(f"`{c}`" for c in option["choices"])
    if option.get("no_log"):
        kind += " (secret)"
    return kind


def _rows(options: dict, prefix: str = "") -> list[str]:
    rows = []
    for name, option in options.items():
        rows.append(f"| `{prefix}{name}` | {_type(option)} | {_default(option)} | {_text(option.get('description', ''))} |")
        if option.get("options"):
            rows.extend(_rows(option["options"], f"{prefix}{name}[]."))
    return rows


def generate(role: Path) -> str:
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    parts = []
    for entry, spec in specs.items():
        parts.append(f"### Entry point `{entry}`: {_text(spec.get('short_description', ''))}\n")
        for paragraph in spec.get("description", []) or []:
            parts.append(f"{_text(paragraph)}\n")
        parts.append("| Variable | Type | Default | Description |\n| --- | --- | --- | --- |")
        parts.append("\n".join(_rows(spec.get("options", {}))) + "\n")
    return "\n".join(parts)


def render(readme: str, role: Path) -> str:
    before, rest = readme.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    return f"{before}{BEGIN}\n\n{generate(role)}\n{END}{after}"


def main(argv: list[str]) -> int:
    write = "--write" in argv
    names = [a for a in argv if not a.startswith("--")]
    roles = [REPO / "roles" / n for n in names] or sorted(p.parent for p in (REPO / "roles").glob("*/README.md"))
    stale = []
    for role in roles:
        readme = (role / "README.md").read_text()
        wanted = render(readme, role)
        if wanted != readme:
            if write:
                (role / "README.md").write_text(wanted)
            else:
                stale.append(role.name)
    if stale:
        print(f"stale README for {', '.join(stale)}: run .venv/bin/python tests/roles/roledocs.py --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
