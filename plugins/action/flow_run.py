# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for enclave.prefect.flow_run: runs on the control node (documentation in plugins/modules/flow_run.py)."""

from __future__ import annotations

from ansible_collections.enclave.prefect.plugins.module_utils.flow_runs import argument_spec, run
from ansible_collections.enclave.prefect.plugins.plugin_utils.prefect_action import PrefectApiAction


class ActionModule(PrefectApiAction):
    argument_spec = staticmethod(argument_spec)
    logic = staticmethod(run)
