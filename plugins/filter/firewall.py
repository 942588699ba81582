# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Windows Firewall rules of one host, derived on the control node (roles/firewall).

Everything the firewall role decides is here, so that the preflight refuses bad input before any host is
contacted and tests/static/firewallcheck.py can render the rules of an inventory without a Windows host.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping

DOCUMENTATION = r"""
name: firewall_plan
short_description: The Windows Firewall rules of one host, and every problem with the firewall role's input
version_added: 0.1.0
description:
  - Takes the firewall role's input for one host (a mapping built in C(roles/firewall/vars/main.yml)) and returns the
    allow rules the host must carry, with their remote addresses in one canonical spelling, and one message per
    problem (each naming the variable, what it must be and what it got).
  - People's HTTPS (and HTTP when redirecting) from C(client_ranges) and the machine path from the remote
    workers' addresses and the developers' C(cli_networks) (C(prefect_cli_networks), addresses or CIDR subnets, no
    keyword, /8 or narrower) on proxy hosts; PostgreSQL from the Prefect server hosts on database hosts; WinRM over HTTPS
    from the control node when the role manages that rule. Never a rule for the Prefect API port.
  - "Refused: an empty client range list on a proxy host, C(any), C(*), C(0.0.0.0/0) and ranges wider than /8 unless
    C(allow_any_client); a control-node list that is empty, a keyword or wider than /24 while the role manages
    the WinRM rule; a host without a valid address that a rule needs; a port that is the Prefect API
    port; the group or a rule name of C(prepare-windows-host.ps1)."
positional: _input
options:
  _input:
    description: The role's input for one host; keys as set in C(roles/firewall/vars/main.yml).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Firewall input is well formed and consistent
  ansible.builtin.assert:
    that: firewall_plan.errors | length == 0
    fail_msg: "{{ firewall_plan.errors | join('\n') }}"
"""

RETURN = r"""
_value:
  description: C(errors) (list of messages), C(rules) (list of rule mappings with the options of
    C(community.windows.win_firewall_rule)), C(names) (their names) and the echoed C(state) and C(group).
  type: dict
"""

# prepare-windows-host.ps1 (playbooks/files) keeps its WinRM rule in this group under this display name: never touched.
PREPARE_GROUP = "enclave.prefect"
PREPARE_RULE_PREFIX = "enclave.prefect: WinRM over HTTPS"
# Windows Firewall address keywords (INetFwRule::RemoteAddresses), in the spelling Windows returns.
KEYWORDS = {k.lower(): k for k in ("LocalSubnet", "DNS", "DHCP", "WINS", "DefaultGateway", "Internet", "Intranet",
                                   "IntranetRemoteAccess", "PlayToDevice")}
# The only keyword that names a bounded set of clients; the others are servers or the whole internet.
CLIENT_KEYWORDS = {"LocalSubnet"}
ANY = {"any", "*"}
MIN_CLIENT_PREFIX = 8
MIN_CONTROL_PREFIX = 24


# An IPv6 prefix is held to the IPv4 limits 24 bits longer: /32 for people's networks (IPv4 /8), /48 for the control
# node (IPv4 /24); a single address is /128 (IPv4 /32).
IPV6_PREFIX_OFFSET = 24


def _plain(address):
    """An IPv4-mapped IPv6 address (::ffff:10.0.0.5) as the IPv4 address Windows matches it as."""
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _scaled(prefix: int, version: int) -> int:
    """A prefix length in IPv4 terms: 0 stays 0 (every address), an IPv6 prefix is IPV6_PREFIX_OFFSET shorter, at least 1."""
    if version == 4 or prefix == 0:
        return prefix
    return max(prefix - IPV6_PREFIX_OFFSET, 1)


