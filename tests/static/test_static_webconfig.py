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
