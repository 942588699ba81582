# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The logic runs on the control node in the action plugin of the same name (plugins/action/flow_runs.py).

DOCUMENTATION = r"""
module: flow_runs
short_description: List Prefect flow runs by state, wait until none is left, cancel them on request
version_added: 0.2.0
description:
  - Selects the flow runs in the given O(states) (by default the active ones, C(PENDING), C(RUNNING) and
    C(CANCELLING)), optionally only those of some work pools and only those that have been in their state for at
    least O(min_state_age) seconds, and returns them.
  - With O(wait_until_none=true) the task waits until no run is selected any more, and fails at O(timeout) listing
    the runs that are left. This is the wait of a maintenance window, after the work pools were paused with
    M(enclave.prefect.work_pool) O(enclave.prefect.work_pool#module:paused=true).
  - With O(cancel=true) every selected run that is not already C(CANCELLING) or finished is cancelled
    (C(POST /api/flow_runs/{id}/set_state) C(CANCELLING)); the server moves a run that has not started straight to
    C(CANCELLED), a worker stops a running one and reports C(CANCELLED). Cancelling comes before waiting.
  - Without O(cancel) nothing is changed, so a diagnosis can read late runs (O(states=[LATE])) or runs stuck in
    C(RUNNING) (O(states=[RUNNING]) with O(min_state_age)).
author:
  - enclave.prefect maintainers (@enclave-prefect)
extends_documentation_fragment:
  - enclave.prefect.prefect_api
options:
  states:
    description:
      - State types of the runs to select.
      - V(LATE) selects C(SCHEDULED) runs that the server has marked C(Late) (their start time passed and no
        worker picked them up); V(SCHEDULED) includes those.
      - The default selects the runs a maintenance window waits for.
    type: list
    elements: str
    choices: [SCHEDULED, LATE, PENDING, RUNNING, PAUSED, CANCELLING, COMPLETED, FAILED, CRASHED, CANCELLED]
    default: [PENDING, RUNNING, CANCELLING]
  work_pools:
    description:
      - Only runs of deployments in these work pools. Omit for the runs of every pool and runs without a pool.
    type: list
    elements: str
  min_state_age:
    description:
      - Only runs that have been in their current state for at least this many seconds (measured against the
        control node's clock, from the state's timestamp on the server). V(0) selects every run.
      - For example V(7200) with O(states=[RUNNING]) finds runs that have been running for more than two hours.
    type: int
    default: 0
  limit:
    description:
      - At most this many runs are returned in RV(flow_runs) and RV(remaining), V(1) to V(1000), oldest expected
        start first. RV(count) counts them all, and O(cancel) and O(wait_until_none) act on them all.
    type: int
    default: 100
  cancel:
    description:
      - Cancel every selected run that is not already C(CANCELLING) or finished.
      - Include V(CANCELLING) in O(states) when waiting after a cancel, so that the wait lasts until the workers
        have stopped the runs.
    type: bool
    default: false
  wait_until_none:
    description:
      - Wait until no run is selected any more (re-reading every O(poll_interval) seconds); fail at O(timeout),
        returning the runs that are left in RV(remaining).
    type: bool
    default: false
  timeout:
    description:
      - Seconds to wait with O(wait_until_none=true), counted from the start of the task.
    type: int
    default: 600
  poll_interval:
    description:
      - Seconds between two reads while waiting.
    type: int
    default: 5
attributes:
  check_mode:
    description: Lists the runs and reports in RV(cancelled) what O(cancel) would cancel; cancels nothing and does not wait.
    support: full
  diff_mode:
    description: Flow runs are not configuration, so there is no diff.
    support: none
notes:
  - Pause the pools first (M(enclave.prefect.work_pool) with O(enclave.prefect.work_pool#module:paused=true)), else
    the workers keep starting scheduled runs while the task waits.
seealso:
  - module: enclave.prefect.work_pool
  - module: enclave.prefect.work_pool_info
  - module: enclave.prefect.flow_run
"""

