"""Retention settings the nssm_services role sets: the pinned server starts with them and reports them back
(GET /api/admin/settings); the value format that looks right but is refused stops the server at start."""
from __future__ import annotations

import pytest
from servers import PrefectServer

RETENTION_KEYS = {"PREFECT_SERVER_EVENTS_RETENTION_PERIOD", "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED",
                  "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD"}


def test_the_role_sets_a_year_of_runs_and_a_week_of_events(roles_plan, roles_server):
    """The role's own environment (roles_env.py: the nssm_services plan of the example all-in-one host) on a real server."""
    assert RETENTION_KEYS <= set(roles_plan["environment"]), roles_plan["environment"].keys()
    status, settings = roles_server.api("GET", "/admin/settings")
    assert status == 200, settings
    vacuum = settings["server"]["services"]["db_vacuum"]
    assert settings["server"]["events"]["retention_period"] == "P7D"
    assert sorted(vacuum["enabled"]) == ["events", "flow_runs"]
    assert vacuum["retention_period"] == "P1Y"  # pydantic writes 365 days as one year
    # Heartbeat events keep their own, shorter default (capped by the events' retention).
    assert vacuum["event_retention_overrides"] == {"prefect.flow-run.heartbeat": "P7D"}


def test_events_retention_in_plain_seconds_stops_the_server(prefect_venv, roles_plan, tmp_path):
    """The events' period is a plain timedelta: '604800' is refused (the vacuum's period accepts seconds), which is
    why the role's validation demands ISO 8601 durations."""
    retention = {k: v for k, v in roles_plan["environment"].items() if k in RETENTION_KEYS}
    server = PrefectServer(tmp_path / "server", extra_env=dict(retention, PREFECT_SERVER_EVENTS_RETENTION_PERIOD="604800"))
    with pytest.raises(RuntimeError) as failed:
        server.start()
    assert "retention_period" in str(failed.value) and "time_delta_parsing" in str(failed.value), str(failed.value)
