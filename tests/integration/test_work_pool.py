"""enclave.prefect.work_pool against a real Prefect server on SQLite.

Every assertion about what the server holds is made with plain HTTP (PrefectServer.api), never through the
module under test. The sequence follows the upstream Windows module tests: check mode -> assert nothing
written -> real run -> assert -> re-run -> assert idempotent.
"""
from __future__ import annotations

import pytest

from playbooks import connection, literal, module_task

QUEUES = [
    {"name": "high", "priority": 1, "concurrency_limit": 2, "description": "urgent runs"},
    {"name": "low", "priority": 10, "paused": True},
]


def default_template(server, pool_type: str = "process") -> dict:
    status, meta = server.api("GET", "/collections/views/aggregate-worker-metadata")
    assert status == 200, meta
    for workers in meta.values():
        if pool_type in workers:
            return workers[pool_type]["default_base_job_configuration"]
    raise AssertionError(f"{pool_type} not in the server's worker metadata")


def pool_task(server, name, **args):
    return module_task("pool", "work_pool", connection(server, name=name, **args), register="pool")


def test_create_check_mode_writes_nothing(playbook, sqlite_server, pool_name):
    res = playbook.run([pool_task(sqlite_server, pool_name, queues=QUEUES)], check=True)
    assert res.rc == 0, res.explain()
    task = res.task("pool")
    assert task["changed"] is True
    assert task["work_pool"]["name"] == pool_name
    assert sqlite_server.pool(pool_name) is None, "check mode created the pool"


def test_create_then_idempotent(playbook, sqlite_server, pool_name):
    args = {"description": "nightly ETL", "concurrency_limit": 5, "queues": QUEUES}
    first = playbook.run([pool_task(sqlite_server, pool_name, **args)])
    assert first.rc == 0, first.explain()
    task = first.task("pool")
    assert task["changed"] is True
    assert task["work_pool"]["name"] == pool_name
    assert task["work_pool"]["type"] == "process"

    pool = sqlite_server.pool(pool_name)
    assert pool is not None
    assert pool["description"] == "nightly ETL"
    assert pool["concurrency_limit"] == 5
    assert pool["is_paused"] is False
    # Never left with {}: the type's default from the server's worker metadata.
    assert pool["base_job_template"], "pool created with an empty base_job_template"
    assert pool["base_job_template"] == default_template(sqlite_server)
    assert task["work_pool"]["base_job_template"] == pool["base_job_template"]

    queues = sqlite_server.queues(pool_name)
    assert set(queues) == {"default", "high", "low"}
    assert (queues["high"]["priority"], queues["high"]["concurrency_limit"]) == (1, 2)
    assert queues["high"]["description"] == "urgent runs"
    assert (queues["low"]["priority"], queues["low"]["is_paused"]) == (10, True)
    assert {q["name"] for q in task["queues"]} >= {"high", "low"}

    second = playbook.run([pool_task(sqlite_server, pool_name, **args)])
    assert second.rc == 0, second.explain()
    assert second.task("pool")["changed"] is False, second.task("pool").get("actions")
    assert sqlite_server.pool(pool_name)["updated"] == pool["updated"]


def test_update_check_mode_then_apply(playbook, sqlite_server, pool_name):
    assert playbook.run([pool_task(sqlite_server, pool_name, concurrency_limit=3)]).rc == 0
    before = sqlite_server.pool(pool_name)
    change = {"description": "changed", "concurrency_limit": None, "paused": True}

    dry = playbook.run([pool_task(sqlite_server, pool_name, **change)], check=True)
    assert dry.rc == 0, dry.explain()
    assert dry.task("pool")["changed"] is True
    assert dry.task("pool")["work_pool"]["is_paused"] is True
    after_dry = sqlite_server.pool(pool_name)
    assert (after_dry["description"], after_dry["concurrency_limit"], after_dry["is_paused"]) == \
        (before["description"], 3, False), "check mode changed the pool"

    real = playbook.run([pool_task(sqlite_server, pool_name, **change)])
    assert real.rc == 0, real.explain()
    assert real.task("pool")["changed"] is True
    pool = sqlite_server.pool(pool_name)
    assert (pool["description"], pool["concurrency_limit"], pool["is_paused"]) == ("changed", None, True)
    assert pool["status"] == "PAUSED"

    again = playbook.run([pool_task(sqlite_server, pool_name, **change)])
    assert again.task("pool")["changed"] is False, again.task("pool").get("actions")


def test_omitted_options_are_left_as_they_are(playbook, sqlite_server, pool_name):
    assert playbook.run([pool_task(sqlite_server, pool_name, description="keep me", concurrency_limit=4,
                                   queues=[{"name": "high", "priority": 1}])]).rc == 0
    res = playbook.run([pool_task(sqlite_server, pool_name)])
    assert res.rc == 0, res.explain()
    assert res.task("pool")["changed"] is False
    pool = sqlite_server.pool(pool_name)
    assert (pool["description"], pool["concurrency_limit"]) == ("keep me", 4)
    assert "high" in sqlite_server.queues(pool_name)


def test_diff_mode_shows_before_and_after(playbook, sqlite_server, pool_name):
    created = playbook.run([pool_task(sqlite_server, pool_name, description="v1", queues=QUEUES[:1])], diff=True)
    assert created.rc == 0, created.explain()
    diff = created.task("pool")["diff"]
    assert not diff["before"] or diff["before"] == {}
    assert diff["after"]["name"] == pool_name
    assert diff["after"]["description"] == "v1"
    assert "high" in diff["after"]["queues"]

    changed = playbook.run([pool_task(sqlite_server, pool_name, description="v2",
                                      queues=[{"name": "high", "priority": 5}])], diff=True)
    diff = changed.task("pool")["diff"]
    assert (diff["before"]["description"], diff["after"]["description"]) == ("v1", "v2")
    assert (diff["before"]["queues"]["high"]["priority"], diff["after"]["queues"]["high"]["priority"]) == (1, 5)


