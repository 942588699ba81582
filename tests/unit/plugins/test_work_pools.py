"""enclave.prefect.work_pool / work_pool_info logic against the stateful fake Prefect API."""
from __future__ import annotations

import copy

import pytest
from fake_prefect import DOCKER_TEMPLATE, PROCESS_TEMPLATE, validated

from ansible_collections.enclave.prefect.plugins.module_utils import work_pools
from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import (
    PrefectError,
    PrefectValidationError,
)

pytestmark = pytest.mark.unit

API = "http://127.0.0.1:4200/api"


@pytest.fixture
def apply(server, make_client, make_ctx):
    """apply(check_mode=False, **task_args) -> result, like one task run."""
    def run(check_mode=False, **args):
        raw = dict(api_url=API, **args)
        params = validated(work_pools.argument_spec(), raw)
        ctx = make_ctx(raw_args=raw, check_mode=check_mode)
        result = work_pools.reconcile(make_client(server), params, ctx)
        result["warnings"] = ctx.warnings
        return result
    return run


QUEUES = [{"name": "high", "priority": 1}, {"name": "low", "priority": 5, "concurrency_limit": 1}]


# --- bad input: refused before any request ---------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    ({"name": ""}, "name must not be empty"),
    ({"name": "  "}, "name must not be empty"),
    ({"name": "etl/nightly"}, "must not contain /"),
    ({"name": "etl%20"}, "must not contain %"),
    ({"name": "prefect-etl"}, "reserved"),
    ({"name": "PrefectPool"}, "reserved"),
    ({"name": "etl", "type": " "}, "type must not be empty"),
    ({"name": "etl", "concurrency_limit": -1}, "concurrency_limit must be 0 or more"),
    ({"name": "etl", "queues": [{"name": "q", "concurrency_limit": -2}]}, "queue 'q': concurrency_limit"),
    ({"name": "etl", "queues": [{"name": "q", "priority": 0}]}, "priority must be 1 or more"),
    ({"name": "etl", "queues": [{"name": "a/b"}]}, "queue name 'a/b' must not contain /"),
    ({"name": "etl", "queues": [{"name": "q"}, {"name": "q"}]}, "listed twice"),
    ({"name": "etl", "queues": [{"name": "a", "priority": 2}, {"name": "b", "priority": 2}]}, "priorities must differ"),
    ({"name": "etl", "base_job_template": {"job_configuration": {"a": 1}}}, "missing: variables"),
    ({"name": "etl", "base_job_template": {}}, "missing: job_configuration, variables"),
    ({"name": "etl", "base_job_template": {"job_configuration": ["x"], "variables": {"properties": {}}}},
     "job_configuration must be a dict"),
    ({"name": "etl", "base_job_template": {"job_configuration": {"cmd": "{{ command }}"},
                                           "variables": {"properties": {"other": {}}}}},
     "not declared in variables.properties: command"),
])
def test_bad_input_fails_before_any_request(apply, server, args, words):
    with pytest.raises(PrefectValidationError) as err:
        apply(**args)
    assert words in err.value.message
    assert server.calls == []


def test_all_problems_are_reported_at_once(apply, server):
    with pytest.raises(PrefectValidationError) as err:
        apply(name="prefect/x", concurrency_limit=-1)
    assert "reserved" in err.value.message and "/" in err.value.message and "concurrency_limit" in err.value.message


def test_template_placeholders_resolved_by_the_worker_need_no_declaration():
    template = {"job_configuration": {"a": "{{ prefect.variables.x }}", "b": "{{ $HOME }}", "c": "{{ name }}"},
                "variables": {"properties": {"name": {}}}}
    assert work_pools.template_problems(template) == []


def test_malformed_json_template_is_refused_by_the_argument_spec():
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    result = ArgumentSpecValidator(work_pools.argument_spec()).validate(
        {"api_url": API, "name": "etl", "base_job_template": '{"job_configuration": '})
    assert any("base_job_template" in m for m in result.error_messages)


def test_unknown_type_lists_the_known_types_and_creates_nothing(apply, server):
    with pytest.raises(PrefectValidationError) as err:
        apply(name="etl", type="procss")
    assert "Unknown work pool type 'procss'" in err.value.message
    assert "docker, process" in err.value.message
    assert server.writes() == [] and server.pools == {}


def test_no_pool_is_created_with_an_empty_template_when_metadata_fails(apply, server):
    server.metadata_status = 404
    with pytest.raises(PrefectError) as err:
        apply(name="etl")
    assert "Cannot find the default base job template" in err.value.message
    assert "give base_job_template explicitly" in err.value.message.lower()
    assert server.pools == {}


