"""Read the argument constraints of a PowerShell module from its `$spec = @{ ... }` hashtable.

ansible-doc publishes options, types and choices, but not `mutually_exclusive`, `required_one_of`,
`required_together`, `required_if` or `required_by`: those live only in the module's code. For
modules built on Ansible.Basic they sit in the literal `$spec` hashtable, which this module reads
with tree-sitter-powershell. Only literal values are understood (strings, numbers, $true/$false/
$null, arrays, hashtables); a constraint built any other way is left out, never guessed.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import psparse
from ansible_tasks import is_templated

CONSTRAINTS = ("mutually_exclusive", "required_one_of", "required_together", "required_if", "required_by")


class Unsupported(ValueError):
    """A value that is not a plain literal."""


def _named(node) -> list:
    return [c for c in node.named_children if c.type != "comment"]


def _unwrap(node):
    while node.type not in _EVALUATORS and len(_named(node)) == 1:
        node = _named(node)[0]
    return node


def _statements(node) -> list:
    return _named(node) if node.type == "statement_list" else [node]


def _array_expression(node) -> list:
    items: list = []
    for content in _named(node):
        for statement in _statements(content):
            value = evaluate(statement)
            if isinstance(value, list):
                items.extend(value)  # PowerShell enumerates what each statement outputs
            else:
                items.append(value)
    return items


def _unary(node) -> Any:
    if node.children and node.children[0].type == ",":
        return [evaluate(_named(node)[0])]
    raise Unsupported(node.text.decode())


def _array_literal(node) -> Any:
    elements = _named(node)
    return evaluate(elements[0]) if len(elements) == 1 else [evaluate(e) for e in elements]


def _verbatim(node) -> str:
    text = node.text.decode()
    return text[1:-1].replace("''", "'") if text.startswith("'") else text


def _expandable(node) -> str:
    text = node.text.decode()
    if "$" in text or "`" in text:
        raise Unsupported(text)
    return text[1:-1]


def _variable(node) -> Any:
    known = {"$true": True, "$false": False, "$null": None}
    text = node.text.decode().lower()
    if text not in known:
        raise Unsupported(text)
    return known[text]


def _integer(node) -> int:
    return int(node.text.decode())


def _hashtable(node) -> dict:
    result = {}
    body = next((c for c in _named(node) if c.type == "hash_literal_body"), None)
    for entry in _named(body) if body is not None else []:
        if entry.type != "hash_entry":
            continue
        parts = _named(entry)
        key_node, value_node = parts[0], parts[-1]
        key = _unwrap(key_node)
        key_text = evaluate(key) if key.type in _EVALUATORS else key.text.decode()
        result[str(key_text)] = evaluate(value_node)
    return result


_EVALUATORS = {
    "array_expression": _array_expression,
    "expression_with_unary_operator": _unary,
    "array_literal_expression": _array_literal,
    "verbatim_string_characters": _verbatim,
    "expandable_string_literal": _expandable,
    "variable": _variable,
    "decimal_integer_literal": _integer,
    "hash_literal_expression": _hashtable,
}


def evaluate(node) -> Any:
    node = _unwrap(node)
    handler = _EVALUATORS.get(node.type)
    if handler is None:
        raise Unsupported(node.text.decode()[:60])
    return handler(node)


def _spec_table(root):
    """The hashtable assigned to $spec (the Ansible.Basic convention), or None."""
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "assignment_expression":
            parts = _named(node)
            if parts and parts[0].text.decode().strip().lower() == "$spec":
                value = parts[-1]
                while value.type != "hash_literal_expression" and len(_named(value)) == 1:
                    value = _named(value)[0]
                if value.type == "hash_literal_expression":
                    return value
        stack.extend(reversed(node.children))
    return None


@lru_cache(maxsize=None)
def module_constraints(path: Path) -> dict[str, Any]:
    """Top-level constraints of the module at path (a .ps1), e.g. {'mutually_exclusive': [['a', 'b']]}."""
    if not path.is_file():
        return {}
    tree = psparse._parser().parse(path.read_bytes())
    table = _spec_table(tree.root_node)
    if table is None:
        return {}
    found: dict[str, Any] = {}
    body = next((c for c in _named(table) if c.type == "hash_literal_body"), None)
    for entry in _named(body) if body is not None else []:
        parts = _named(entry)
        if entry.type != "hash_entry" or len(parts) < 2:
            continue
        key = _unwrap(parts[0]).text.decode()
        if key not in CONSTRAINTS:
            continue
        try:
            found[key] = evaluate(parts[-1])
        except Unsupported:
            continue
    return found


def violations(constraints: dict[str, Any], given: dict[str, Any], complete: bool = True) -> list[str]:
    """Messages for the constraints the given options (canonical name -> value) break.

    complete=False when some options may be hidden in a template: only "too many" checks run.
    """
    present = {name for name, value in given.items() if value is not None}
    problems = []
    for group in constraints.get("mutually_exclusive") or []:
        both = [o for o in group if o in present]
        if len(both) > 1:
            problems.append(f"options {', '.join(repr(o) for o in both)} are mutually exclusive")
    if complete:
        for group in constraints.get("required_one_of") or []:
            if not any(o in present for o in group):
                problems.append(f"one of the options {', '.join(repr(o) for o in group)} is required")
        for group in constraints.get("required_together") or []:
            some = [o for o in group if o in present]
            if some and len(some) != len(group):
                problems.append(f"options {', '.join(repr(o) for o in group)} must be given together")
        for rule in constraints.get("required_if") or []:
            if not isinstance(rule, list) or len(rule) < 3:
                continue
            key, value, needed = rule[0], rule[1], rule[2]
            needed = needed if isinstance(needed, list) else [needed]
            any_of = len(rule) > 3 and rule[3] is True
            actual = given.get(key)
            if actual is None or is_templated(actual) or str(actual) != str(value):
                continue
            missing = [o for o in needed if o not in present]
            if (any_of and len(missing) == len(needed)) or (not any_of and missing):
                which = "one of" if any_of else "all of"
                problems.append(f"{key}={value} requires {which} {', '.join(repr(o) for o in needed)}"
                                f"; missing {', '.join(repr(o) for o in missing)}")
        for option, needed in (constraints.get("required_by") or {}).items():
            needed = needed if isinstance(needed, list) else [needed]
            if option in present:
                missing = [o for o in needed if o not in present]
                if missing:
                    problems.append(f"option {option!r} requires {', '.join(repr(o) for o in missing)}")
    return problems
