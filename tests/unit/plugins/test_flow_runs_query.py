"""enclave.prefect.flow_runs logic against the fake Prefect API, with a fake clock and a fixed wall clock."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from fake_prefect import API, validated

from ansible_collections.enclave.prefect.plugins.module_utils import flow_runs_query
from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import PrefectError, PrefectValidationError

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 12, 10, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch):
    monkeypatch.setattr(flow_runs_query, "utc_now", lambda: NOW)


@pytest.fixture
def runs(make_client, make_ctx):
    def run(server, check_mode=False, **args):
        raw = dict(api_url=API, **args)
        params = validated(flow_runs_query.argument_spec(), raw)
        return flow_runs_query.select(make_client(server), params, make_ctx(raw_args=raw, check_mode=check_mode))
    return run


def test_default_lists_the_active_runs_with_names_and_age(runs, server):
    running = server.add_run("RUNNING", timestamp="2026-01-12T09:59:00+00:00", name="busy")
    server.add_run("PENDING", pool="reports")
    server.add_run("COMPLETED")
    server.add_run("SCHEDULED")
    result = runs(server)
    assert result["changed"] is False and result["count"] == 2 and result["cancelled"] == []
    first = result["flow_runs"][0]
    expected = (running["id"], "busy", "RUNNING", 60.0)
    assert (first["id"], first["name"], first["state_type"], first["state_age_s"]) == expected
    assert (first["flow_name"], first["deployment"], first["work_pool_name"]) == ("nightly", "nightly/prod", "etl")
    assert result["remaining"] == result["flow_runs"] and result["waited_s"] == 0
    assert server.writes() == []
    assert [r["work_pool_name"] for r in runs(server, work_pools=["reports"])["flow_runs"]] == ["reports"]


def test_late_is_a_scheduled_run_named_late(runs, server):
    late = server.add_run("SCHEDULED", "Late")
    server.add_run("SCHEDULED")
    assert [r["id"] for r in runs(server, states=["LATE"])["flow_runs"]] == [late["id"]]
    assert runs(server, states=["SCHEDULED"])["count"] == 2
    assert runs(server, states=["SCHEDULED", "LATE"])["count"] == 2


def test_min_state_age_finds_stuck_runs(runs, server):
    stuck = server.add_run("RUNNING", timestamp="2026-01-12T07:00:00+00:00")
    server.add_run("RUNNING", timestamp="2026-01-12T09:30:00+00:00")
    found = runs(server, states=["RUNNING"], min_state_age=7200)
    assert [r["id"] for r in found["flow_runs"]] == [stuck["id"]] and found["flow_runs"][0]["state_age_s"] == 10800.0


def test_limit_bounds_the_list_not_the_count(runs, server):
    for number in range(5):
        server.add_run("RUNNING", name="run-%d" % number)
    result = runs(server, limit=2)
    assert result["count"] == 5 and len(result["flow_runs"]) == 2


def test_cancel_as_prefect_orchestrates_it(runs, server):
    running = server.add_run("RUNNING", infrastructure_pid="4711")
    scheduled = server.add_run("SCHEDULED")
    server.add_run("CANCELLING")
    args = dict(states=["SCHEDULED", "RUNNING", "CANCELLING"], cancel=True)
    predicted = runs(server, check_mode=True, **args)
    assert predicted["changed"] is True and server.writes() == []
    assert {c["id"]: c["from_state"] for c in predicted["cancelled"]} == {running["id"]: "RUNNING",
                                                                          scheduled["id"]: "SCHEDULED"}
    result = runs(server, **args)
    assert result["changed"] is True
    assert {c["id"]: (c["to_state"], c["status"]) for c in result["cancelled"]} == {
        running["id"]: ("CANCELLING", "ACCEPT"), scheduled["id"]: ("CANCELLED", "REJECT")}
    assert server.runs[scheduled["id"]]["state"]["type"] == "CANCELLED"
    body = [b for m, p, b, _h in server.calls if p.endswith("set_state")][0]
    assert body["state"]["type"] == "CANCELLING" and body["force"] is False
    again = runs(server, states=["SCHEDULED", "RUNNING"], cancel=True)
    assert again["changed"] is False and again["cancelled"] == []


def test_a_cancel_the_server_refuses_fails_and_names_the_run(runs, server):
    run = server.add_run("RUNNING", name="stubborn")
    server.faults.append(("POST", "flow_runs/%s/set_state" % run["id"], 200))  # answered, but no cancelling state
    with pytest.raises(PrefectError) as err:
        runs(server, cancel=True)
    assert "did not cancel 1 flow run" in err.value.message and "stubborn" in err.value.message


def test_wait_until_none_returns_when_the_runs_finish(runs, server, clock, monkeypatch):
    run = server.add_run("RUNNING")
    reads = []
    original = server.filter_runs

    def finish_on_third_read(data):
        reads.append(1)
        if len(reads) == 3:
            server.runs[run["id"]]["state"]["type"] = "COMPLETED"
        return original(data)

    monkeypatch.setattr(server, "filter_runs", finish_on_third_read)
    result = runs(server, wait_until_none=True, poll_interval=2, timeout=60)
    assert result["remaining"] == [] and result["waited_s"] == 4.0 and clock.sleeps == [2, 2]
    assert [r["id"] for r in result["flow_runs"]] == [run["id"]]


def test_wait_timeout_lists_what_is_left(runs, server, clock):
    server.add_run("RUNNING", name="endless", pool="etl", timestamp="2026-01-12T09:00:00+00:00")
    with pytest.raises(PrefectError) as err:
        runs(server, wait_until_none=True, poll_interval=5, timeout=12)
    message = err.value.message
    assert message.startswith("1 flow run(s) still PENDING or RUNNING or CANCELLING after 12 s: endless (")
    assert "Running for 3600 s in pool etl" in message and "cancel: true" in message
    assert [r["name"] for r in err.value.result["remaining"]] == ["endless"]
    assert clock.now - 1000.0 <= 12


def test_check_mode_does_not_wait(runs, server, clock):
    server.add_run("RUNNING")
    result = runs(server, check_mode=True, wait_until_none=True, timeout=30)
    assert clock.sleeps == [] and result["count"] == 1 and len(result["remaining"]) == 1


def test_bad_input_is_reported_at_once(runs, server):
    with pytest.raises(PrefectValidationError) as err:
        runs(server, states=[], work_pools=[""], min_state_age=-1, limit=0, timeout=0, poll_interval=0)
    for words in ("states must list", "work_pools must not", "min_state_age", "limit must", "timeout", "poll_interval"):
        assert words in err.value.message
    assert server.calls == []