def test_custom_type_with_a_template_is_created_with_a_warning(apply, server):
    result = apply(name="custom", type="my-worker", base_job_template=DOCKER_TEMPLATE)
    assert result["changed"] and server.pools["custom"]["type"] == "my-worker"
    assert any("not in the server's worker metadata" in w for w in result["warnings"])


# --- create, idempotence, check and diff -----------------------------------------------------------

def test_create_uses_the_type_default_template(apply, server):
    result = apply(name="etl", description="ETL", concurrency_limit=3, queues=QUEUES)
    assert result["changed"]
    assert result["actions"] == ["create pool", "create queue high", "create queue low"]
    pool = server.pools["etl"]
    assert pool["base_job_template"] == PROCESS_TEMPLATE
    assert (pool["description"], pool["concurrency_limit"], pool["type"]) == ("ETL", 3, "process")
    assert result["work_pool"] == pool
    assert [(q["name"], q["priority"]) for q in result["queues"]] == [("high", 1), ("default", 2), ("low", 5)]
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["queues"]["low"]["concurrency_limit"] == 1


def test_second_run_changes_nothing_and_writes_nothing(apply, server):
    apply(name="etl", description="ETL", concurrency_limit=3, queues=QUEUES)
    writes = len(server.writes())
    result = apply(name="etl", description="ETL", concurrency_limit=3, queues=QUEUES)
    assert not result["changed"] and result["actions"] == []
    assert len(server.writes()) == writes
    assert result["diff"]["before"] == result["diff"]["after"]


def test_check_mode_predicts_a_create_without_writing(apply, server):
    result = apply(check_mode=True, name="etl", description="ETL", queues=QUEUES)
    assert result["changed"] and server.writes() == [] and server.pools == {}
    assert result["work_pool"]["base_job_template"] == PROCESS_TEMPLATE
    assert result["work_pool"]["description"] == "ETL"
    assert {q["name"] for q in result["queues"]} == {"default", "high", "low"}


def test_only_changed_fields_are_patched(apply, server):
    apply(name="etl", description="ETL", concurrency_limit=3)
    result = apply(name="etl", description="ETL", concurrency_limit=5, paused=True)
    assert result["actions"] == ["patch pool: concurrency_limit, is_paused"]
    patch = [(b) for m, p, b, _h in server.calls if m == "PATCH"]
    assert patch == [{"concurrency_limit": 5, "is_paused": True}]
    assert result["work_pool"]["status"] == "PAUSED"
    assert result["diff"]["before"]["concurrency_limit"] == 3 and result["diff"]["after"]["concurrency_limit"] == 5


def test_check_mode_update_predicts_and_writes_nothing(apply, server):
    apply(name="etl", description="ETL")
    before = copy.deepcopy(server.pools["etl"])
    writes = len(server.writes())
    result = apply(check_mode=True, name="etl", description="new", queues=[{"name": "high", "priority": 1}])
    assert result["changed"] and len(server.writes()) == writes and server.pools["etl"] == before
    assert result["work_pool"]["description"] == "new"
    assert result["diff"]["after"]["queues"]["high"]["priority"] == 1
    assert "high" not in result["diff"]["before"]["queues"]


def test_omitted_options_are_left_alone(apply, server):
    apply(name="etl", description="ETL", concurrency_limit=3, paused=True)
    result = apply(name="etl")
    assert not result["changed"]
    assert (server.pools["etl"]["description"], server.pools["etl"]["concurrency_limit"]) == ("ETL", 3)


def test_explicit_null_removes_the_limit(apply, server):
    apply(name="etl", concurrency_limit=3, queues=[{"name": "q", "concurrency_limit": 2}])
    result = apply(name="etl", concurrency_limit=None, queues=[{"name": "q", "concurrency_limit": None}])
    assert result["actions"] == ["patch pool: concurrency_limit", "patch queue q: concurrency_limit"]
    assert server.pools["etl"]["concurrency_limit"] is None
    assert server.queues["etl"]["q"]["concurrency_limit"] is None


def test_template_is_compared_as_parsed_json(apply, server):
    apply(name="etl", base_job_template=PROCESS_TEMPLATE)
    reordered = {"variables": dict(reversed(list(PROCESS_TEMPLATE["variables"].items()))),
                 "job_configuration": dict(reversed(list(PROCESS_TEMPLATE["job_configuration"].items())))}
    assert not apply(name="etl", base_job_template=reordered)["changed"]
    changed = copy.deepcopy(PROCESS_TEMPLATE)
    changed["job_configuration"]["env"] = {"PYTHONUTF8": "1"}
    result = apply(name="etl", base_job_template=changed)
    assert result["actions"] == ["patch pool: base_job_template"]
    assert server.pools["etl"]["base_job_template"]["job_configuration"]["env"] == {"PYTHONUTF8": "1"}


