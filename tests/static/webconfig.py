"""Check every XML file the roles write (templates/*.j2 that render to XML) and the IIS URL Rewrite rules in them.

Each XML template of roles/*/templates is rendered with ansible-core's own templating, from the role's defaults and
vars and roles/common's, once per branch the template has (redirect on/off, HSTS on/off), then parsed. Under
configuration/system.webServer/rewrite the checker decides:

1. element and attribute names and enumerated values of the URL Rewrite schema (SCHEMA below), so a misspelt
   attribute that IIS would answer with HTTP 500.19 fails here;
2. each serverVariables/set name is in allowedServerVariables (the role's iis_proxy_forwarded_headers, which its
   config script writes): IIS answers 500.50 to a rule that sets any other;
3. a websocket rule (a condition on {HTTP_UPGRADE}) exists and comes before the catch-all rule (a rule matching
   every URL without conditions), which would otherwise take the upgrade requests first;
4. no rule sets a header from {LOGON_USER}, {AUTH_USER} or {REMOTE_USER}: URL Rewrite runs in BeginRequest, before
   authentication, where they are still empty.

The schema is taken from Microsoft's own configuration classes for URL Rewrite in microsoft/IIS.Administration
(commit 60ca64a, src/Microsoft.IIS.Administration.WebServer.UrlRewrite/Configuration: Rule/RuleElement.cs,
InboundRules/InboundRuleElement.cs, InboundRules/InboundActionElement.cs, InboundRules/InboundMatchElement.cs,
Rule/MatchElement.cs, Rule/ConditionElement.cs, Rule/ConditionCollection.cs, Rule/SetElement.cs,
InboundRules/InboundRulesSection.cs, and the enums Common/ActionType.cs, Rule/RedirectType.cs, Rule/MatchType.cs,
Rule/LogicalGrouping.cs, Common/PatternSyntax.cs, Rule/ResponseCacheDirective.cs): the names those classes read
and write are the schema's (rewrite_schema.xml itself ships only inside the MSI).

Usage: python tests/static/webconfig.py [FILE.config ...]   (default: render and check the roles' XML templates)
"""
from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run with the project's virtualenv whatever `python` was used
    _VENV = Path(__file__).resolve().parents[2] / ".venv"
    if (_VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != _VENV.resolve():
        os.execv(str(_VENV / "bin" / "python"), [str(_VENV / "bin" / "python"), *sys.argv])

REPO = Path(__file__).resolve().parents[2]
BOOL = ("true", "false")
# element -> (attributes {name: allowed values or None for any text}, required attributes, child elements)
SCHEMA: dict[str, tuple[dict[str, tuple[str, ...] | None], set[str], set[str]]] = {
    "rewrite": ({}, set(), {"rules", "outboundRules", "rewriteMaps", "providers"}),
    "rules": ({"useOriginalURLEncoding": BOOL}, set(), {"clear", "remove", "rule"}),
    "rule": ({"name": None, "enabled": BOOL, "patternSyntax": ("ECMAScript", "Wildcard", "ExactMatch"),
              "stopProcessing": BOOL, "responseCacheDirective": ("Auto", "Always", "Never", "NotIfRuleMatched")},
             {"name"}, {"match", "conditions", "serverVariables", "action"}),
    "match": ({"url": None, "ignoreCase": BOOL, "negate": BOOL}, {"url"}, set()),
    "conditions": ({"logicalGrouping": ("MatchAll", "MatchAny"), "trackAllCaptures": BOOL}, set(), {"add", "clear", "remove"}),
    "conditions/add": ({"input": None, "pattern": None, "matchType": ("Pattern", "IsFile", "IsDirectory"),
                        "ignoreCase": BOOL, "negate": BOOL}, {"input"}, set()),
    "serverVariables": ({}, set(), {"set", "clear", "remove"}),
    "set": ({"name": None, "value": None, "replace": BOOL}, {"name"}, set()),
    "action": ({"type": ("None", "Rewrite", "Redirect", "CustomResponse", "AbortRequest"), "url": None,
                "appendQueryString": BOOL, "logRewrittenUrl": BOOL,
                "redirectType": ("Permanent", "Found", "SeeOther", "Temporary"), "statusCode": None,
                "subStatusCode": None, "statusReason": None, "statusDescription": None}, set(), set()),
    "remove": ({"name": None}, {"name"}, set()),
    "clear": ({}, set(), set()),
}
CATCH_ALL = {".*", "(.*)", "^(.*)$", "^.*$", "*"}
UNAUTHENTICATED = ("{LOGON_USER}", "{AUTH_USER}", "{REMOTE_USER}")


def _check_element(element: ET.Element, key: str, where: str, problems: list[str]) -> None:
    if key not in SCHEMA:
        problems.append(f"{where}: <{element.tag}> is not an element of the URL Rewrite schema")
        return
    attributes, required, children = SCHEMA[key]
    for name, value in element.attrib.items():
        if name not in attributes:
            problems.append(f"{where}: <{element.tag}> has no attribute '{name}' in the URL Rewrite schema")
        elif attributes[name] is not None and value not in attributes[name]:
            problems.append(f"{where}: <{element.tag} {name}=\"{value}\"> must be one of {', '.join(attributes[name])}")
    for name in sorted(required - set(element.attrib)):
        problems.append(f"{where}: <{element.tag}> lacks its required attribute '{name}'")
    for child in element:
        if not isinstance(child.tag, str):
            continue  # a comment
        if child.tag not in children:
            problems.append(f"{where}: <{child.tag}> is not allowed inside <{element.tag}>")
            continue
        child_key = "conditions/add" if (element.tag == "conditions" and child.tag == "add") else child.tag
        name = child.get("name")
        _check_element(child, child_key, f"{where}/{child.tag}" + (f"[{name}]" if name else ""), problems)


def _is_websocket(rule: ET.Element) -> bool:
    return any((c.get("input") or "").upper() == "{HTTP_UPGRADE}" for c in rule.iterfind("conditions/add"))


def _is_catch_all(rule: ET.Element) -> bool:
    match = rule.find("match")
    return (match is not None and match.get("url") in CATCH_ALL and match.get("negate", "false") == "false"
            and not rule.findall("conditions/add"))


def check_web_config(text: str, allowed_server_variables: list[str], name: str = "web.config") -> list[str]:
    """Problems of one web.config (empty when it passes)."""
    try:
        root = ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as exc:
        return [f"{name}: not well-formed XML: {exc}"]
    if root.tag != "configuration":
        return [f"{name}: the root element is <{root.tag}>, not <configuration>"]
    problems: list[str] = []
    rewrite = root.find("system.webServer/rewrite")
    if rewrite is None:
        return [f"{name}: no system.webServer/rewrite section"]
    _check_element(rewrite, "rewrite", f"{name}: rewrite", problems)
    allowed = {v.upper() for v in allowed_server_variables}
    rules = rewrite.findall("rules/rule")
    for rule in rules:
        for assignment in rule.iterfind("serverVariables/set"):
            variable = assignment.get("name") or ""
            if variable.upper() not in allowed:
                problems.append(f"{name}: rule '{rule.get('name')}' sets {variable}, which is not in allowedServerVariables "
                                f"({', '.join(sorted(allowed)) or 'empty'}): IIS answers 500.50")
            if any(u in (assignment.get("value") or "").upper() for u in UNAUTHENTICATED):
                problems.append(f"{name}: rule '{rule.get('name')}' sets {variable} from {assignment.get('value')}, which "
                                "is empty there: URL Rewrite runs before authentication")
    websocket = next((i for i, r in enumerate(rules) if _is_websocket(r)), None)
    catch_all = next((i for i, r in enumerate(rules) if _is_catch_all(r)), None)
    if websocket is None:
        problems.append(f"{name}: no websocket rule (a condition on {{HTTP_UPGRADE}})")
    elif catch_all is not None and catch_all < websocket:
        problems.append(f"{name}: the catch-all rule '{rules[catch_all].get('name')}' comes before the websocket rule "
                        f"'{rules[websocket].get('name')}' and would take the upgrade requests")
    return problems


def _trust(text: str) -> Any:
    """Text marked as a template the roles wrote (ansible-core 2.19's data tagging); earlier cores trust every string."""
    try:
        from ansible.template import trust_as_template
    except ImportError:  # ansible-core 2.16 to 2.18
        return text
    return trust_as_template(text)


def _trusted(value: Any) -> Any:
    if isinstance(value, str):
        return _trust(value)
    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    return value


def role_variables(role: Path, **overrides: Any) -> dict:
    """The values a role's templates see: roles/common's defaults and vars, then the role's, then overrides."""
    from ansible.parsing.dataloader import DataLoader
    loader = DataLoader()
    variables: dict = {}
    for base in (REPO / "roles/common", role):
        for sub in ("defaults", "vars"):
            files = sorted((base / sub).glob("main.yml")) + sorted((base / sub / "main").glob("*.yml"))
            for path in files:
                variables.update(_trusted(loader.load_from_file(str(path))) or {})
    host = "proxy.corp.local"
    variables.update(groups={"prefect_proxy": [host], "prefect_workers": []}, inventory_hostname=host, hostvars={host: {}},
                     playbook_dir=str(REPO / "playbooks"), prefect_installers={}, **overrides)
    return variables


def render(role: Path, template: Path, **overrides: Any) -> tuple[str, list[str]]:
    """The rendered template and the server variables the role allows."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    variables = role_variables(role, **overrides)
    templar = Templar(loader=DataLoader(), variables=variables)
    text = templar.template(_trust(template.read_text()))
    headers = templar.template(_trust("{{ iis_proxy_forwarded_headers | default([]) }}"))
    return text, [h["name"] for h in headers]


# Each branch of the roles' XML templates is rendered once.
VARIANTS = [{}, {"iis_proxy_http_redirect": True, "iis_proxy_hsts_max_age": 0}]


def xml_templates() -> list[tuple[Path, Path]]:
    return [(t.parents[1], t) for t in sorted(REPO.glob("roles/*/templates/*.j2")) if t.read_text().lstrip().startswith("<?xml")]


def check_templates() -> list[str]:
    problems: list[str] = []
    for role, template in xml_templates():
        for overrides in VARIANTS:
            text, allowed = render(role, template, **overrides)
            shown = f"{template.relative_to(REPO)} {overrides or ''}".strip()
            problems += check_web_config(text, allowed, shown)
    return problems


def main(argv: list[str]) -> int:
    if argv:
        problems = [p for path in argv for p in check_web_config(Path(path).read_text(), [], path)]
    else:
        problems = check_templates()
    for problem in problems:
        print(problem)
    print(f"{len(problems)} web.config problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
