# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The logic runs on the control node in the action plugin of the same name (plugins/action/flow_run.py).

DOCUMENTATION = r"""
module: flow_run
short_description: Run a Prefect deployment and wait for the result
version_added: 0.1.0
description:
  - Creates a flow run of a deployment (C(POST /api/deployments/{id}/create_flow_run)) with the given parameters.
  - By default waits for a terminal state and fails unless the run ended C(COMPLETED) (see O(expected_states)),
    returning the state, the duration and the last log lines of the run.
  - A worker polling the deployment's work pool must pick the run up; otherwise the wait ends at O(timeout).
  - Logs reach the server in batches and may trail the final state, so after a wait the plugin reads the logs
    again for up to 10 seconds until the run's C(Finished in state) line is there.
author:
  - enclave.prefect maintainers (@enclave-prefect)
extends_documentation_fragment:
  - enclave.prefect.prefect_api
options:
  deployment:
    description:
      - The deployment as C(flow-name/deployment-name), as C(prefect deployment ls) shows it.
    type: str
    required: true
  parameters:
    description:
      - Flow parameters. Parameters not given take the deployment's defaults.
    type: dict
    default: {}
  run_name:
    description:
      - Name of the flow run. The server generates one if omitted.
    type: str
  idempotency_key:
    description:
      - With a key that was used before for this deployment, the server returns that run instead of creating
        another one (the task then reports no change). Makes re-running a playbook safe.
    type: str
  wait:
    description:
      - Wait for the run to reach a terminal state (C(COMPLETED), C(FAILED), C(CRASHED), C(CANCELLED)).
      - When V(false), the task returns right after the run is created.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for the terminal state.
    type: int
    default: 600
  poll_interval:
    description:
      - Seconds between two reads of the run's state.
    type: int
    default: 5
  expected_states:
    description:
      - Terminal state types that count as success. Any other terminal state fails the task.
    type: list
    elements: str
    choices: [COMPLETED, FAILED, CRASHED, CANCELLED]
    default: [COMPLETED]
  log_lines:
    description:
      - How many of the run's last log lines to return in RV(logs), V(0) (none) to V(200) (the API's page limit).
    type: int
    default: 20
attributes:
  check_mode:
    description: Looks the deployment up and reports a change without creating a run.
    support: full
  diff_mode:
    description: A run is not a configuration, so there is no diff.
    support: none
seealso:
  - module: enclave.prefect.work_pool_info
"""

EXAMPLES = r"""
- name: Smoke-test flow completes
  enclave.prefect.flow_run:
    api_url: http://127.0.0.1:4200/api
    deployment: smoke-test/windows
    parameters:
      greeting: hello
    timeout: 300
  register: smoke

- name: Show how long it took
  ansible.builtin.debug:
    msg: "{{ smoke.flow_run.name }} {{ smoke.flow_run.state_name }} in {{ smoke.flow_run.duration_s }} s"

- name: Nightly load is started once per day, without waiting
  enclave.prefect.flow_run:
    api_url: https://prefect.corp.local/api
    auth: negotiate
    username: CORP\svc-ansible
    password: "{{ vault_svc_ansible_password }}"
    deployment: nightly-load/prod
    idempotency_key: "nightly-load-{{ now(utc=true, fmt='%Y-%m-%d') }}"
    wait: false
  delegate_to: localhost
  no_log: true

- name: A run that is expected to fail fails
  enclave.prefect.flow_run:
    api_url: http://127.0.0.1:4200/api
    deployment: smoke-test/must-fail
    expected_states: [FAILED]
"""

RETURN = r"""
flow_run:
  description: The run; empty in check mode.
  returned: always
  type: dict
  contains:
    id:
      description: Flow run id.
      type: str
    name:
      description: Flow run name.
      type: str
    deployment_id:
      description: Deployment id.
      type: str
    state_type:
      description: C(SCHEDULED), C(PENDING), C(RUNNING), C(COMPLETED), C(FAILED), C(CRASHED), C(CANCELLED) ...
      type: str
    state_name:
      description: Display name of the state, for example C(Completed) or C(Late).
      type: str
    state_message:
      description: Message of the state, for example the exception of a failed run.
      type: str
    start_time:
      description: When the run started (ISO 8601), null if it did not start.
      type: str
    end_time:
      description: When the run ended (ISO 8601), null if it did not end.
      type: str
    duration_s:
      description: Seconds from start to end (the server's run time while the run is not finished).
      type: float
    parameters:
      description: Parameters of the run.
      type: dict
  sample:
    id: 0a7f6c1e-46c5-4bd4-9d8e-2b4f0f0b5a11
    name: smart-beaver
    state_type: COMPLETED
    state_name: Completed
    duration_s: 2.41
logs:
  description: The run's last O(log_lines) log lines, oldest first, as C(<timestamp> <LEVEL> <message>).
  returned: always
  type: list
  elements: str
  sample:
    - "2026-01-12T08:15:04.120000Z INFO Beginning flow run 'smart-beaver' for flow 'smoke-test'"
    - "2026-01-12T08:15:06.300000Z INFO Finished in state Completed()"
api_from:
  description: Where the requests were sent from, V(controller) or V(target).
  returned: always
  type: str
  sample: controller
"""