def test_empty_description_equals_no_description(apply, server):
    apply(name="etl")
    assert server.pools["etl"]["description"] is None
    assert not apply(name="etl", description="")["changed"]


# --- queues ----------------------------------------------------------------------------------------

def test_queues_not_listed_are_kept_unless_purged_and_default_is_never_deleted(apply, server):
    apply(name="etl", queues=QUEUES)
    kept = apply(name="etl", queues=[{"name": "high", "priority": 1}])
    assert not kept["changed"] and set(server.queues["etl"]) == {"default", "high", "low"}
    purged = apply(name="etl", queues=[{"name": "high", "priority": 1}], purge_queues=True)
    assert purged["actions"] == ["delete queue low"]
    assert set(server.queues["etl"]) == {"default", "high"}
    assert not apply(name="etl", queues=[{"name": "high", "priority": 1}], purge_queues=True)["changed"]
    emptied = apply(name="etl", queues=[], purge_queues=True)
    assert emptied["actions"] == ["delete queue high"] and set(server.queues["etl"]) == {"default"}


def test_priorities_settle_in_the_wanted_order(apply, server):
    wanted = [{"name": "default", "priority": 3}, {"name": "b", "priority": 2}, {"name": "a", "priority": 1}]
    apply(name="etl", queues=wanted)
    assert {n: q["priority"] for n, q in server.queues["etl"].items()} == {"a": 1, "b": 2, "default": 3}
    assert not apply(name="etl", queues=wanted)["changed"]


def test_queue_fields_are_patched_individually(apply, server):
    apply(name="etl", queues=[{"name": "q", "priority": 2, "description": "x"}])
    result = apply(name="etl", queues=[{"name": "q", "paused": True, "description": "x"}])
    assert result["actions"] == ["patch queue q: is_paused"]
    patches = [b for m, p, b, _h in server.calls if m == "PATCH"]
    assert patches == [{"is_paused": True}]


# --- type change, absent ---------------------------------------------------------------------------

def test_type_change_is_an_error_without_recreate(apply, server):
    apply(name="etl")
    pool_id = server.pools["etl"]["id"]
    with pytest.raises(PrefectError) as err:
        apply(name="etl", type="docker")
    assert "has type 'process'" in err.value.message and "'docker'" in err.value.message
    assert "recreate: true" in err.value.message
    assert server.pools["etl"]["id"] == pool_id


def test_recreate_in_check_mode_only_predicts(apply, server):
    apply(name="etl")
    pool_id = server.pools["etl"]["id"]
    result = apply(check_mode=True, name="etl", type="docker", recreate=True)
    assert result["changed"] and result["actions"][:2] == ["delete pool (type process -> docker)", "create pool"]
    assert result["work_pool"]["type"] == "docker" and result["work_pool"]["base_job_template"] == DOCKER_TEMPLATE
    assert server.pools["etl"]["id"] == pool_id


def test_recreate_replaces_the_pool_and_its_queues(apply, server):
    apply(name="etl", queues=[{"name": "high", "priority": 1}])
    old_id = server.pools["etl"]["id"]
    result = apply(name="etl", type="docker", recreate=True, queues=[{"name": "high", "priority": 1}])
    assert result["changed"] and server.pools["etl"]["id"] != old_id
    assert server.pools["etl"]["type"] == "docker" and set(server.queues["etl"]) == {"default", "high"}
    assert not apply(name="etl", type="docker", recreate=True, queues=[{"name": "high", "priority": 1}])["changed"]


def test_absent_deletes_once(apply, server):
    apply(name="etl")
    dry = apply(check_mode=True, name="etl", state="absent")
    assert dry["changed"] and "etl" in server.pools
    gone = apply(name="etl", state="absent")
    assert gone["changed"] and gone["work_pool"] == {} and "etl" not in server.pools
    assert gone["diff"]["after"] == {} and gone["diff"]["before"]["name"] == "etl"
    assert not apply(name="etl", state="absent")["changed"]


def test_absent_ignores_the_other_options(apply, server):
    assert not apply(name="etl", state="absent", concurrency_limit=-1)["changed"]


# --- csrf end to end --------------------------------------------------------------------------------

