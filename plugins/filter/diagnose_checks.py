# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What playbooks/diagnose.yml concludes from the IIS, listening-port and firewall sections of each host's report,
measured against what the roles configured for that host. Each finding carries the evidence read on the host and the
fix; plugins/filter/diagnose.py ranks them with the other findings."""
from __future__ import annotations

import ipaddress
from datetime import datetime, timezone

# The report's timestamps are read as diagnose ranks them.
from ansible_collections.enclave.prefect.plugins.filter.diagnose import _time

DOCUMENTATION = r"""
name: diagnose_checks
short_description: Findings about IIS, listening ports and Windows Firewall in the reports of playbooks/diagnose.yml
version_added: 0.1.0
description:
  - Takes a dict host -> report (the result of C(diagnose.ps1)) and a dict host -> what the roles configured for that
    host (built by C(playbooks/diagnose.yml)), and returns a list of findings
    C({severity, host, area, message, evidence, fix, weight}) for C(diagnose_findings) to rank with the others.
  - "IIS (proxy hosts): IIS missing; the people's or workers' site or the app pool missing or stopped; the HTTPS binding
    on C(prefect_public_port) / C(prefect_worker_port) missing, or its certificate not in the store, expired, not yet
    valid or without a private key (another certificate than the configured one is a warning); URL Rewrite missing or
    its rules disabled; ARR missing or its proxy disabled; another site (Default Web Site) bound to a port the role uses
    (the same host name: IIS cannot start both; another or none: it answers every request that does not name
    C(prefect_public_host)); authorization rules that IIS ignores because URL Authorization is missing."
  - "Ports: the Prefect server port not listening on loopback, or listening on another address; PostgreSQL not listening
    on the network while C(pg_hba.conf) admits the server hosts from there, or listening on the network while it admits
    nobody from there; the people's and workers' ports not listening; another process holding a port the roles need."
  - "Firewall: a profile off or allowing inbound traffic by default; Group Policy stopping local rules from applying;
    an enabled inbound block rule covering a port and addresses of one of the role's allow rules (a block rule beats
    every allow rule that is not an authenticated bypass, which the role's rules are not); the role's rules missing,
    disabled, on another port, or admitting more addresses than configured (or fewer)."
  - Sections the host could not collect give no finding here; C(diagnose_findings) reports them.
