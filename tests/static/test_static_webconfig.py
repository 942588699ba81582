"""Every XML file the roles write is rendered, parsed and its URL Rewrite rules checked (webconfig.py); the negative
fixtures in tests/fixtures/static/webconfig/ prove each check fails on what it is meant to catch."""
from __future__ import annotations

from pathlib import Path

import pytest

from webconfig import REPO, VARIANTS, check_templates, check_web_config, render, xml_templates

pytestmark = pytest.mark.static

FIXTURES = REPO / "tests/fixtures/static/webconfig"
ALLOWED = ["HTTP_X_FORWARDED_PROTO"]
# fixture -> the words its one problem must contain
EXPECTED = {
    "websocket_after_catch_all.config": "comes before the websocket rule",
    "no_websocket_rule.config": "no websocket rule",
    "unknown_attribute.config": "has no attribute 'appendQuerystring'",
    "unknown_element.config": "<matches> is not allowed inside <rule>",
    "bad_enum.config": 'type="Proxy"> must be one of',
    "variable_not_allowed.config": "sets HTTP_X_FORWARDED_PORT, which is not in allowedServerVariables",
    "user_header_before_auth.config": "URL Rewrite runs before authentication",
    "missing_required.config": "lacks its required attribute 'name'",
    "not_well_formed.config": "not well-formed XML",
}


def test_the_roles_xml_templates_render_and_pass():
    templates = xml_templates()
    assert [t.name for _r, t in templates] == ["web.config.j2"], templates
    assert check_templates() == []


def test_every_branch_of_the_proxy_web_config_forwards_to_loopback():
    role, template = xml_templates()[0]
    for overrides in VARIANTS:
        text, allowed = render(role, template, **overrides)
        assert allowed == ["HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_FOR"]
        assert text.count('url="http://127.0.0.1:4200{UNENCODED_URL}"') == 2, text
        assert ("Strict-Transport-Security" in text) == (overrides.get("iis_proxy_hsts_max_age", 1) != 0)
        assert ("Prefect HTTPS redirect" in text) == bool(overrides.get("iis_proxy_http_redirect"))


def test_good_fixture_passes():
    assert check_web_config((FIXTURES / "good.config").read_text(), ALLOWED) == []


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_each_check_fails_on_its_fixture(fixture):
    problems = check_web_config((FIXTURES / fixture).read_text(), ALLOWED, fixture)
    assert len(problems) == 1 and EXPECTED[fixture] in problems[0], problems


def test_every_fixture_is_expected():
    assert {p.name for p in FIXTURES.iterdir()} == set(EXPECTED) | {"good.config"}


def _first_rule(text: str, headers: dict[str, str], path: str = "api/logs/out") -> tuple[str, str]:
    """(rule name, action type) of the first rule URL Rewrite applies to a request: ECMAScript patterns, case-insensitive
    by default, conditions MatchAll (the rules here), {HTTP_<NAME>} the request header, empty when absent."""
    import re
    import xml.etree.ElementTree as ET
    for rule in ET.fromstring(text).iterfind("system.webServer/rewrite/rules/rule"):
        match = rule.find("match")
        if not re.search(match.get("url"), path, re.I):
            continue
        ok = True
        for condition in rule.iterfind("conditions/add"):
            name = condition.get("input").strip("{}")
            value = headers.get(name[5:].replace("_", "-").lower(), "") if name.startswith("HTTP_") else ""
            hit = bool(re.search(condition.get("pattern"), value, 0 if condition.get("ignoreCase") == "false" else re.I))
            ok = ok and (hit != (condition.get("negate") == "true"))
        if ok:
            return rule.get("name"), rule.find("action").get("type")
    return "", ""


def test_a_websocket_from_another_origin_is_refused_before_authentication():
    """Cross-site websocket hijacking: a browser always sends Origin; Prefect's clients send none (the websockets
    library adds it only when asked) and its UI opens no websocket. Only the public origin, exactly, passes."""
    role, template = xml_templates()[0]
    text, _allowed = render(role, template, prefect_public_host="prefect.corp.local")
    upgrade = {"upgrade": "websocket"}
    refused = ("Prefect websockets from other origins", "CustomResponse")
    assert _first_rule(text, dict(upgrade, origin="https://evil.example")) == refused
    assert _first_rule(text, dict(upgrade, origin="https://prefect.corp.local.evil.example")) == refused
    assert _first_rule(text, dict(upgrade, origin="http://prefect.corp.local")) == refused
    assert _first_rule(text, dict(upgrade, origin="https://prefect.corp.local")) == ("Prefect websockets", "Rewrite")
    assert _first_rule(text, dict(upgrade, origin="HTTPS://PREFECT.CORP.LOCAL")) == ("Prefect websockets", "Rewrite")
    assert _first_rule(text, upgrade) == ("Prefect websockets", "Rewrite")  # Prefect's workers and clients
    # A plain request of another origin goes on (Prefect's CSRF protection guards the state-changing ones).
    assert _first_rule(text, {"origin": "https://evil.example"}, "api/flows/filter") == ("Prefect API and UI", "Rewrite")
    # A port other than 443 is part of the origin.
    text, _allowed = render(role, template, prefect_public_host="prefect.corp.local", prefect_public_port=8444)
    assert _first_rule(text, dict(upgrade, origin="https://prefect.corp.local:8444")) == ("Prefect websockets", "Rewrite")
    assert _first_rule(text, dict(upgrade, origin="https://prefect.corp.local")) == refused


def test_neither_ui_bundle_of_the_pinned_release_opens_a_websocket():
    """Why the Origin rule breaks nothing: the UIs' code never constructs a WebSocket."""
    # ui and ui-v2 as the wheel ships them; a server that ran writes copies beside them (ui_build, ui_v2_build: the same
    # files with the base path replaced), which are checked too when present.
    bundles = sorted((REPO / ".venv-prefect").glob("lib/python3*/site-packages/prefect/server/ui*/assets"))
    assert len([b for b in bundles if not b.parent.name.endswith("_build")]) == 2, bundles
    scripts = [p for b in bundles for p in b.rglob("*.js")]
    assert scripts and not [p for p in scripts if "WebSocket" in p.read_text(errors="replace")]