def _address(text: str) -> tuple[str | None, str | None, int]:
    """(canonical spelling, problem, prefix length in IPv4 terms) of one IPv4 or IPv6 address, CIDR subnet (IPv4 also
    with a dotted netmask) or range."""
    text = str(text).strip()
    if text.lower() in ANY:
        return "any", None, 0
    if text.lower() in KEYWORDS:
        return KEYWORDS[text.lower()], None, -1
    if "-" in text:
        first, _sep, last = text.partition("-")
        try:
            low, high = _plain(ipaddress.ip_address(first.strip())), _plain(ipaddress.ip_address(last.strip()))
        except ValueError:
            return None, "not an IP address range", 0
        if low.version != high.version:
            return None, "a range from an IPv4 to an IPv6 address", 0
        if low > high:
            return None, "a range whose first address is after its last", 0
        width = int(high) - int(low) + 1
        return "%s-%s" % (low, high), None, _scaled(low.max_prefixlen - max(width - 1, 0).bit_length(), low.version)
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            return None, "a subnet with host bits set (write its network address, e.g. %s)" % (
                ipaddress.ip_network(text, strict=False)), 0
        return None, "not an IPv4 or IPv6 address, CIDR subnet, range or keyword", 0
    if network.prefixlen == network.max_prefixlen:
        return str(_plain(network.network_address)), None, 32
    return str(network), None, _scaled(network.prefixlen, network.version)


def _ranges(name: str, values, errors: list, *, allow_any: bool, min_prefix: int, keywords: set) -> list[str]:
    """Canonical, unique remote addresses of one list variable; problems go to errors."""
    if not isinstance(values, list):
        errors.append("%s must be a list of IPv4 or IPv6 addresses, CIDR subnets or keywords; got %r" % (name, values))
        return []
    result = []
    for value in values:
        canonical, problem, prefix = _address(value)
        if problem:
            errors.append("%s: %r is %s" % (name, value, problem))
            continue
        if canonical == "any" or prefix == 0:
            if not allow_any:
                errors.append("%s: %r admits every address; list your networks instead" % (name, value))
                continue
        elif prefix == -1 and canonical not in keywords:
            errors.append("%s: keyword %r is not allowed here (allowed: %s)" % (name, value, ", ".join(sorted(keywords)) or "none"))
            continue
        elif 0 < prefix < min_prefix and not allow_any:
            limit = "/%d (IPv6 /%d)" % (min_prefix, min_prefix + IPV6_PREFIX_OFFSET)
            errors.append("%s: %r is wider than %s; list narrower networks" % (name, value, limit))
            continue
        if canonical not in result:
            result.append(canonical)
    if "any" in result:
        return ["any"]
    return result


def _host_addresses(name: str, hosts, this_host: str, inventory, addresses: Mapping, errors: list) -> list[str]:
    """prefect_host_address of each host of a list variable, this host left out (it talks to itself on loopback)."""
    if not isinstance(hosts, list):
        errors.append("%s must be a list of inventory host names; got %r" % (name, hosts))
        return []
    result = []
    for host in hosts:
        if host == this_host:
            continue
        if host not in inventory:
            errors.append("%s: %s is not a host of the inventory" % (name, host))
            continue
        text = str(addresses.get(host) or "").strip()
        try:
            address = _plain(ipaddress.ip_address(text))
        except ValueError:
            errors.append("%s: %s needs prefect_host_address, its IPv4 or IPv6 address as this host sees it (set it in "
                          "its host_vars); got %r" % (name, host, text))
            continue
        if address.is_loopback or address.is_unspecified or address.is_multicast or address.is_link_local \
                or str(address) == "255.255.255.255":
            errors.append("%s: prefect_host_address of %s is %s, not an address another host can use" % (name, host, address))
            continue
        if str(address) not in result:
            result.append(str(address))
    return result


def _port(name: str, value, api_port, errors: list) -> int | None:
    try:
        port = int(value)
    except (TypeError, ValueError):
        errors.append("%s must be a TCP port; got %r" % (name, value))
        return None
    if not 0 < port < 65536:
        errors.append("%s must be a TCP port (1-65535); got %r" % (name, value))
        return None
    if port == api_port:
        errors.append("%s is %d, the Prefect API port (prefect_server_port): the API is reached through IIS only and "
                      "never gets a firewall rule" % (name, port))
        return None
    return port


# Groups of Windows' own rules (their display groups), and the Names of the rules that let people and the control
# node reach a host (WINRM-HTTP-In-TCP, WINRM-HTTP-In-TCP-PUBLIC, RemoteDesktop-UserMode-In-TCP, ...).
BUILTIN_GROUPS = {"windows remote management", "windows remote management (compatibility)", "remote desktop",
                  "remote desktop (websocket)", "core networking", "file and printer sharing", "windows firewall remote management",
                  "remote service management", "remote event log management"}
