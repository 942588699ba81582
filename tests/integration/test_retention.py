"""Retention settings the nssm_services role sets: the pinned server starts with them and reports them back
(GET /api/admin/settings); the value format that looks right but is refused stops the server at start."""
from __future__ import annotations

import pytest
from servers import PrefectServer

# A year of flow-run history, a week of events (issue "Retention and housekeeping"), written as ISO 8601 durations.
RETENTION = {
    "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": "P7D",
    "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
    "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": "P365D",
}


def test_server_reports_the_retention_settings(prefect_venv, tmp_path):
    server = PrefectServer(tmp_path / "server", extra_env=RETENTION)
    try:
        server.start()
        status, settings = server.api("GET", "/admin/settings")
        assert status == 200, settings
        vacuum = settings["server"]["services"]["db_vacuum"]
        assert settings["server"]["events"]["retention_period"] == "P7D"
        assert sorted(vacuum["enabled"]) == ["events", "flow_runs"]
        assert vacuum["retention_period"] == "P1Y"  # pydantic writes 365 days as one year
        # Heartbeat events keep their own, shorter default (capped by the events' retention).
        assert vacuum["event_retention_overrides"] == {"prefect.flow-run.heartbeat": "P7D"}
    finally:
        server.stop()


def test_events_retention_in_plain_seconds_stops_the_server(prefect_venv, tmp_path):
    """The events' period is a plain timedelta: '604800' is refused (the vacuum's period accepts seconds)."""
    server = PrefectServer(tmp_path / "server",
                           extra_env=dict(RETENTION, PREFECT_SERVER_EVENTS_RETENTION_PERIOD="604800"))
    with pytest.raises(RuntimeError) as failed:
        server.start()
    assert "retention_period" in str(failed.value) and "time_delta_parsing" in str(failed.value), str(failed.value)
