# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for enclave.prefect.flow_runs: runs on the control node (documentation in plugins/modules/flow_runs.py)."""

from __future__ import annotations

from ansible_collections.enclave.prefect.plugins.module_utils.flow_runs_query import argument_spec, select
from ansible_collections.enclave.prefect.plugins.plugin_utils.prefect_action import PrefectApiAction


class ActionModule(PrefectApiAction):
    argument_spec = staticmethod(argument_spec)
    logic = staticmethod(select)
