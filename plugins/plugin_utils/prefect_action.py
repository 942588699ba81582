# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The action plugin shared by every enclave.prefect API plugin: each names its spec and its logic."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.enclave.prefect.plugins.module_utils.prefect_runner import run_action


class PrefectApiAction(ActionBase):
    """Runs on the control node; run_action() picks controller or target (win_uri) mode.

    Subclasses set two static methods: argument_spec() -> dict and logic(client, params, ctx) -> dict.
    """

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        result.update(run_action(self, task_vars or {}, self.argument_spec(), self.logic))
        return result
