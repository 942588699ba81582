# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Options shared by every plugin that talks to the Prefect REST API.
    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - Base URL of the Prefect API, ending with C(/api).
      - For example V(https://prefect.corp.local/api) behind the IIS proxy, or V(http://127.0.0.1:4200/api)
        for the server itself, reached from the Windows host with O(api_from=target).
      - Must not contain credentials; use O(username)/O(password) or O(auth_string).
      - If not set, the E(PREFECT_API_URL) environment variable of the control node is used.
    type: str
    required: true
  api_from:
    description:
      - Where the HTTP requests are sent from.
      - V(controller) sends them from the control node with Python C(requests).
      - V(target) sends each request through M(ansible.windows.win_uri) on the Windows host the task runs
        against, for an API that is reachable only from the host itself (firewalled C(127.0.0.1:4200)).
      - V(auto) picks V(controller) when the task's connection is C(local) (C(delegate_to=localhost),
        C(connection=local)) and V(target) when the connection is to a Windows host (C(winrm), C(psrp), or
        C(ssh) with a PowerShell or cmd shell). Any other connection is an error asking to set this option.
      - The connection Ansible really uses decides. An C(ansible_connection) variable (inventory, group_vars)
        overrides the C(connection) keyword, so C(connection=local) on a task against a Windows host with
        C(ansible_connection=psrp) still runs in V(target) mode; use C(delegate_to=localhost) or
        V(controller) to send the requests from the control node.
    type: str
    choices: [auto, controller, target]
    default: auto
  auth:
    description:
      - How the requests authenticate.
      - V(none) sends no credentials.
      - V(basic) sends C(Authorization Basic) with O(auth_string) (the server's
        E(PREFECT_SERVER_API_AUTH_STRING)), or with O(username) and O(password) if O(auth_string) is not set.
      - V(ntlm), V(negotiate) and V(kerberos) answer the Windows Authentication challenge of an IIS proxy with
        O(username) and O(password). From the control node V(negotiate) and V(kerberos) without a password
        use the Kerberos ticket cache (C(kinit)). With O(api_from=target) and no O(username), the account
        Ansible logged on to the host with is used (this needs CredSSP, Kerberos delegation or C(become)).
    type: str
    choices: [none, basic, ntlm, negotiate, kerberos]
    default: none
  username:
    description:
      - Account for O(auth=ntlm), O(auth=negotiate) or O(auth=kerberos), as C(DOMAIN\\user) or C(user@REALM).
      - With O(auth=basic) and no O(auth_string), the basic-auth user name.
    type: str
  password:
    description:
      - Password of O(username). Never shown in output.
    type: str
  auth_string:
    description:
      - C(user:password) for O(auth=basic), the same value as the server's E(PREFECT_SERVER_API_AUTH_STRING)
        and the clients' E(PREFECT_API_AUTH_STRING). Never shown in output.
      - If not set, the E(PREFECT_API_AUTH_STRING) environment variable of the control node is used.
    type: str
  validate_certs:
    description:
      - Whether to verify the server's TLS certificate. Turn off only for a test.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file with the CA certificates (the enclave's own CA) that sign the server's certificate.
      - Used from the control node only; with O(api_from=target) the Windows host's certificate store decides.
    type: path
  request_timeout:
    description:
      - Seconds to wait for the answer to one HTTP request.
    type: int
    default: 30
  retries:
    description:
      - How many more times to try a request after a connection error, HTTP 502 or 503 (and, for requests
        that are safe to repeat, HTTP 500, 504 or a timeout), waiting 0.5, 1, 2, 4 ... seconds (at most 10)
        in between. Other 4xx and 5xx answers are never retried.
    type: int
    default: 3
notes:
  - The plugin runs on the control node as an action plugin. Python is not needed on the Windows host; with
    O(api_from=target) each request is one M(ansible.windows.win_uri) run on it.
  - CSRF protection (E(PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED)) is handled. When the server refuses a
    change for a missing CSRF token, a token is fetched and the request is sent again.
  - O(password) and O(auth_string) never appear in results or error messages, also not base64 encoded.
  - The collection's C(docs/prefect-api-plugins.md) explains mode selection, authentication behind IIS and
    what to do about each error.
attributes:
  platform:
    description: Runs on the control node; with O(api_from=target) the requests are sent from the Windows host.
    support: full
    platforms: posix, windows
seealso:
  - name: Prefect REST API reference
    description: The endpoints these plugins call.
    link: https://docs.prefect.io/v3/api-ref/rest-api
"""

    # Check and diff mode of the plugins that only read (server_health, work_pool_info).
    READ_ONLY = r"""
attributes:
  check_mode:
    description: Reads only, so it runs the same in check mode.
    support: full
  diff_mode:
    description: Changes nothing, so there is no diff.
    support: none
"""
