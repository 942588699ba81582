# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for enclave.prefect.flow_run: runs on the control node (documentation in plugins/modules/flow_run.py)."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.enclave.prefect.plugins.module_utils.flow_runs import argument_spec, run
from ansible_collections.enclave.prefect.plugins.module_utils.prefect_runner import run_action


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        result.update(run_action(self, task_vars or {}, argument_spec(), run))
        return result
