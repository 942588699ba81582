# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The logic runs on the control node in the action plugin of the same name (plugins/action/server_health.py).

DOCUMENTATION = r"""
module: server_health
short_description: Wait until a Prefect server is healthy and ready, and check it
version_added: 0.1.0
description:
  - Polls C(GET /api/health) until it answers C(true), then C(GET /api/ready) until it answers HTTP 200 (the
    server reaches its database), for at most O(timeout) seconds in all.
  - Then reads the Prefect version (C(/api/admin/version)) and the API version (C(/api/version)) with the
    task's credentials, which also proves they are accepted.
  - Optional checks prove that unauthenticated requests are refused (O(expect_unauthenticated_status)),
    that named work pools are C(READY) with an C(ONLINE) worker (O(work_pools_ready)) and that named workers are
    C(ONLINE) with a recent heartbeat (O(workers_online)).
  - On failure the message names the check and what the server answered; C(checks) lists every check.
  - Never changes anything.
author:
  - enclave.prefect maintainers (@enclave-prefect)
extends_documentation_fragment:
  - enclave.prefect.prefect_api
  - enclave.prefect.prefect_api.read_only
options:
  timeout:
    description:
      - Total seconds to wait for all checks to pass. V(0) tries each check once.
      - An answer of HTTP 401 or 403 to a request that carried credentials (O(auth) other than V(none)) fails the
        check at once, since waiting cannot change it.
    type: int
    default: 120
  interval:
    description:
      - Seconds between two attempts of a check.
    type: int
    default: 2
  expect_unauthenticated_status:
    description:
      - Send C(GET /api/admin/version) once without any credentials and require this HTTP status, for example
        V(401). Proves that the proxy or the server enforces authentication.
    type: int
  denied_username:
    description:
      - An account that can sign in (same O(auth) as the task's credentials) but is not allowed to use Prefect. One
        C(GET /api/admin/version) with it must be answered O(expect_denied_status), which proves that the proxy authorizes,
        not only authenticates (IIS URL Authorization, C(iis_proxy_allowed_groups)).
      - A wrong password for it also gets a 401 from IIS, so use an account whose password is known to be right.
    type: str
  denied_password:
    description: Password of O(denied_username); keep it in Ansible Vault.
    type: str
  expect_denied_status:
    description:
      - The HTTP status O(denied_username) must get. IIS URL Authorization refuses with C(401), sub-status 2 in the IIS log.
    type: int
    default: 401
  work_pools_ready:
    description:
      - Work pools that must be C(READY) with at least one C(ONLINE) worker before O(timeout).
    type: list
    elements: str
    default: []
  workers_online:
    description:
      - Workers that must be listed C(ONLINE) by name in their pool before O(timeout).
      - With O(workers_online[].heartbeat_after), the last heartbeat must also be newer than that time, for example
        the start of the worker's process, because a heartbeat from before it came from a process that has since died.
    type: list
    elements: dict
    default: []
    suboptions:
      pool:
        description: Work pool of the worker.
        type: str
        required: true
      name:
        description: Worker name (C(prefect worker start --name)).
        type: str
        required: true
      heartbeat_after:
        description: ISO 8601 time (UTC when it has no offset) the last heartbeat must be newer than.
        type: str
seealso:
  - module: enclave.prefect.work_pool_info
"""

EXAMPLES = r"""
- name: Prefect server answers on the host itself
  enclave.prefect.server_health:
    api_url: http://127.0.0.1:4200/api
    timeout: 180

- name: Prefect is reachable through the proxy, which refuses anonymous requests
  enclave.prefect.server_health:
    api_url: https://prefect.corp.local/api
    ca_path: /etc/pki/enclave-ca.pem
    auth: ntlm
    username: CORP\svc-ansible
    password: "{{ vault_svc_ansible_password }}"
    expect_unauthenticated_status: 401
  delegate_to: localhost
  no_log: true

- name: Workers of the ETL pool are online
  enclave.prefect.server_health:
    api_url: http://127.0.0.1:4200/api
    work_pools_ready: [etl]
    timeout: 300
    interval: 5
  register: prefect_health

- name: The worker of this host is online and has sent a heartbeat since its service started
  enclave.prefect.server_health:
    api_url: https://prefect.corp.local/api
    workers_online:
      - pool: etl
        name: PrefectWorker-etl-wrk01
        heartbeat_after: "2026-01-12T08:14:40.000Z"
    timeout: 120

- name: Show the Prefect version
  ansible.builtin.debug:
    msg: "Prefect {{ prefect_health.prefect_version }} answered in {{ prefect_health.latency_ms }} ms"
"""

RETURN = r"""
healthy:
  description: Whether C(/api/health) answered C(true).
  returned: always
  type: bool
  sample: true
ready:
  description: Whether C(/api/ready) answered HTTP 200.
  returned: always
  type: bool
  sample: true
prefect_version:
  description: Prefect version of the server (C(/api/admin/version)).
  returned: success
  type: str
  sample: 3.9.1
api_version:
  description: Version of the REST API (C(/api/version)).
  returned: success
  type: str
  sample: 0.8.4
latency_ms:
  description: Round trip of the last C(/api/health) request, in milliseconds.
  returned: always
  type: float
  sample: 12.4
elapsed_s:
  description: Seconds the checks took, waiting included.
  returned: always
  type: float
  sample: 3.1
checks:
  description:
    - Every check that ran, in order; the failed one is last.
    - Names are C(health), C(ready), C(version), C(unauthenticated), C(work_pool:<name>) and C(worker:<pool>/<name>).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Check name.
      type: str
    ok:
      description: Whether it passed.
      type: bool
    detail:
      description: What was requested and what came back.
      type: str
  sample:
    - name: health
      ok: true
      detail: "GET http://127.0.0.1:4200/api/health: HTTP 200 true"
    - name: ready
      ok: true
      detail: 'GET http://127.0.0.1:4200/api/ready: HTTP 200 {"message":"OK"}'
api_from:
  description: Where the requests were sent from, V(controller) or V(target).
  returned: always
  type: str
  sample: target
"""
