# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of the iis_proxy role: IIS URL Authorization rules and the accounts of the workers' Basic credential."""
from __future__ import annotations

import re

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
    """The accounts of Basic credentials 'account:password' or 'DOMAIN\\account:password' (the password never
    returned), as the workers send them and IIS names the request's user (AUTH_USER is the name as sent). Unique and
    sorted; empty credentials are left out. An account without DOMAIN\\ is a local account of the proxy host (iis_worker_credentials)."""
    accounts = set()
    for text in auth_strings or []:
        account = str(text or "").split(":", 1)[0]
        if account:
            accounts.add(account)
    return sorted(accounts, key=str.lower)


# Characters a local account name cannot hold (Windows user-name rules; NetUserAdd refuses them), and its length.
LOCAL_NAME_BAD = re.compile(r'["/\\\[\]:;|=,+*?<>@]')
LOCAL_NAME_MAX = 20


def iis_worker_credentials(auth_strings):
    """The remote workers' Basic credentials split by kind. 'account:password' (no backslash) is a local account the
    iis_proxy role creates on the proxy host; 'DOMAIN\\account:password' a domain account the user manages. Returns
    {"local": [{"name", "password"}], "domain": [names], "conflicts": [local names given with different passwords],
    "bad": [local names Windows refuses]}; empty credentials are left out; passwords appear only in "local"."""
    local, domain, conflicts, bad = {}, set(), set(), set()
    for text in auth_strings or []:
        account, _sep, password = str(text or "").partition(":")
        if not account:
            continue
        if "\\" in account:
            domain.add(account)
            continue
        key = account.lower()
        if LOCAL_NAME_BAD.search(account) or len(account) > LOCAL_NAME_MAX or not account.strip(". "):
            bad.add(account)
        elif key in local and local[key]["password"] != password:
            conflicts.add(local[key]["name"])
        else:
            local.setdefault(key, {"name": account, "password": password})
    return {"local": [local[k] for k in sorted(local)], "domain": sorted(domain, key=str.lower),
            "conflicts": sorted(conflicts, key=str.lower), "bad": sorted(bad, key=str.lower)}


def iis_worker_account_clashes(credentials, services):
    """Messages for each remote workers' account that is also a service account of the proxy host, where one role's
    logon rights would break the other: the local account the iis_proxy role makes is denied network, interactive and
    service logon, and an account denied batch logon (SeDenyBatchLogonRight) cannot pass IIS Basic authentication,
    which logs on as a batch job (logonMethod Batch).
    credentials: the output of iis_worker_credentials; services: [variable, account, deny rights] of this host."""
    messages = []
    local = {c["name"].lower(): c["name"] for c in credentials.get("local", [])}
    domain = {n.lower(): n for n in credentials.get("domain", [])}
    for variable, account, deny in services or []:
        account = str(account or "")
        prefix, sep, short = account.rpartition("\\")
        if not short:
            continue
        if prefix in ("", ".") and short.lower() in local:
            messages.append("prefect_worker_api_auth_string's local account %s is also %s (%s) on this host: the proxy's "
                            "account may log on over the network only, a service account as a service or batch job only; "
                            "give the machine path an account of its own" % (local[short.lower()], variable, account))
        elif sep and account.lower() in domain and "SeDenyBatchLogonRight" in (deny or []):
            messages.append("prefect_worker_api_auth_string's account %s is also %s on this host, which is denied batch "
                            "logon (SeDenyBatchLogonRight), so IIS Basic authentication (logonMethod Batch) would refuse "
                            "every remote worker; use a local account for the machine path (account:password) or another "
                            "domain account" % (domain[account.lower()], variable))
    return messages


def iis_service_entry(account, variable, deny):
    """[variable, account, deny] for iis_worker_account_clashes, from a name found in a list (map() in a role's vars)."""
    return [variable, account, list(deny or [])]


def iis_ip_entries(values, single=False):
    """IIS ipSecurity <add> elements (allowed) for IPv4 and IPv6 addresses and IPv4 CIDR subnets: {"entries": [...],
    "bad": [values that are none of these, IPv4 subnets wider than /8, IPv6 prefixes (how IIS takes an IPv6 mask is not documented: list the
    addresses), subnets written with host bits, or with single=True anything but one address another host can use]},
    in the given order, without repeats. An IPv4-mapped IPv6 address is written as its IPv4 address (IIS sees IPv4
    clients in dotted form); an IPv6 address gets the mask IIS Manager leaves at its default (255.255.255.255)."""
    import ipaddress
    entries, bad = [], []
    for value in values or []:
        try:
            network = ipaddress.ip_network(str(value).strip(), strict=True)
        except ValueError:
            bad.append(str(value))
            continue
        address = network.network_address
        address = getattr(address, "ipv4_mapped", None) or address
        whole = network.prefixlen == network.max_prefixlen
        # Wider than /8 admits a good part of every network (the firewall role's limit for people's networks too).
        if network.version == 4 and network.prefixlen < 8:
            bad.append(str(value))
            continue
        if (network.version == 6 and not whole) or (single and (not whole or address.is_loopback or address.is_unspecified
                                                                or address.is_multicast or address.is_link_local
                                                                or str(address) == "255.255.255.255")):
            bad.append(str(value))
            continue
        mask = str(network.netmask) if network.version == 4 else "255.255.255.255"
        entry = {"ipAddress": str(address), "subnetMask": "255.255.255.255" if whole else mask, "allowed": "true"}
        if entry not in entries:
            entries.append(entry)
    return {"entries": entries, "bad": bad}


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
                "iis_bad_principals": iis_bad_principals, "iis_worker_credentials": iis_worker_credentials,
                "iis_worker_account_clashes": iis_worker_account_clashes, "iis_service_entry": iis_service_entry,
                "iis_ip_entries": iis_ip_entries}