def test_work_pool_round_trip_with_csrf_protection(make_client, make_ctx):
    from fake_prefect import FakePrefect

    server = FakePrefect(csrf=True)
    raw = dict(api_url=API, name="etl", queues=QUEUES)
    params = validated(work_pools.argument_spec(), raw)
    result = work_pools.reconcile(make_client(server), params, make_ctx(raw_args=raw))
    assert result["changed"] and set(server.queues["etl"]) == {"default", "high", "low"}
    token_fetches = [p for m, p, _b, _h in server.calls if p.startswith("csrf-token")]
    assert len(token_fetches) == 1


# --- info ------------------------------------------------------------------------------------------

def _info(server, make_client, make_ctx, **args):
    raw = dict(api_url=API, **args)
    return work_pools.info(make_client(server), validated(work_pools.info_argument_spec(), raw),
                           make_ctx(raw_args=raw))


def test_info_reports_pools_queues_and_workers(apply, server, make_client, make_ctx):
    apply(name="etl", queues=[{"name": "high", "priority": 1}])
    apply(name="reports")
    server.add_worker("etl", "ProcessWorker a1", "ONLINE")
    server.add_worker("etl", "ProcessWorker b2", "OFFLINE")
    writes = len(server.writes())
    everything = _info(server, make_client, make_ctx)
    assert not everything["changed"] and len(server.writes()) == writes
    assert [p["name"] for p in everything["work_pools"]] == ["etl", "reports"]
    etl = everything["work_pools"][0]
    assert etl["status"] == "READY"
    assert [q["name"] for q in etl["queues"]] == ["high", "default"]
    assert etl["workers"] == [
        {"name": "ProcessWorker a1", "status": "ONLINE", "last_heartbeat_time": "2026-01-12T08:15:02.123456Z",
         "heartbeat_interval_seconds": 30},
        {"name": "ProcessWorker b2", "status": "OFFLINE", "last_heartbeat_time": "2026-01-12T08:15:02.123456Z",
         "heartbeat_interval_seconds": 30}]
    one = _info(server, make_client, make_ctx, name="reports")
    assert [p["name"] for p in one["work_pools"]] == ["reports"] and one["work_pools"][0]["workers"] == []
    assert _info(server, make_client, make_ctx, name="missing")["work_pools"] == []


def test_priorities_settle_in_one_run_and_check_mode_predicts_them(server, make_client, make_ctx):
    """Random starting queues and wanted priorities (seeded): one run reaches them, a second changes nothing,
    and check mode predicted the priorities of every queue, listed or not."""
    import random

    rng = random.Random(20260112)

    def run(fake, queues, check_mode=False):
        raw = dict(api_url=API, name="etl", queues=queues)
        return work_pools.reconcile(make_client(fake), validated(work_pools.argument_spec(), raw),
                                    make_ctx(raw_args=raw, check_mode=check_mode))

    names = ["default", "a", "b", "c", "d"]
    for _trial in range(300):
        fake = type(server)()
        start = rng.sample(names[1:], rng.randint(0, 4))
        run(fake, [{"name": n, "priority": p} for n, p in zip(start, rng.sample(range(1, 8), len(start)))])
        chosen = rng.sample(names, rng.randint(1, 5))
        wanted = [{"name": n, "priority": p} for n, p in zip(chosen, rng.sample(range(1, 8), len(chosen)))]
        wanted += [{"name": "new-%d" % i} for i in range(rng.randint(0, 1))]
        predicted = {q["name"]: q["priority"] for q in run(fake, wanted, check_mode=True)["queues"]}
        run(fake, wanted)
        actual = {n: q["priority"] for n, q in fake.queues["etl"].items()}
        assert actual == predicted, (start, wanted)
        assert all(actual[q["name"]] == q["priority"] for q in wanted if "priority" in q), (start, wanted)
        assert not run(fake, wanted)["changed"], (start, wanted)


def test_recreate_with_an_unknown_type_keeps_the_pool(apply, server):
    apply(name="etl", queues=QUEUES)
    with pytest.raises(PrefectValidationError, match="Unknown work pool type 'procss'"):
        apply(name="etl", type="procss", recreate=True)
    assert server.pools["etl"]["type"] == "process"
    assert set(server.queues["etl"]) == {"default", "high", "low"}


def test_purge_queues_without_a_queue_list_deletes_nothing(apply, server):
    apply(name="etl", queues=QUEUES)
    result = apply(name="etl", purge_queues=True)
    assert not result["changed"] and set(server.queues["etl"]) == {"default", "high", "low"}
