# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The logic runs on the control node in the action plugin of the same name (plugins/action/role_input.py).

DOCUMENTATION = r"""
module: role_input
short_description: Check the kinds and ranges of a role's input that its argument specification cannot express
version_added: 0.4.0
description:
  - Reads the role's C(meta/argument_specs.yml) and refuses every option of type C(str) (also inside C(dict) options
    and lists of them, and the items of C(list) options of C(str)) whose value is a mapping, a list or a boolean.
    ansible-core's role argument validation turns such a value into its text and goes on, so a mapping given for an
    account name would otherwise reach the host.
  - Refuses whole-number options outside the ranges given in O(ranges), where a value can only be a mistake.
  - Every problem is reported, one per line, each naming the variable. Runs on the control node only and never
    touches a host; the roles call it first in their validation.
author:
  - enclave.prefect maintainers (@enclave-prefect)
options:
  ranges:
    description:
      - Variable name to C([minimum, maximum]) of the whole numbers it may hold; a maximum of V(null) is no upper
        bound. C(name[].field) checks C(field) of every mapping in the list C(name).
    type: dict
    default: {}
  entry_point:
    description: Entry point of the argument specification whose options are checked.
    type: str
    default: main
  role_path:
    description: Directory of the role; the current role's by default.
    type: path
notes:
  - Options whose variable is not defined, or is null, are not checked here (argument_specs checks required ones).
  - Kinds are checked on the values as given (inventory, extra vars, role defaults), before templating; a value
    given as a template is text here and is checked after rendering by the role's own format checks. Whole numbers
    are checked after rendering.
"""

EXAMPLES = r"""
- name: Role input has the kinds and ranges the role needs
  enclave.prefect.role_input:
    ranges:
      backup_run_timeout: [60, 86400]
      nssm_services_workers[].limit: [1, 1000]
"""

RETURN = r"""
problems:
  description: One message per bad value, naming the variable; empty when the input is good.
  returned: always
  type: list
  elements: str
"""