BUILTIN_ACCESS_RULES = ("winrm-", "remotedesktop-")


def firewall_plan(data: Mapping) -> dict:
    """The rules of one host and the problems of its input (see DOCUMENTATION)."""
    errors: list[str] = []
    host = data["host"]
    group = str(data.get("group") or "")
    state = data.get("state", "present")
    try:
        api_port = int(data["api_port"])
    except (TypeError, ValueError):
        api_port = None
    plan = {"state": state, "group": group, "rules": [], "names": [], "errors": errors}

    if not group or group != group.strip() or len(group) > 100 or any(c in group for c in ",|\"'"):
        errors.append("firewall_group must be a name of 1-100 characters without commas, quotes or leading spaces; got %r" % group)
    elif group.lower() == PREPARE_GROUP:
        errors.append("firewall_group must not be %r: prepare-windows-host.ps1 keeps the control node's WinRM rule in "
                      "that group, and removing the group's rules would lock the control node out" % group)
    elif group.lower() in BUILTIN_GROUPS or group.startswith("@"):
        errors.append("firewall_group must not be %r, a group of Windows' own rules: the role replaces and removes the "
                      "rules of its group" % group)
    prefix = group + " - "

    def check_names(name: str, names) -> list[str]:
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            errors.append("%s must be a list of rule names; got %r" % (name, names))
            return []
        for rule in names:
            if any(c in rule for c in "*?[]"):
                errors.append("%s: %r holds a wildcard, which Get-NetFirewallRule -Name would expand to other rules; name "
                              "each rule (its Name, as Get-NetFirewallRule shows it)" % (name, rule))
            elif rule.lower().startswith(BUILTIN_ACCESS_RULES):
                errors.append("%s: %r is one of Windows' WinRM or Remote Desktop rules, which administrators and the "
                              "control node may need to reach the host; this role never disables or removes them"
                              % (name, rule))
            elif rule.lower().startswith(PREPARE_RULE_PREFIX.lower()) or rule.lower().startswith("enclave.prefect-winrm"):
                errors.append("%s: %r is the control node's WinRM rule of prepare-windows-host.ps1, which this role never "
                              "changes or removes" % (name, rule))
            elif rule.lower().startswith(prefix.lower()):
                errors.append("%s: %r is one of this role's own rules (group %s)" % (name, rule, group))
        return list(names)

    plan["legacy_rules"] = check_names("firewall_legacy_rules", data.get("legacy_rules", []))
    plan["disable_rules"] = check_names("firewall_disable_rules", data.get("disable_rules", []))
    if state == "absent":
        return plan

    ports = {key: _port(key, data.get(key), api_port, errors) for key in
             ("prefect_public_port", "prefect_worker_port", "prefect_database_port", "firewall_winrm_port")}
    profiles = list(data.get("rule_profiles") or [])
    inventory = list(data.get("inventory") or [])
    addresses = data.get("addresses") or {}
    is_proxy, is_database = bool(data.get("is_proxy")), bool(data.get("is_database"))

    def rule(key: str, port: int | None, remote: list[str], description: str) -> None:
        if port is None or not remote:
            return
        plan["rules"].append({
            "name": prefix + key, "description": description, "group": group, "direction": "in", "action": "allow",
            "protocol": "tcp", "localport": str(port), "remoteip": ",".join(remote), "profiles": profiles, "enabled": True,
        })

    if is_proxy:
        clients = _ranges("firewall_client_ranges", data.get("client_ranges"), errors,
                          allow_any=bool(data.get("allow_any_client")), min_prefix=MIN_CLIENT_PREFIX, keywords=CLIENT_KEYWORDS)
        if isinstance(data.get("client_ranges"), list) and not data.get("client_ranges"):
            errors.append("firewall_client_ranges is empty on a prefect_proxy host: nobody could open the Prefect UI; list "
                          "your users' networks (e.g. 10.20.0.0/16) or LocalSubnet")
        if ports["prefect_public_port"] is not None and ports["prefect_public_port"] == ports["prefect_worker_port"]:
            errors.append("prefect_public_port and prefect_worker_port are both %d: the people's site and the machine "
                          "path need a port each" % ports["prefect_public_port"])
        rule("people HTTPS", ports["prefect_public_port"], clients,
             "Prefect UI and API through IIS (Windows Authentication) for people's networks")
        if data.get("http_redirect"):
            if ports["prefect_public_port"] == 80:
                errors.append("firewall_http_redirect needs port 80 for the redirect, but prefect_public_port is 80")
            else:
                rule("HTTP redirect", 80, clients, "HTTP, redirected to HTTPS by IIS, for people's networks")
        workers = _host_addresses("firewall_worker_hosts", data.get("worker_hosts"), host, inventory, addresses, errors)
        # Developers' networks for Prefect's CLI and SDK share the machine path (IIS Basic, allowed groups only).
        cli = _ranges("prefect_cli_networks", data.get("cli_networks") or [], errors, allow_any=False,
                      min_prefix=MIN_CLIENT_PREFIX, keywords=set())
        rule("worker machine path", ports["prefect_worker_port"], workers + [c for c in cli if c not in workers],
             "Prefect API machine path through IIS (Basic authentication) for the remote worker hosts"
             + (" and the developers' networks" if cli else ""))
    if is_database:
        servers = _host_addresses("firewall_database_client_hosts", data.get("database_client_hosts"), host, inventory,
                                  addresses, errors)
        rule("PostgreSQL", ports["prefect_database_port"], servers, "PostgreSQL for the Prefect server hosts")
    if data.get("manage_winrm"):
        control = _ranges("firewall_control_node_addresses", data.get("control_node_addresses"), errors,
                          allow_any=False, min_prefix=MIN_CONTROL_PREFIX, keywords=set())
        if not data.get("control_node_addresses"):
            errors.append("firewall_control_node_addresses is empty while firewall_manage_winrm is true: the WinRM rule "
                          "would admit nobody and lock the control node out; list the control node's addresses")
        rule("WinRM HTTPS", ports["firewall_winrm_port"], control, "WinRM over HTTPS for the Ansible control node")
    plan["names"] = [r["name"] for r in plan["rules"]]
    return plan


