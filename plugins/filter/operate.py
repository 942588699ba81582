# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of the operator playbooks (verify, diagnose, upgrade, uninstall): the closing table."""
from __future__ import annotations

DOCUMENTATION = r"""
name: operate_table
short_description: The closing table of an operator playbook, as lines of text
version_added: 0.1.0
description:
  - Takes a list of rows (dicts) and the column keys, and returns the lines of a plain-text table with aligned columns,
    for C(ansible.builtin.debug) C(msg). Missing values print as empty.
positional: _input
options:
  _input:
    description: Rows.
    type: list
    elements: dict
    required: true
  columns:
    description: Keys of the columns, in order.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Table of the checks
  ansible.builtin.debug:
    msg: "{{ rows | enclave.prefect.operate_table(['check', 'result', 'detail']) }}"
"""

RETURN = r"""
_value:
  description: Lines of the table, header first.
  type: list
  elements: str
"""


def operate_host_rows(hostvars, hosts):
    """Rows {host, step, result} from each host's operate_steps fact, in inventory order."""
    rows = []
    for host in hosts or []:
        facts = hostvars.get(host) if hasattr(hostvars, "get") else None
        steps = facts.get("operate_steps") if facts is not None and hasattr(facts, "get") else None
        for step in steps or []:
            rows.append(dict(step, host=host))
    return rows


def operate_table(rows, columns):
    cells = [[str(c).upper() for c in columns]]
    cells += [[" ".join(str(row.get(c, "") if row.get(c) is not None else "").split()) for c in columns] for row in rows or []]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return [" | ".join(value.ljust(widths[i]) for i, value in enumerate(line)).rstrip() for line in cells]


class FilterModule:
    def filters(self):
        return {"operate_table": operate_table, "operate_host_rows": operate_host_rows}
