# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of the iis_proxy role: IIS URL Authorization rules and the accounts of the workers' Basic credential."""
from __future__ import annotations

DOCUMENTATION = r"""
name: iis_allow_rules
short_description: IIS URL Authorization allow rules for Windows groups or accounts
version_added: 0.2.0
description:
  - Returns one C(system.webServer/security/authorization) C(add) element per name, C(accessType=Allow) with the name in
    C(roles) (groups) or C(users) (accounts); the role writes the list in place of the inherited "allow everyone" rule.
positional: _input
options:
  _input:
    description: Names as C(DOMAIN\name); C(*) in O(field=users) is every authenticated account.
    type: list
    elements: str
    required: true
  field:
    description: C(roles) for groups, C(users) for accounts.
    type: str
    choices: [roles, users]
    default: roles
"""

EXAMPLES = r"""
- name: Rules of the people's site
  ansible.builtin.debug:
    msg: "{{ ['CORP\\Prefect Users'] | enclave.prefect.iis_allow_rules }}"
"""

RETURN = r"""
_value:
  description: The rules, each with C(accessType), C(users), C(roles) and C(verbs).
  type: list
  elements: dict
"""


def iis_allow_rules(names, field="roles"):
    if field not in ("roles", "users"):
        raise ValueError("field must be roles or users")
    rules = []
    for name in names or []:
        rule = {"accessType": "Allow", "users": "", "roles": "", "verbs": ""}
        rule[field] = str(name)
        rules.append(rule)
    return rules


def iis_basic_accounts(auth_strings):
    """The accounts of Basic credentials 'DOMAIN\\account:password' (the password never returned), as the workers send
    them and IIS names the request's user (AUTH_USER is the name as sent). Unique and sorted; empty credentials are left
    out. nssm_services accepts only DOMAIN\\account, and iis_bad_principals refuses anything else here."""
    accounts = set()
    for text in auth_strings or []:
        account = str(text or "").split(":", 1)[0]
        if account:
            accounts.add(account)
    return sorted(accounts, key=str.lower)


def iis_bad_principals(names):
    """The names URL Authorization cannot take as one group or account: not DOMAIN\\name (one backslash, both parts
    present), or holding a comma (IIS splits users and roles at commas)."""
    bad = []
    for name in names or []:
        text = str(name)
        domain, sep, rest = text.partition("\\")
        if not sep or not domain.strip() or not rest.strip() or "\\" in rest or "," in text:
            bad.append(text)
    return bad


class FilterModule:
    def filters(self):
        return {"iis_allow_rules": iis_allow_rules, "iis_basic_accounts": iis_basic_accounts,
                "iis_bad_principals": iis_bad_principals}
