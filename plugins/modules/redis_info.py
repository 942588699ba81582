# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The logic runs on the control node in the action plugin of the same name (plugins/action/redis_info.py).

DOCUMENTATION = r"""
module: redis_info
short_description: Ask a Redis, from the control node, what Prefect's Redis backends need of it
version_added: 0.2.0
description:
  - Opens one TCP connection from the control node to O(host):O(port) and asks in the Redis protocol (RESP2)
    C(AUTH) (with O(password)), C(INFO server), C(INFO cluster) and C(COMMAND INFO XAUTOCLAIM).
  - Reports whether the connection opened, the version, whether Redis runs as a cluster and whether it knows
    C(XAUTOCLAIM) (Redis 6.2); prefect-redis needs one standalone Redis 6.2 or later. Judging is the caller's.
  - Reads only, and never fails for what Redis answers or for a Redis it cannot reach (RV(reachable), RV(error)).
    The nssm_services role's preflight calls it under high availability; C(playbooks/verify.yml) asks the same from a
    server host (C(playbooks/files/redis_check.ps1)).
author:
  - enclave.prefect maintainers (@enclave-prefect)
options:
  host:
    description: Redis host name or address.
    type: str
    required: true
  port:
    description: Redis TCP port.
    type: int
    default: 6379
  password:
    description: Password of Redis's default user (C(requirepass)); empty sends no C(AUTH). Keep it in Ansible Vault.
    type: str
    default: ""
  timeout:
    description: Seconds to open the connection and for each reply.
    type: float
    default: 5.0
notes:
  - Plain TCP, as prefect-redis connects with the settings the roles write; the password goes only to the socket.
"""

EXAMPLES = r"""
- name: Redis is asked from the control node
  enclave.prefect.redis_info:
    host: "{{ prefect_redis_host }}"
    port: "{{ prefect_redis_port }}"
    password: "{{ prefect_redis_password }}"
  register: redis
  no_log: true
"""

RETURN = r"""
reachable:
  description: Whether a TCP connection opened.
  returned: always
  type: bool
  sample: true
version:
  description: C(redis_version) of C(INFO server); empty when Redis was not asked.
  returned: always
  type: str
  sample: 7.0.15
cluster_enabled:
  description: Whether C(INFO cluster) reports C(cluster_enabled:1).
  returned: always
  type: bool
  sample: false
xautoclaim:
  description: Whether Redis knows C(XAUTOCLAIM) (C(COMMAND INFO) of an unknown command is nil).
  returned: always
  type: bool
  sample: true
error:
  description: Why Redis was not asked, or the error Redis answered (C(WRONGPASS ...), C(NOAUTH ...)); empty otherwise.
  returned: always
  type: str
  sample: "Redis answered: WRONGPASS invalid username-password pair or user is disabled."
host:
  description: O(host) as given.
  returned: always
  type: str
port:
  description: O(port) as given.
  returned: always
  type: int
"""
