# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one code path behind every enclave.prefect API action plugin.

run_action() validates the task's arguments against the plugin's argument spec, picks where the
requests come from (control node or Windows host), builds the client and runs the plugin's logic.
It only uses the attributes of the action object it needs, so tests drive it with a small fake.
"""

from __future__ import annotations

import time

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.enclave.prefect.plugins.module_utils.prefect_api import (
    PrefectClient,
    PrefectError,
    TransportError,
    redact,
    secret_variants,
    select_api_from,
    validate_common,
)
from ansible_collections.enclave.prefect.plugins.module_utils.prefect_transport import (
    WinUriTransport,
    build_requests_transport,
)

WIN_URI = "ansible.windows.win_uri"


class Context:
    """What the logic needs besides the client: modes, the raw task arguments, clocks, warnings."""

    def __init__(self, check_mode=False, diff=False, raw_args=None, make_client=None, clock=time.monotonic,
                 sleep=time.sleep):
        self.check_mode = check_mode
        self.diff = diff
        self.raw_args = raw_args or {}
        self.make_client = make_client
        self.clock = clock
        self.sleep = sleep
        self.warnings = []

    def warn(self, message):
        self.warnings.append(message)

    def given(self, key):
        """Whether the task set `key` at all (an explicit null counts), as opposed to leaving it out."""
        return key in self.raw_args


def connection_facts(action):
    """(connection plugin name, shell family) of the task."""
    connection = getattr(action, "_connection", None)
    name = getattr(connection, "_load_name", None) or getattr(connection, "transport", None) or ""
    shell = getattr(connection, "_shell", None)
    family = getattr(shell, "SHELL_FAMILY", None) or ""
    return name, family


def make_transport(params, api_from, execute):
    if api_from == "target":
        return WinUriTransport(execute, params)
    return build_requests_transport(params)


def run_action(action, task_vars, argument_spec, logic, clock=time.monotonic, sleep=time.sleep):
    """Validate, pick the mode, run `logic(client, params, ctx)` and return the task result."""
    raw_args = dict(action._task.args)
    validation = ArgumentSpecValidator(argument_spec).validate(dict(raw_args))
    secrets = sorted(set(secret_variants(validation.validated_parameters)) |
                     {s for s in validation._no_log_values if isinstance(s, str) and len(s) >= 3},
                     key=len, reverse=True)
    if validation.error_messages:
        return redact({"failed": True, "changed": False,
                       "msg": "Invalid arguments: %s" % "; ".join(validation.error_messages)}, secrets)
    params = validation.validated_parameters
    result = {"changed": False}
    try:
        api_from = select_api_from(params["api_from"], *connection_facts(action))
        result["api_from"] = api_from
        problems = validate_common(dict(params, api_from=api_from))
        if problems:
            raise PrefectError("Invalid arguments: %s" % "; ".join(problems))

        def execute(module_args):
            return action._execute_module(module_name=WIN_URI, module_args=module_args, task_vars=task_vars)

        def make_client(**overrides):
            options = dict(params, **overrides)
            return PrefectClient(make_transport(options, api_from, execute), options["api_url"],
                                 retries=options["retries"], secrets=secrets, auth_mode=options["auth"],
                                 api_from=api_from, sleep=sleep)

        ctx = Context(check_mode=bool(action._play_context.check_mode), diff=bool(action._play_context.diff),
                      raw_args=raw_args, make_client=make_client, clock=clock, sleep=sleep)
        try:
            result.update(logic(make_client(), params, ctx))
        finally:
            if ctx.warnings:
                result["warnings"] = ctx.warnings
        if not ctx.diff:
            result.pop("diff", None)
    except PrefectError as exc:
        result.update(exc.result)
        result.update(failed=True, msg=exc.message)
    except TransportError as exc:
        result.update(failed=True, msg=exc.detail)
    return redact(result, secrets)