def test_queues_reconciled_and_purged(playbook, sqlite_server, pool_name):
    assert playbook.run([pool_task(sqlite_server, pool_name, queues=QUEUES)]).rc == 0
    new = [{"name": "high", "priority": 2, "concurrency_limit": None, "paused": True},
           {"name": "batch", "priority": 20, "concurrency_limit": 1}]
    before = sqlite_server.queues(pool_name)
    dry = playbook.run([pool_task(sqlite_server, pool_name, queues=new, purge_queues=True)], check=True)
    assert dry.rc == 0 and dry.task("pool")["changed"] is True, dry.explain()
    assert sqlite_server.queues(pool_name) == before, "check mode changed the queues"

    res = playbook.run([pool_task(sqlite_server, pool_name, queues=new, purge_queues=True)])
    assert res.rc == 0, res.explain()
    assert res.task("pool")["changed"] is True
    queues = sqlite_server.queues(pool_name)
    assert set(queues) == {"default", "high", "batch"}, "purge removed the default queue or kept 'low'"
    assert (queues["high"]["priority"], queues["high"]["concurrency_limit"], queues["high"]["is_paused"]) == \
        (2, None, True)
    assert (queues["batch"]["priority"], queues["batch"]["concurrency_limit"]) == (20, 1)
    again = playbook.run([pool_task(sqlite_server, pool_name, queues=new, purge_queues=True)])
    assert again.task("pool")["changed"] is False, again.task("pool").get("actions")


def test_given_template_compared_as_json(playbook, sqlite_server, pool_name):
    template = default_template(sqlite_server)
    template["variables"]["properties"]["working_dir"]["default"] = "C:\\Prefect\\flows"
    assert playbook.run([pool_task(sqlite_server, pool_name, base_job_template=literal(template))]).rc == 0
    assert sqlite_server.pool(pool_name)["base_job_template"] == template
    # Same content, keys in another order: parsed-JSON comparison sees no change.
    reordered = {"variables": template["variables"], "job_configuration": dict(
        reversed(list(template["job_configuration"].items())))}
    res = playbook.run([pool_task(sqlite_server, pool_name, base_job_template=literal(reordered))])
    assert res.rc == 0, res.explain()
    assert res.task("pool")["changed"] is False


def test_type_change_is_an_error_without_recreate(playbook, sqlite_server, pool_name):
    assert playbook.run([pool_task(sqlite_server, pool_name)]).rc == 0
    res = playbook.run([pool_task(sqlite_server, pool_name, type="docker")])
    assert res.rc != 0
    msg = res.task("pool")["msg"]
    assert "recreate" in msg and "docker" in msg and "process" in msg, msg
    assert sqlite_server.pool(pool_name)["type"] == "process"


def test_type_change_with_recreate(playbook, sqlite_server, pool_name):
    assert playbook.run([pool_task(sqlite_server, pool_name, queues=[{"name": "high", "priority": 1}])]).rc == 0
    old_id = sqlite_server.pool(pool_name)["id"]
    dry = playbook.run([pool_task(sqlite_server, pool_name, type="docker", recreate=True)], check=True)
    assert dry.rc == 0 and dry.task("pool")["changed"] is True, dry.explain()
    assert sqlite_server.pool(pool_name)["id"] == old_id, "check mode recreated the pool"

    res = playbook.run([pool_task(sqlite_server, pool_name, type="docker", recreate=True,
                                  queues=[{"name": "high", "priority": 1}])])
    assert res.rc == 0, res.explain()
    assert res.task("pool")["changed"] is True
    pool = sqlite_server.pool(pool_name)
    assert pool["type"] == "docker" and pool["id"] != old_id
    assert pool["base_job_template"] == default_template(sqlite_server, "docker")
    assert "high" in sqlite_server.queues(pool_name)
    again = playbook.run([pool_task(sqlite_server, pool_name, type="docker", recreate=True)])
    assert again.task("pool")["changed"] is False


def test_absent_deletes_and_is_idempotent(playbook, sqlite_server, pool_name):
    assert playbook.run([pool_task(sqlite_server, pool_name)]).rc == 0
    dry = playbook.run([pool_task(sqlite_server, pool_name, state="absent")], check=True)
    assert dry.rc == 0 and dry.task("pool")["changed"] is True, dry.explain()
    assert sqlite_server.pool(pool_name) is not None, "check mode deleted the pool"

    res = playbook.run([pool_task(sqlite_server, pool_name, state="absent")])
    assert res.rc == 0, res.explain()
    assert res.task("pool")["changed"] is True
    assert res.task("pool")["work_pool"] == {}
    assert sqlite_server.pool(pool_name) is None

    again = playbook.run([pool_task(sqlite_server, pool_name, state="absent")])
    assert again.rc == 0 and again.task("pool")["changed"] is False, again.explain()


@pytest.mark.parametrize("pool_type", ["process", "kubernetes"])
def test_every_listed_type_gets_its_template(playbook, sqlite_server, pool_name, pool_type):
    res = playbook.run([pool_task(sqlite_server, pool_name, type=pool_type)])
    assert res.rc == 0, res.explain()
    assert sqlite_server.pool(pool_name)["base_job_template"] == default_template(sqlite_server, pool_type)
