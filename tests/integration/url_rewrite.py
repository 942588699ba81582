"""The inbound rules of a rendered web.config, applied to a request the way IIS URL Rewrite applies them.

What is modelled (Microsoft, "URL Rewrite Module Configuration Reference"): rules in document order; `match url`
against the URL path without its leading slash and query string, ECMAScript patterns (Python's `re`, the same for
the patterns used here), case-insensitive unless `ignoreCase="false"`, `negate`; conditions with
`logicalGrouping` MatchAll (default) or MatchAny, each an `input` of server variables (`{HTTP_<NAME>}` is the
request header <NAME> with `-` for `_`, empty when absent; `{HTTPS}` is `on` or `off`) matched with its own pattern,
`ignoreCase` and `negate`; back-references {R:n} and {C:n} in a Redirect's URL. Actions: Rewrite (the request goes
on to the backend), CustomResponse, Redirect, AbortRequest.

What is not modelled is refused, so that a template change the model cannot follow fails the tests that use it
instead of passing unnoticed: a rule that lets processing continue (no `stopProcessing="true"`), a matchType other
than Pattern, a patternSyntax other than ECMAScript, any other server variable.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

REDIRECT_STATUS = {"Permanent": 301, "Found": 302, "SeeOther": 303, "Temporary": 307}


class NotModelled(ValueError):
    """The web.config uses a URL Rewrite feature this model does not evaluate."""


@dataclass
class Outcome:
    rule: str                   # the name of the rule that applied ("" when none did)
    action: str                 # Rewrite, CustomResponse, Redirect, AbortRequest; "" when no rule applied
    status: int = 0             # CustomResponse and Redirect
    reason: str = ""
    body: str = ""
    location: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


def _flags(element: ET.Element) -> int:
    return 0 if element.get("ignoreCase", "true") == "false" else re.I


def _input(template: str, headers: dict[str, str], https: bool) -> str:
    def variable(found: re.Match) -> str:
        name = found.group(1).upper()
        if name.startswith("HTTP_"):
            return headers.get(name[5:].replace("_", "-").lower(), "")
        if name == "HTTPS":
            return "on" if https else "off"
        raise NotModelled(f"server variable {{{name}}} is not modelled")
    return re.sub(r"\{([A-Za-z0-9_]+)\}", variable, template)


@dataclass
class RewriteRules:
    rules: list[ET.Element]

    @classmethod
    def from_web_config(cls, text: str) -> "RewriteRules":
        rules = list(ET.fromstring(text).iterfind("system.webServer/rewrite/rules/rule"))
        for rule in rules:
            name = rule.get("name")
            if rule.get("stopProcessing") != "true":
                raise NotModelled(f"rule {name!r}: processing that continues after a rule is not modelled")
            if rule.get("patternSyntax", "ECMAScript") != "ECMAScript":
                raise NotModelled(f"rule {name!r}: patternSyntax {rule.get('patternSyntax')} is not modelled")
            for condition in rule.iterfind("conditions/add"):
                if condition.get("matchType", "Pattern") != "Pattern":
                    raise NotModelled(f"rule {name!r}: matchType {condition.get('matchType')} is not modelled")
            if rule.find("action").get("type") not in ("Rewrite", "CustomResponse", "Redirect", "AbortRequest"):
                raise NotModelled(f"rule {name!r}: action {rule.find('action').get('type')} is not modelled")
        return cls(rules)

    def apply(self, target: str, headers: dict[str, str], https: bool) -> Outcome:
        """The first rule that applies to a request for `target` (path and query as sent) with these headers
        (lower-case names)."""
        path = unquote(urlsplit(target).path).lstrip("/")
        for rule in self.rules:
            match = rule.find("match")
            found = re.search(match.get("url"), path, _flags(match))
            if bool(found) == (match.get("negate") == "true"):
                continue
            conditions = rule.find("conditions")
            any_of = conditions is not None and conditions.get("logicalGrouping") == "MatchAny"
            results, captures = [], None
            for condition in rule.iterfind("conditions/add"):
                hit = re.search(condition.get("pattern", ".*"), _input(condition.get("input"), headers, https),
                                _flags(condition))
                results.append(bool(hit) != (condition.get("negate") == "true"))
                if hit and condition.get("negate") != "true":
                    captures = hit  # {C:n}: the last condition that matched (trackAllCaptures off)
            if results and not (any(results) if any_of else all(results)):
                continue
            action = rule.find("action")
            kind = action.get("type")
            outcome = Outcome(rule.get("name"), kind, attributes=dict(action.attrib))
            if kind == "CustomResponse":
                outcome.status = int(action.get("statusCode"))
                outcome.reason = action.get("statusReason", "")
                outcome.body = action.get("statusDescription", "")
            elif kind == "Redirect":
                outcome.status = REDIRECT_STATUS[action.get("redirectType", "Permanent")]

                def reference(ref: re.Match) -> str:
                    source = found if ref.group(1).upper() == "R" else captures
                    return (source.group(int(ref.group(2))) or "") if source else ""
                outcome.location = re.sub(r"\{([RC]):(\d+)\}", reference, action.get("url"))
                query = urlsplit(target).query
                if query and action.get("appendQueryString", "true") == "true":
                    outcome.location += "?" + query
            return outcome
        return Outcome("", "")
