# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for enclave.prefect.role_input: runs on the control node (documentation in plugins/modules/role_input.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import yaml
from ansible.errors import AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

_SPECS = {}  # role path -> parsed meta/argument_specs.yml, once per process
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # plain data; libyaml's parser where PyYAML has it


def _argument_specs(role_path):
    if role_path not in _SPECS:
        path = os.path.join(role_path, "meta", "argument_specs.yml")
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.load(handle, Loader=_LOADER) or {}  # noqa: S506 (a safe loader)
        except (OSError, yaml.YAMLError) as exc:
            raise AnsibleError("role_input: cannot read %s: %s" % (path, exc)) from exc
        _SPECS[role_path] = data.get("argument_specs") or {}
    return _SPECS[role_path]


def _kind(value):
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (list, tuple, set)):
        return "a list"
    return None


def text_problems(options, values, prefix=""):
    """Messages for str options whose value is a mapping, list or boolean (argument_specs turns them into text)."""
    problems = []
    for name, spec in sorted((options or {}).items()):
        if name not in values or values[name] is None:
            continue
        value, label = values[name], prefix + name
        kind = spec.get("type", "str")
        if kind == "str":
            wrong = _kind(value)
            if wrong:
                problems.append("%s must be text, not %s" % (label, wrong))
        elif kind == "list" and spec.get("elements") == "str" and isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                wrong = _kind(item)
                if wrong:
                    problems.append("%s[%d] must be text, not %s" % (label, index, wrong))
        elif kind == "dict" and spec.get("options") and isinstance(value, Mapping):
            problems.extend(text_problems(spec["options"], value, label + "."))
        elif kind == "list" and spec.get("elements") == "dict" and spec.get("options") and isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    problems.extend(text_problems(spec["options"], item, "%s[%d]." % (label, index)))
    return problems


def range_problems(ranges, values):
    """Messages for whole numbers outside their [minimum, maximum] (maximum None: no upper bound).

    A name may reach into a list of mappings: ``nssm_services_workers[].limit``."""
    problems = []
    for name, bounds in ranges.items():
        if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
            raise AnsibleError("role_input: ranges.%s must be [minimum, maximum]" % name)
        low, high = bounds
        top, _sep, field = name.partition("[].")
        if top not in values or values[top] is None:
            continue
        items = ([("%s[%d].%s" % (top, index, field), item.get(field)) for index, item in enumerate(values[top])
                  if isinstance(item, Mapping)] if field and isinstance(values[top], (list, tuple))
                 else [] if field else [(name, values[top])])
        for label, value in items:
            if value is None:
                continue
            try:
                number = int(value) if not isinstance(value, (bool, float)) else None
            except (TypeError, ValueError):
                number = None
            if number is None:
                problems.append("%s must be a whole number (got %r)" % (label, value))
            elif number < low or (high is not None and number > high):
                what = "%s to %s" % (low, high) if high is not None else "at least %s" % low
                problems.append("%s must be %s (got %s)" % (label, what, number))
    return problems


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        validator = ArgumentSpecValidator({
            "entry_point": {"type": "str", "default": "main"},
            "role_path": {"type": "path"},
            "ranges": {"type": "dict", "default": {}},
        })
        checked = validator.validate(self._task.args)
        if checked.error_messages:
            raise AnsibleError("role_input: %s" % "; ".join(checked.error_messages))
        args = checked.validated_parameters
        role_path = args["role_path"] or task_vars.get("role_path")
        if not role_path:
            raise AnsibleError("role_input: role_path is neither given nor known (the task is not in a role)")
        specs = _argument_specs(role_path)
        if args["entry_point"] not in specs:
            raise AnsibleError("role_input: %s has no entry point %s" % (role_path, args["entry_point"]))
        options = specs[args["entry_point"]].get("options") or {}
        # The kinds are those of the values as given: a mapping, list or boolean is one before any templating, and
        # rendering every option's default here would cost each run of a role as much again as its argument
        # validation. The whole numbers are rendered (a default such as "{{ prefect_database_port }}").
        raw = {name: task_vars[name] for name in options if name in task_vars}
        numbers, problems = {}, []
        for name in sorted({name.partition("[].")[0] for name in args["ranges"]}):
            if name not in task_vars:
                continue
            try:
                numbers[name] = self._templar.template(task_vars[name])
            except AnsibleError as exc:
                problems.append("%s cannot be read: %s" % (name, exc.message.splitlines()[0]))
        problems += text_problems(options, raw) + range_problems(args["ranges"], numbers)
        result["changed"] = False
        if problems:
            result["failed"] = True
            result["msg"] = "%s: %s" % (task_vars.get("inventory_hostname", "?"), "\n".join(problems))
        else:
            result["msg"] = "role input has the kinds and ranges the role needs"
        result["problems"] = problems
        return result
