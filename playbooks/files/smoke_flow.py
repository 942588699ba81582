"""Smoke flow of enclave.prefect: a flow that logs where it ran, and the deployment that puts it in a work pool.

Copied to <prefect_flows_dir>/enclave-smoke on the Prefect hosts by playbooks/tasks/smoke_flow.yml, deployed from the
first server host with `python smoke_flow.py deploy <pool> <deployment>` (PREFECT_API_URL and, when set,
PREFECT_API_AUTH_STRING in the environment), then run through a real worker with enclave.prefect.flow_run.
The deployment's pull step changes into this file's directory, which must exist on every worker host of the pool.
"""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from prefect import flow, get_run_logger

FLOW_NAME = "enclave-smoke"


@flow(name=FLOW_NAME)
def smoke(message: str = "enclave.prefect smoke flow") -> str:
    import prefect

    logger = get_run_logger()
    logger.info("%s", message)
    logger.info("Ran on %s with Python %s and Prefect %s", platform.node(), platform.python_version(), prefect.__version__)
    return "ok"


def deploy(pool: str, name: str) -> dict:
    """Create or update the deployment; report whether anything differed from what the server holds."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    directory = str(Path(__file__).resolve().parent)
    entrypoint = "%s:smoke" % Path(__file__).name
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_deployment_by_name("%s/%s" % (FLOW_NAME, name))
        except ObjectNotFound:
            existing = None
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": directory}}]
    if existing is not None and existing.work_pool_name == pool and existing.entrypoint == entrypoint \
            and (existing.pull_steps or []) == pull:
        return {"changed": False, "deployment": "%s/%s" % (FLOW_NAME, name), "id": str(existing.id)}
    deployment_id = smoke.from_source(source=directory, entrypoint=entrypoint).deploy(
        name=name, work_pool_name=pool, print_next_steps=False)
    return {"changed": True, "deployment": "%s/%s" % (FLOW_NAME, name), "id": str(deployment_id)}


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "deploy":
        sys.exit("usage: python smoke_flow.py deploy <work pool> <deployment name>")
    print(json.dumps(deploy(sys.argv[2], sys.argv[3])))
