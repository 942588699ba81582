# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The logic runs on the control node in the action plugin of the same name (plugins/action/work_pool.py).

DOCUMENTATION = r"""
module: work_pool
short_description: Create, update or remove a Prefect work pool and its queues
version_added: 0.1.0
description:
  - Makes a Prefect 3 work pool and its work queues match the task, through the Prefect REST API.
  - Only the options the task sets are managed; omitted options keep the server's value. Values are compared
    as parsed JSON and only the fields that differ are changed.
  - A new pool without O(base_job_template) gets the default template of its O(type) from the server's worker
    metadata, so a pool is never created with an empty template.
  - The type of an existing pool cannot change; with O(recreate=true) the pool is deleted and created again.
author:
  - enclave.prefect maintainers (@enclave-prefect)
extends_documentation_fragment:
  - enclave.prefect.prefect_api
options:
  name:
    description:
      - Name of the work pool.
      - Must not be empty, must not contain C(/), C(%), C(&), C(>) or C(<), and must not start with C(prefect)
        in any case (the server reserves those names).
    type: str
    required: true
  type:
    description:
      - Worker type of the pool, for example V(process).
      - When the pool is created without O(base_job_template), the type must be one the server's worker metadata
        lists (C(GET /api/collections/views/aggregate-worker-metadata)); the error lists the known types.
    type: str
    default: process
  description:
    description:
      - Description of the pool. Omit to leave it as it is.
    type: str
  concurrency_limit:
    description:
      - Maximum number of flow runs the pool runs at once, V(0) or more.
      - Omit to leave it as it is (no limit on a new pool). Set it to V(null) explicitly to remove the limit.
    type: int
  paused:
    description:
      - Whether the pool is paused (no work is handed out). Omit to leave it as it is (not paused on a new pool).
    type: bool
  base_job_template:
    description:
      - The pool's base job template, a dict with C(job_configuration) and C(variables) (a JSON schema). A JSON
        string is accepted too.
      - Every C({{ placeholder }}) in C(job_configuration) must be declared in C(variables.properties).
      - Ansible would template those placeholders itself and fail with an undefined variable. Load the template
        with the P(ansible.builtin.file#lookup) lookup and the P(ansible.builtin.from_json#filter) filter (see
        EXAMPLES), or tag each inline value C(!unsafe), as in C(!unsafe "{{ command }}").
      - Omit on a new pool to use the type's default template; omit on an existing pool to leave it as it is.
    type: dict
  queues:
    description:
      - Work queues of the pool. Listed queues are created or updated; queues that are not listed are kept
        unless O(purge_queues=true).
      - Sub-options that are omitted keep the server's value.
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - Queue name. Must not be empty or contain C(/), C(%), C(&), C(>) or C(<).
        type: str
        required: true
      priority:
        description:
          - Priority, V(1) is the highest. Priorities of listed queues must differ; the server moves other queues
            down when a priority is taken.
        type: int
      concurrency_limit:
        description:
          - Maximum number of flow runs from this queue at once, V(0) or more. Set V(null) explicitly to remove it.
        type: int
      paused:
        description:
          - Whether the queue is paused.
        type: bool
      description:
        description:
          - Description of the queue.
        type: str
  purge_queues:
    description:
      - Delete the queues of the pool that O(queues) does not list. The C(default) queue is never deleted.
      - Has no effect when O(queues) is omitted; use O(queues=[]) to keep only the C(default) queue.
    type: bool
    default: false
  recreate:
    description:
      - Allow a change of O(type) on an existing pool by deleting it (with its queues) and creating it again.
      - Without it, a type change is an error and nothing is changed.
      - Deployments that use the pool refer to it by name; check them after a recreate.
    type: bool
    default: false
  state:
    description:
      - V(present) creates or updates the pool, V(absent) deletes it (with its queues).
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    description: Computes the changes and the resulting pool without writing anything.
    support: full
  diff_mode:
    description: Shows the managed fields of the pool and its queues before and after.
    support: full
seealso:
  - module: enclave.prefect.work_pool_info
  - module: enclave.prefect.server_health
"""

EXAMPLES = r"""
- name: Work pool for the ETL workers exists with its queues
  enclave.prefect.work_pool:
    api_url: https://prefect.corp.local/api
    auth: negotiate
    username: CORP\svc-ansible
    password: "{{ vault_svc_ansible_password }}"
    ca_path: /etc/pki/enclave-ca.pem
    name: etl
    type: process
    description: Nightly ETL on the Windows workers
    concurrency_limit: 4
    queues:
      - name: high
        priority: 1
      - name: default
        priority: 2
      - name: backfill
        priority: 3
        concurrency_limit: 1
  delegate_to: localhost
  no_log: true

- name: Work pool exists, API reached from the Prefect host itself
  enclave.prefect.work_pool:
    api_url: http://127.0.0.1:4200/api
    auth: basic
    auth_string: "{{ vault_prefect_auth_string }}"
    name: etl
  no_log: true

- name: Work pool uses a custom job template
  enclave.prefect.work_pool:
    api_url: http://127.0.0.1:4200/api
    name: reports
    base_job_template: "{{ lookup('ansible.builtin.file', 'reports-template.json') | from_json }}"
  delegate_to: localhost

- name: Pool is paused and its limit removed
  enclave.prefect.work_pool:
    api_url: http://127.0.0.1:4200/api
    name: etl
    paused: true
    concurrency_limit: null
  delegate_to: localhost

- name: Old pool is gone
  enclave.prefect.work_pool:
    api_url: http://127.0.0.1:4200/api
    name: legacy
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
work_pool:
  description:
    - The pool as C(GET /api/work_pools/{name}) shows it after the change; in check mode the predicted pool.
    - Empty when O(state=absent).
  returned: always
  type: dict
  sample:
    name: etl
    type: process
    status: NOT_READY
    is_paused: false
    concurrency_limit: 4
    description: Nightly ETL on the Windows workers
    base_job_template:
      job_configuration:
        command: "{{ command }}"
      variables:
        properties:
          command:
            type: string
        type: object
    default_queue_id: 5d1c6a3e-0f4e-4a55-9a0b-7f4cf3f1d2a1
    id: 8a0c3b55-37a4-4c4f-8d36-0b8f1b2f8b6e
queues:
  description: The pool's queues as the API shows them, highest priority first; in check mode the prediction.
  returned: always
  type: list
  elements: dict
  sample:
    - name: high
      priority: 1
      concurrency_limit: null
      is_paused: false
      description: ""
actions:
  description: What was (or in check mode would be) done, in order.
  returned: always
  type: list
  elements: str
  sample: [create pool, create queue high, "patch queue default: priority"]
api_from:
  description: Where the requests were sent from, V(controller) or V(target).
  returned: always
  type: str
  sample: controller
"""