EXAMPLES = r"""
- name: Work pools take no new runs
  enclave.prefect.work_pool:
    api_url: http://127.0.0.1:4200/api
    name: "{{ item.name }}"
    type: "{{ item.type }}"
    paused: true
  loop: "{{ pools_before.work_pools }}"
  delegate_to: localhost

- name: No flow run is active any more (at most 30 minutes)
  enclave.prefect.flow_runs:
    api_url: http://127.0.0.1:4200/api
    work_pools: "{{ pools_before.work_pools | map(attribute='name') | list }}"
    wait_until_none: true
    timeout: 1800
    poll_interval: 10
  delegate_to: localhost

- name: Active flow runs are cancelled and their workers have stopped them
  enclave.prefect.flow_runs:
    api_url: http://127.0.0.1:4200/api
    states: [PENDING, RUNNING, CANCELLING]
    cancel: true
    wait_until_none: true
    timeout: 300
  delegate_to: localhost
  when: upgrade_cancel_running | bool

- name: Late runs and runs running for more than two hours (diagnosis, changes nothing)
  enclave.prefect.flow_runs:
    api_url: https://prefect.corp.local/api
    auth: negotiate
    username: CORP\svc-ansible
    password: "{{ vault_svc_ansible_password }}"
    states: "{{ item.states }}"
    min_state_age: "{{ item.age }}"
  loop:
    - {states: [LATE], age: 0}
    - {states: [RUNNING], age: 7200}
  delegate_to: localhost
  register: suspicious
  no_log: true
"""

RETURN = r"""
flow_runs:
  description:
    - The selected runs when the task started (before any cancel), oldest expected start first, at most O(limit).
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Flow run id.
      type: str
    name:
      description: Flow run name.
      type: str
    flow_name:
      description: Name of the run's flow.
      type: str
    deployment:
      description: The run's deployment as C(flow-name/deployment-name); null for a run without deployment.
      type: str
    deployment_id:
      description: Deployment id.
      type: str
    work_pool_name:
      description: Work pool of the run; null for a run without pool.
      type: str
    work_queue_name:
      description: Work queue of the run.
      type: str
    state_type:
      description: C(SCHEDULED), C(PENDING), C(RUNNING), C(CANCELLING) ...
      type: str
    state_name:
      description: Display name of the state, for example C(Late) for an overdue C(SCHEDULED) run.
      type: str
    state_timestamp:
      description: When the run entered its state (ISO 8601).
      type: str
    state_age_s:
      description: Seconds since RV(flow_runs[].state_timestamp), by the control node's clock.
      type: float
    expected_start_time:
      description: When the run was scheduled to start (ISO 8601).
      type: str
    start_time:
      description: When the run started (ISO 8601), null if it did not start.
      type: str
  sample:
    - id: 0a7f6c1e-46c5-4bd4-9d8e-2b4f0f0b5a11
      name: smart-beaver
      flow_name: nightly-load
      deployment: nightly-load/prod
      work_pool_name: etl
      work_queue_name: default
      state_type: RUNNING
      state_name: Running
      state_timestamp: "2026-01-12T08:15:02.123456Z"
      state_age_s: 7412.5
count:
  description: How many runs were selected when the task started (not limited by O(limit)).
  returned: always
  type: int
  sample: 3
cancelled:
  description:
    - The runs O(cancel) cancelled (in check mode, would cancel), each with C(id), C(name), C(from_state),
      C(to_state) (the state type the server answered, C(CANCELLING) or C(CANCELLED); a run that finished
      meanwhile shows its final state), C(status) (the server's C(ACCEPT), C(REJECT) or C(ABORT)) and C(reason).
    - Empty without O(cancel).
  returned: always
  type: list
  elements: dict
  sample:
    - id: 0a7f6c1e-46c5-4bd4-9d8e-2b4f0f0b5a11
      name: smart-beaver
      from_state: RUNNING
      to_state: CANCELLING
      status: ACCEPT
      reason: null
remaining:
  description:
    - With O(wait_until_none=true), the runs still selected when the task ended, at most O(limit). Empty after a
      successful wait; on timeout (and in check mode) the runs that were left. Without waiting, the same as
      RV(flow_runs).
  returned: always
  type: list
  elements: dict
waited_s:
  description: Seconds the task waited (0 without O(wait_until_none)).
  returned: always
  type: float
  sample: 42.0
api_from:
  description: Where the requests were sent from, V(controller) or V(target).
  returned: always
  type: str
  sample: controller
"""