positional: _input
options:
  _input:
    description: Reports by host.
    type: dict
    required: true
  expected:
    description:
      - "By host: C(server), C(proxy), C(database) (booleans), C(server_port), C(public_host), C(public_port),
        C(worker_port) (0 without a workers' site), C(http_redirect), C(site), C(worker_site), C(app_pool),
        C(certificate) (thumbprint), C(database_port), C(database_remote) (pg_hba.conf admits other hosts),
        C(firewall) (C(firewall_plan)'s C(rules)), C(firewall_profiles) (the profiles the role keeps on), C(input_error)
        (the roles refused the host's input: a finding, and the firewall and proxy expectations are empty)."
      - A host without an entry is checked for its ports and firewall profiles only.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: IIS, port and firewall findings join the ranked list
  ansible.builtin.set_fact:
    findings: "{{ reports | enclave.prefect.diagnose_findings({}, reports | enclave.prefect.diagnose_checks(expected)) }}"
"""

RETURN = r"""
_value:
  description: Findings, unranked, each with C(severity) (critical, warning, info), C(host), C(area) (iis, ports,
    firewall), C(message), C(evidence) (what the host showed), C(fix) and C(weight) (the order within a severity).
  type: list
  elements: dict
"""

ANY_SPAN = (0, 2 ** 32 - 1)
PROFILE_BITS = {"domain": 1, "private": 2, "public": 4}
# Get-NetConnectionProfile's NetworkCategory -> the firewall profile that applies to that network.
CATEGORY_PROFILE = {"domainauthenticated": "domain", "private": "private", "public": "public"}
DEFAULT_ALLOW = "accesstype=allow;users=*;roles="


def _finding(found, severity, host, area, message, evidence, fix, weight):
    found.append({"severity": severity, "host": host, "area": area, "message": message, "evidence": evidence, "fix": fix,
                  "weight": float(weight)})


def _true(value):
    return str(value).strip().lower() == "true"


def _loopback(address):
    try:
        return ipaddress.ip_address(str(address).split("%", 1)[0]).is_loopback
    except ValueError:
        return str(address).lower() == "localhost"


def _reaches_loopback(address):
    """A socket bound here accepts connections to 127.0.0.1 or ::1 (the unspecified address binds every one)."""
    try:
        parsed = ipaddress.ip_address(str(address).split("%", 1)[0])
    except ValueError:
        return str(address).lower() == "localhost"
    return parsed.is_loopback or parsed.is_unspecified


def _spans(entries):
    """(first, last) IPv4 spans of remote addresses as the firewall shows them ('Any', '10.0.0.1',
    '10.0.0.0/255.255.0.0', '10.0.0.0/16', 'a-b', comma-separated); keywords and IPv6 come back as text."""
    if isinstance(entries, str):
        entries = entries.split(",")
    spans, keywords = [], set()
    for entry in entries or []:
        entry = str(entry).strip()
        if not entry:
            continue
        if entry.lower() in ("any", "*"):
            spans.append(ANY_SPAN)
            continue
        try:
            if "-" in entry:
                low, _sep, high = entry.partition("-")
                spans.append((int(ipaddress.IPv4Address(low.strip())), int(ipaddress.IPv4Address(high.strip()))))
            else:
                net = ipaddress.IPv4Network(entry, strict=False)
                spans.append((int(net.network_address), int(net.broadcast_address)))
        except ValueError:
            keywords.add(entry.lower())
    return spans, keywords


def _inside(spans, keywords, outer_spans, outer_keywords):
    """Every address of (spans, keywords) is admitted by (outer_spans, outer_keywords)."""
    if ANY_SPAN in outer_spans:
        return True
    return keywords <= outer_keywords and all(any(lo <= a and b <= hi for lo, hi in outer_spans) for a, b in spans)


def _overlap(first, second):
    spans_a, keys_a = first
    spans_b, keys_b = second
    if ANY_SPAN in spans_a or ANY_SPAN in spans_b or keys_a & keys_b:
        return True
    # A keyword (LocalSubnet, Intranet) names addresses known only on the host: assume it may meet any other set.
    if (keys_a and spans_b) or (keys_b and spans_a):
        return True
    return any(a <= hi and lo <= b for a, b in spans_a for lo, hi in spans_b)


def _port_in(ports, port):
    for part in ports or []:
        part = str(part).strip()
        if part.lower() in ("any", "*"):
            return True
        low, _sep, high = part.partition("-")
        if low.isdigit() and int(low) <= port <= int(high or low):
            return True
    return False


def _profiles(text):
    """Profile names a rule applies to ('Any', 'Domain, Private', or a bit mask)."""
    text = str(text or "Any").strip()
    if text.isdigit():
        return {name for name, bit in PROFILE_BITS.items() if int(text) & bit} or set(PROFILE_BITS)
    names = {p.strip().lower() for p in text.split(",") if p.strip()}
    return set(PROFILE_BITS) if not names or "any" in names else names & set(PROFILE_BITS)


def _rule_text(rule):
    return "%s (%s%s, %s, TCP %s from %s, profile %s)" % (
        rule.get("display_name") or rule.get("name"), rule.get("action"), "" if _true(rule.get("enabled", "True")) else ", disabled",
        rule.get("source") or "Local", ",".join(rule.get("local_port") or []) or "any",
        ",".join(rule.get("remote_address") or []) or "any", rule.get("profile") or "Any")


# ---------------------------------------------------------------------------------------------------------- IIS


def _binding_parts(binding):
    ip, _sep, rest = str(binding.get("binding") or "").partition(":")
    port, _sep, hostname = rest.partition(":")
    return ip or "*", int(port) if port.isdigit() else 0, hostname.lower()


def _check_certificate(found, host, site, binding, want, now):
    cert = binding.get("certificate") or {}
    thumb = str(binding.get("thumbprint") or "").upper()
    label = "site %s binding %s" % (site, binding.get("binding"))
    store = binding.get("store") or "My"
    if not thumb:
        _finding(found, "critical", host, "iis", "%s has no certificate: TLS handshakes fail" % label,
                 "certificateHash empty", "run the iis_proxy role with iis_proxy_certificate_thumbprint", 960)
        return
    if not cert.get("found"):
        _finding(found, "critical", host, "iis", "%s uses certificate %s, which is not in LocalMachine\\%s" % (label, thumb, store),
                 "Cert:\\LocalMachine\\%s\\%s does not exist" % (store, thumb),
                 "import the certificate with its private key into LocalMachine\\My (or iis_proxy_certificate_pfx) and run "
                 "the iis_proxy role", 960)
        return
    key = "present" if cert.get("has_private_key") else "missing"
    evidence = "%s, valid %s to %s, private key %s" % (cert.get("subject"), cert.get("not_before"), cert.get("not_after"), key)
    not_after, not_before = _time(cert.get("not_after")), _time(cert.get("not_before"))
    renew = "install a renewed certificate for %s in LocalMachine\\My, set iis_proxy_certificate_thumbprint and run the " \
            "iis_proxy role" % (want.get("public_host") or "prefect_public_host")
    if not_after and not_after < now:
        _finding(found, "critical", host, "iis", "%s: certificate %s expired on %s" % (label, thumb, not_after.date()),
                 evidence, renew, 950)
    if not_before and not_before > now:
        _finding(found, "critical", host, "iis", "%s: certificate %s is not valid before %s" % (label, thumb, not_before.date()),
                 evidence, "check the host's clock, or bind a certificate valid now (%s)" % renew, 940)
    if not cert.get("has_private_key"):
        _finding(found, "critical", host, "iis", "%s: certificate %s has no private key: IIS cannot serve TLS with it" % (label, thumb),
                 evidence, "import the certificate from a PFX that holds its key (iis_proxy_certificate_pfx)", 945)
    configured = str(want.get("certificate") or "").upper()
    if configured and thumb != configured:
        _finding(found, "warning", host, "iis", "%s uses certificate %s, not the configured %s" % (label, thumb, configured),
                 evidence, "run the iis_proxy role to bind iis_proxy_certificate_thumbprint, or update that variable", 30)


def _check_iis(found, host, iis, want, now):
    if not iis.get("installed"):
        _finding(found, "critical", host, "iis", "IIS is not installed on this proxy host: nobody reaches Prefect",
                 "the WebAdministration module is missing", "run the iis_proxy role (playbooks/iis_proxy.yml)", 1100)
        return
    sites = {s.get("name"): s for s in iis.get("sites") or []}
    pools = {p.get("name"): p for p in iis.get("app_pools") or []}
    modules = set(iis.get("global_modules") or [])
    ours = [(want.get("site"), want.get("public_port"), "people's")]
    if want.get("worker_site") and want.get("worker_port"):
        ours.append((want.get("worker_site"), want.get("worker_port"), "workers'"))
    for name, port, who in ours:
        site = sites.get(name)
        if site is None:
            _finding(found, "critical", host, "iis", "the %s site %s does not exist" % (who, name),
                     "sites on the host: %s" % (", ".join(sorted(sites)) or "none"), "run the iis_proxy role", 1050)
            continue
        if site.get("state") != "Started":
            _finding(found, "critical", host, "iis", "the %s site %s is %s: it answers nothing" % (who, name, site.get("state") or "not started"),
                     "Get-Website %s: State %s" % (name, site.get("state")),
                     "Start-Website -Name '%s' (its event log entry says why it stopped); a port held by another site or "
                     "process prevents it (see the ports findings)" % name, 1040)
        https = [b for b in site.get("bindings") or [] if b.get("protocol") == "https" and _binding_parts(b)[1] == int(port or 0)]
        if not https:
            _finding(found, "critical", host, "iis", "the %s site %s has no HTTPS binding on port %s" % (who, name, port),
                     "bindings: %s" % (", ".join("%s %s" % (b.get("protocol"), b.get("binding")) for b in site.get("bindings") or []) or "none"),
                     "run the iis_proxy role (it binds https *:%s:%s)" % (port, want.get("public_host") or ""), 1030)
        for binding in https:
            _check_certificate(found, host, name, binding, want, now)
        rules = site.get("rewrite_rules") or []
        enabled = [r for r in rules if str(r.get("enabled", "True")).lower() != "false"]
        if "RewriteModule" not in modules or site.get("rewrite_module") is False:
            _finding(found, "critical", host, "iis", "URL Rewrite is not installed or not active for site %s: nothing is forwarded to Prefect" % name,
                     "RewriteModule in globalModules: %s, in the site's modules: %s" % ("RewriteModule" in modules, site.get("rewrite_module")),
                     "run the iis_proxy role (it installs URL Rewrite from the bundle)", 1000)
        elif not enabled:
            _finding(found, "critical", host, "iis", "site %s has no enabled rewrite rule: nothing is forwarded to Prefect" % name,
                     "rules: %s" % (", ".join("%s (enabled %s)" % (r.get("name"), r.get("enabled")) for r in rules) or "none"),
                     "run the iis_proxy role (it writes the rules into the site's web.config)", 990)
        elif len(enabled) < len(rules):
            _finding(found, "warning", host, "iis", "site %s has disabled rewrite rule(s): %s" % (
                name, ", ".join(r.get("name") for r in rules if r not in enabled)),
                "enabled=false in the site's web.config", "run the iis_proxy role (it rewrites web.config)", 40)
        custom = [r for r in site.get("authorization") or []
                  if ("accesstype=%s;users=%s;roles=%s" % (r.get("access"), r.get("users"), r.get("roles") or "")).lower() != DEFAULT_ALLOW]
        if custom and ("UrlAuthorizationModule" not in modules or site.get("url_auth_module") is False):
            _finding(found, "critical", host, "iis", "site %s has authorization rules, but URL Authorization is missing: IIS ignores "
                     "them and every account that signs in passes (a Prefect administrator)" % name,
                     "rules: %s; UrlAuthorizationModule in globalModules: %s, in the site's modules: %s" % (
                         "; ".join("%s %s%s" % (r.get("access"), r.get("users") or "", r.get("roles") or "") for r in custom),
                         "UrlAuthorizationModule" in modules, site.get("url_auth_module")),
                     "install the role service Web-Url-Auth (iis_proxy_features) and keep UrlAuthorizationModule in the site's "
                     "modules, then run the iis_proxy role", 1060)
    pool_name = want.get("app_pool")
    pool = pools.get(pool_name)
    if pool_name and (pool is None or pool.get("state") != "Started"):
        _finding(found, "critical", host, "iis", "application pool %s is %s: the sites answer 503" % (
            pool_name, "missing" if pool is None else pool.get("state")),
            "app pools: %s" % (", ".join("%s %s" % (p.get("name"), p.get("state")) for p in iis.get("app_pools") or []) or "none"),
            "Start-WebAppPool -Name '%s' (the System log says why it stopped: a password or account problem of its identity), "
            "or run the iis_proxy role" % pool_name, 1020)
    arr = iis.get("arr")
    if not arr:
        _finding(found, "critical", host, "iis", "Application Request Routing is not installed: the rewrite rules cannot forward to Prefect",
                 "no system.webServer/proxy section", "run the iis_proxy role (it installs ARR from the bundle)", 1010)
    elif not _true(arr.get("enabled")):
        _finding(found, "critical", host, "iis", "ARR's proxy is disabled: requests are not forwarded to Prefect",
                 "system.webServer/proxy enabled=%s" % arr.get("enabled"), "run the iis_proxy role (it enables the proxy)", 1010)
    # Ports the role binds, and the host name its bindings answer to.
    ports = {int(p) for p in (want.get("public_port"), want.get("worker_port") if want.get("worker_site") else 0) if p}
    if want.get("http_redirect"):
        ports.add(80)
    mine = {n for n, _p, _w in ours}
    public = str(want.get("public_host") or "").lower()
    for site in iis.get("sites") or []:
        if site.get("name") in mine or site.get("state") != "Started":
            continue
        for binding in site.get("bindings") or []:
            _ip, port, hostname = _binding_parts(binding)
            if port not in ports or binding.get("protocol") not in ("http", "https"):
                continue
            if hostname == public:
                evidence = "%s binding %s %s, Started" % (site.get("name"), binding.get("protocol"), binding.get("binding"))
                _finding(found, "critical", host, "iis", "site %s is bound to %s like the Prefect site: IIS cannot start both" % (
                    site.get("name"), binding.get("binding")), evidence,
                    "remove that binding or stop site %s (Stop-Website), then start the Prefect sites" % site.get("name"), 1035)
            else:
                _finding(found, "warning", host, "iis", "site %s answers on port %d for every request that does not name %s "
                         "(by address or another name), through the firewall rule opened for Prefect" % (site.get("name"), port, public),
                         "%s binding %s %s, Started" % (site.get("name"), binding.get("protocol"), binding.get("binding")),
                         "stop site %s (Stop-Website, and set it not to start automatically) or remove its binding" % site.get("name"), 50)


# -------------------------------------------------------------------------------------------------------- ports


def _listeners(ports, port):
    return [p for p in ports if int(p.get("port") or 0) == int(port)]


def _who(listeners):
    return ", ".join("%s:%s (%s, pid %s)" % (p.get("address"), p.get("port"), p.get("process") or "?", p.get("pid")) for p in listeners)


def _check_ports(found, host, report, want):
    ports = report.get("ports") or []
    services = {s.get("name"): s for s in report.get("services") or []}
    if want.get("server") and want.get("server_port"):
        port = int(want["server_port"])
        here = _listeners(ports, port)
        server_pid = (services.get("PrefectServer") or {}).get("app_pid")
        foreign = [p for p in here if not str(p.get("process") or "").lower().startswith("python") and p.get("pid") != server_pid]
        if foreign:
            _finding(found, "critical", host, "ports", "port %d, the Prefect server's, is held by %s: the server cannot listen" % (
                port, ", ".join(sorted({"%s (pid %s)" % (p.get("process") or "?", p.get("pid")) for p in foreign}))), _who(here),
                "stop or move that program, or set prefect_server_port to a free port and run site.yml", 1080)
        elif not [p for p in here if _reaches_loopback(p.get("address"))]:
            _finding(found, "critical", host, "ports", "the Prefect server does not listen on 127.0.0.1:%d: IIS and the local "
                     "workers cannot reach it" % port, _who(here) or "nothing listens on port %d" % port,
                     "see the PrefectServer service's .err.log in the diagnosis folder; restart it", 1070)
        exposed = [p for p in here if not _loopback(p.get("address"))]
        if exposed and not foreign:
            _finding(found, "critical", host, "ports", "the Prefect API listens on %s, not only on loopback: whoever the firewall "
                     "admits reaches it without the proxy's authentication" % ", ".join(sorted({str(p.get("address")) for p in exposed})),
                     _who(exposed), "run the nssm_services role (it starts the server with --host 127.0.0.1)", 1075)
    if want.get("database") and want.get("database_port"):
        port = int(want["database_port"])
        here = _listeners(ports, port)
        foreign = [p for p in here if not str(p.get("process") or "").lower().startswith("postgres")]
        network = [p for p in here if not _loopback(p.get("address")) and p not in foreign]
        if foreign:
            _finding(found, "critical", host, "ports", "port %d, PostgreSQL's, is held by %s" % (port, ", ".join(sorted(
                {"%s (pid %s)" % (p.get("process") or "?", p.get("pid")) for p in foreign}))), _who(here),
                "stop or move that program, or set prefect_database_port and run site.yml", 1080)
        elif not here:
            _finding(found, "critical", host, "ports", "PostgreSQL does not listen on port %d" % port, "nothing listens on port %d" % port,
                     "start the PostgreSQL service; its log (postgresql_log_dir) says why it stopped", 1065)
        elif want.get("database_remote") and not network:
            _finding(found, "critical", host, "ports", "PostgreSQL listens on loopback only, but pg_hba.conf admits the Prefect "
                     "servers of other hosts: they cannot connect", _who(here),
                     "restart the PostgreSQL service (at boot it binds only the addresses up then), or run the postgresql role", 1060)
        elif not want.get("database_remote") and network:
            _finding(found, "warning", host, "ports", "PostgreSQL listens on %s, where pg_hba.conf admits no client (this host's "
                     "server uses loopback)" % ", ".join(sorted({str(p.get("address")) for p in network})), _who(network),
                     "run the postgresql role (listen_addresses localhost), or unset postgresql_listen_addresses", 60)
    if want.get("proxy"):
        needed = [(want.get("public_port"), "people's")]
        if want.get("worker_site") and want.get("worker_port"):
            needed.append((want.get("worker_port"), "workers'"))
        if want.get("http_redirect"):
            needed.append((80, "HTTP redirect"))
        for port, who in needed:
            here = _listeners(ports, int(port))
            foreign = [p for p in here if int(p.get("pid") or 0) != 4]
            if foreign:
                _finding(found, "critical", host, "ports", "port %s (the %s site) is held by %s, not by IIS (http.sys)" % (
                    port, who, ", ".join(sorted({"%s (pid %s)" % (p.get("process") or "?", p.get("pid")) for p in foreign}))), _who(here),
                    "stop or reconfigure that program, then Start-Website the Prefect site", 1045)
            elif not here:
                _finding(found, "critical", host, "ports", "nothing listens on port %s (the %s site)" % (port, who),
                         "no listener on port %s" % port, "start the site (see the IIS findings)", 1025)


# ----------------------------------------------------------------------------------------------------- firewall


def _active_profiles(firewall):
    names = {CATEGORY_PROFILE.get(str(c).lower()) for c in firewall.get("network_categories") or []}
    return {n for n in names if n}


def _check_firewall(found, host, firewall, want):
    active = _active_profiles(firewall)
    wanted_profiles = {str(p).lower() for p in want.get("firewall_profiles") or PROFILE_BITS}
    for profile in firewall.get("profiles") or []:
        name = str(profile.get("name") or "").lower()
        if name not in wanted_profiles:
            continue
        in_use = name in active
        where = "the profile of this host's network" if in_use else "not the profile of this host's network now"
        evidence = "%s: Enabled %s, DefaultInboundAction %s, AllowLocalFirewallRules %s (active policy)" % (
            profile.get("name"), profile.get("enabled"), profile.get("default_inbound_action"), profile.get("allow_local_rules"))
        if str(profile.get("enabled")).lower() == "false":
            _finding(found, "critical" if in_use else "warning", host, "firewall", "Windows Firewall profile %s is off (%s): every "
                     "port that listens on the network is open" % (profile.get("name"), where), evidence,
                     "run the firewall role (firewall_manage_profiles) or turn it on by Group Policy", 1150 if in_use else 70)
        elif str(profile.get("default_inbound_action")).lower() == "allow":
            _finding(found, "critical" if in_use else "warning", host, "firewall", "Windows Firewall profile %s allows inbound "
                     "traffic no rule allows (%s)" % (profile.get("name"), where), evidence,
                     "run the firewall role (it sets inbound to Block) or fix the Group Policy that sets it", 1140 if in_use else 65)
        if str(profile.get("allow_local_rules")).lower() == "false":
            _finding(found, "critical" if in_use else "warning", host, "firewall", "Group Policy stops local firewall rules from "
                     "applying in profile %s (%s): the firewall role's rules are stored but ignored" % (profile.get("name"), where),
                     evidence, "put the rules of the firewall role's group into that Group Policy, or set its \"Apply local "
                     "firewall rules\" to Yes", 1160 if in_use else 75)
    plan = want.get("firewall") or []
    have = {}
    for rule in firewall.get("rules") or []:
        have.setdefault(str(rule.get("display_name") or rule.get("name")).lower(), []).append(rule)
    blocks = [r for r in firewall.get("block_rules") or []
              if _true(r.get("enabled", "True")) and str(r.get("direction", "Inbound")).lower() == "inbound"
              and str(r.get("action", "Block")).lower() == "block" and str(r.get("protocol") or "Any").upper() in ("TCP", "ANY", "6", "256")]
    for planned in plan:
        port = int(planned.get("localport") or 0)
        wanted = _spans(planned.get("remoteip"))
        rules = have.get(str(planned.get("name")).lower(), [])
        label = "%s (TCP %s from %s)" % (planned.get("name"), port, planned.get("remoteip"))
        if not rules:
            _finding(found, "critical", host, "firewall", "the allow rule %s is missing: those clients are refused" % label,
                     "rules of the group: %s" % (", ".join(sorted(have)) or "none"), "run the firewall role", 1120)
        for rule in rules:
            if not _true(rule.get("enabled")):
                _finding(found, "critical", host, "firewall", "the allow rule %s is disabled" % planned.get("name"), _rule_text(rule),
                         "run the firewall role (it enables it)", 1115)
                continue
            if not _port_in(rule.get("local_port"), port) or [p for p in rule.get("local_port") or [] if not _port_in([p], port)]:
                _finding(found, "critical", host, "firewall", "the allow rule %s admits port(s) %s instead of %d" % (
                    planned.get("name"), ",".join(rule.get("local_port") or []) or "any", port), _rule_text(rule),
                    "run the firewall role", 1110)
            actual = _spans(rule.get("remote_address"))
            if not _inside(actual[0], actual[1], wanted[0], wanted[1]):
                _finding(found, "warning", host, "firewall", "the allow rule %s admits more addresses than configured: %s" % (
                    planned.get("name"), ",".join(rule.get("remote_address") or []) or "any"), _rule_text(rule),
                    "run the firewall role (it sets the configured addresses)", 80)
            elif not _inside(wanted[0], wanted[1], actual[0], actual[1]):
                _finding(found, "warning", host, "firewall", "the allow rule %s admits fewer addresses than configured (%s): some "
                         "clients are refused" % (planned.get("name"), planned.get("remoteip")), _rule_text(rule),
                         "run the firewall role", 78)
        for block in blocks:
            profiles = _profiles(block.get("profile")) & {str(p).lower() for p in planned.get("profiles") or PROFILE_BITS}
            if _port_in(block.get("local_port") or ["Any"], port) and profiles and \
                    _overlap(_spans(block.get("remote_address") or ["Any"]), wanted):
                in_use = bool(profiles & active) or not active
                _finding(found, "critical" if in_use else "warning", host, "firewall", "block rule %s beats the allow rule %s: a "
                         "block rule wins over every allow rule, so these clients are refused" % (
                             block.get("display_name") or block.get("name"), label), _rule_text(block),
                         "remove or narrow that block rule%s; rely on the default inbound block instead" % (
                             " in its Group Policy" if str(block.get("source")).lower() == "grouppolicy" else ""), 1130 if in_use else 72)


def diagnose_checks(reports, expected):
    found = []
    for host, report in sorted((reports or {}).items()):
        report = report or {}
        if report.get("unreachable") or report.get("failed"):
            continue
        want = (expected or {}).get(host) or {}
        if want.get("input_error"):
            _finding(found, "warning", host, "inventory", "the firewall or iis_proxy role refuses this host's input: its rules and "
                     "sites were not compared", str(want["input_error"]), "run playbooks/preflight.yml and correct the input", 90)
        now = _time(report.get("collected_at")) or datetime.now(timezone.utc)
        if want.get("proxy") and isinstance(report.get("iis"), dict):
            _check_iis(found, host, report["iis"], want, now)
        if "ports" in report:
            _check_ports(found, host, report, want)
        if isinstance(report.get("firewall"), dict):
            _check_firewall(found, host, report["firewall"], want)
    return found


class FilterModule:
    def filters(self):
        return {"diagnose_checks": diagnose_checks}
