# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The logic runs on the control node in the action plugin of the same name (plugins/action/work_pool_info.py).

DOCUMENTATION = r"""
module: work_pool_info
short_description: Report Prefect work pools with their queues and workers
version_added: 0.1.0
description:
  - Reads one or all work pools through the Prefect REST API, each with its status, its queues and its workers
    (C(ONLINE) or C(OFFLINE), last heartbeat).
  - Never changes anything.
author:
  - enclave.prefect maintainers (@enclave-prefect)
extends_documentation_fragment:
  - enclave.prefect.prefect_api
  - enclave.prefect.prefect_api.read_only
options:
  name:
    description:
      - Name of the pool to report. Omit to report every pool.
      - A pool that does not exist gives an empty RV(work_pools) list, not an error.
    type: str
seealso:
  - module: enclave.prefect.work_pool
  - module: enclave.prefect.server_health
"""

EXAMPLES = r"""
- name: Read the ETL pool
  enclave.prefect.work_pool_info:
    api_url: http://127.0.0.1:4200/api
    name: etl
  delegate_to: localhost
  register: etl_pool

- name: The ETL pool has an online worker
  ansible.builtin.assert:
    that:
      - etl_pool.work_pools | length == 1
      - etl_pool.work_pools[0].workers | selectattr('status', 'equalto', 'ONLINE') | list | length > 0
    fail_msg: "No ONLINE worker in pool etl: {{ etl_pool.work_pools[0].workers | default([]) }}"

- name: Read every pool from the Prefect host itself
  enclave.prefect.work_pool_info:
    api_url: http://127.0.0.1:4200/api
    auth: basic
    auth_string: "{{ vault_prefect_auth_string }}"
  register: all_pools
  no_log: true
"""

RETURN = r"""
work_pools:
  description:
    - The pools as the API shows them (C(name), C(type), C(status) READY/NOT_READY/PAUSED, C(is_paused),
      C(concurrency_limit), C(base_job_template), ...), each with C(queues) and C(workers) added.
    - Empty when O(name) is given and the pool does not exist.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Pool name.
      type: str
    type:
      description: Worker type.
      type: str
    status:
      description: C(READY) (a worker is online), C(NOT_READY) or C(PAUSED).
      type: str
    queues:
      description: The pool's queues as the API shows them, highest priority first.
      type: list
      elements: dict
    workers:
      description: Workers that have sent a heartbeat to the pool.
      type: list
      elements: dict
      contains:
        name:
          description: Worker name.
          type: str
        status:
          description: C(ONLINE), or C(OFFLINE) after three missed heartbeats.
          type: str
        last_heartbeat_time:
          description: Time of the last heartbeat (ISO 8601, UTC).
          type: str
        heartbeat_interval_seconds:
          description: Seconds between the worker's heartbeats.
          type: int
  sample:
    - name: etl
      type: process
      status: READY
      is_paused: false
      concurrency_limit: 4
      queues:
        - name: default
          priority: 1
          is_paused: false
          concurrency_limit: null
      workers:
        - name: ProcessWorker 4b1e...
          status: ONLINE
          last_heartbeat_time: "2026-01-12T08:15:02.123456Z"
          heartbeat_interval_seconds: 30
api_from:
  description: Where the requests were sent from, V(controller) or V(target).
  returned: always
  type: str
  sample: target
"""
