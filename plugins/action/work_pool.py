# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for enclave.prefect.work_pool: runs on the control node (documentation in plugins/modules/work_pool.py)."""

from __future__ import annotations

from ansible_collections.enclave.prefect.plugins.module_utils.work_pools import argument_spec, reconcile
from ansible_collections.enclave.prefect.plugins.plugin_utils.prefect_action import PrefectApiAction


class ActionModule(PrefectApiAction):
    argument_spec = staticmethod(argument_spec)
    logic = staticmethod(reconcile)