# INetFwRule.Profiles bits (NET_FW_PROFILE2_*); 0x7fffffff is "all".
PROFILE_BITS = {"domain": 1, "private": 2, "public": 4}


# IPv6 addresses as integers above every IPv4 one, so that one (first, last) pair never spans both families.
_V6 = 2 ** 32


def _key(address) -> int:
    address = _plain(address)
    return int(address) + (_V6 if address.version == 6 else 0)


def _span(text: str):
    """(first, last) address of one RemoteAddresses entry as the firewall stores it ('*', a.b.c.d/mask, a-b, a.b.c.d,
    IPv6 a::b/len), or of one control node address; None for a keyword, which names no fixed set of addresses."""
    text = str(text).strip()
    if text.lower() in ANY:
        return (0, _V6 + 2 ** 128 - 1)
    try:
        if "-" in text:
            low, _sep, high = text.partition("-")
            return (_key(ipaddress.ip_address(low.strip())), _key(ipaddress.ip_address(high.strip())))
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return (_key(network.network_address), _key(network.broadcast_address))


def firewall_winrm_unreachable(rules, profiles, addresses) -> list:
    """The profiles (of `profiles`, those about to be turned on) in which no enabled inbound allow rule for WinRM admits
    every control node address: `rules` are firewall_rules.ps1's winrm_rules (name, profiles bit mask, remoteip as the
    firewall stores it). With no control node address listed, only a rule admitting any address counts."""
    wanted = [_span(a) for a in (addresses or [])] or [(0, _V6 + 2 ** 128 - 1)]
    blocked = []
    for name in profiles or []:
        bit = PROFILE_BITS[str(name).lower()]
        usable = [r for r in rules or [] if int(r.get("profiles", 0)) & bit]
        spans = [_span(e) for r in usable for e in str(r.get("remoteip", "")).split(",")]
        spans = [x for x in spans if x is not None]
        if not all(w is not None and any(lo <= w[0] and w[1] <= hi for lo, hi in spans) for w in wanted):
            blocked.append(name)
    return blocked


class FilterModule:
    """Firewall rules of the firewall role."""

    def filters(self):
        return {"firewall_plan": firewall_plan, "firewall_winrm_unreachable": firewall_winrm_unreachable}
